#!/usr/bin/env python3
"""The report of scripts/bench: tables, ratios, goals, budgets, the JSON file.

scripts/bench measures and writes what it measured, raw, to a measurements
file: one `KEY VALUE` per line, where VALUE is the rest of the line. A key
that holds samples (one per run) appears once per sample. Keys:

  mode                     full or sizes-only
  GOAL_* / BUDGET_*        scripts/bench's goal and budget constants
  subjects, batch_subjects the subjects, in table order, space-separated
  SUBJECT.tag              the subject's image tag
  SUBJECT.binary_bytes, .image_bytes, .layer_gzip9_bytes, .pushed_bytes,
  .push_s                  sizes, and what scripts/push printed
  SUBJECT.peak_rss_kib     samples; the largest is reported
  SUBJECT.cold_ns, .cold_pull_ns
                           samples: pull + first run, and the pull alone
  SUBJECT.batch_wall_s, .batch_user_s, .batch_sys_s, .batch_rss_kib
                           samples, one per batch run (bench/rusage.py;
                           the RSS from /usr/bin/time)
  SUBJECT.callgrind_file   a callgrind output file of the instruction run
  hyperfine.startup, hyperfine.docker_run
                           hyperfine --export-json files, commands named
                           after the subjects
  the rest                 text for the report (versions, machine, counts)

This program renders the markdown report on stdout, writes the JSON file with
--json, and with --check exits 1 when a budget is exceeded.
"""

import argparse
import json
import math
import sys

EXIT_OVER_BUDGET = 1
EXIT_BAD_INPUT = 2

NAMES = {
    "ours": "ours",
    "tiny": "ours-tiny",
    "busybox": "busybox wget",
    "go": "go net/http",
    "python": "python (bookworm stand-in)",
}

# The keys of each subject in the JSON file, in order.
JSON_KEYS = (
    "binary_bytes image_bytes layer_gzip9_bytes pushed_bytes push_s "
    "startup_mean_s startup_stddev_s startup_runs docker_run_mean_s docker_run_stddev_s docker_run_runs "
    "peak_rss_kib cold_mean_s cold_stddev_s cold_pull_mean_s cold_runs projection_50MBps_s "
    "batch_rows batch_runs batch_cpu_s batch_cpu_stddev_s batch_user_s batch_sys_s "
    "batch_wall_s batch_wall_stddev_s batch_peak_rss_kib batch_cpu_ns_per_row "
    "instructions instruction_rows instructions_per_row"
).split()

# The goal constants of scripts/bench, by their names in the JSON file.
JSON_GOALS = {
    "binary_bytes_max": "GOAL_BINARY_BYTES",
    "tiny_binary_bytes_max": "GOAL_TINY_BINARY_BYTES",
    "layer_gzip9_bytes_max": "GOAL_LAYER_BYTES",
    "tiny_layer_gzip9_bytes_max": "GOAL_TINY_LAYER_BYTES",
    "startup_vs_python_min": "GOAL_STARTUP_VS_PYTHON",
    "cold_vs_python_min": "GOAL_COLD_VS_PYTHON",
    "peak_rss_kib_max": "GOAL_PEAK_RSS_KIB",
    "batch_cpu_vs_python_min": "GOAL_BATCH_CPU_VS_PYTHON",
    "instructions_per_row_max": "GOAL_INSTRUCTIONS_PER_ROW",
}
JSON_BUDGETS = {
    "binary_bytes_max": "BUDGET_BINARY_BYTES",
    "tiny_binary_bytes_max": "BUDGET_TINY_BINARY_BYTES",
    "layer_gzip9_bytes_max": "BUDGET_LAYER_BYTES",
    "tiny_layer_gzip9_bytes_max": "BUDGET_TINY_LAYER_BYTES",
    "instructions_per_row_max": "BUDGET_INSTRUCTIONS_PER_ROW",
}


class BadInput(Exception):
    """The measurements are incomplete or malformed."""


# --- numbers as text ----------------------------------------------------------


def thousands(n):
    """852936 -> '852,936' (truncated to a whole number first)."""
    return f"{int(float(n)):,}"


def ratio(a, b):
    """a/b as '12.3×', with fewer decimals as it grows; 'n/a' without b."""
    if a is None or b is None or b == 0:
        return "n/a"
    r = a / b
    if r >= 100:
        return f"{r:.0f}×"
    if r >= 10:
        return f"{r:.1f}×"
    return f"{r:.2f}×"


def ms(seconds, stddev=None):
    """Seconds as milliseconds, with as many decimals as the mean deserves."""
    m = seconds * 1000
    digits = 2 if m < 10 else (1 if m < 1000 else 0)
    if stddev is None:
        return f"{m:.{digits}f} ms"
    return f"{m:.{digits}f} ± {stddev * 1000:.{digits}f} ms"


def secs(seconds):
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def kib(n):
    return f"{thousands(n)} KiB"


def mean_sd(samples):
    """The mean and the sample standard deviation (0 for one sample)."""
    if not samples:
        raise BadInput("no samples to average")
    mean = sum(samples) / len(samples)
    if len(samples) == 1:
        return mean, 0.0
    variance = sum((x - mean) ** 2 for x in samples) / (len(samples) - 1)
    return mean, math.sqrt(variance)


# --- reading the measurements --------------------------------------------------


def parse_measurements(lines):
    """`KEY VALUE` lines -> {key: [value, ...]}, in the order they came."""
    raw = {}
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        key, _, value = line.partition(" ")
        if not key or key != key.strip():
            raise BadInput(f"measurements line {number} has no key: {line!r}")
        raw.setdefault(key, []).append(value)
    return raw


class Raw:
    """Typed access to the measurements, with one clear error per gap."""

    def __init__(self, raw):
        self.raw = raw

    def has(self, key):
        return key in self.raw

    def text(self, key, default=None):
        values = self.raw.get(key)
        if not values:
            if default is not None:
                return default
            raise BadInput(f"the measurements lack {key}")
        if len(values) > 1:
            raise BadInput(f"{key} was measured {len(values)} times, once expected")
        return values[0]

    def number(self, key):
        text = self.text(key)
        try:
            return float(text)
        except ValueError:
            raise BadInput(f"{key} is not a number: {text!r}") from None

    def samples(self, key):
        values = self.raw.get(key)
        if not values:
            raise BadInput(f"the measurements lack {key}")
        try:
            return [float(v) for v in " ".join(values).split()]
        except ValueError:
            raise BadInput(f"{key} has a sample that is not a number: {values!r}") from None

    def words(self, key):
        return self.text(key).split()


def hyperfine_results(path):
    """A hyperfine --export-json file -> {command name: (mean, stddev, runs)}."""
    try:
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
        return {
            r["command"]: (float(r["mean"]), float(r["stddev"] or 0.0), len(r["times"]))
            for r in document["results"]
        }
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BadInput(f"cannot read hyperfine's results from {path}: {error}") from None


def callgrind_total(path):
    """The instructions a callgrind output file counted, over all threads."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            for line in file:
                # `summary:` in older formats, `totals:` in every one.
                for prefix in ("totals:", "summary:"):
                    if line.startswith(prefix):
                        return int(line[len(prefix) :].split()[0])
    except (OSError, ValueError, IndexError) as error:
        raise BadInput(f"cannot read callgrind's totals from {path}: {error}") from None
    raise BadInput(f"{path} has no totals: line (not a callgrind output file?)")


# --- figures -------------------------------------------------------------------


class Bench:
    """The measurements, with every figure of the report derived from them."""

    def __init__(self, raw):
        self.raw = Raw(raw)
        r = self.raw
        self.mode = r.text("mode")
        if self.mode not in ("full", "sizes-only"):
            raise BadInput(f"mode is {self.mode!r}, not full or sizes-only")
        self.full = self.mode == "full"
        self.subjects = r.words("subjects")
        self.batch_subjects = r.words("batch_subjects") if self.full else []
        self.callgrind_subjects = [s for s in self.subjects if r.has(f"{s}.callgrind_file")]
        for s in self.subjects + self.batch_subjects:
            if s not in NAMES:
                raise BadInput(f"unknown subject {s!r}")
        if "ours" not in self.subjects:
            raise BadInput("the subjects lack ours, to which every ratio refers")
        self.fig = {s: {} for s in self.subjects}
        self._sizes()
        if self.full:
            self._startup()
            self._cold()
            self._batch()
        self._instructions()

    def const(self, name):
        return self.raw.number(name)

    def _sizes(self):
        keys = ["binary_bytes", "image_bytes", "layer_gzip9_bytes"]
        if self.full:
            keys += ["pushed_bytes", "push_s"]
        for s in self.subjects:
            for key in keys:
                self.fig[s][key] = self.raw.number(f"{s}.{key}")

    def _startup(self):
        for kind in ("startup", "docker_run"):
            results = hyperfine_results(self.raw.text(f"hyperfine.{kind}"))
            for s in self.subjects:
                if s not in results:
                    raise BadInput(f"hyperfine's {kind} results lack {s}")
                mean, stddev, runs = results[s]
                self.fig[s][f"{kind}_mean_s"] = mean
                self.fig[s][f"{kind}_stddev_s"] = stddev
                self.fig[s][f"{kind}_runs"] = runs
        for s in self.subjects:
            self.fig[s]["peak_rss_kib"] = max(self.raw.samples(f"{s}.peak_rss_kib"))

    def _cold(self):
        bandwidth = self.const("PROJECTION_BYTES_PER_SECOND")
        for s in self.subjects:
            f = self.fig[s]
            cold = [ns / 1e9 for ns in self.raw.samples(f"{s}.cold_ns")]
            f["cold_mean_s"], f["cold_stddev_s"] = mean_sd(cold)
            f["cold_pull_mean_s"], _ = mean_sd([ns / 1e9 for ns in self.raw.samples(f"{s}.cold_pull_ns")])
            f["cold_runs"] = len(cold)
            # Not a measurement: the bytes at a given bandwidth, plus the
            # measured time.
            f["projection_50MBps_s"] = f["pushed_bytes"] / bandwidth + f["cold_mean_s"]

    def _batch(self):
        rows = self.raw.number("batch_rows")
        for s in self.batch_subjects:
            f = self.fig[s]
            users = self.raw.samples(f"{s}.batch_user_s")
            syss = self.raw.samples(f"{s}.batch_sys_s")
            walls = self.raw.samples(f"{s}.batch_wall_s")
            if not len(users) == len(syss) == len(walls):
                raise BadInput(f"{s}'s batch runs have unequal numbers of samples")
            cpus = [u + k for u, k in zip(users, syss)]
            f["batch_cpu_s"], f["batch_cpu_stddev_s"] = mean_sd(cpus)
            f["batch_user_s"], _ = mean_sd(users)
            f["batch_sys_s"], _ = mean_sd(syss)
            f["batch_wall_s"], f["batch_wall_stddev_s"] = mean_sd(walls)
            f["batch_peak_rss_kib"] = max(self.raw.samples(f"{s}.batch_rss_kib"))
            f["batch_rows"] = rows
            f["batch_runs"] = len(cpus)
            f["batch_cpu_ns_per_row"] = f["batch_cpu_s"] * 1e9 / rows

    def _instructions(self):
        if not self.callgrind_subjects:
            return
        rows = self.raw.number("instruction_rows")
        for s in self.callgrind_subjects:
            total = callgrind_total(self.raw.text(f"{s}.callgrind_file"))
            self.fig[s]["instructions"] = total
            self.fig[s]["instruction_rows"] = rows
            self.fig[s]["instructions_per_row"] = total / rows

    # --- goals and budgets -----------------------------------------------------

    def goals(self):
        """[(goal, measured, met)] in report order."""
        ours, tiny = self.fig["ours"], self.fig.get("tiny", {})
        rows = []

        def size(text, figure, goal):
            if figure is not None:
                rows.append((f"{text} ≤ {thousands(goal)} bytes", thousands(figure), figure <= goal))

        size("release binary", ours["binary_bytes"], self.const("GOAL_BINARY_BYTES"))
        size("tiny binary", tiny.get("binary_bytes"), self.const("GOAL_TINY_BINARY_BYTES"))
        size("layer (gzip -9)", ours["layer_gzip9_bytes"], self.const("GOAL_LAYER_BYTES"))
        size("tiny layer (gzip -9)", tiny.get("layer_gzip9_bytes"), self.const("GOAL_TINY_LAYER_BYTES"))
        if "instructions_per_row" in ours:
            goal = self.const("GOAL_INSTRUCTIONS_PER_ROW")
            per_row = ours["instructions_per_row"]
            rows.append(
                (f"batch ≤ {thousands(goal)} instructions per row (callgrind)", thousands(round(per_row)), per_row <= goal)
            )
        if self.full:
            f = self.fig
            k = self.const("GOAL_STARTUP_VS_PYTHON")
            rows.append(
                (
                    f"startup ≥ {k:g}× faster than python (exec to exit)",
                    ratio(f["python"]["startup_mean_s"], ours["startup_mean_s"]),
                    ours["startup_mean_s"] * k <= f["python"]["startup_mean_s"],
                )
            )
            rows.append(
                (
                    "startup no slower than busybox wget (exec to exit)",
                    f"{ms(ours['startup_mean_s'])} vs {ms(f['busybox']['startup_mean_s'])}",
                    ours["startup_mean_s"] <= f["busybox"]["startup_mean_s"],
                )
            )
            k = self.const("GOAL_COLD_VS_PYTHON")
            rows.append(
                (
                    f"pull + first run ≥ {k:g}× faster than python",
                    ratio(f["python"]["cold_mean_s"], ours["cold_mean_s"]),
                    ours["cold_mean_s"] * k <= f["python"]["cold_mean_s"],
                )
            )
            goal = self.const("GOAL_PEAK_RSS_KIB")
            rows.append(
                (
                    f"peak RSS ≤ {thousands(goal)} KiB (1 MiB)",
                    kib(ours["peak_rss_kib"]),
                    ours["peak_rss_kib"] <= goal,
                )
            )
            k = self.const("GOAL_BATCH_CPU_VS_PYTHON")
            rows.append(
                (
                    f"batch client CPU ≥ {k:g}× less than python's",
                    f"{ratio(f['python']['batch_cpu_s'], ours['batch_cpu_s'])} less",
                    ours["batch_cpu_s"] * k <= f["python"]["batch_cpu_s"],
                )
            )
        return rows

    def over_budget(self):
        """What exceeds a budget, one phrase each; empty when all are kept."""
        ours, tiny = self.fig["ours"], self.fig.get("tiny", {})
        over = []
        checks = [
            ("release binary", ours["binary_bytes"], "BUDGET_BINARY_BYTES", "bytes"),
            ("tiny binary", tiny.get("binary_bytes"), "BUDGET_TINY_BINARY_BYTES", "bytes"),
            ("layer", ours["layer_gzip9_bytes"], "BUDGET_LAYER_BYTES", "bytes"),
            ("tiny layer", tiny.get("layer_gzip9_bytes"), "BUDGET_TINY_LAYER_BYTES", "bytes"),
            ("instructions per row", ours.get("instructions_per_row"), "BUDGET_INSTRUCTIONS_PER_ROW", ""),
        ]
        for text, figure, name, unit in checks:
            if figure is None:
                raise BadInput(f"--check needs the {text}, which was not measured")
            budget = self.const(name)
            if figure > budget:
                shown = thousands(round(figure)) if unit == "" else thousands(figure)
                over.append(f"{text} {shown} > {thousands(budget)}{' ' + unit if unit else ''}")
        return over

    # --- the report ------------------------------------------------------------

    def cell(self, text, s, metric):
        """A table cell: the text, and for other subjects its ratio to ours."""
        if s == "ours":
            return text
        return f"{text} ({ratio(self.fig[s].get(metric), self.fig['ours'].get(metric))})"

    def label(self, s):
        r = self.raw
        tag = r.text(f"{s}.tag")
        if s == "ours":
            return f"the release binary (stable, opt-level z, LTO, panic=abort), image {tag}"
        if s == "tiny":
            return f"nightly -Zbuild-std with panic=immediate-abort, image {tag}"
        if s == "busybox":
            return f"busybox wget from Debian busybox-static, in a FROM scratch image ({tag}); busybox-static {r.text('busybox_version')}"
        if s == "go":
            return (
                "the job in Go (bench/go: net/http, encoding/json), CGO_ENABLED=0, -trimpath -ldflags \"-s -w\", "
                f"in a FROM scratch image ({tag}); {r.text('go_version')}"
            )
        return (
            "python3 + requests on debootstrap bookworm minbase (stand-in for python:3.10-slim-buster), "
            f"with bench/peers/service_to_service.py; {r.text('python_versions')}"
        )

    def report(self):
        r, fig, out = self.raw, self.fig, []
        put = out.append
        put("## Numbers")
        put("")
        put(
            f"Measured {r.text('measured_at')} on {r.text('cores')} cores, {r.text('cpu')} "
            f"(Linux {r.text('kernel')}, docker {r.text('docker')}), at revision {r.text('revision')}; "
            f"{r.text('rustc_stable')}, tiny with {r.text('rustc_tiny')}."
        )
        put("Ratios in parentheses are to ours (above 1× means more than ours).")
        put("")
        put("| subject | what it is |")
        put("|---|---|")
        for s in self.subjects:
            put(f"| {NAMES[s]} | {self.label(s)} |")
        put("")
        put("### Size")
        put("")
        if self.full:
            put("| subject | binary bytes | image bytes (uncompressed) | layer bytes (gzip -9) | bytes pushed |")
            put("|---|---:|---:|---:|---:|")
        else:
            put("| subject | binary bytes | image bytes (uncompressed) | layer bytes (gzip -9) |")
            put("|---|---:|---:|---:|")
        metrics = ["binary_bytes", "image_bytes", "layer_gzip9_bytes"] + (["pushed_bytes"] if self.full else [])
        for s in self.subjects:
            cells = [self.cell(thousands(fig[s][m]), s, m) for m in metrics]
            put(f"| {NAMES[s]} | {' | '.join(cells)} |")
        if self.full:
            put("")
            put(
                f"Binary bytes for python: the interpreter ({r.text('python_exe_name')}) plus the job script; its "
                "standard library and requests are in the image only. Bytes pushed: the compressed layers uploaded "
                "to an empty local registry (docker's own gzip level), as scripts/push reports them."
            )
            self._startup_section(put)
            self._cold_section(put)
            self._batch_section(put)
        self._instructions_section(put)
        put("")
        put("### Goals")
        put("")
        put("| goal | measured | |")
        put("|---|---|---|")
        for goal, measured, met in self.goals():
            put(f"| {goal} | {measured} | {'met' if met else '**missed**'} |")
        put("")
        put(
            "Budgets (set just above the measured sizes and instruction count, to catch growth) fail "
            "`scripts/bench --check`: "
            f"release binary ≤ {thousands(self.const('BUDGET_BINARY_BYTES'))} bytes, "
            f"tiny ≤ {thousands(self.const('BUDGET_TINY_BINARY_BYTES'))}; "
            f"layers (gzip -9) ≤ {thousands(self.const('BUDGET_LAYER_BYTES'))} and "
            f"≤ {thousands(self.const('BUDGET_TINY_LAYER_BYTES'))} bytes; "
            f"≤ {thousands(self.const('BUDGET_INSTRUCTIONS_PER_ROW'))} instructions per row. "
            "Goals are reported as met or missed and never fail it, and timing never does, because shared "
            "machines are noisy. Reproduce with `scripts/bench` as root on a Debian 12 machine with docker.io, "
            "docker-registry, debootstrap, hyperfine, time, busybox-static, golang-go and valgrind installed and "
            "a docker engine running (`scripts/bench --check` measures the sizes and instructions alone)."
        )
        return "\n".join(out) + "\n"

    def _startup_section(self, put):
        r, fig = self.raw, self.fig
        put("")
        put("### Startup and memory")
        put("")
        put("| subject | exec to exit, mean ± σ | docker run --rm, mean ± σ | peak RSS, one run |")
        put("|---|---:|---:|---:|")
        for s in self.subjects:
            f = fig[s]
            cells = [
                self.cell(ms(f["startup_mean_s"], f["startup_stddev_s"]), s, "startup_mean_s"),
                self.cell(ms(f["docker_run_mean_s"], f["docker_run_stddev_s"]), s, "docker_run_mean_s"),
                self.cell(kib(f["peak_rss_kib"]), s, "peak_rss_kib"),
            ]
            put(f"| {NAMES[s]} | {' | '.join(cells)} |")
        runs = "; ".join(
            f"{NAMES[s]} {fig[s]['startup_runs']} / {fig[s]['docker_run_runs']}" for s in self.subjects
        )
        put("")
        put(
            'One full job run (POST {"data":[[0,"Hello"]]}, check the reply, log two lines) against '
            f"examples/echo_service.rs on 127.0.0.1, timed by hyperfine {r.text('hyperfine_version')} without a "
            f"shell after 3 warm-up runs; runs: {runs} (exec / docker run). Exec to exit for python runs its "
            "image's root filesystem through chroot (same interpreter, requests and .pyc files as the image, no "
            "container). Peak RSS: the largest of 5 runs, from /usr/bin/time."
        )

    def _cold_section(self, put):
        fig = self.fig
        put("")
        put("### Cold start, as SPCS sees it")
        put("")
        put("| subject | pull + first run (loopback registry), mean ± σ | of which pull | projection at 50 MB/s |")
        put("|---|---:|---:|---:|")
        for s in self.subjects:
            f = fig[s]
            cells = [
                self.cell(ms(f["cold_mean_s"], f["cold_stddev_s"]), s, "cold_mean_s"),
                ms(f["cold_pull_mean_s"]),
                self.cell(f"projected {ms(f['projection_50MBps_s'])}", s, "projection_50MBps_s"),
            ]
            put(f"| {NAMES[s]} | {' | '.join(cells)} |")
        put("")
        put(
            f"Each of {fig['ours']['cold_runs']} rounds removes the image from a private dockerd (its own empty "
            "image store, so no layer is shared with other images), then times docker pull from a registry on "
            "127.0.0.1 plus the first docker run --rm: the lower bound, before any bandwidth limit. The "
            "projection is not a measurement: bytes pushed / 50 MB/s + the measured time."
        )

    def _batch_section(self, put):
        fig, rows = self.fig, self.raw.number("batch_rows")
        put("")
        put(f"### Batch: {thousands(rows)} rows")
        put("")
        put("| subject | client CPU (user + sys), mean ± σ | client CPU per row | wall time, mean ± σ | peak RSS |")
        put("|---|---:|---:|---:|---:|")
        for s in self.batch_subjects:
            f = fig[s]
            cells = [
                self.cell(ms(f["batch_cpu_s"], f["batch_cpu_stddev_s"]), s, "batch_cpu_s"),
                f"{thousands(round(f['batch_cpu_ns_per_row']))} ns",
                self.cell(f"{secs(f['batch_wall_s'])} ± {secs(f['batch_wall_stddev_s'])}", s, "batch_wall_s"),
                self.cell(kib(f["batch_peak_rss_kib"]), s, "batch_peak_rss_kib"),
            ]
            put(f"| {NAMES[s]} | {' | '.join(cells)} |")
        put("")
        put(
            f"INPUT_FILE of {thousands(rows)} lines, BATCH_SIZE=100 over one keep-alive connection "
            "(CONCURRENCY=1 for ours; requests.Session for python; one http.Client for go), OUTPUT_FILE as JSON "
            f"lines; {fig['ours']['batch_runs']} runs each, and every output byte-identical to ours. CPU and peak "
            "RSS are the client's alone: CPU from wait4(2) to the microsecond (bench/rusage.py), peak RSS from /usr/bin/time, "
            "whose own fork and exec (about 1 ms of CPU) are in every subject's CPU; the echo service's CPU is not counted. Client "
            "CPU per row is the mean client CPU divided by the rows."
        )

    def _instructions_section(self, put):
        if not self.callgrind_subjects:
            return
        fig, rows = self.fig, self.raw.number("instruction_rows")
        put("")
        put(f"### Instructions per row: {thousands(rows)} rows")
        put("")
        put("| subject | instructions, all threads | per row |")
        put("|---|---:|---:|")
        for s in self.callgrind_subjects:
            f = fig[s]
            cells = [
                self.cell(thousands(f["instructions"]), s, "instructions"),
                thousands(round(f["instructions_per_row"])),
            ]
            put(f"| {NAMES[s]} | {' | '.join(cells)} |")
        put("")
        put(
            f"The client alone under `valgrind --tool=callgrind` ({self.raw.text('valgrind_version')}), every "
            f"thread counted: INPUT_FILE of {thousands(rows)} lines (`row number 0`, `row number 1`, …), "
            "BATCH_SIZE=100, CONCURRENCY=1, OUTPUT_FILE set, against examples/echo_service.rs on 127.0.0.1 "
            "(not under valgrind). Instruction counts do not depend on what else the machine runs, so "
            "`--check` holds a budget on them."
        )

    # --- the JSON file ---------------------------------------------------------

    def json_document(self):
        r = self.raw

        def number(x):
            if isinstance(x, int) or (isinstance(x, float) and x.is_integer()):
                return int(x)
            return round(x, 6)

        return {
            "measured_at": r.text("measured_at"),
            "mode": self.mode,
            "revision": r.text("revision"),
            "machine": {
                "cores": int(r.number("cores")),
                "cpu": r.text("cpu"),
                "kernel": r.text("kernel"),
                "docker": r.text("docker"),
            },
            "toolchains": {"stable": r.text("rustc_stable"), "tiny": r.text("rustc_tiny")},
            "goals": {key: number(self.const(name)) for key, name in JSON_GOALS.items()},
            "budgets": {key: number(self.const(name)) for key, name in JSON_BUDGETS.items()},
            "subjects": {
                s: {"label": self.label(s), **{k: number(self.fig[s][k]) for k in JSON_KEYS if k in self.fig[s]}}
                for s in self.subjects
            },
        }


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="bench/report.py",
        description="Renders scripts/bench's report from its measurements file (see the module's docstring).",
    )
    parser.add_argument("measurements", help="the KEY VALUE file scripts/bench wrote")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    parser.add_argument("--check", action="store_true", help="exit 1 when a budget is exceeded")
    args = parser.parse_args(argv)
    try:
        with open(args.measurements, encoding="utf-8") as file:
            bench = Bench(parse_measurements(file))
        report = bench.report()
        over = bench.over_budget() if args.check else []
        document = bench.json_document() if args.json else None
    except (BadInput, OSError) as error:
        print(f"scripts/bench: cannot make the report: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sys.stdout.write(report)
    sys.stdout.flush()
    if document is not None:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(document, file, indent=2, ensure_ascii=False)
            file.write("\n")
        print(f"scripts/bench: raw figures written to {args.json}", file=sys.stderr)
    if args.check:
        if over:
            print(f"scripts/bench: budgets exceeded: {'; '.join(over)}", file=sys.stderr)
            return EXIT_OVER_BUDGET
        print("scripts/bench: every budget kept (see the report for the goals)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
