"""Unit tests of bench/report.py (run by scripts/test):
python3 -m unittest discover -s bench -p 'test_*.py'"""

import json
import unittest

from report import CONCURRENCY_CASES, GOALS, BadInput, Bench, exits, kib, mean_sd, mib, ms, ratio, secs, thousands

META = {
    "measured_at": "2026-11-28 23:00 UTC",
    "revision": "abc123",
    "cores": 2,
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
    "ours": (340576, 340576, 184044, 189652),
    "tiny": (263560, 263560, 149433, 154036),
    "busybox": (1982256, 1982256, 1027989, 1064304),
    "go": (4829184, 4829184, 2052682, 2100000),
    "python": (6840645, 124308683, 45726133, 47111490),
}

ALL = "sizes startup cold batch instructions peers concurrency"


class Fixture:
    """Raw measurements as bench/bench.py records them."""

    def __init__(self, sections="sizes instructions", instructions=120553048):
        self.raw = {}
        chosen = sections.split()
        subjects = ["ours", "tiny", "busybox", "go", "python"] if {"startup", "cold", "batch"} & set(chosen) else ["ours", "tiny"]
        self.add("sections", sections)
        self.add("subjects", " ".join(subjects))
        for name, value in META.items():
            self.add(name, value)
        for s in subjects:
            binary, image, layer, pushed = SIZES[s]
            self.add(f"{s}.tag", f"image-of-{s}")
            self.add(f"{s}.binary_bytes", binary)
            self.add(f"{s}.image_bytes", image)
            self.add(f"{s}.layer_gzip9_bytes", layer)
            if "cold" in chosen:
                self.add(f"{s}.pushed_bytes", pushed)
                self.add(f"{s}.push_s", 0.5)
                for cold_ms in (200, 210, 220):
                    scale = 10 if s == "python" else 1
                    self.add(f"{s}.cold_ns", cold_ms * scale * 1000000)
                    self.add(f"{s}.cold_pull_ns", cold_ms * scale * 400000)
        if "instructions" in chosen:
            self.add("callgrind_subjects", "ours tiny" if sections == ALL else "ours")
            self.add("instruction_rows", 100000)
            self.add("ours.instructions", instructions)
            if sections == ALL:
                self.add("tiny.instructions", 116418797)
        if "startup" in chosen:
            startup = {"ours": 0.0008, "tiny": 0.0007, "busybox": 0.0009, "go": 0.002, "python": 0.083}
            for s in subjects:
                self.add(f"{s}.startup_mean_s", startup[s])
                self.add(f"{s}.startup_stddev_s", startup[s] / 10)
                self.add(f"{s}.startup_runs", 40 if startup[s] < 0.01 else 30)
                self.add(f"{s}.docker_run_mean_s", 0.12)
                self.add(f"{s}.docker_run_stddev_s", 0.012)
                self.add(f"{s}.docker_run_runs", 30)
                for rss in (470, 484, 480, 475, 460):
                    self.add(f"{s}.peak_rss_kib", rss * (30 if s == "python" else 1))
        if "batch" in chosen:
            self.add("batch_subjects", "ours tiny go python")
            self.add("batch_rows", 100000)
            cpu = {"ours": (0.06, 0.03), "tiny": (0.05, 0.03), "go": (0.42, 0.15), "python": (0.80, 0.07)}
            for s, (user, sys) in cpu.items():
                for run in range(3):
                    self.add(f"{s}.batch_user_s", user + run * 0.01)
                    self.add(f"{s}.batch_sys_s", sys)
                    self.add(f"{s}.batch_wall_s", 0.25)
                    self.add(f"{s}.batch_rss_kib", 1676)
        if "peers" in chosen:
            self.add("stall.rows", 256)
            self.add("stall.concurrency", 64)
            self.add("stall.request_timeout", "2s")
            self.add("stall.declared_bytes", 10485760)
            for rss in (659260, 660000, 658000):
                self.add("stall.exit", 69)
                self.add("stall.wall_s", 2.1)
                self.add("stall.peak_rss_kib", rss)
                self.add("stall.requests", 67)
                self.add("stall.connections", 67)
                self.add("stall.stalled_at_once", 65)
            for case in ("close", "close_header"):
                self.add(f"{case}.rows", 200)
                self.add(f"{case}.concurrency", 1)
            for wall in (0.009, 0.011):
                self.add("close.exit", 69)
                self.add("close.wall_s", wall)
                self.add("close.requests", 5)
                self.add("close.connections", 5)
            for wall in (0.15, 0.17):
                self.add("close_header.exit", 0)
                self.add("close_header.wall_s", wall)
                self.add("close_header.requests", 200)
                self.add("close_header.connections", 200)

        if "concurrency" in chosen:
            for case in CONCURRENCY_CASES:
                name, slots, batches = case["case"], case["slots"], case["batches"]
                # Fixed settings take batches / setting rounds at best; auto
                # 5% more than the best, with 1% of 429s.
                best = min(case["fixed"], key=lambda n: abs(n - slots))
                for setting in [*case["fixed"], "auto"]:
                    at = slots if setting == "auto" else min(setting, slots)
                    rounds = batches / at * (1.05 if setting == "auto" else 1)
                    for run in range(2):
                        prefix = f"concurrency.{name}.{setting}"
                        self.add(f"{prefix}.wall_s", rounds * case["latency_ms"] / 1000 + run * 0.01)
                        refused = batches // 100 if setting == "auto" else 0
                        self.add(f"{prefix}.requests", batches + refused)
                        self.add(f"{prefix}.refused", refused)
                        self.add(f"{prefix}.peak_in_flight", slots + 1 if setting == "auto" else setting)
                        if setting == "auto":
                            self.add(f"{prefix}.limits", f"1 to {slots + 3}")
                del best

    def add(self, key, value):
        self.raw.setdefault(key, []).append(value)

    def replace(self, key, *values):
        self.raw[key] = list(values)

    def bench(self):
        return Bench(self.raw)


def goal_rows(bench):
    return {goal: (measured, met) for goal, measured, met in bench.goals()}


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

    def test_secs_kib_mib(self):
        self.assertEqual(secs(0.125), "0.12 s")
        self.assertEqual(secs(12.34), "12.3 s")
        self.assertEqual(kib(26612), "26,612 KiB")
        self.assertEqual(mib(65536), "64 MiB")
        self.assertEqual(mib(659260), "643.8 MiB")

    def test_exits(self):
        self.assertEqual(exits([0, 0, 0]), "exit 0")
        self.assertEqual(exits([69, 0, 69]), "exit 69 (2 runs), 0 (1 run)")

    def test_mean_and_sample_standard_deviation(self):
        mean, sd = mean_sd([1.0, 2.0, 3.0, 4.0])
        self.assertAlmostEqual(mean, 2.5)
        self.assertAlmostEqual(sd, 1.2909944487)
        self.assertEqual(mean_sd([5.0]), (5.0, 0.0))
        with self.assertRaises(BadInput):
            mean_sd([])


class Measurements(unittest.TestCase):
    def test_a_missing_key_is_named(self):
        fixture = Fixture()
        del fixture.raw["tiny.layer_gzip9_bytes"]
        with self.assertRaisesRegex(BadInput, "tiny.layer_gzip9_bytes"):
            fixture.bench()

    def test_a_scalar_measured_twice_is_refused(self):
        fixture = Fixture()
        fixture.add("ours.binary_bytes", 1)
        with self.assertRaisesRegex(BadInput, "ours.binary_bytes was measured 2 times"):
            fixture.bench()

    def test_unknown_section_and_missing_sizes(self):
        fixture = Fixture()
        fixture.replace("sections", "sizes speed")
        with self.assertRaisesRegex(BadInput, "unknown section 'speed'"):
            fixture.bench()
        fixture.replace("sections", "instructions")
        with self.assertRaisesRegex(BadInput, "lack sizes"):
            fixture.bench()

    def test_not_a_dict_of_lists(self):
        with self.assertRaisesRegex(BadInput, "not a list"):
            Bench({"sections": "sizes"})


class SizesOnly(unittest.TestCase):
    def test_report_has_sizes_instructions_and_every_goal(self):
        bench = Fixture().bench()
        text = bench.report()
        self.assertIn("| ours | 340,576 | 340,576 | 184,044 |\n", text)
        self.assertIn("| ours-tiny | 263,560 (0.77×) | 263,560 (0.77×) | 149,433 (0.81×) |\n", text)
        self.assertIn("### Instructions per row: 100,000 rows", text)
        self.assertIn("| ours | 120,553,048 | 1,206 |\n", text)
        self.assertIn("| Release binary / gzip -9 ≤ 460,000 B / ≤ 245,000 B | 340,576 B / 184,044 B | met |", text)
        self.assertIn("| Tiny binary / gzip -9 ≤ 370,000 B / ≤ 205,000 B | 263,560 B / 149,433 B | met |", text)
        self.assertIn("| Batch, 100k rows ≤ 1,700 instructions per row | 1,206 | met |", text)
        self.assertIn("| Exec to exit no slower than busybox wget | — | not measured |", text)
        self.assertNotIn("### Batch", text)
        self.assertNotIn("### Startup", text)
        self.assertNotIn("### Hostile", text)
        self.assertEqual(len(bench.goals()), 8 + len(CONCURRENCY_CASES))
        self.assertNotIn("### Concurrency", text)

    def test_goals_missed(self):
        fixture = Fixture(instructions=170000001)
        fixture.replace("tiny.layer_gzip9_bytes", 205001)
        goals = goal_rows(fixture.bench())
        self.assertEqual(goals["Batch, 100k rows ≤ 1,700 instructions per row"], ("1,700", False))
        self.assertEqual(goals["Tiny binary / gzip -9 ≤ 370,000 B / ≤ 205,000 B"], ("263,560 B / 205,001 B", False))

    def test_goals_met_at_the_edge(self):
        fixture = Fixture(instructions=170000000)
        fixture.replace("ours.binary_bytes", 460000)
        goals = goal_rows(fixture.bench())
        self.assertTrue(goals["Batch, 100k rows ≤ 1,700 instructions per row"][1])
        self.assertTrue(goals["Release binary / gzip -9 ≤ 460,000 B / ≤ 245,000 B"][1])
        self.assertEqual(fixture.bench().over_budget(), [])

    def test_check_holds_the_size_and_instruction_goals(self):
        fixture = Fixture(instructions=170100000)
        fixture.replace("ours.binary_bytes", 460001)
        fixture.replace("tiny.layer_gzip9_bytes", 205001)
        self.assertEqual(
            fixture.bench().over_budget(),
            [
                "release binary 460,001 > 460,000 bytes",
                "tiny layer (gzip -9) 205,001 > 205,000 bytes",
                "instructions per row 1,701 > 1,700",
            ],
        )

    def test_check_needs_the_instruction_count(self):
        fixture = Fixture(sections="sizes")
        bench = fixture.bench()
        self.assertNotIn("Instructions per row", bench.report())
        with self.assertRaisesRegex(BadInput, "--check needs the instructions per row"):
            bench.over_budget()


class Full(unittest.TestCase):
    def setUp(self):
        self.bench = Fixture(sections=ALL).bench()

    def test_every_section(self):
        text = self.bench.report()
        for section in (
            "### Size",
            "### Startup and memory",
            "### Cold start",
            "### Batch: 100,000 rows",
            "### Instructions per row",
            "### Hostile servers",
            "### Goals",
        ):
            self.assertIn(section, text)
        self.assertIn("| go net/http | the job in Go (bench/go: net/http, encoding/json)", text)
        self.assertIn("| go net/http | 4,829,184 (14.2×) | 4,829,184 (14.2×) | 2,052,682 (11.2×) | 2,100,000 (11.1×) |", text)
        self.assertIn("| go net/http | 2.00 ± 0.20 ms (2.50×) | 120.0 ± 12.0 ms (1.00×) | 484 KiB (1.00×) |", text)
        self.assertIn("| ours-tiny | 116,418,797 (0.97×) | 1,164 |", text)
        self.assertIn("Binary bytes for python: the interpreter (python3.11)", text)

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
        self.assertAlmostEqual(ours["projection_50MBps_s"], 189652 / 50e6 + 0.21)
        self.assertEqual(ours["cold_runs"], 3)

    def test_hostile_servers_table(self):
        text = self.bench.report()
        self.assertIn(
            "| declares Content-Length: 10,485,760, sends 1 byte, then stalls | 256 rows, BATCH_SIZE=1, "
            "CONCURRENCY=64, REQUEST_TIMEOUT=2s, RETRY_DEADLINE=0 | exit 69 | 2100 ± 0 ms | 660,000 KiB | "
            "up to 67 connections, 65 stalled at once |",
            text,
        )
        self.assertIn(
            "| answers, then closes without Connection: close | 200 rows, BATCH_SIZE=1, CONCURRENCY=1, "
            "RETRY_DEADLINE=0 | exit 69 | 10.00 ± 1.41 ms | | 5 to 5 requests answered, over 5 to 5 connections |",
            text,
        )

    def test_goals(self):
        goals = goal_rows(self.bench)
        self.assertEqual(len(goals), 8 + len(CONCURRENCY_CASES))
        self.assertEqual(
            goals[
                "Batch client CPU ≥ 12× below the Python requests.Session client and ≥ 5× below the Go client, "
                "same rows, same run"
            ],
            ("8.80× below python, 5.80× below go", False),
        )
        self.assertEqual(goals["Exec to exit no slower than busybox wget"], ("0.80 ms vs 0.90 ms", True))
        self.assertEqual(goals["Peak RSS, one row ≤ 1 MiB"], ("484 KiB", True))
        self.assertEqual(
            goals["Peak RSS, hostile server declaring 10 MiB at CONCURRENCY=64 ≤ 64 MiB"],
            ("660,000 KiB (644.5 MiB)", False),
        )
        self.assertEqual(
            goals[
                "Server closing after each reply, 200 one-row requests, RETRY_DEADLINE=0: exit 0, within 2× the "
                "time with Connection: close"
            ],
            ("exit 69 over 2 runs, at most 5 of 200 requests answered; 0.06× the time (10.00 ms vs 160.0 ms)", False),
        )

    def test_closing_server_goal_met_and_missed_on_time(self):
        name = (
            "Server closing after each reply, 200 one-row requests, RETRY_DEADLINE=0: exit 0, within 2× the time "
            "with Connection: close"
        )
        fixture = Fixture(sections=ALL)
        fixture.replace("close.exit", 0, 0)
        fixture.replace("close.requests", 200, 200)
        fixture.replace("close.wall_s", 0.30, 0.34)
        self.assertEqual(goal_rows(fixture.bench())[name], ("exit 0, 2.00× the time (320.0 ms vs 160.0 ms)", True))
        fixture.replace("close.wall_s", 0.33, 0.34)
        self.assertEqual(goal_rows(fixture.bench())[name][1], False)
        fixture.replace("close_header.exit", 0, 76)
        self.assertEqual(goal_rows(fixture.bench())[name], ("exit 0, but with Connection: close exit 0 (1 run), 76 (1 run); 2.09× the time (335.0 ms vs 160.0 ms)", False))

    def test_cpu_goal_needs_both_ratios(self):
        name = (
            "Batch client CPU ≥ 12× below the Python requests.Session client and ≥ 5× below the Go client, "
            "same rows, same run"
        )
        fixture = Fixture(sections=ALL)
        fixture.replace("python.batch_user_s", 1.13, 1.13, 1.13)
        self.assertEqual(goal_rows(fixture.bench())[name], ("12.0× below python, 5.80× below go", True))
        fixture.replace("go.batch_user_s", 0.34, 0.34, 0.34)
        self.assertFalse(goal_rows(fixture.bench())[name][1])

    def test_json_document(self):
        document = self.bench.json_document()
        self.assertEqual(document["sections"], ALL.split())
        self.assertEqual(document["goals"], GOALS)
        self.assertIs(document["goals_met"]["Peak RSS, one row ≤ 1 MiB"], True)
        ours = document["subjects"]["ours"]
        self.assertEqual(ours["binary_bytes"], 340576)
        self.assertEqual(ours["instructions"], 120553048)
        self.assertEqual(ours["startup_runs"], 40)
        self.assertIn("batch_cpu_ns_per_row", document["subjects"]["go"])
        self.assertNotIn("batch_cpu_s", document["subjects"]["busybox"])
        self.assertEqual(document["hostile_servers"]["stall"]["peak_rss_kib"], 660000)
        self.assertEqual(document["hostile_servers"]["close"]["exits"], [69, 69])
        json.dumps(document)


class OnlySomeSections(unittest.TestCase):
    def test_peers_alone(self):
        bench = Fixture(sections="sizes peers").bench()
        self.assertEqual(bench.subjects, ["ours", "tiny"])
        text = bench.report()
        self.assertIn("### Hostile servers", text)
        self.assertNotIn("### Instructions", text)
        goals = goal_rows(bench)
        self.assertEqual(goals["Batch, 100k rows ≤ 1,700 instructions per row"], ("—", None))
        self.assertFalse(goals["Peak RSS, hostile server declaring 10 MiB at CONCURRENCY=64 ≤ 64 MiB"][1])


if __name__ == "__main__":
    unittest.main()


class ConcurrencySection(unittest.TestCase):
    def test_table_and_goals_met(self):
        bench = Fixture(sections="sizes concurrency").bench()
        text = bench.report()
        self.assertIn("### Concurrency: fixed settings and auto", text)
        self.assertIn(
            "| 8 at once, 429 past that, 40 ms a batch; 800 batches | 4 | 8.00 s ± 0.01 s | 800 | 0 | 4 |\n", text
        )
        self.assertIn("|  | **8** | 4.00 s ± 0.01 s | 800 | 0 | 8 |\n", text)
        self.assertIn("|  | auto (limit 1 to 11, 1 to 11) | 4.21 s ± 0.01 s | 808 | 8 | 9 |\n", text)
        goals = goal_rows(bench)
        goal = (
            "CONCURRENCY=auto, service serving 8 at once, 429 past that, 40 ms a batch, 800 batches: within 15% "
            "of the best fixed CONCURRENCY's wall time, 429s ≤ 5% of requests"
        )
        self.assertEqual(goals[goal], ("1.05× the time of CONCURRENCY=8 (4.21 s vs 4.00 s), 429s 1.0%", True))
        goal = (
            "CONCURRENCY=auto, service serving 4 at once, queues the rest, 40 ms a batch, 400 batches: within 15% "
            "of the best fixed CONCURRENCY's wall time, ≤ 12 in flight at the peak"
        )
        self.assertEqual(goals[goal][1], True)
        self.assertIn("peak 5", goals[goal][0])
        goal = (
            "CONCURRENCY=auto, service serving 1 at once, 429 past that, 50 ms a batch, 40 batches: within 15% "
            "of CONCURRENCY=1's wall time"
        )
        self.assertTrue(goals[goal][0].startswith("1.05× the time of CONCURRENCY=1"), goals[goal])
        document = bench.json_document()
        self.assertEqual(document["concurrency"]["refuse64"]["versus"], "64")

    def test_goals_missed(self):
        fixture = Fixture(sections="sizes concurrency")
        fixture.replace("concurrency.queue4.auto.peak_in_flight", 13, 9)
        fixture.replace("concurrency.refuse8.auto.refused", 50, 50)
        fixture.replace("concurrency.one_slot.auto.wall_s", 2.5, 2.5)
        met = [met for goal, _, met in fixture.bench().goals() if goal.startswith("CONCURRENCY=auto")]
        # refuse8, refuse8_short, refuse64, queue4, one_slot
        self.assertEqual(met, [False, True, True, False, False])

    def test_a_setting_not_measured_is_named(self):
        fixture = Fixture(sections="sizes concurrency")
        del fixture.raw["concurrency.refuse64.32.wall_s"]
        with self.assertRaisesRegex(BadInput, "concurrency.refuse64.32.wall_s"):
            fixture.bench()
