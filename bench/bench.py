#!/usr/bin/env python3
"""scripts/bench's measuring and reporting program (the standard library only).

scripts/bench handles the command line and builds what is measured (the
binaries and images, the Python root filesystem); then this program measures
every figure, writes bench/.cache/logs/measurements.json and prints the report
(bench/report.py renders it). Subcommands:

  measure        measure and report; scripts/bench passes what it built
                 (see `bench.py measure --help`)
  report FILE    render the report again from a measurements.json
  debian-mirror  print the Debian mirror apt uses here (for debootstrap)
  goals          print the goals, as scripts/bench --help shows them

Sections (scripts/bench --only): sizes (always), startup, cold, batch,
instructions, peers, concurrency. Exit status: 0; 1 when a measurement fails (one line
says which, with its log) or, with --check, when a size or instruction goal
is missed; 2 on a bad command line.
"""

import argparse
import contextlib
import datetime
import filecmp
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (os.path.join(HERE, "peers"), os.path.join(ROOT, "tools")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import hostile  # noqa: E402
import layer_gzip  # noqa: E402
import report  # noqa: E402
import rusage  # noqa: E402

PREFIX = "scripts/bench"
EXIT_FAILED = 1

# The job's and Python's own settings must not leak in from the caller: every
# subject sees the same environment, and no proxy (loopback only).
UNSET = (
    "ECHO_TEXT INPUT_FILE INPUT_FORMAT OUTPUT_FILE BATCH_SIZE CONCURRENCY CONNECT_TIMEOUT REQUEST_TIMEOUT "
    "RETRY_DEADLINE MAX_RESPONSE_BYTES SNOWFLAKE_JOBS_COUNT SNOWFLAKE_JOB_INDEX RUST_LOG SERVICE_URL "
    "PYTHONDONTWRITEBYTECODE PYTHONUNBUFFERED PYTHONPATH PYTHONHOME PYTHONSTARTUP "
    "http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY"
).split()

HELLO_BODY = '{"data":[[0,"Hello"]]}'
BUSYBOX_REPLY = '{"data":[[0,"Bob said Hello"]]}'
SUBJECTS = ("ours", "tiny", "busybox", "go", "python")
OTHERS = ("busybox", "go", "python")
NEEDS_OTHERS = ("startup", "cold", "batch")  # the sections that compare with them
PEAK_RSS_RUNS = 5
INSTRUCTION_ROWS = 100000  # the rows of the callgrind run
# The hostile-server rows: the stall case fills CONCURRENCY connections with
# a few rows to spare; the closing cases send one row per request.
CONCURRENCY_RUNS = 2  # runs of each setting in the concurrency section
STALL = {"rows": 256, "concurrency": 64, "request_timeout": "2s", "runs": 3}
CLOSING = {"rows": 200, "runs": 5}
JOB_TIMEOUT_S = 300  # a job run that takes longer is killed, and fails the bench
STAMP = r"\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}\]"


class Failure(Exception):
    """A measurement could not be made; the message says which and why."""


def say(message):
    print(f"{PREFIX}: {message}", file=sys.stderr, flush=True)


# --- reading what tools print (unit-tested) -------------------------------------


def echo_port(log_text):
    """The port of examples/echo_service.rs's `listening on` line, or None."""
    match = re.search(r"^echo_service listening on 127\.0\.0\.1:(\d+)$", log_text, re.M)
    return int(match.group(1)) if match else None


def echo_stats(text):
    """(requests, refused, peak in flight) from examples/echo_service.rs's
    GET /stats."""
    try:
        stats = json.loads(text)
        return int(stats["requests"]), int(stats["refused"]), int(stats["peak_in_flight"])
    except (ValueError, KeyError, TypeError):
        raise Failure(f"the echo service's /stats is not what it should be: {text[:200]!r}") from None


def limit_range(stdout_text):
    """'1 to 11' from the job's last line with CONCURRENCY=auto, or None."""
    found = re.findall(r"\] Done: .*, concurrency limit \d+ \(from (\d+) to (\d+)\)$", stdout_text, re.M)
    return f"{found[-1][0]} to {found[-1][1]}" if found else None


def said_hello(subject, stdout_text):
    """Did a one-row run do the job: busybox printed the reply, the others
    logged the tutorial's two lines?"""
    if subject == "busybox":
        return stdout_text.rstrip("\n") == BUSYBOX_REPLY
    lines = stdout_text.splitlines()
    calling = re.compile(rf"service-to-service {STAMP} \[INFO\] Calling \S+ with input Hello")
    received = re.compile(rf"service-to-service {STAMP} \[INFO\] Received response from \S+: Bob said Hello")
    return any(calling.fullmatch(line) for line in lines) and any(received.fullmatch(line) for line in lines)


def time_peak_kib(text):
    """Peak RSS from the file of `/usr/bin/time -f %M -o FILE`: its last
    line (a line before it says when the command failed)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or not lines[-1].isdigit():
        raise Failure(f"/usr/bin/time wrote no peak RSS: {text.strip()[:200]!r}")
    return int(lines[-1])


def hyperfine_summary(document):
    """hyperfine's --export-json document -> {command name: (mean s,
    standard deviation s, runs)}."""
    try:
        return {
            r["command"]: (float(r["mean"]), float(r["stddev"] or 0.0), len(r["times"])) for r in document["results"]
        }
    except (KeyError, TypeError, ValueError) as error:
        raise Failure(f"cannot read hyperfine's results: {error!r}") from None


def callgrind_total(text):
    """The instructions a callgrind output file counted, over all threads."""
    for line in text.splitlines():
        # `summary:` in older formats, `totals:` in every one.
        for prefix in ("totals:", "summary:"):
            if line.startswith(prefix):
                try:
                    return int(line[len(prefix) :].split()[0])
                except (ValueError, IndexError):
                    raise Failure(f"callgrind's {prefix} line is not a count: {line!r}") from None
    raise Failure("the callgrind output has no totals: line")


def push_figures(stdout_text):
    """(bytes pushed, seconds) from scripts/push's report lines."""
    fields = {}
    for line in stdout_text.splitlines():
        name, colon, value = line.partition(":")
        if colon:
            fields[name.strip()] = value.strip()
    try:
        pushed = int(fields["bytes pushed"].split()[0])
        seconds = float(fields["seconds"])
    except (KeyError, IndexError, ValueError):
        raise Failure(f"scripts/push printed no bytes pushed and seconds: {stdout_text.strip()[:300]!r}") from None
    return pushed, seconds


def mounts_under(mounts_text, directory):
    """The mount points in /proc/mounts below directory, deepest first."""
    prefix = directory.rstrip("/") + "/"
    points = []
    for line in mounts_text.splitlines():
        fields = line.split(" ")
        if len(fields) < 2:
            continue
        # /proc/mounts writes space, tab, newline and backslash as octal.
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        if point.startswith(prefix):
            points.append(point)
    return sorted(points, reverse=True)


def debian_mirror(sources, lists):
    """The first Debian archive URI in apt's configuration: `URIs:` of the
    deb822 .sources files, then the first URI of each `deb` line of the
    one-line .list files. Arguments: lists of file texts. None if none."""
    archive = re.compile(r"^\w+://\S+/debian/?$")
    for text in sources:
        for line in text.splitlines():
            if line.startswith("URIs:"):
                for uri in line[len("URIs:") :].split():
                    if archive.match(uri):
                        return uri
    for text in lists:
        for line in text.splitlines():
            fields = line.split()
            if not fields or fields[0] != "deb":
                continue
            uris = [f for f in fields[1:] if "://" in f]
            if uris and archive.match(uris[0]):
                return uris[0]
    return None


def cpu_model(cpuinfo_text):
    for line in cpuinfo_text.splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip() == "model name":
            return value.strip()
    return "unknown CPU"


def parse_sections(text):
    """`startup,batch` -> the sections in report order, sizes always first."""
    chosen = {word.strip() for word in text.split(",") if word.strip()}
    unknown = chosen - set(report.SECTIONS)
    if unknown:
        raise ValueError(f"unknown section {sorted(unknown)[0]!r}; sections: {', '.join(report.SECTIONS)}")
    return [s for s in report.SECTIONS if s == "sizes" or s in chosen]


def subjects_for(sections):
    """Which subjects a run with these sections builds and measures."""
    if any(s in sections for s in NEEDS_OTHERS):
        return list(SUBJECTS)
    return ["ours", "tiny"]


def count_lines(path):
    with open(path, "rb") as file:
        return sum(1 for _ in file)


def one_line(text, limit=200):
    return " ".join(text.split())[:limit]


# --- running things -------------------------------------------------------------


class Logs:
    """Each step's output in bench/.cache/logs/NAME.log."""

    def __init__(self, directory):
        self.directory = directory

    def path(self, name):
        return os.path.join(self.directory, f"{name}.log")

    def tail(self, name, lines=20):
        try:
            with open(self.path(name), encoding="utf-8", errors="replace") as file:
                return "".join(file.readlines()[-lines:])
        except OSError:
            return ""

    def fail(self, name, what):
        print(f"--- last lines of {self.path(name)} ---", file=sys.stderr)
        sys.stderr.write(self.tail(name))
        raise Failure(f"{what}; full log: {self.path(name)}")

    def run(self, name, argv, env=None, timeout=JOB_TIMEOUT_S, capture=False):
        """Runs argv with its output appended to the log NAME (stdout
        returned instead when capture); a failure raises Failure."""
        with open(self.path(name), "a", encoding="utf-8") as log:
            try:
                done = subprocess.run(
                    argv,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE if capture else log,
                    stderr=log,
                    timeout=timeout,
                    text=True,
                )
            except subprocess.TimeoutExpired:
                self.fail(name, f"{name} took more than {timeout} s")
            except OSError as error:
                raise Failure(f"cannot start {argv[0]}: {error.strerror}") from None
            if capture:
                log.write(done.stdout)
        if done.returncode != 0:
            self.fail(name, f"{name} failed (exit {done.returncode})")
        return done.stdout if capture else None


def output_of(argv, env=None, default=None):
    """A command's stdout, stripped; default (or Failure) when it fails."""
    try:
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        if default is not None:
            return default
        raise Failure(f"{shlex.join(argv)} failed: {error}") from None
    if done.returncode != 0:
        if default is not None:
            return default
        raise Failure(f"{shlex.join(argv)} failed (exit {done.returncode}): {one_line(done.stderr)}")
    return done.stdout.strip()


def stop(process, grace=60):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(ready, process, seconds, what, log):
    """Polls ready() until it returns something, while process lives."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        if process.poll() is not None:
            raise Failure(f"{what} exited at once (see {log})")
        time.sleep(0.05)
    raise Failure(f"{what} did not answer within {seconds} s (see {log})")


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except OSError:
        return ""


@contextlib.contextmanager
def background(name, argv, logs, env=None):
    """A service of ours for the measurements, stopped however they end;
    `timeout` bounds it should this program die without stopping it."""
    with open(logs.path(name), "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            ["timeout", "3600", *argv], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    try:
        yield process
    finally:
        stop(process)


@contextlib.contextmanager
def echo_service(echo_bin, logs, name="echo-service", **settings):
    env = dict(os.environ, SERVER_HOST="127.0.0.1", SERVER_PORT="0", CHARACTER_NAME="Bob", **settings)
    with background(name, [echo_bin], logs, env) as process:
        log = logs.path(name)
        port = wait_until(lambda: echo_port(read_text(log)), process, 5, "the echo service", log)
        yield f"http://127.0.0.1:{port}/echo"


def free_port(first, last):
    for port in range(first, last + 1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise Failure(f"no free port in 127.0.0.1:{first}-{last} for the local registry")


def http_ok(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def local_registry(work, logs):
    """docker-registry on 127.0.0.1, storing in work; yields the repository
    prefix to push to."""
    port = free_port(5000, 5099)
    env = dict(
        os.environ,
        REGISTRY_HTTP_ADDR=f"127.0.0.1:{port}",
        REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=os.path.join(work, "registry"),
    )
    config = os.path.join(ROOT, "tests/registry/config.yml")
    with background("registry", ["docker-registry", "serve", config], logs, env) as process:
        url = f"http://127.0.0.1:{port}/v2/"
        wait_until(lambda: http_ok(url), process, 10, "docker-registry", logs.path("registry"))
        yield f"127.0.0.1:{port}/bench"


@contextlib.contextmanager
def private_engine(work, logs):
    """A dockerd of our own with an empty image store; yields the
    environment that points docker at it."""
    directory = os.path.join(work, "engine")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "daemon.json"), "w", encoding="utf-8") as file:
        file.write("{}\n")
    socket_path = os.path.join(directory, "docker.sock")
    argv = [
        "dockerd",
        "--config-file", os.path.join(directory, "daemon.json"),
        "--data-root", os.path.join(directory, "root"),
        "--exec-root", os.path.join(directory, "exec"),
        "--pidfile", os.path.join(directory, "dockerd.pid"),
        "-H", f"unix://{socket_path}",
        "--bridge=none",
        "--iptables=false",
    ]
    env = dict(os.environ, DOCKER_HOST=f"unix://{socket_path}")
    try:
        with background("private-dockerd", argv, logs) as process:

            def answers():
                return subprocess.run(["docker", "info"], env=env, capture_output=True).returncode == 0

            wait_until(answers, process, 30, "the private dockerd", logs.path("private-dockerd"))
            yield env
    finally:
        # dockerd leaves mounts under its directory (exec-root/netns/default),
        # which would keep the work directory from being removed.
        for point in mounts_under(read_text("/proc/mounts"), directory):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)


# --- the measurements ----------------------------------------------------------


class Measurement:
    """One run of the benchmark: what scripts/bench built, and the raw
    measurements (report.py's keys) as they are made."""

    def __init__(self, args):
        self.args = args
        self.sections = args.sections
        self.subjects = subjects_for(self.sections)
        self.logs = Logs(args.logs)
        self.work = args.work
        self.binary = dict(args.binary)
        self.tag = dict(args.tag)
        self.pyroot = args.pyroot
        self.raw = {}
        self.url = None
        self.created_tags = []
        needed = ["ours", "tiny"] + [s for s in ("busybox", "go") if s in self.subjects]
        for s in needed:
            if not self.binary.get(s):
                raise Failure(f"measure needs --binary {s}=PATH")
        for s in self.subjects:
            if not self.tag.get(s):
                raise Failure(f"measure needs --tag {s}=IMAGE")
        if "python" in self.subjects and not self.pyroot:
            raise Failure("measure needs --pyroot for the python subject")
        if not args.echo:
            raise Failure("measure needs --echo PATH")

    def rec(self, key, value):
        self.raw.setdefault(key, []).append(value)

    def has(self, section):
        return section in self.sections

    # --- commands of each subject

    def wget_args(self):
        return ["-q", "-O", "-", "--header", "Content-Type: application/json", "--post-data", HELLO_BODY, self.url]

    def host_command(self, s):
        if s == "busybox":
            return [self.binary["busybox"], "wget", *self.wget_args()]
        if s == "python":
            return ["chroot", self.pyroot, "/usr/bin/python3", "/app/service_to_service.py"]
        return [self.binary[s]]

    def container_args(self, s, image):
        """What follows `docker run --rm --network host`."""
        if s == "busybox":
            return [image, *self.wget_args()]
        return ["-e", f"SERVICE_URL={self.url}", image]

    def docker_command(self, s):
        return ["docker", "run", "--rm", "--network", "host", *self.container_args(s, self.tag[s])]

    # --- the run

    def run(self):
        for key in UNSET:
            os.environ.pop(key, None)
        self.sizes()
        if any(self.has(s) for s in ("startup", "cold", "batch", "instructions")):
            say("starting the echo service on 127.0.0.1")
            with echo_service(self.args.echo, self.logs) as url:
                self.url = url
                os.environ["SERVICE_URL"] = url
                try:
                    if self.has("startup"):
                        self.check_runs()
                        self.peak_rss()
                        self.startup()
                    if self.has("cold"):
                        self.cold()
                    if self.has("batch"):
                        self.batch()
                    if self.has("instructions"):
                        self.instructions()
                finally:
                    os.environ.pop("SERVICE_URL", None)
        if self.has("peers"):
            self.peers()
        if self.has("concurrency"):
            self.concurrency()
        self.meta()
        return self.raw

    def sizes(self):
        say("measuring sizes")
        for s in self.subjects:
            self.rec(f"{s}.tag", self.tag[s])
            if s == "python":
                interpreter = os.path.realpath(os.path.join(self.pyroot, "usr/bin/python3"))
                script = os.path.join(HERE, "peers/service_to_service.py")
                self.rec("python.binary_bytes", os.path.getsize(interpreter) + os.path.getsize(script))
                self.rec("python_exe_name", os.path.basename(interpreter))
            else:
                self.rec(f"{s}.binary_bytes", os.path.getsize(self.binary[s]))
            size = output_of(["docker", "image", "inspect", "--format", "{{json .Size}}", self.tag[s]])
            self.rec(f"{s}.image_bytes", int(json.loads(size)))
            if s == "python":
                say("compressing the Python image's layers with gzip -9 (slow)")
            archive = os.path.join(self.work, f"save-{s}.tar")
            self.logs.run(f"save-{s}", ["docker", "save", "-o", archive, self.tag[s]])
            try:
                self.rec(f"{s}.layer_gzip9_bytes", layer_gzip.archive_layer_gzip9_bytes(archive))
            except layer_gzip.BadArchive as error:
                raise Failure(f"could not read the layers of {self.tag[s]}: {error}") from None
            finally:
                os.unlink(archive)

    def check_runs(self):
        """Every subject does the job, from the host and in its image."""
        for s in self.subjects:
            for argv in (self.host_command(s), self.docker_command(s)):
                try:
                    done = subprocess.run(
                        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=JOB_TIMEOUT_S
                    )
                except subprocess.TimeoutExpired:
                    raise Failure(f"{s} did not finish its check run: {shlex.join(argv)}") from None
                if done.returncode != 0:
                    raise Failure(f"{s} failed its check run ({one_line(done.stderr)}): {shlex.join(argv)}")
                if not said_hello(s, done.stdout):
                    raise Failure(f"{s} did not say 'Bob said Hello' in its check run: {done.stdout[:300]!r}")

    def peak_rss(self):
        say(f"peak RSS (/usr/bin/time, {PEAK_RSS_RUNS} runs each)")
        rss_file = os.path.join(self.work, "rss")
        for s in self.subjects:
            for _ in range(PEAK_RSS_RUNS):
                argv = ["/usr/bin/time", "-f", "%M", "-o", rss_file, *self.host_command(s)]
                done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=JOB_TIMEOUT_S)
                if done.returncode != 0:
                    raise Failure(f"{s} failed under /usr/bin/time: {shlex.join(argv)}")
                self.rec(f"{s}.peak_rss_kib", time_peak_kib(read_text(rss_file)))

    def startup(self):
        runs = self.args.runs
        self.rec("hyperfine_version", output_of(["hyperfine", "--version"]).split()[-1])
        for kind, command, what in (
            ("startup", self.host_command, f"startup, exec to exit (hyperfine -N, warm-up 3, at least {runs} runs)"),
            ("docker_run", self.docker_command, f"startup, docker run --rm (hyperfine, warm-up 3, at least {runs} runs)"),
        ):
            say(what)
            exported = os.path.join(self.args.logs, f"{kind}.json")
            argv = ["hyperfine", "-N", "--warmup", "3", "--min-runs", str(runs), "--style", "basic"]
            argv += ["--export-json", exported]
            for s in self.subjects:
                argv += ["-n", s, shlex.join(command(s))]
            self.logs.run(f"hyperfine-{kind}", argv, timeout=None)
            with open(exported, encoding="utf-8") as file:
                results = hyperfine_summary(json.load(file))
            for s in self.subjects:
                if s not in results:
                    raise Failure(f"hyperfine's {kind} results lack {s}")
                mean, stddev, count = results[s]
                self.rec(f"{s}.{kind}_mean_s", mean)
                self.rec(f"{s}.{kind}_stddev_s", stddev)
                self.rec(f"{s}.{kind}_runs", count)

    def cold(self):
        say("starting a local registry on 127.0.0.1")
        with local_registry(self.work, self.logs) as repository:
            say(f"pushing every image to {repository} (scripts/push)")
            remote = {}
            env = dict(os.environ, REPOSITORY_URL=repository)
            for s in self.subjects:
                tag = self.tag[s]
                remote[s] = f"{repository}/{tag.rsplit('/', 1)[-1]}"
                out = self.logs.run(
                    f"push-{s}", [os.path.join(ROOT, "scripts/push"), "--no-login", "--image", tag], env, capture=True
                )
                self.created_tags.append(remote[s])
                pushed, seconds = push_figures(out)
                self.rec(f"{s}.pushed_bytes", pushed)
                self.rec(f"{s}.push_s", seconds)
            say(f"cold start: a private dockerd with an empty image store, pulling from {repository}")
            with private_engine(self.work, self.logs) as engine_env:
                # Round 0 warms the engine itself up (its first container
                # ever) and is not counted; every round pulls each image into
                # an empty store.
                for round_number in range(self.args.cold_runs + 1):
                    for s in self.subjects:
                        if round_number == 0 and s != "ours":
                            continue
                        self.cold_round(s, remote[s], engine_env, counted=round_number > 0)

    def cold_round(self, s, image, engine_env, counted):
        subprocess.run(["docker", "rmi", "-f", image], env=engine_env, capture_output=True)
        if subprocess.run(["docker", "image", "inspect", image], env=engine_env, capture_output=True).returncode == 0:
            raise Failure(f"could not remove {image} from the private engine")
        started = time.monotonic_ns()
        self.logs.run(f"cold-pull-{s}", ["docker", "pull", "-q", image], engine_env)
        pulled = time.monotonic_ns()
        argv = ["docker", "run", "--rm", "--network", "host", *self.container_args(s, image)]
        done = subprocess.run(argv, env=engine_env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        finished = time.monotonic_ns()
        with open(self.logs.path(f"cold-run-{s}"), "a", encoding="utf-8") as log:
            log.write(done.stderr)
        if done.returncode != 0:
            raise Failure(f"first run of {image} failed (see {self.logs.path(f'cold-run-{s}')})")
        if not said_hello(s, done.stdout):
            raise Failure(f"first run of {image} did not say 'Bob said Hello'")
        if counted:
            self.rec(f"{s}.cold_pull_ns", pulled - started)
            self.rec(f"{s}.cold_ns", finished - started)

    def batch(self):
        rows, runs = self.args.batch_rows, self.args.batch_runs
        subjects = ["ours", "tiny", "go", "python"]
        say(f"batch: {rows} rows, batch size 100, {runs} runs per subject")
        directory = os.path.join(self.pyroot, "bench")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "input.txt"), "w", encoding="utf-8") as file:
            file.writelines(f"Hello {i}\n" for i in range(rows))
        rss_file = os.path.join(self.work, "batch.rss")
        for s in subjects:
            output = os.path.join(directory, f"{s}.jsonl")
            if s == "python":
                env = dict(os.environ, INPUT_FILE="/bench/input.txt", OUTPUT_FILE=f"/bench/{s}.jsonl", BATCH_SIZE="100")
            else:
                env = dict(
                    os.environ,
                    INPUT_FILE=os.path.join(directory, "input.txt"),
                    OUTPUT_FILE=output,
                    BATCH_SIZE="100",
                    CONCURRENCY="1",
                )
            for _ in range(runs):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(output)
                # CPU from wait4 to the microsecond, and peak RSS from
                # /usr/bin/time, whose own fork and exec (about 1 ms of CPU)
                # are counted for every subject alike.
                argv = ["/usr/bin/time", "-f", "%M", "-o", rss_file, *self.host_command(s)]
                with open(self.logs.path(f"batch-{s}"), "a", encoding="utf-8") as log:
                    result = rusage.timed(argv, env, log.fileno(), log.fileno(), JOB_TIMEOUT_S)
                if result.exit != 0:
                    raise Failure(f"{s} failed the batch run (exit {result.exit}; see {self.logs.path(f'batch-{s}')})")
                self.rec(f"{s}.batch_wall_s", result.wall)
                self.rec(f"{s}.batch_user_s", result.user)
                self.rec(f"{s}.batch_sys_s", result.sys)
                self.rec(f"{s}.batch_rss_kib", time_peak_kib(read_text(rss_file)))
                lines = count_lines(output)
                if lines != rows:
                    raise Failure(f"{s} wrote {lines} output lines for {rows} rows")
            if s != "ours" and not filecmp.cmp(os.path.join(directory, "ours.jsonl"), output, shallow=False):
                raise Failure(f"{s}'s batch output differs from ours")
        self.rec("batch_subjects", " ".join(subjects))
        self.rec("batch_rows", rows)

    def instructions(self):
        # The client alone under callgrind (the echo service runs natively),
        # every thread counted in one total.
        # tiny too in a run of every section; CI's --check counts ours alone.
        subjects = ["ours", "tiny"] if set(report.SECTIONS) <= set(self.sections) else ["ours"]
        say(f"instructions per row: {' '.join(subjects)} under valgrind --tool=callgrind, {INSTRUCTION_ROWS} rows")
        rows_file = os.path.join(self.work, "rows.txt")
        with open(rows_file, "w", encoding="utf-8") as file:
            file.writelines(f"row number {i}\n" for i in range(INSTRUCTION_ROWS))
        for s in subjects:
            output = os.path.join(self.work, f"callgrind-{s}.jsonl")
            counts = os.path.join(self.work, f"callgrind-{s}.out")
            env = dict(os.environ, INPUT_FILE=rows_file, OUTPUT_FILE=output, BATCH_SIZE="100", CONCURRENCY="1")
            argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={counts}", *self.host_command(s)]
            self.logs.run(f"callgrind-{s}", argv, env, timeout=None)
            lines = count_lines(output)
            if lines != INSTRUCTION_ROWS:
                raise Failure(f"{s} wrote {lines} output lines for {INSTRUCTION_ROWS} rows under callgrind")
            self.rec(f"{s}.instructions", callgrind_total(read_text(counts)))
        self.rec("callgrind_subjects", " ".join(subjects))
        self.rec("instruction_rows", INSTRUCTION_ROWS)
        self.rec("valgrind_version", output_of(["valgrind", "--version"]))

    def peers(self):
        """The release binary against the hostile servers of
        bench/peers/hostile.py, served from this process."""
        binary = self.binary["ours"]
        stall_rows = os.path.join(self.work, "stall-rows.txt")
        closing_rows = os.path.join(self.work, "closing-rows.txt")
        for path, count in ((stall_rows, STALL["rows"]), (closing_rows, CLOSING["rows"])):
            with open(path, "w", encoding="utf-8") as file:
                file.writelines(f"row {i}\n" for i in range(count))
        output = os.path.join(self.work, "peer.jsonl")
        rss_file = os.path.join(self.work, "peer.rss")

        def job(peer, case, rows_file, rows, **settings):
            env = dict(
                os.environ,
                SERVICE_URL=f"http://127.0.0.1:{peer.port}/echo",
                INPUT_FILE=rows_file,
                OUTPUT_FILE=output,
                BATCH_SIZE="1",
                RETRY_DEADLINE="0",
                **settings,
            )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(output)
            peer.reset()
            argv = ["/usr/bin/time", "-f", "%M", "-o", rss_file, binary]
            with open(self.logs.path(f"peer-{case}"), "a", encoding="utf-8") as log:
                log.write(f"--- {case}: {' '.join(f'{k}={v}' for k, v in settings.items())}\n")
                log.flush()
                result = rusage.timed(argv, env, log.fileno(), log.fileno(), JOB_TIMEOUT_S)
            if result.exit == 128 + signal.SIGKILL:
                raise Failure(f"the job did not end within {JOB_TIMEOUT_S} s against the {case} server")
            # Give the server's threads a moment to see the client's close.
            time.sleep(0.05)
            counts = peer.snapshot()
            self.rec(f"{case}.exit", result.exit)
            self.rec(f"{case}.wall_s", result.wall)
            self.rec(f"{case}.requests", counts["requests"])
            self.rec(f"{case}.connections", counts["connections"])
            if result.exit == 0 and count_lines(output) != rows:
                raise Failure(f"the job exited 0 against the {case} server without writing every row")
            return counts

        say(
            f"hostile servers: 10 MiB declared, 1 byte sent, CONCURRENCY={STALL['concurrency']} "
            f"({STALL['runs']} runs of about {STALL['request_timeout']})"
        )
        for key in ("rows", "concurrency", "request_timeout"):
            self.rec(f"stall.{key}", STALL[key])
        self.rec("stall.declared_bytes", hostile.DECLARED_BYTES)
        with hostile.serve("stall") as peer:
            for _ in range(STALL["runs"]):
                counts = job(
                    peer,
                    "stall",
                    stall_rows,
                    STALL["rows"],
                    CONCURRENCY=str(STALL["concurrency"]),
                    REQUEST_TIMEOUT=STALL["request_timeout"],
                )
                self.rec("stall.peak_rss_kib", time_peak_kib(read_text(rss_file)))
                self.rec("stall.stalled_at_once", counts["stalled_at_once"])
        say(f"hostile servers: closing after each reply, {CLOSING['rows']} one-row requests, {CLOSING['runs']} runs each")
        for case in ("close", "close_header"):
            self.rec(f"{case}.rows", CLOSING["rows"])
            self.rec(f"{case}.concurrency", 1)
        with hostile.serve("close") as close, hostile.serve("close-header") as header:
            for _ in range(CLOSING["runs"]):
                job(close, "close", closing_rows, CLOSING["rows"], CONCURRENCY="1")
                job(header, "close_header", closing_rows, CLOSING["rows"], CONCURRENCY="1")

    def concurrency(self):
        """The release binary under fixed settings and auto, against
        examples/echo_service.rs serving a few requests at once."""
        binary = self.binary["ours"]
        output = os.path.join(self.work, "concurrency.jsonl")
        expected = os.path.join(self.work, "concurrency-expected.jsonl")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for case in report.CONCURRENCY_CASES:
            name, rows = case["case"], case["batches"] * report.CONCURRENCY_ROWS
            settings = [*map(str, case["fixed"]), "auto"]
            say(
                f"concurrency: {report.concurrency_service(case)}; {rows} rows, CONCURRENCY="
                f"{', '.join(settings)}, {CONCURRENCY_RUNS} runs each"
            )
            rows_file = os.path.join(self.work, f"concurrency-{name}.txt")
            with open(rows_file, "w", encoding="utf-8") as file:
                file.writelines(f"row {i}\n" for i in range(rows))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(expected)
            service = dict(
                ECHO_SLOTS=str(case["slots"]), ECHO_LATENCY_MS=str(case["latency_ms"]), ECHO_OVERFLOW=case["overflow"]
            )
            with echo_service(self.args.echo, self.logs, f"echo-{name}", **service) as url:
                stats_url = url.replace("/echo", "/stats")
                for _ in range(CONCURRENCY_RUNS):
                    for setting in settings:
                        opener.open(urllib.request.Request(stats_url, method="DELETE"), timeout=5).close()
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(output)
                        env = dict(
                            os.environ,
                            SERVICE_URL=url,
                            INPUT_FILE=rows_file,
                            OUTPUT_FILE=output,
                            BATCH_SIZE=str(report.CONCURRENCY_ROWS),
                            CONCURRENCY=setting,
                        )
                        log_path = self.logs.path(f"concurrency-{name}")
                        with open(log_path, "a", encoding="utf-8") as log:
                            log.write(f"--- CONCURRENCY={setting}\n")
                        stdout_path = os.path.join(self.work, "concurrency.log")
                        with open(stdout_path, "w", encoding="utf-8") as out, open(log_path, "a", encoding="utf-8") as log:
                            result = rusage.timed([binary], env, out.fileno(), log.fileno(), JOB_TIMEOUT_S)
                        text = read_text(stdout_path)
                        with open(log_path, "a", encoding="utf-8") as log:
                            log.write(text)
                        if result.exit != 0:
                            raise Failure(f"CONCURRENCY={setting} failed against {name} (exit {result.exit}; see {log_path})")
                        if count_lines(output) != rows:
                            raise Failure(f"CONCURRENCY={setting} wrote {count_lines(output)} lines for {rows} rows")
                        if not os.path.exists(expected):
                            os.replace(output, expected)
                        elif not filecmp.cmp(expected, output, shallow=False):
                            raise Failure(f"CONCURRENCY={setting}'s output against {name} differs from the first run's")
                        with opener.open(stats_url, timeout=5) as answer:
                            requests, refused, peak = echo_stats(answer.read().decode("utf-8", "replace"))
                        prefix = f"concurrency.{name}.{setting}"
                        self.rec(f"{prefix}.wall_s", result.wall)
                        self.rec(f"{prefix}.requests", requests)
                        self.rec(f"{prefix}.refused", refused)
                        self.rec(f"{prefix}.peak_in_flight", peak)
                        if setting == "auto":
                            self.rec(f"{prefix}.limits", limit_range(text) or "?")

    def meta(self):
        r = self.rec
        r("sections", " ".join(self.sections))
        r("subjects", " ".join(self.subjects))
        r("measured_at", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
        r("revision", output_of(["git", "-C", ROOT, "describe", "--always", "--dirty", "--abbrev=12"], default="unknown"))
        r("cores", len(os.sched_getaffinity(0)))
        r("cpu", cpu_model(read_text("/proc/cpuinfo")))
        r("kernel", os.uname().release)
        version = output_of(["docker", "version", "--format", "{{json .Server.Version}}"], default='"unknown"')
        r("docker", json.loads(version))
        r("rustc_stable", output_of(["rustc", "--version"], default="unknown"))
        toolchain = os.environ.get("TINY_TOOLCHAIN") or "nightly"
        r("rustc_tiny", output_of(["rustup", "run", toolchain, "rustc", "--version"], default="unknown"))
        if "busybox" in self.subjects:
            r("busybox_version", output_of(["dpkg-query", "-W", "-f=${Version}", "busybox-static"]))
            r("go_version", output_of(["go", "env", "GOVERSION"]))
            probe = 'import sys, requests; print("Python", sys.version.split()[0], "+ requests", requests.__version__)'
            r("python_versions", output_of(["chroot", self.pyroot, "/usr/bin/python3", "-c", probe]))

    def remove_created_tags(self):
        if self.created_tags:
            subprocess.run(["docker", "rmi", *self.created_tags], capture_output=True)


# --- the report ----------------------------------------------------------------


def render(raw, check, json_file):
    """Prints the report; returns the exit status (1 when --check finds a
    size or instruction goal missed)."""
    try:
        bench = report.Bench(raw)
        text = bench.report()
        over = bench.over_budget() if check else []
        document = bench.json_document() if json_file else None
    except report.BadInput as error:
        raise Failure(f"cannot make the report: {error}") from None
    sys.stdout.write(text)
    sys.stdout.flush()
    if document is not None:
        with open(json_file, "w", encoding="utf-8") as file:
            json.dump(document, file, indent=2, ensure_ascii=False)
            file.write("\n")
        say(f"raw figures written to {json_file}")
    if check:
        if over:
            say(f"--check failed: goals missed: {'; '.join(over)}")
            return EXIT_FAILED
        say("--check: every size and instruction goal met")
    return 0


def goals_text():
    g = report.GOALS
    return (
        f"Goals (README, Goals): release binary <= {g['binary_bytes_max']} bytes and its layer <= "
        f"{g['layer_gzip9_bytes_max']} bytes at gzip -9;\n"
        f"tiny <= {g['tiny_binary_bytes_max']} / <= {g['tiny_layer_gzip9_bytes_max']}; "
        f"<= {g['instructions_per_row_max']} instructions per row (these five --check holds);\n"
        f"batch client CPU >= {g['batch_cpu_below_python_min']}x below python's and "
        f">= {g['batch_cpu_below_go_min']}x below go's; exec to exit no slower than busybox wget;\n"
        f"peak RSS of one row <= {g['peak_rss_kib_max']} KiB; peak RSS against a server declaring 10 MiB at "
        f"CONCURRENCY=64 <= {g['hostile_peak_rss_kib_max']} KiB;\n"
        f"a server closing after each reply: exit 0 within {g['close_vs_close_header_time_max']}x the time of "
        "one sending Connection: close;\n"
        "CONCURRENCY=auto within 15% of the best fixed setting's wall time (50% on sub-second runs) with at most "
        "5% 429s against services\nthat refuse past their slots, within 15% and at most 3x the slots in flight "
        "against one that queues, and within 15% of CONCURRENCY=1 against one slot."
    )


# --- command line ----------------------------------------------------------------


def assignment(text):
    name, equals, value = text.partition("=")
    if not equals or name not in SUBJECTS or not value:
        raise argparse.ArgumentTypeError(f"expected SUBJECT=VALUE with SUBJECT one of {', '.join(SUBJECTS)}")
    return name, value


def positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs a positive whole number, not {text!r}")
    return value


def sections_argument(text):
    try:
        return parse_sections(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parser():
    top = argparse.ArgumentParser(prog="bench/bench.py", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    m = commands.add_parser("measure", help="measure and report (scripts/bench runs it)")
    m.add_argument("--sections", type=sections_argument, required=True, help="comma-separated; sizes always")
    m.add_argument("--check", action="store_true", help="exit 1 when a size or instruction goal is missed")
    m.add_argument("--json", metavar="FILE")
    m.add_argument("--runs", type=positive, default=30)
    m.add_argument("--cold-runs", type=positive, default=3)
    m.add_argument("--batch-rows", type=positive, default=100000)
    m.add_argument("--batch-runs", type=positive, default=5)
    m.add_argument("--work", required=True, help="a scratch directory that scripts/bench removes")
    m.add_argument("--logs", required=True)
    m.add_argument("--binary", type=assignment, action="append", default=[], metavar="SUBJECT=PATH")
    m.add_argument("--tag", type=assignment, action="append", default=[], metavar="SUBJECT=IMAGE")
    m.add_argument("--echo", metavar="PATH", help="examples/echo_service.rs, built")
    m.add_argument("--pyroot", metavar="DIR", help="the Python root filesystem, for chroot")
    r = commands.add_parser("report", help="render the report from a measurements.json")
    r.add_argument("measurements")
    r.add_argument("--check", action="store_true")
    r.add_argument("--json", metavar="FILE")
    commands.add_parser("debian-mirror", help="print the Debian mirror apt uses here")
    commands.add_parser("goals", help="print the goals")
    return top


def on_signal(number, _frame):
    # Leaves through the finally blocks, which stop what was started; a
    # second signal (scripts/bench passes on the one it got) must not cut
    # them short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + number)


def measure(args):
    if args.check and "instructions" not in args.sections:
        raise Failure("--check needs the instructions section")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run = Measurement(args)
    try:
        raw = run.run()
    finally:
        run.remove_created_tags()
    path = os.path.join(args.logs, "measurements.json")
    with open(path, "w", encoding="utf-8") as file:
        json.dump(raw, file, indent=1)
        file.write("\n")
    return render(raw, args.check, args.json)


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        if args.command == "measure":
            return measure(args)
        if args.command == "report":
            try:
                with open(args.measurements, encoding="utf-8") as file:
                    raw = json.load(file)
            except (OSError, ValueError) as error:
                raise Failure(f"cannot read {args.measurements}: {error}") from None
            return render(raw, args.check, args.json)
        if args.command == "debian-mirror":
            directory = "/etc/apt/sources.list.d"
            names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
            sources = [read_text(os.path.join(directory, n)) for n in names if n.endswith(".sources")]
            lists = [read_text("/etc/apt/sources.list")]
            lists += [read_text(os.path.join(directory, n)) for n in names if n.endswith(".list")]
            print(debian_mirror(sources, lists) or "http://deb.debian.org/debian")
            return 0
        print(goals_text())
        return 0
    except (Failure, rusage.CannotStart) as error:
        say(str(error))
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
