#!/usr/bin/env python3
"""Runs a command and writes the time it took: scripts/bench's stop-watch for
the batch row.

    python3 bench/rusage.py OUT_FILE COMMAND [ARG...]

Writes one line to OUT_FILE, `WALL_S USER_S SYS_S`, in seconds to the
microsecond, the CPU times from wait4(2): the command's own and those of the
children it waited for, nothing of this program's. Exits with the command's
exit status (128 + N after signal N), and with 127 when the command cannot
be started.

It replaces the times of `/usr/bin/time -f '%e %U %S'`, which have two
decimals: at 10 ms steps, a client that spends 50 ms of CPU on a batch reads
as 40 or 60 ms, and a ratio to it is coarse.

Peak RSS is left out: wait4's ru_maxrss includes the memory of the process
before its exec, which here is this Python program's 10 MB or more. Keep
`/usr/bin/time -f %M` for it (a small C program), as the COMMAND.
"""

import os
import sys
import time

EXIT_USAGE = 64
EXIT_CANNOT_START = 127


def measure(argv):
    """Runs argv; returns (exit status, the line to write)."""
    started = time.monotonic()
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ)
    except OSError as error:
        raise CannotStart(f"cannot start {argv[0]}: {error.strerror}") from error
    _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - started
    line = f"{wall:.6f} {usage.ru_utime:.6f} {usage.ru_stime:.6f}"
    return os.waitstatus_to_exitcode(status), line


class CannotStart(Exception):
    pass


def main(args):
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    if len(args) < 2:
        print("usage: rusage.py OUT_FILE COMMAND [ARG...] (try --help)", file=sys.stderr)
        return EXIT_USAGE
    out_file, argv = args[0], args[1:]
    try:
        code, line = measure(argv)
    except CannotStart as error:
        print(f"rusage.py: {error}", file=sys.stderr)
        return EXIT_CANNOT_START
    with open(out_file, "w", encoding="ascii") as out:
        out.write(line + "\n")
    # A signal's negative code becomes the shell's 128 + N.
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
