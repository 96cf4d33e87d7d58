# shellcheck shell=bash
# Helpers the scripts in this directory share. Each sources it first:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/common.sh"
#
# It defines functions and one variable, and runs nothing on its own.

# The calling script's name as its messages give it: scripts/push, ...
script_name="scripts/${0##*/}"

# die MESSAGE...: one clear line on stderr, then exit 1.
die() {
    echo "$script_name: $*" >&2
    exit 1
}

# say MESSAGE...: a progress line on stderr.
say() {
    echo "$script_name: $*" >&2
}

# need_value OPTION VALUE: dies unless the option was given a non-empty value.
# Call as `need_value "$@"` while "$1" is the option.
need_value() {
    if [ $# -lt 2 ] || [ -z "$2" ]; then
        die "$1 needs a value (try --help)"
    fi
}

# container_engine: prints the engine to use, CONTAINER_ENGINE or docker, and
# dies when it is neither docker nor podman.
container_engine() {
    local engine=${CONTAINER_ENGINE:-docker}
    case "$engine" in
        docker | podman) echo "$engine" ;;
        *) die "CONTAINER_ENGINE must be docker or podman, not '$engine'" ;;
    esac
}

# engine_answers ENGINE: true when the engine's daemon answers `info`.
engine_answers() {
    "$1" info >/dev/null 2>&1
}

# lacking WHAT SKIPPED: WHAT is missing, so SKIPPED cannot run. Under CI=true
# that fails the script; elsewhere it prints one loud line and returns, and
# the caller goes on without that part.
lacking() {
    if [ "${CI:-}" = true ]; then
        die "$1 is required under CI=true ($2 cannot run without it)"
    fi
    echo "!!!!! SKIPPED: $1 is not available here; $2 did not run" >&2
}
