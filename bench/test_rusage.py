"""Unit tests of bench/rusage.py (run by scripts/test):
python3 -m unittest discover -s bench -p 'test_*.py'"""

import contextlib
import io
import os
import sys
import tempfile
import unittest

import rusage

# A child that burns about 0.2 s of user CPU, then sleeps 0.2 s.
BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass\ntime.sleep(0.2)\n"


class RusageTest(unittest.TestCase):
    def run_main(self, *argv):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "out")
            code = rusage.main([out, *argv])
            text = None
            if os.path.exists(out):
                with open(out, encoding="ascii") as written:
                    text = written.read()
        return code, text

    def test_measures_the_childs_cpu_and_wall_time_to_the_microsecond(self):
        code, text = self.run_main(sys.executable, "-c", BUSY)
        self.assertEqual(code, 0)
        self.assertTrue(text.endswith("\n"))
        wall, user, system = text.split()
        for field in (wall, user, system):
            self.assertRegex(field, r"^\d+\.\d{6}$")
        self.assertGreaterEqual(float(user) + float(system), 0.19)
        self.assertGreaterEqual(float(wall), 0.39)
        # Sleeping is wall time, not CPU.
        self.assertLess(float(user) + float(system), float(wall) - 0.1)

    def test_passes_the_exit_status_on(self):
        code, text = self.run_main(sys.executable, "-c", "import sys; sys.exit(3)")
        self.assertEqual(code, 3)
        self.assertIsNotNone(text)
        code, _ = self.run_main(sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
        self.assertEqual(code, 128 + 15)

    def test_a_command_that_cannot_start_is_127_and_writes_nothing(self):
        with contextlib.redirect_stderr(io.StringIO()) as err:
            code, text = self.run_main("/nonexistent/command")
        self.assertIn("cannot start /nonexistent/command", err.getvalue())
        self.assertEqual(code, rusage.EXIT_CANNOT_START)
        self.assertIsNone(text)

    def test_usage(self):
        with contextlib.redirect_stderr(io.StringIO()) as err:
            self.assertEqual(rusage.main([]), rusage.EXIT_USAGE)
        self.assertIn("usage:", err.getvalue())
        with contextlib.redirect_stdout(io.StringIO()) as out:
            self.assertEqual(rusage.main(["--help"]), 0)
        self.assertIn("OUT_FILE", out.getvalue())


if __name__ == "__main__":
    unittest.main()
