"""The report of scripts/bench: figures, tables, goals, the --check verdict and
the JSON file, all derived from one run's raw measurements.

bench/bench.py measures and records what it measured, raw, in a dict of
lists: each key holds one value, or one sample per run. Keys:

  sections                 what was measured (SECTIONS, sizes always)
  subjects, batch_subjects, callgrind_subjects
                           the subjects, in table order
  SUBJECT.tag              the subject's image
  SUBJECT.binary_bytes, .image_bytes, .layer_gzip9_bytes
  SUBJECT.pushed_bytes, .push_s                       (cold)
  SUBJECT.startup_mean_s, .startup_stddev_s, .startup_runs,
  SUBJECT.docker_run_mean_s, .docker_run_stddev_s, .docker_run_runs
                           hyperfine's figures        (startup)
  SUBJECT.peak_rss_kib     samples                    (startup)
  SUBJECT.cold_ns, .cold_pull_ns
                           samples: pull + first run, and the pull alone
  SUBJECT.batch_wall_s, .batch_user_s, .batch_sys_s, .batch_rss_kib
                           samples, one per batch run (batch)
  SUBJECT.instructions     callgrind's total           (instructions)
  CASE.rows, CASE.concurrency, CASE.request_timeout    (peers: stall,
  CASE.exit, .wall_s, .peak_rss_kib, .requests, .connections,
  .stalled_at_once         samples                     close, close_header)
  concurrency.CASE.SETTING.wall_s, .requests, .refused, .peak_in_flight
                           samples, one per run        (concurrency: CASE of
                           CONCURRENCY_CASES, SETTING a number or auto)
  concurrency.CASE.auto.limits
                           samples: the limit's range in the job's last line
  the rest                 text for the report (versions, machine, counts)

The goals are those of the project's goals table (README, Goals); the size
and instruction goals are also the budgets that --check enforces, because
they do not depend on machine noise.
"""

import math

SECTIONS = ("sizes", "startup", "cold", "batch", "instructions", "peers", "concurrency")

NAMES = {
    "ours": "ours",
    "tiny": "ours-tiny",
    "busybox": "busybox wget",
    "go": "go net/http",
    "python": "python (bookworm stand-in)",
}

GOALS = {
    "binary_bytes_max": 460000,
    "layer_gzip9_bytes_max": 245000,
    "tiny_binary_bytes_max": 370000,
    "tiny_layer_gzip9_bytes_max": 205000,
    "instructions_per_row_max": 1700,
    "batch_cpu_below_python_min": 12,
    "batch_cpu_below_go_min": 5,
    "peak_rss_kib_max": 1024,
    "hostile_peak_rss_kib_max": 64 * 1024,
    "close_vs_close_header_time_max": 2,
}

# What --check holds: (what, subject, figure, goal key, unit).
BUDGETS = (
    ("release binary", "ours", "binary_bytes", "binary_bytes_max", "bytes"),
    ("release layer (gzip -9)", "ours", "layer_gzip9_bytes", "layer_gzip9_bytes_max", "bytes"),
    ("tiny binary", "tiny", "binary_bytes", "tiny_binary_bytes_max", "bytes"),
    ("tiny layer (gzip -9)", "tiny", "layer_gzip9_bytes", "tiny_layer_gzip9_bytes_max", "bytes"),
    ("instructions per row", "ours", "instructions_per_row", "instructions_per_row_max", ""),
)

# The keys of each subject in the JSON file, in order.
JSON_KEYS = (
    "binary_bytes image_bytes layer_gzip9_bytes pushed_bytes push_s "
    "startup_mean_s startup_stddev_s startup_runs docker_run_mean_s docker_run_stddev_s docker_run_runs "
    "peak_rss_kib cold_mean_s cold_stddev_s cold_pull_mean_s cold_runs projection_50MBps_s "
    "batch_rows batch_runs batch_cpu_s batch_cpu_stddev_s batch_user_s batch_sys_s "
    "batch_wall_s batch_wall_stddev_s batch_peak_rss_kib batch_cpu_ns_per_row "
    "instructions instruction_rows instructions_per_row"
).split()

PEER_CASES = ("stall", "close", "close_header")

# The services of the concurrency section: examples/echo_service.rs serving
# `slots` requests at once, `latency_ms` each, and past that answering 429
# at once (refuse) or queueing (queue); `batches` batches of CONCURRENCY_ROWS
# rows each, under each fixed setting and under auto. The goal for auto:
# within `slower_max` of the best fixed setting's wall time (or of
# CONCURRENCY=1's, with `versus_one`), 429s at most `refused_max` of the
# requests, and at most `peak_per_slot_max` times the slots in flight.
CONCURRENCY_ROWS = 10
CONCURRENCY_CASES = (
    {"case": "refuse8", "slots": 8, "latency_ms": 40, "overflow": "refuse", "batches": 800, "fixed": (4, 8),
     "slower_max": 0.15, "refused_max": 0.05},
    {"case": "refuse8_short", "slots": 8, "latency_ms": 40, "overflow": "refuse", "batches": 150, "fixed": (8, 16),
     "slower_max": 0.5, "refused_max": 0.05},
    {"case": "refuse64", "slots": 64, "latency_ms": 20, "overflow": "refuse", "batches": 8000, "fixed": (32, 64),
     "slower_max": 0.15, "refused_max": 0.05},
    {"case": "queue4", "slots": 4, "latency_ms": 40, "overflow": "queue", "batches": 400, "fixed": (4, 8, 16),
     "slower_max": 0.15, "peak_per_slot_max": 3},
    {"case": "one_slot", "slots": 1, "latency_ms": 50, "overflow": "refuse", "batches": 40, "fixed": (1, 2),
     "slower_max": 0.15, "versus_one": True},
)


def concurrency_service(case):
    """'8 at once, 429 past that, 40 ms a batch' for a case of
    CONCURRENCY_CASES."""
    past = "429 past that" if case["overflow"] == "refuse" else "queues the rest"
    return f"{case['slots']} at once, {past}, {case['latency_ms']} ms a batch"

PROJECTION_BYTES_PER_SECOND = 50_000_000  # for the pull projection


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


def mib(kib_count):
    """KiB as MiB: whole when whole (a goal), else one decimal."""
    value = kib_count / 1024
    return f"{value:.0f} MiB" if value.is_integer() else f"{value:.1f} MiB"


def mean_sd(samples):
    """The mean and the sample standard deviation (0 for one sample)."""
    if not samples:
        raise BadInput("no samples to average")
    mean = sum(samples) / len(samples)
    if len(samples) == 1:
        return mean, 0.0
    variance = sum((x - mean) ** 2 for x in samples) / (len(samples) - 1)
    return mean, math.sqrt(variance)


def exits(codes):
    """Exit statuses as text: 'exit 0', or 'exit 69 (3 runs), 0 (1 run)'."""
    codes = [int(c) for c in codes]
    distinct = sorted(set(codes), key=codes.index)
    if len(distinct) == 1:
        return f"exit {distinct[0]}"
    runs = {c: codes.count(c) for c in distinct}
    return "exit " + ", ".join(f"{c} ({n} run{'s' if n > 1 else ''})" for c, n in runs.items())


# --- reading the measurements --------------------------------------------------


class Raw:
    """Typed access to the measurements, with one clear error per gap."""

    def __init__(self, raw):
        if not isinstance(raw, dict):
            raise BadInput("the measurements are not a dict of lists")
        for key, values in raw.items():
            if not isinstance(values, list):
                raise BadInput(f"{key} holds {values!r}, not a list")
        self.raw = raw

    def has(self, key):
        return bool(self.raw.get(key))

    def text(self, key, default=None):
        values = self.raw.get(key)
        if not values:
            if default is not None:
                return default
            raise BadInput(f"the measurements lack {key}")
        if len(values) > 1:
            raise BadInput(f"{key} was measured {len(values)} times, once expected")
        return str(values[0])

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
            return [float(v) for v in values]
        except (TypeError, ValueError):
            raise BadInput(f"{key} has a sample that is not a number: {values!r}") from None

    def words(self, key):
        return self.text(key).split()


# --- figures -------------------------------------------------------------------


class Bench:
    """The measurements, with every figure of the report derived from them."""

    def __init__(self, raw):
        self.raw = Raw(raw)
        r = self.raw
        self.sections = r.words("sections")
        for section in self.sections:
            if section not in SECTIONS:
                raise BadInput(f"unknown section {section!r}")
        if "sizes" not in self.sections:
            raise BadInput("the sections lack sizes, which every run measures")
        self.subjects = r.words("subjects")
        self.batch_subjects = r.words("batch_subjects") if self.has("batch") else []
        self.callgrind_subjects = r.words("callgrind_subjects") if self.has("instructions") else []
        for s in self.subjects + self.batch_subjects + self.callgrind_subjects:
            if s not in NAMES:
                raise BadInput(f"unknown subject {s!r}")
        if "ours" not in self.subjects:
            raise BadInput("the subjects lack ours, to which every ratio refers")
        self.fig = {s: {} for s in self.subjects}
        self.peers = {}
        self._sizes()
        if self.has("startup"):
            self._startup()
        if self.has("cold"):
            self._cold()
        if self.has("batch"):
            self._batch()
        if self.has("instructions"):
            self._instructions()
        if self.has("peers"):
            self._peers()
        self.concurrency = {}
        if self.has("concurrency"):
            self._concurrency()

    def has(self, section):
        return section in self.sections

    def _sizes(self):
        for s in self.subjects:
            for key in ("binary_bytes", "image_bytes", "layer_gzip9_bytes"):
                self.fig[s][key] = self.raw.number(f"{s}.{key}")

    def _startup(self):
        for s in self.subjects:
            f = self.fig[s]
            for kind in ("startup", "docker_run"):
                f[f"{kind}_mean_s"] = self.raw.number(f"{s}.{kind}_mean_s")
                f[f"{kind}_stddev_s"] = self.raw.number(f"{s}.{kind}_stddev_s")
                f[f"{kind}_runs"] = int(self.raw.number(f"{s}.{kind}_runs"))
            f["peak_rss_kib"] = max(self.raw.samples(f"{s}.peak_rss_kib"))

    def _cold(self):
        for s in self.subjects:
            f = self.fig[s]
            f["pushed_bytes"] = self.raw.number(f"{s}.pushed_bytes")
            f["push_s"] = self.raw.number(f"{s}.push_s")
            cold = [ns / 1e9 for ns in self.raw.samples(f"{s}.cold_ns")]
            f["cold_mean_s"], f["cold_stddev_s"] = mean_sd(cold)
            f["cold_pull_mean_s"], _ = mean_sd([ns / 1e9 for ns in self.raw.samples(f"{s}.cold_pull_ns")])
            f["cold_runs"] = len(cold)
            # Not a measurement: the bytes at a given bandwidth, plus the
            # measured time.
            f["projection_50MBps_s"] = f["pushed_bytes"] / PROJECTION_BYTES_PER_SECOND + f["cold_mean_s"]

    def _batch(self):
        rows = self.raw.number("batch_rows")
        for s in self.batch_subjects:
            f = self.fig.setdefault(s, {})
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
        rows = self.raw.number("instruction_rows")
        for s in self.callgrind_subjects:
            total = self.raw.number(f"{s}.instructions")
            self.fig[s]["instructions"] = total
            self.fig[s]["instruction_rows"] = rows
            self.fig[s]["instructions_per_row"] = total / rows

    def _peers(self):
        r = self.raw
        for case in PEER_CASES:
            p = {
                "rows": int(r.number(f"{case}.rows")),
                "concurrency": int(r.number(f"{case}.concurrency")),
                "exits": [int(c) for c in r.samples(f"{case}.exit")],
                "requests": [int(n) for n in r.samples(f"{case}.requests")],
                "connections": [int(n) for n in r.samples(f"{case}.connections")],
            }
            walls = r.samples(f"{case}.wall_s")
            if len(walls) != len(p["exits"]):
                raise BadInput(f"the {case} runs have unequal numbers of samples")
            p["wall_mean_s"], p["wall_stddev_s"] = mean_sd(walls)
            p["runs"] = len(walls)
            if case == "stall":
                p["peak_rss_kib"] = max(r.samples("stall.peak_rss_kib"))
                p["stalled_at_once"] = int(max(r.samples("stall.stalled_at_once")))
                p["declared_bytes"] = int(r.number("stall.declared_bytes"))
                p["request_timeout"] = r.text("stall.request_timeout")
            self.peers[case] = p

    def _concurrency(self):
        r = self.raw
        for case in CONCURRENCY_CASES:
            name = case["case"]
            settings = {}
            for setting in [*map(str, case["fixed"]), "auto"]:
                prefix = f"concurrency.{name}.{setting}"
                walls = r.samples(f"{prefix}.wall_s")
                f = {"runs": len(walls)}
                f["wall_mean_s"], f["wall_stddev_s"] = mean_sd(walls)
                for key in ("requests", "refused", "peak_in_flight"):
                    values = [int(v) for v in r.samples(f"{prefix}.{key}")]
                    if len(values) != len(walls):
                        raise BadInput(f"{prefix} has unequal numbers of samples")
                    f[key] = values
                f["refused_share"] = sum(f["refused"]) / max(1, sum(f["requests"]))
                settings[setting] = f
            auto = settings["auto"]
            auto["limits"] = r.raw.get(f"concurrency.{name}.auto.limits", [])
            fixed = {s: f for s, f in settings.items() if s != "auto"}
            if case.get("versus_one"):
                if "1" not in fixed:
                    raise BadInput(f"concurrency.{name} lacks CONCURRENCY=1, its goal's reference")
                versus = "1"
            else:
                versus = min(fixed, key=lambda s: fixed[s]["wall_mean_s"])
            self.concurrency[name] = {"case": case, "settings": settings, "versus": versus}

    def _concurrency_goals(self, rows):
        for case in CONCURRENCY_CASES:
            name = case["case"]
            reference = "CONCURRENCY=1's" if case.get("versus_one") else "the best fixed CONCURRENCY's"
            goal = (
                f"CONCURRENCY=auto, service serving {concurrency_service(case)}, {thousands(case['batches'])} "
                f"batches: within {case['slower_max'] * 100:g}% of {reference} wall time"
            )
            if "refused_max" in case:
                goal += f", 429s ≤ {case['refused_max'] * 100:g}% of requests"
            if "peak_per_slot_max" in case:
                goal += f", ≤ {case['peak_per_slot_max'] * case['slots']} in flight at the peak"
            c = self.concurrency.get(name)
            if c is None:
                rows.append((goal, "—", None))
                continue
            auto, best = c["settings"]["auto"], c["settings"][c["versus"]]
            times = auto["wall_mean_s"] / best["wall_mean_s"]
            measured = (
                f"{ratio(auto['wall_mean_s'], best['wall_mean_s'])} the time of CONCURRENCY={c['versus']} "
                f"({secs(auto['wall_mean_s'])} vs {secs(best['wall_mean_s'])})"
            )
            met = times <= 1 + case["slower_max"]
            if "refused_max" in case:
                measured += f", 429s {auto['refused_share'] * 100:.1f}%"
                met = met and auto["refused_share"] <= case["refused_max"]
            if "peak_per_slot_max" in case:
                peak = max(auto["peak_in_flight"])
                measured += f", peak {peak}"
                met = met and peak <= case["peak_per_slot_max"] * case["slots"]
            rows.append((goal, measured, met))

    # --- goals and budgets -----------------------------------------------------

    def goals(self):
        """[(goal, measured, met)] in the goals table's order; met is None
        when this run did not measure it."""
        g = GOALS
        ours, tiny = self.fig["ours"], self.fig.get("tiny", {})
        rows = []

        def pair(text, binary, layer, binary_goal, layer_goal):
            goal = f"{text} / gzip -9 ≤ {thousands(binary_goal)} B / ≤ {thousands(layer_goal)} B"
            if binary is None or layer is None:
                rows.append((goal, "—", None))
            else:
                rows.append(
                    (goal, f"{thousands(binary)} B / {thousands(layer)} B", binary <= binary_goal and layer <= layer_goal)
                )

        pair("Release binary", ours["binary_bytes"], ours["layer_gzip9_bytes"], g["binary_bytes_max"], g["layer_gzip9_bytes_max"])
        pair(
            "Tiny binary",
            tiny.get("binary_bytes"),
            tiny.get("layer_gzip9_bytes"),
            g["tiny_binary_bytes_max"],
            g["tiny_layer_gzip9_bytes_max"],
        )

        goal = f"Batch, {self._rows_text('instruction_rows', '100k')} rows ≤ {thousands(g['instructions_per_row_max'])} instructions per row"
        if "instructions_per_row" in ours:
            per_row = ours["instructions_per_row"]
            rows.append((goal, thousands(round(per_row)), per_row <= g["instructions_per_row_max"]))
        else:
            rows.append((goal, "—", None))

        goal = (
            f"Batch client CPU ≥ {g['batch_cpu_below_python_min']}× below the Python requests.Session client "
            f"and ≥ {g['batch_cpu_below_go_min']}× below the Go client, same rows, same run"
        )
        if self.has("batch"):
            f = self.fig
            below_python = f["python"]["batch_cpu_s"] / ours["batch_cpu_s"]
            below_go = f["go"]["batch_cpu_s"] / ours["batch_cpu_s"]
            rows.append(
                (
                    goal,
                    f"{ratio(f['python']['batch_cpu_s'], ours['batch_cpu_s'])} below python, "
                    f"{ratio(f['go']['batch_cpu_s'], ours['batch_cpu_s'])} below go",
                    below_python >= g["batch_cpu_below_python_min"] and below_go >= g["batch_cpu_below_go_min"],
                )
            )
        else:
            rows.append((goal, "—", None))

        goal = "Exec to exit no slower than busybox wget"
        if self.has("startup"):
            busybox = self.fig["busybox"]["startup_mean_s"]
            rows.append(
                (goal, f"{ms(ours['startup_mean_s'])} vs {ms(busybox)}", ours["startup_mean_s"] <= busybox)
            )
        else:
            rows.append((goal, "—", None))

        goal = f"Peak RSS, one row ≤ {mib(g['peak_rss_kib_max'])}"
        if self.has("startup"):
            rows.append((goal, kib(ours["peak_rss_kib"]), ours["peak_rss_kib"] <= g["peak_rss_kib_max"]))
        else:
            rows.append((goal, "—", None))

        if self.has("peers"):
            stall = self.peers["stall"]
            goal = (
                f"Peak RSS, hostile server declaring {mib(stall['declared_bytes'] / 1024)} "
                f"at CONCURRENCY={stall['concurrency']} ≤ {mib(g['hostile_peak_rss_kib_max'])}"
            )
            rows.append(
                (
                    goal,
                    f"{kib(stall['peak_rss_kib'])} ({mib(stall['peak_rss_kib'])})",
                    stall["peak_rss_kib"] <= g["hostile_peak_rss_kib_max"],
                )
            )
            close, header = self.peers["close"], self.peers["close_header"]
            goal = (
                f"Server closing after each reply, {close['rows']} one-row requests, RETRY_DEADLINE=0: exit 0, "
                f"within {g['close_vs_close_header_time_max']:g}× the time with Connection: close"
            )
            rows.append((goal, *self._close_verdict(close, header)))
        else:
            rows.append(("Peak RSS, hostile server declaring 10 MiB at CONCURRENCY=64 ≤ 64 MiB", "—", None))
            rows.append(
                (
                    "Server closing after each reply, 200 one-row requests, RETRY_DEADLINE=0: exit 0, "
                    "within 2× the time with Connection: close",
                    "not measured",
                    None,
                )
            )
        self._concurrency_goals(rows)
        return rows

    def _close_verdict(self, close, header):
        """(measured text, met) of the closing-server goal."""
        limit = GOALS["close_vs_close_header_time_max"]
        times = (
            f"{ratio(close['wall_mean_s'], header['wall_mean_s'])} the time "
            f"({ms(close['wall_mean_s'])} vs {ms(header['wall_mean_s'])})"
        )
        if any(c != 0 for c in close["exits"]):
            answered = max(close["requests"])
            return (
                f"{exits(close['exits'])} over {close['runs']} runs, at most {answered} of {close['rows']} "
                f"requests answered; {times}",
                False,
            )
        if any(c != 0 for c in header["exits"]):
            return (f"exit 0, but with Connection: close {exits(header['exits'])}; {times}", False)
        return (f"exit 0, {times}", close["wall_mean_s"] <= limit * header["wall_mean_s"])

    def _rows_text(self, key, default):
        if not self.raw.has(key):
            return default
        rows = self.raw.number(key)
        return f"{rows / 1000:g}k" if rows >= 1000 and rows % 1000 == 0 else thousands(rows)

    def over_budget(self):
        """What misses a size or instruction goal, one phrase each; empty
        when all are met. Raises BadInput when one was not measured."""
        over = []
        for text, subject, figure_key, goal_key, unit in BUDGETS:
            figure = self.fig.get(subject, {}).get(figure_key)
            if figure is None:
                raise BadInput(f"--check needs the {text}, which was not measured")
            goal = GOALS[goal_key]
            if figure > goal:
                shown = thousands(round(figure)) if unit == "" else thousands(figure)
                over.append(f"{text} {shown} > {thousands(goal)}{' ' + unit if unit else ''}")
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
        metrics = ["binary_bytes", "image_bytes", "layer_gzip9_bytes"]
        if self.has("cold"):
            metrics.append("pushed_bytes")
            put("| subject | binary bytes | image bytes (uncompressed) | layer bytes (gzip -9) | bytes pushed |")
            put("|---|---:|---:|---:|---:|")
        else:
            put("| subject | binary bytes | image bytes (uncompressed) | layer bytes (gzip -9) |")
            put("|---|---:|---:|---:|")
        for s in self.subjects:
            cells = [self.cell(thousands(fig[s][m]), s, m) for m in metrics]
            put(f"| {NAMES[s]} | {' | '.join(cells)} |")
        notes = []
        if "python" in self.subjects:
            notes.append(
                f"Binary bytes for python: the interpreter ({r.text('python_exe_name')}) plus the job script; its "
                "standard library and requests are in the image only."
            )
        if self.has("cold"):
            notes.append(
                "Bytes pushed: the compressed layers uploaded to an empty local registry (docker's own gzip level), "
                "as scripts/push reports them."
            )
        if notes:
            put("")
            put(" ".join(notes))
        if self.has("startup"):
            self._startup_section(put)
        if self.has("cold"):
            self._cold_section(put)
        if self.has("batch"):
            self._batch_section(put)
        if self.has("instructions"):
            self._instructions_section(put)
        if self.has("peers"):
            self._peers_section(put)
        if self.has("concurrency"):
            self._concurrency_section(put)
        put("")
        put("### Goals")
        put("")
        put("| goal | measured | |")
        put("|---|---|---|")
        for goal, measured, met in self.goals():
            verdict = "not measured" if met is None else ("met" if met else "**missed**")
            put(f"| {goal} | {measured} | {verdict} |")
        put("")
        put(
            "`scripts/bench --check` (run in CI) fails when a size or instruction goal is missed: those figures "
            "do not depend on what else the machine runs. The other goals are reported as met or missed and never "
            "fail it, because shared machines are noisy. Reproduce with `scripts/bench` as root on a Debian 12 "
            "machine with docker.io, docker-registry, debootstrap, hyperfine, time, busybox-static, golang-go and "
            "valgrind installed and a docker engine running (`scripts/bench --check` measures the sizes and "
            "instructions alone)."
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
            "`--check` holds the goal on them."
        )

    def _peers_section(self, put):
        stall, close, header = (self.peers[c] for c in PEER_CASES)
        put("")
        put("### Hostile servers")
        put("")
        put("| server (bench/peers/hostile.py) | job settings | exit status | wall time, mean ± σ | peak RSS | the server saw |")
        put("|---|---|---|---:|---:|---|")
        put(
            f"| declares Content-Length: {thousands(stall['declared_bytes'])}, sends 1 byte, then stalls | "
            f"{thousands(stall['rows'])} rows, BATCH_SIZE=1, CONCURRENCY={stall['concurrency']}, "
            f"REQUEST_TIMEOUT={stall['request_timeout']}, RETRY_DEADLINE=0 | {exits(stall['exits'])} | "
            f"{ms(stall['wall_mean_s'], stall['wall_stddev_s'])} | {kib(stall['peak_rss_kib'])} | "
            f"up to {max(stall['connections'])} connections, {stall['stalled_at_once']} stalled at once |"
        )
        for text, p in (
            ("answers, then closes without Connection: close", close),
            ("answers with Connection: close, then closes", header),
        ):
            put(
                f"| {text} | {thousands(p['rows'])} rows, BATCH_SIZE=1, CONCURRENCY={p['concurrency']}, "
                f"RETRY_DEADLINE=0 | {exits(p['exits'])} | {ms(p['wall_mean_s'], p['wall_stddev_s'])} | | "
                f"{min(p['requests'])} to {max(p['requests'])} requests answered, "
                f"over {min(p['connections'])} to {max(p['connections'])} connections |"
            )
        put("")
        put(
            "The release binary against small adversarial echo services on 127.0.0.1, served from the "
            f"benchmark's own process. Stalling server: {stall['runs']} runs, peak RSS the largest, from "
            f"/usr/bin/time: memory must follow the bytes received, not the length declared. Closing servers: "
            f"{close['runs']} runs each, alternating; a reply without Connection: close on a connection the "
            "server then closes must not cost the next request."
        )

    def _concurrency_section(self, put):
        put("")
        put("### Concurrency: fixed settings and auto")
        put("")
        put("| service (examples/echo_service.rs) | CONCURRENCY | wall time, mean ± σ | requests | 429s | peak in flight |")
        put("|---|---|---:|---:|---:|---:|")
        runs = 0
        for case in CONCURRENCY_CASES:
            c = self.concurrency[case["case"]]
            first = True
            for setting, f in c["settings"].items():
                runs = max(runs, f["runs"])
                service = f"{concurrency_service(case)}; {thousands(case['batches'])} batches" if first else ""
                first = False
                shown = setting
                if setting == "auto" and f["limits"]:
                    shown = f"auto (limit {', '.join(str(v) for v in f['limits'])})"
                if setting == c["versus"]:
                    shown = f"**{shown}**"
                requests = sum(f["requests"]) // f["runs"]
                refused = sum(f["refused"]) // f["runs"]
                put(
                    f"| {service} | {shown} | {secs(f['wall_mean_s'])} ± {secs(f['wall_stddev_s'])} | "
                    f"{thousands(requests)} | {thousands(refused)} | {max(f['peak_in_flight'])} |"
                )
        put("")
        put(
            f"The release binary, {CONCURRENCY_ROWS} rows a batch, against examples/echo_service.rs on 127.0.0.1 "
            "with ECHO_SLOTS, ECHO_LATENCY_MS and ECHO_OVERFLOW; every output byte-identical. In bold, what auto "
            f"is held to: the best fixed setting of the run, or CONCURRENCY=1 for the one-slot service. {runs} "
            "runs each, interleaved; requests and 429s per run (a refused batch is retried after the client's "
            "backoff), peak in flight the largest as the service counted it, queued requests included; auto's "
            "limit range is the lowest and highest limit of each run, from the job's last line."
        )

    # --- the JSON file ---------------------------------------------------------

    def json_document(self):
        r = self.raw

        def number(x):
            if isinstance(x, int) or (isinstance(x, float) and x.is_integer()):
                return int(x)
            return round(x, 6)

        def peer(p):
            return {k: (number(v) if isinstance(v, (int, float)) else v) for k, v in p.items()}

        return {
            "measured_at": r.text("measured_at"),
            "sections": self.sections,
            "revision": r.text("revision"),
            "machine": {
                "cores": int(r.number("cores")),
                "cpu": r.text("cpu"),
                "kernel": r.text("kernel"),
                "docker": r.text("docker"),
            },
            "toolchains": {"stable": r.text("rustc_stable"), "tiny": r.text("rustc_tiny")},
            "goals": dict(GOALS),
            "goals_met": {goal: met for goal, _, met in self.goals()},
            "subjects": {
                s: {"label": self.label(s), **{k: number(self.fig[s][k]) for k in JSON_KEYS if k in self.fig[s]}}
                for s in self.subjects
            },
            "hostile_servers": {case: peer(p) for case, p in self.peers.items()},
            "concurrency": {
                name: {
                    "versus": c["versus"],
                    "settings": {
                        s: {
                            "wall_mean_s": number(f["wall_mean_s"]),
                            "wall_stddev_s": number(f["wall_stddev_s"]),
                            "requests": f["requests"],
                            "refused": f["refused"],
                            "peak_in_flight": f["peak_in_flight"],
                        }
                        for s, f in c["settings"].items()
                    },
                }
                for name, c in self.concurrency.items()
            },
        }
