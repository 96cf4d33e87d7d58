"""bench/bench.py's stop-watch: runs a command and returns its exit status,
wall time and CPU times, the CPU from wait4(2) to the microsecond: the
command's own and those of the children it waited for, nothing of the
caller's.

It replaces the times of `/usr/bin/time -f '%e %U %S'`, which have two
decimals: at 10 ms steps, a client that spends 50 ms of CPU on a batch reads
as 40 or 60 ms, and a ratio to it is coarse.

Peak RSS is left out: wait4's ru_maxrss includes the memory of the process
before its exec, which here is a copy of the Python caller, 10 MB or more.
Keep `/usr/bin/time -f %M` for it (a small C program), as the command.
"""

import collections
import os
import signal
import threading
import time

Timed = collections.namedtuple("Timed", "exit wall user sys")


class CannotStart(Exception):
    pass


def exit_status(wait_status):
    """A wait status as the shell shows it: the code, or 128 + N after
    signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code


def timed(argv, env=None, stdout=None, stderr=None, timeout=None):
    """Runs argv (found on PATH) with env (default: this process's), its
    stdout and stderr on the given file descriptors (default: inherited),
    killed after timeout seconds if set. Returns a Timed.

    The command runs in a process group of its own, so that a kill reaches
    what it started too (/usr/bin/time's child outlives its parent)."""
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    for target, fd in ((1, stdout), (2, stderr)):
        if fd is not None:
            actions.append((os.POSIX_SPAWN_DUP2, fd, target))
    started = time.monotonic()
    try:
        pid = os.posix_spawnp(
            argv[0], list(argv), os.environ if env is None else env, file_actions=actions, setpgroup=0
        )
    except OSError as error:
        raise CannotStart(f"cannot start {argv[0]}: {error.strerror}") from error
    killer = None
    if timeout is not None:
        killer = threading.Timer(timeout, _kill, (pid,))
        killer.daemon = True
        killer.start()
    try:
        _, status, usage = os.wait4(pid, 0)
    except BaseException:
        # Interrupted (a signal to the benchmark): the command goes too.
        _kill(pid)
        os.waitpid(pid, 0)
        raise
    finally:
        if killer is not None:
            killer.cancel()
    wall = time.monotonic() - started
    return Timed(exit_status(status), wall, usage.ru_utime, usage.ru_stime)


def _kill(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
