# shellcheck shell=bash
# Helpers the scripts in this directory (and .ci/run) share. Each sources it
# first:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/common.sh"
#
# It defines functions and one variable, and runs nothing on its own.

# The calling script's name as its messages give it: scripts/push, .ci/run, ...
# (its directory's name and its own, wherever it was started from).
if [[ $0 == */* ]]; then
    script_name=${0%/*}
    script_name="${script_name##*/}/${0##*/}"
    script_name=${script_name#./}
else
    script_name="scripts/$0"
fi

# die MESSAGE...: one clear line on stderr, then exit 1.
die() {
    echo "$script_name: $*" >&2
    exit 1
}

# die_usage MESSAGE...: a bad command line: one line on stderr, then exit 64
# (EX_USAGE), for the scripts whose callers tell usage errors apart.
die_usage() {
    echo "$script_name: $*" >&2
    exit 64
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

# rustup_has target|component NAME [TOOLCHAIN]: true when rustup lists NAME
# as installed (for TOOLCHAIN, else the default one). The whole list is read,
# so that rustup never writes into a closed pipe.
rustup_has() {
    local line found=1 toolchain_args=()
    [ -z "${3:-}" ] || toolchain_args=(--toolchain "$3")
    while IFS= read -r line; do
        [ "$line" != "$2" ] || found=0
    done < <(rustup "$1" list "${toolchain_args[@]}" --installed 2>/dev/null || true)
    return "$found"
}
