"""Unit tests of bench/report.py (run by scripts/test):
python3 -m unittest discover -s bench -p 'test_*.py'"""

import contextlib
import io
import json
import os
import tempfile
import unittest

import report
from report import BadInput, Bench, kib, mean_sd, ms, parse_measurements, ratio, secs, thousands

CONSTANTS = {
    "GOAL_BINARY_BYTES": 800000,
    "GOAL_TINY_BINARY_BYTES": 400000,
    "GOAL_LAYER_BYTES": 400000,
    "GOAL_TINY_LAYER_BYTES": 200000,
    "BUDGET_BINARY_BYTES": 865000,
    "BUDGET_TINY_BINARY_BYTES": 485000,
    "BUDGET_LAYER_BYTES": 445000,
    "BUDGET_TINY_LAYER_BYTES": 260000,
    "GOAL_STARTUP_VS_PYTHON": 100,
    "GOAL_COLD_VS_PYTHON": 10,
    "GOAL_PEAK_RSS_KIB": 1024,
    "GOAL_BATCH_CPU_VS_PYTHON": 20,
    "GOAL_INSTRUCTIONS_PER_ROW": 1500,
    "BUDGET_INSTRUCTIONS_PER_ROW": 7310,
    "PROJECTION_BYTES_PER_SECOND": 50000000,
}

META = {
    "measured_at": "2026-11-28 23:00 UTC",
    "revision": "abc123",
    "cores": "2",
    "cpu": "AMD EPYC",
    "kernel": "6.1.0",
    "docker": "20.10.24",
    "rustc_stable": "rustc 1.95.0",
    "rustc_tiny": "rustc 1.97.0-nightly",
    "valgrind_version": "valgrind-3.19.0",
    "hyperfine_version": "1.15.0",
    "busybox_version": "1:1.35.0-4",
    "go_version": "go1.19.8",
    "python_versions": "Python 3.11.2 + requests 2.28.1",
    "python_exe_name": "python3.11",
}

SIZES = {
    "ours": (852936, 852936, 432555, 449823),
    "tiny": (474104, 474104, 250295, 260511),
    "busybox": (1982256, 1982256, 1027989, 1064304),
    "go": (4829184, 4829184, 2052682, 2100000),
    "python": (6840645, 124308683, 45726133, 47111490),
}


class Fixture:
    """A measurements file as scripts/bench writes it, with its side files."""

    def __init__(self, directory, mode="sizes-only", instructions=716923307):
        self.directory = directory
        self.lines = [f"mode {mode}"]
        full = mode == "full"
        subjects = ["ours", "tiny", "busybox", "go", "python"] if full else ["ours", "tiny"]
        self.add("subjects", " ".join(subjects))
        for name, value in {**CONSTANTS, **META}.items():
            self.add(name, value)
        for s in subjects:
            binary, image, layer, pushed = SIZES[s]
            self.add(f"{s}.tag", f"image-of-{s}")
            self.add(f"{s}.binary_bytes", binary)
            self.add(f"{s}.image_bytes", image)
            self.add(f"{s}.layer_gzip9_bytes", layer)
            if full:
                self.add(f"{s}.pushed_bytes", pushed)
                self.add(f"{s}.push_s", "0.5")
        self.add("ours.callgrind_file", self.callgrind("ours", instructions))
        self.add("instruction_rows", 100000)
        if full:
            self.add("tiny.callgrind_file", self.callgrind("tiny", 600000000))
            startup = {"ours": 0.0008, "tiny": 0.0007, "busybox": 0.0009, "go": 0.002, "python": 0.083}
            self.add("hyperfine.startup", self.hyperfine("startup", startup))
            self.add("hyperfine.docker_run", self.hyperfine("docker_run", {s: 0.12 for s in subjects}))
            for s in subjects:
                for rss in (700, 716, 710, 705, 690):
                    self.add(f"{s}.peak_rss_kib", rss * (30 if s == "python" else 1))
                for cold_ms in (200, 210, 220):
                    scale = 10 if s == "python" else 1
                    self.add(f"{s}.cold_ns", cold_ms * scale * 1000000)
                    self.add(f"{s}.cold_pull_ns", cold_ms * scale * 400000)
            self.add("batch_subjects", "ours tiny go python")
            self.add("batch_rows", 100000)
            cpu = {"ours": (0.06, 0.03), "tiny": (0.05, 0.03), "go": (0.42, 0.15), "python": (0.80, 0.07)}
            for s, (user, sys) in cpu.items():
                for run in range(3):
                    self.add(f"{s}.batch_user_s", f"{user + run * 0.01:.2f}")
                    self.add(f"{s}.batch_sys_s", f"{sys:.2f}")
                    self.add(f"{s}.batch_wall_s", "0.25")
                    self.add(f"{s}.batch_rss_kib", 1676)

    def add(self, key, value):
        self.lines.append(f"{key} {value}")

    def callgrind(self, name, total):
        path = os.path.join(self.directory, f"callgrind-{name}.out")
        with open(path, "w", encoding="utf-8") as file:
            file.write(f"# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\nevents: Ir\n")
            file.write(f"fn=(1) main\n0 {total}\n\nsummary: {total}\n\n\ntotals: {total}\n")
        return path

    def hyperfine(self, kind, means):
        path = os.path.join(self.directory, f"{kind}.json")
        results = [
            {"command": s, "mean": m, "stddev": m / 10, "times": [m] * (40 if m < 0.01 else 30)}
            for s, m in means.items()
        ]
        with open(path, "w", encoding="utf-8") as file:
            json.dump({"results": results}, file)
        return path

    def write(self):
        path = os.path.join(self.directory, "measurements")
        with open(path, "w", encoding="utf-8") as file:
            file.write("\n".join(self.lines) + "\n")
        return path

    def bench(self):
        return Bench(parse_measurements(line + "\n" for line in self.lines))


class NumbersAsText(unittest.TestCase):
    def test_thousands(self):
        self.assertEqual(thousands(852936), "852,936")
        self.assertEqual(thousands("999"), "999")
        self.assertEqual(thousands(1000), "1,000")
        self.assertEqual(thousands(124308683.9), "124,308,683")

    def test_ratio_decimals_shrink_as_it_grows(self):
        self.assertEqual(ratio(474104, 852936), "0.56×")
        self.assertEqual(ratio(9.8, 1), "9.80×")
        self.assertEqual(ratio(15.94, 1), "15.9×")
        self.assertEqual(ratio(146.2, 1), "146×")

    def test_ratio_without_a_denominator(self):
        self.assertEqual(ratio(1, 0), "n/a")
        self.assertEqual(ratio(None, 1), "n/a")
        self.assertEqual(ratio(1, None), "n/a")

    def test_ms(self):
        self.assertEqual(ms(0.00078, 0.00012), "0.78 ± 0.12 ms")
        self.assertEqual(ms(0.1172, 0.007), "117.2 ± 7.0 ms")
        self.assertEqual(ms(2.128, 0.052), "2128 ± 52 ms")
        self.assertEqual(ms(0.085), "85.0 ms")

    def test_secs_and_kib(self):
        self.assertEqual(secs(0.125), "0.12 s")
        self.assertEqual(secs(12.34), "12.3 s")
        self.assertEqual(kib(26612), "26,612 KiB")

    def test_mean_and_sample_standard_deviation(self):
        mean, sd = mean_sd([1.0, 2.0, 3.0, 4.0])
        self.assertAlmostEqual(mean, 2.5)
        self.assertAlmostEqual(sd, 1.2909944487)
        self.assertEqual(mean_sd([5.0]), (5.0, 0.0))
        with self.assertRaises(BadInput):
            mean_sd([])


class Parsing(unittest.TestCase):
    def test_keys_repeat_once_per_sample(self):
        raw = parse_measurements(["a 1\n", "\n", "b some text with spaces\n", "a 2\n"])
        self.assertEqual(raw, {"a": ["1", "2"], "b": ["some text with spaces"]})

    def test_a_line_without_key_is_refused(self):
        with self.assertRaisesRegex(BadInput, "line 2"):
            parse_measurements(["a 1\n", " 2\n"])

    def test_a_missing_key_is_named(self):
        with tempfile.TemporaryDirectory() as directory:
            fixture = Fixture(directory)
            fixture.lines = [line for line in fixture.lines if not line.startswith("tiny.layer_gzip9_bytes")]
            with self.assertRaisesRegex(BadInput, "tiny.layer_gzip9_bytes"):
                fixture.bench()

    def test_a_scalar_measured_twice_is_refused(self):
        with tempfile.TemporaryDirectory() as directory:
            fixture = Fixture(directory)
            fixture.add("ours.binary_bytes", 1)
            with self.assertRaisesRegex(BadInput, "ours.binary_bytes was measured 2 times"):
                fixture.bench()

    def test_callgrind_totals(self):
        with tempfile.TemporaryDirectory() as directory:
            path = Fixture(directory).callgrind("x", 123456789)
            self.assertEqual(report.callgrind_total(path), 123456789)
            empty = os.path.join(directory, "empty.out")
            with open(empty, "w", encoding="utf-8") as file:
                file.write("events: Ir\n")
            with self.assertRaisesRegex(BadInput, "no totals"):
                report.callgrind_total(empty)

    def test_hyperfine_results(self):
        with tempfile.TemporaryDirectory() as directory:
            path = Fixture(directory).hyperfine("x", {"ours": 0.001, "python": 0.08})
            results = report.hyperfine_results(path)
            self.assertEqual(results["ours"], (0.001, 0.0001, 40))
            self.assertEqual(results["python"][2], 30)


class SizesOnly(unittest.TestCase):
    def test_report_has_sizes_instructions_and_goals(self):
        with tempfile.TemporaryDirectory() as directory:
            text = Fixture(directory).bench().report()
        self.assertIn("| ours | 852,936 | 852,936 | 432,555 |\n", text)
        self.assertIn("| ours-tiny | 474,104 (0.56×) | 474,104 (0.56×) | 250,295 (0.58×) |\n", text)
        self.assertIn("### Instructions per row: 100,000 rows", text)
        self.assertIn("| ours | 716,923,307 | 7,169 |\n", text)
        self.assertIn("| release binary ≤ 800,000 bytes | 852,936 | **missed** |", text)
        self.assertIn("| batch ≤ 1,500 instructions per row (callgrind) | 7,169 | **missed** |", text)
        self.assertNotIn("### Batch", text)
        self.assertNotIn("startup", text)

    def test_goals_met_when_below(self):
        with tempfile.TemporaryDirectory() as directory:
            goals = Fixture(directory, instructions=140000000).bench().goals()
        self.assertIn(("batch ≤ 1,500 instructions per row (callgrind)", "1,400", True), goals)

    def test_budgets_kept(self):
        with tempfile.TemporaryDirectory() as directory:
            self.assertEqual(Fixture(directory).bench().over_budget(), [])

    def test_instructions_over_budget(self):
        with tempfile.TemporaryDirectory() as directory:
            over = Fixture(directory, instructions=731100000).bench().over_budget()
        self.assertEqual(over, ["instructions per row 7,311 > 7,310"])

    def test_instructions_at_budget_pass(self):
        with tempfile.TemporaryDirectory() as directory:
            self.assertEqual(Fixture(directory, instructions=731000000).bench().over_budget(), [])

    def test_size_over_budget(self):
        with tempfile.TemporaryDirectory() as directory:
            fixture = Fixture(directory)
            fixture.lines = [l for l in fixture.lines if not l.startswith("tiny.binary_bytes")]
            fixture.add("tiny.binary_bytes", 485001)
            over = fixture.bench().over_budget()
        self.assertEqual(over, ["tiny binary 485,001 > 485,000 bytes"])

    def test_check_needs_the_instruction_count(self):
        with tempfile.TemporaryDirectory() as directory:
            fixture = Fixture(directory)
            fixture.lines = [l for l in fixture.lines if not l.startswith("ours.callgrind_file")]
            bench = fixture.bench()
            self.assertNotIn("Instructions per row", bench.report())
            with self.assertRaisesRegex(BadInput, "instructions per row"):
                bench.over_budget()


class Full(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()
        self.fixture = Fixture(self.directory.name, mode="full")
        self.bench = self.fixture.bench()

    def tearDown(self):
        self.directory.cleanup()

    def test_every_subject_has_every_row(self):
        text = self.bench.report()
        for section in ("### Size", "### Startup and memory", "### Cold start", "### Batch: 100,000 rows"):
            self.assertIn(section, text)
        self.assertIn("| go net/http | the job in Go (bench/go: net/http, encoding/json)", text)
        self.assertIn("| go net/http | 4,829,184 (5.66×) | 4,829,184 (5.66×) | 2,052,682 (4.75×) | 2,100,000 (4.67×) |", text)
        self.assertIn("| go net/http | 2.00 ± 0.20 ms (2.50×) | 120.0 ± 12.0 ms (1.00×) | 716 KiB (1.00×) |", text)
        self.assertIn("| ours-tiny | 600,000,000 (0.84×) | 6,000 |", text)

    def test_batch_cpu_per_row_and_ratios(self):
        fig = self.bench.fig
        self.assertAlmostEqual(fig["ours"]["batch_cpu_s"], 0.10)
        self.assertAlmostEqual(fig["ours"]["batch_cpu_ns_per_row"], 1000)
        self.assertAlmostEqual(fig["python"]["batch_cpu_s"], 0.88)
        text = self.bench.report()
        self.assertIn("| ours | 100.0 ± 10.0 ms | 1,000 ns | 0.25 s ± 0.00 s | 1,676 KiB |", text)
        self.assertIn("| python (bookworm stand-in) | 880.0 ± 10.0 ms (8.80×) | 8,800 ns |", text)
        self.assertIn("| go net/http | 580.0 ± 10.0 ms (5.80×) | 5,800 ns |", text)

    def test_cold_start_and_projection(self):
        ours = self.bench.fig["ours"]
        self.assertAlmostEqual(ours["cold_mean_s"], 0.21)
        self.assertAlmostEqual(ours["cold_stddev_s"], 0.01)
        self.assertAlmostEqual(ours["cold_pull_mean_s"], 0.084)
        self.assertAlmostEqual(ours["projection_50MBps_s"], 449823 / 50e6 + 0.21)
        self.assertEqual(ours["cold_runs"], 3)

    def test_goals(self):
        goals = {goal: (measured, met) for goal, measured, met in self.bench.goals()}
        self.assertEqual(goals["startup ≥ 100× faster than python (exec to exit)"], ("104×", True))
        self.assertEqual(goals["startup no slower than busybox wget (exec to exit)"], ("0.80 ms vs 0.90 ms", True))
        self.assertEqual(goals["pull + first run ≥ 10× faster than python"], ("10.0×", True))
        self.assertEqual(goals["peak RSS ≤ 1,024 KiB (1 MiB)"], ("716 KiB", True))
        self.assertEqual(goals["batch client CPU ≥ 20× less than python's"], ("8.80× less", False))
        self.assertEqual(len(goals), 10)

    def test_json_document(self):
        document = self.bench.json_document()
        self.assertEqual(document["mode"], "full")
        self.assertEqual(document["goals"]["instructions_per_row_max"], 1500)
        self.assertEqual(document["budgets"]["instructions_per_row_max"], 7310)
        ours = document["subjects"]["ours"]
        self.assertEqual(ours["binary_bytes"], 852936)
        self.assertEqual(ours["instructions"], 716923307)
        self.assertEqual(ours["startup_runs"], 40)
        self.assertIn("batch_cpu_ns_per_row", document["subjects"]["go"])
        self.assertNotIn("batch_cpu_s", document["subjects"]["busybox"])
        json.dumps(document)


class Main(unittest.TestCase):
    def run_main(self, fixture, *args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = report.main([fixture.write(), *args])
        return status, out.getvalue(), err.getvalue()

    def test_check_passes_and_writes_json(self):
        with tempfile.TemporaryDirectory() as directory:
            json_path = os.path.join(directory, "figures.json")
            status, out, err = self.run_main(Fixture(directory), "--check", "--json", json_path)
            self.assertEqual(status, 0, err)
            self.assertTrue(out.startswith("## Numbers\n"))
            self.assertIn("every budget kept", err)
            with open(json_path, encoding="utf-8") as file:
                self.assertEqual(json.load(file)["subjects"]["tiny"]["binary_bytes"], 474104)

    def test_check_fails_over_budget_with_one_line(self):
        with tempfile.TemporaryDirectory() as directory:
            status, out, err = self.run_main(Fixture(directory, instructions=800000000), "--check")
        self.assertEqual(status, 1)
        self.assertIn("## Numbers", out)
        self.assertEqual(err, "scripts/bench: budgets exceeded: instructions per row 8,000 > 7,310\n")

    def test_over_budget_without_check_passes(self):
        with tempfile.TemporaryDirectory() as directory:
            status, _, _ = self.run_main(Fixture(directory, instructions=800000000))
        self.assertEqual(status, 0)

    def test_bad_input_is_exit_2_and_prints_no_report(self):
        with tempfile.TemporaryDirectory() as directory:
            fixture = Fixture(directory)
            fixture.lines.remove("mode sizes-only")
            status, out, err = self.run_main(fixture, "--check")
        self.assertEqual(status, 2)
        self.assertEqual(out, "")
        self.assertIn("the measurements lack mode", err)


if __name__ == "__main__":
    unittest.main()
