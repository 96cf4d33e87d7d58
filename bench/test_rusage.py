"""Unit tests of bench/rusage.py (run by scripts/test):
python3 -m unittest discover -s bench -p 'test_*.py'"""

import os
import signal
import sys
import tempfile
import time
import unittest

import rusage

# A child that burns about 0.2 s of user CPU, then sleeps 0.2 s.
BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass\ntime.sleep(0.2)\n"


class TimedTest(unittest.TestCase):
    def test_measures_the_childs_cpu_and_wall_time(self):
        result = rusage.timed([sys.executable, "-c", BUSY])
        self.assertEqual(result.exit, 0)
        self.assertGreaterEqual(result.user + result.sys, 0.19)
        self.assertGreaterEqual(result.wall, 0.39)
        # Sleeping is wall time, not CPU.
        self.assertLess(result.user + result.sys, result.wall - 0.1)

    def test_passes_the_exit_status_on(self):
        self.assertEqual(rusage.timed([sys.executable, "-c", "import sys; sys.exit(3)"]).exit, 3)
        killed = rusage.timed([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"])
        self.assertEqual(killed.exit, 128 + 15)

    def test_environment_and_output_descriptors(self):
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            script = "import os, sys; print(os.environ['RUSAGE_TEST']); print('e', file=sys.stderr); print(sys.stdin.read() == '')"
            result = rusage.timed(
                [sys.executable, "-c", script], env={"RUSAGE_TEST": "seen"}, stdout=out.fileno(), stderr=err.fileno()
            )
            self.assertEqual(result.exit, 0)
            out.seek(0)
            err.seek(0)
            self.assertEqual(out.read(), b"seen\nTrue\n")
            self.assertEqual(err.read(), b"e\n")

    def test_a_command_past_its_timeout_is_killed_with_what_it_started(self):
        # The child starts a grandchild that prints its pid and sleeps.
        script = (
            "import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import os, time; print(os.getpid(), flush=True); time.sleep(30)'])\n"
            "time.sleep(30)\n"
        )
        with tempfile.TemporaryFile() as out:
            result = rusage.timed([sys.executable, "-c", script], stdout=out.fileno(), timeout=1.0)
            self.assertEqual(result.exit, 128 + 9)
            self.assertLess(result.wall, 10)
            out.seek(0)
            grandchild = int(out.read())
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{grandchild}") and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(os.path.exists(f"/proc/{grandchild}"), "the grandchild outlived the kill")

    def test_an_interrupted_wait_takes_the_command_with_it(self):
        class Interrupted(Exception):
            pass

        def interrupt(*_):
            raise Interrupted

        previous = signal.signal(signal.SIGALRM, interrupt)
        self.addCleanup(signal.signal, signal.SIGALRM, previous)
        with tempfile.TemporaryFile() as out:
            signal.setitimer(signal.ITIMER_REAL, 1.0)
            started = time.monotonic()
            with self.assertRaises(Interrupted):
                rusage.timed([sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(30)"], stdout=out.fileno())
            self.assertLess(time.monotonic() - started, 10)
            out.seek(0)
            pid = int(out.read())
        with self.assertRaises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)

    def test_a_command_that_cannot_start(self):
        with self.assertRaisesRegex(rusage.CannotStart, "cannot start /nonexistent/command"):
            rusage.timed(["/nonexistent/command"])

    def test_exit_status_of_a_wait_status(self):
        self.assertEqual(rusage.exit_status(0), 0)
        self.assertEqual(rusage.exit_status(69 << 8), 69)
        self.assertEqual(rusage.exit_status(9), 137)


if __name__ == "__main__":
    unittest.main()
