"""Unit tests of bench/bench.py (run by scripts/test):
python3 -m unittest discover -s bench -p 'test_*.py'"""

import contextlib
import io
import json
import os
import sys
import tempfile
import unittest

import bench
from bench import (
    Failure,
    Logs,
    callgrind_total,
    count_lines,
    cpu_model,
    debian_mirror,
    echo_port,
    echo_stats,
    hyperfine_summary,
    limit_range,
    mounts_under,
    parse_sections,
    push_figures,
    said_hello,
    subjects_for,
    time_peak_kib,
)
from test_report import ALL, Fixture

CALLING = "service-to-service [2026-11-29 03:06:01,123] [INFO] Calling http://127.0.0.1:4000/echo with input Hello"
RECEIVED = "service-to-service [2026-11-29 03:06:01,125] [INFO] Received response from http://127.0.0.1:4000/echo: Bob said Hello"


class ReadingTools(unittest.TestCase):
    def test_echo_port(self):
        self.assertEqual(echo_port("warming up\necho_service listening on 127.0.0.1:43127\n"), 43127)
        self.assertIsNone(echo_port(""))
        self.assertIsNone(echo_port("echo_service listening on 0.0.0.0:80\n"))
        self.assertIsNone(echo_port("echo_service listening on 127.0.0.1:"))

    def test_echo_stats_and_limit_range(self):
        self.assertEqual(echo_stats('{"requests":307,"refused":7,"peak_in_flight":9}'), (307, 7, 9))
        with self.assertRaises(Failure):
            echo_stats("not found")
        done = (
            "service-to-service [2026-12-06 07:40:17,999] [INFO] Done: 3000/3000 rows in 1.82s (1646 rows/s), "
            "5 retries, concurrency limit 7 (from 1 to 11)"
        )
        self.assertEqual(limit_range(f"{CALLING}\n{done}\n"), "1 to 11")
        self.assertIsNone(limit_range(done.replace(", concurrency limit 7 (from 1 to 11)", "")))

    def test_said_hello(self):
        self.assertTrue(said_hello("ours", f"{CALLING}\n{RECEIVED}\n"))
        self.assertTrue(said_hello("python", f"{CALLING}\nsomething else\n{RECEIVED}\n"))
        self.assertFalse(said_hello("ours", f"{CALLING}\n"))
        self.assertFalse(said_hello("ours", RECEIVED.replace("Bob said Hello", "Alice said Hello") + f"\n{CALLING}\n"))
        self.assertFalse(said_hello("go", f"{CALLING} \n{RECEIVED}\n"))
        self.assertTrue(said_hello("busybox", '{"data":[[0,"Bob said Hello"]]}\n'))
        self.assertFalse(said_hello("busybox", '{"data":[[0,"Bob said Hi"]]}'))

    def test_time_peak_kib_takes_the_last_line(self):
        self.assertEqual(time_peak_kib("484\n"), 484)
        self.assertEqual(time_peak_kib("Command exited with non-zero status 69\n659260\n"), 659260)
        for text in ("", "Command terminated by signal 9\n"):
            with self.assertRaises(Failure):
                time_peak_kib(text)

    def test_hyperfine_summary(self):
        document = {
            "results": [
                {"command": "ours", "mean": 0.0007, "stddev": 0.0002, "times": [0.0007] * 2494},
                {"command": "python", "mean": 0.12, "stddev": None, "times": [0.12] * 30},
            ]
        }
        self.assertEqual(hyperfine_summary(document), {"ours": (0.0007, 0.0002, 2494), "python": (0.12, 0.0, 30)})
        with self.assertRaisesRegex(Failure, "hyperfine"):
            hyperfine_summary({"results": [{"command": "ours"}]})

    def test_callgrind_total(self):
        text = "# callgrind format\nversion: 1\nevents: Ir\nfn=(1) main\n0 123\n\nsummary: 120553048\n\ntotals: 120553048\n"
        self.assertEqual(callgrind_total(text), 120553048)
        self.assertEqual(callgrind_total("events: Ir\ntotals: 77 0\n"), 77)
        with self.assertRaisesRegex(Failure, "no totals"):
            callgrind_total("events: Ir\n")
        with self.assertRaisesRegex(Failure, "not a count"):
            callgrind_total("totals: many\n")

    def test_push_figures(self):
        out = (
            "pushed:       127.0.0.1:5000/bench/ours:latest\n"
            "digest:       sha256:" + "a" * 64 + "\n"
            "bytes pushed: 189652  (compressed layers uploaded: 1 of 1; the registry had the others)\n"
            "seconds:      0.204\n"
        )
        self.assertEqual(push_figures(out), (189652, 0.204))
        with self.assertRaisesRegex(Failure, "no bytes pushed"):
            push_figures("bytes pushed: unknown  (podman)\nseconds: 1.0\n")

    def test_mounts_under(self):
        mounts = (
            "overlay / overlay rw 0 0\n"
            "nsfs /tmp/w/engine/exec/netns/default nsfs rw 0 0\n"
            "tmpfs /tmp/w/engine/root/a\\040b tmpfs rw 0 0\n"
            "tmpfs /tmp/w/engine2/x tmpfs rw 0 0\n"
            "tmpfs /tmp/w/engine tmpfs rw 0 0\n"
        )
        self.assertEqual(
            mounts_under(mounts, "/tmp/w/engine/"),
            ["/tmp/w/engine/root/a b", "/tmp/w/engine/exec/netns/default"],
        )

    def test_debian_mirror(self):
        deb822 = "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm\n\nURIs: http://x/debian-security\n"
        self.assertEqual(debian_mirror([deb822], []), "http://mirror.example/debian")
        one_line = "# deb http://commented/debian bookworm main\ndeb [arch=amd64] http://m.example/debian/ bookworm main\n"
        self.assertEqual(debian_mirror(["Types: deb\n"], [one_line]), "http://m.example/debian/")
        # Only a line's first URI counts, and it must be an archive's root.
        self.assertIsNone(debian_mirror([], ["deb http://security.example/debian-security bookworm main\n"]))
        self.assertIsNone(debian_mirror([], [""]))

    def test_cpu_model(self):
        self.assertEqual(cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n"), "AMD EPYC 7B13")
        self.assertEqual(cpu_model(""), "unknown CPU")

    def test_sections_and_subjects(self):
        self.assertEqual(parse_sections("peers"), ["sizes", "peers"])
        self.assertEqual(parse_sections("peers,sizes,startup"), ["sizes", "startup", "peers"])
        self.assertEqual(parse_sections(""), ["sizes"])
        with self.assertRaisesRegex(ValueError, "unknown section 'speed'"):
            parse_sections("speed")
        self.assertEqual(subjects_for(["sizes", "instructions", "peers"]), ["ours", "tiny"])
        self.assertEqual(subjects_for(["sizes", "batch"]), ["ours", "tiny", "busybox", "go", "python"])

    def test_count_lines(self):
        with tempfile.NamedTemporaryFile("w", delete=False) as file:
            file.write("a\nb\nc")
        self.addCleanup(os.unlink, file.name)
        self.assertEqual(count_lines(file.name), 3)


class LogsTest(unittest.TestCase):
    def test_output_goes_to_the_log_and_a_failure_names_it(self):
        with tempfile.TemporaryDirectory() as directory:
            logs = Logs(directory)
            logs.run("ok", [sys.executable, "-c", "print('to the log')"])
            self.assertEqual(logs.tail("ok"), "to the log\n")
            self.assertEqual(logs.run("out", [sys.executable, "-c", "print(42)"], capture=True), "42\n")
            self.assertEqual(logs.tail("out"), "42\n")
            err = io.StringIO()
            with contextlib.redirect_stderr(err), self.assertRaisesRegex(Failure, r"bad failed \(exit 3\); full log: .*bad\.log"):
                logs.run("bad", [sys.executable, "-c", "import sys; print('why'); sys.exit(3)"])
            self.assertIn("why", err.getvalue())
            with self.assertRaisesRegex(Failure, "cannot start /nonexistent"):
                logs.run("missing", ["/nonexistent"])


class Main(unittest.TestCase):
    def run_main(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = bench.main(list(argv))
            except SystemExit as exit:
                status = exit.code
        return status, out.getvalue(), err.getvalue()

    def measurements(self, directory, fixture):
        path = os.path.join(directory, "measurements.json")
        with open(path, "w", encoding="utf-8") as file:
            json.dump(fixture.raw, file)
        return path

    def test_report_renders_and_checks(self):
        with tempfile.TemporaryDirectory() as directory:
            json_path = os.path.join(directory, "figures.json")
            status, out, err = self.run_main("report", self.measurements(directory, Fixture()), "--check", "--json", json_path)
            self.assertEqual(status, 0, err)
            self.assertTrue(out.startswith("## Numbers\n"))
            self.assertIn("every size and instruction goal met", err)
            with open(json_path, encoding="utf-8") as file:
                self.assertEqual(json.load(file)["subjects"]["tiny"]["binary_bytes"], 263560)

    def test_check_fails_with_one_line_and_still_prints_the_report(self):
        with tempfile.TemporaryDirectory() as directory:
            path = self.measurements(directory, Fixture(instructions=180000000))
            status, out, err = self.run_main("report", path, "--check")
            self.assertEqual(status, 1)
            self.assertIn("## Numbers", out)
            self.assertEqual(err, "scripts/bench: --check failed: goals missed: instructions per row 1,800 > 1,700\n")
            status, _, _ = self.run_main("report", path)
            self.assertEqual(status, 0, "a missed goal fails --check only")

    def test_a_full_run_never_fails_on_timing(self):
        with tempfile.TemporaryDirectory() as directory:
            status, out, _ = self.run_main("report", self.measurements(directory, Fixture(sections=ALL)), "--check")
        self.assertEqual(status, 0)
        self.assertIn("**missed**", out)

    def test_bad_measurements_are_one_line(self):
        with tempfile.TemporaryDirectory() as directory:
            fixture = Fixture()
            del fixture.raw["sections"]
            status, out, err = self.run_main("report", self.measurements(directory, fixture))
            self.assertEqual((status, out), (1, ""))
            self.assertEqual(err, "scripts/bench: cannot make the report: the measurements lack sections\n")
            status, _, err = self.run_main("report", os.path.join(directory, "missing.json"))
            self.assertEqual(status, 1)
            self.assertIn("cannot read", err)

    def test_goals_and_usage(self):
        status, out, _ = self.run_main("goals")
        self.assertEqual(status, 0)
        self.assertIn("460000", out)
        self.assertIn("CONCURRENCY=64", out)
        status, _, err = self.run_main("measure", "--sections", "speed", "--work", "w", "--logs", "l")
        self.assertEqual(status, 2)
        self.assertIn("unknown section 'speed'", err)
        status, _, err = self.run_main("measure", "--sections", "sizes", "--work", "w", "--logs", "l", "--binary", "rust=x")
        self.assertEqual(status, 2)
        self.assertIn("SUBJECT=VALUE", err)

    def test_measure_refuses_check_without_instructions_before_measuring(self):
        with tempfile.TemporaryDirectory() as directory:
            status, out, err = self.run_main(
                "measure", "--sections", "peers", "--check", "--work", directory, "--logs", directory
            )
        self.assertEqual((status, out), (1, ""))
        self.assertIn("--check needs the instructions section", err)


if __name__ == "__main__":
    unittest.main()
