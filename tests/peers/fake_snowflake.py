#!/usr/bin/env python3
"""A fake Snowflake account on 127.0.0.1, for driving the real Snowflake CLI.

It speaks the REST protocol of snowflake-connector-python as far as `snow sql`
and `snow spcs image-registry token` use it (seen by running snowflake-cli
3.30.0 against it and logging every request):

  * POST /session/v1/login-request: any user and password; answers session
    and master tokens. The session's database and schema are the
    connection's (query parameters databaseName and schemaName), if any.
  * POST /queries/v1/query-request: the SQL is in "sqlText"; the body may be
    gzip-encoded. Results go back in the JSON result format.
  * POST /session/token-request: the token that `snow spcs image-registry
    token` hands to `docker login`.
  * POST /session?delete=true: logout.
  * PUT and GET: answered with stageInfo.locationType LOCAL_FS, so the
    connector itself copies the file into or out of a local directory that
    stands for the stage.

It models what a real account does with the statements the project sends:
EXECUTE JOB SERVICE (inline or from a stage) runs the job for real, as a
process of FAKE_SNOWFLAKE_JOB_BINARY with the specification's environment,
one per replica; a stage volume's mount path is replaced by the stage's
local directory in environment values. A job name exists until DROP SERVICE
or ALTER COMPUTE POOL ... STOP ALL; a second EXECUTE with the same name fails
as Snowflake's does. SHOW [JOB] SERVICES and SHOW SERVICE CONTAINERS report
RUNNING, DONE or FAILED from the processes (with created_on, and each
instance's last_exit_code); SYSTEM$GET_SERVICE_LOGS returns an instance's
output, the node log.

The account has an event table, SNOWFLAKE.TELEMETRY.EVENTS, until ALTER
ACCOUNT UNSET EVENT_TABLE (ALTER ACCOUNT SET EVENT_TABLE = ... sets one
again; SHOW PARAMETERS LIKE 'EVENT_TABLE' IN ACCOUNT tells which). While it
has one, every line an instance prints goes into it as the instance prints
it, timestamped, when the spec sets logExporters.eventTableConfig.logLevel
(INFO: stdout and stderr; ERROR: stderr; NONE or no logExporters: nothing),
and so do the platform events: a CONTAINER.STATUS_CHANGE when an instance
starts and when it exits, the exit code in the message of a failed one.
<job>!SPCS_GET_LOGS and <job>!SPCS_GET_EVENTS read it back, in SELECT
<columns> FROM TABLE(<job>!SPCS_GET_...([START_TIME => TO_TIMESTAMP_LTZ(
'<ISO 8601>')])) [WHERE INSTANCE_ID IN (...)] [ORDER BY TIMESTAMP]; without
START_TIME they go back one day, as Snowflake's do. Rows are found by the
job's name, so a dropped job's lines are still there for the next job of
that name. Without an event table both fail.

A node is reclaimed once its instance has ended, when
FAKE_SNOWFLAKE_DIR/reclaimed_nodes.json says so for that instance:
{"<instance>": "empty" | "error"}. SYSTEM$GET_SERVICE_LOGS then returns an
empty log, or fails.

SHOW IMAGE REPOSITORIES names FAKE_SNOWFLAKE_REGISTRY,
typically not the host the tests push to. COPY INTO @stage unloads a table
of FAKE_SNOWFLAKE_DIR/tables.json as JSON lines, gzip-compressed unless
COMPRESSION = NONE. Unqualified names resolve against
the session's database and schema, and fail without them.

Everything it receives is appended to FAKE_SNOWFLAKE_DIR/requests.jsonl, one
JSON object a line: {"path": ..., "sql": ...} ("sql" for queries only). The
registry tokens it issues are appended to FAKE_SNOWFLAKE_DIR/tokens.txt, so a
test can look for them where they must not be.

Environment: FAKE_SNOWFLAKE_DIR (required), FAKE_SNOWFLAKE_JOB_BINARY
(required for EXECUTE JOB SERVICE), FAKE_SNOWFLAKE_REGISTRY (default
other-org-other-acct.registry.snowflakecomputing.com), FAKE_SNOWFLAKE_PORT
(default 0, an ephemeral port). Once listening it prints
"fake_snowflake listening on 127.0.0.1:<port>" to stderr.
"""

import gzip
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import yaml

STATE = os.environ.get("FAKE_SNOWFLAKE_DIR", "")
JOB_BINARY = os.environ.get("FAKE_SNOWFLAKE_JOB_BINARY", "")
REGISTRY = os.environ.get(
    "FAKE_SNOWFLAKE_REGISTRY", "other-org-other-acct.registry.snowflakecomputing.com"
)
# How long a synchronous EXECUTE JOB SERVICE waits for its job.
SYNC_TIMEOUT = 120

# Reentrant: a job records its start in the event table while EXECUTE holds it.
LOCK = threading.RLock()
SESSIONS = {}  # session token -> {"database": ..., "schema": ...}
SERVICES = {}  # fully qualified upper-case name -> Job
# The account's EVENT_TABLE parameter ("" when unset), and the rows of that
# event table: {"time", "service", "instance", "container", "kind": "log" or
# "event", ...}.
ACCOUNT = {"event_table": "SNOWFLAKE.TELEMETRY.EVENTS"}
EVENT_TABLE = []


class SqlError(Exception):
    def __init__(self, code, sqlstate, message):
        super().__init__(message)
        self.code = code
        self.sqlstate = sqlstate
        self.message = message


def statement(pattern, sql, complaint, flags=re.I):
    """The match of `pattern` for the whole of `sql`; else the syntax error a
    statement the fake does not take gets, saying `complaint`."""
    m = re.match(pattern, sql, flags)
    if not m:
        raise SqlError("001003", "42000", complaint)
    return m


def record(entry):
    with LOCK, open(os.path.join(STATE, "requests.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


IDENT = r'[A-Za-z_][A-Za-z0-9_$]*'
NAME = rf'{IDENT}(?:\.{IDENT}){{0,2}}'


def qualify(name, session, what):
    """db.schema.NAME, upper-cased, as an unquoted identifier resolves."""
    parts = [p.upper() for p in name.split(".")]
    if len(parts) < 3:
        if len(parts) == 1:
            if not session.get("schema"):
                raise SqlError(
                    "090106",
                    "22000",
                    f"Cannot perform {what}. This session does not have a current schema. "
                    "Call 'USE SCHEMA', or use a qualified name.",
                )
            parts.insert(0, session["schema"].upper())
        if not session.get("database"):
            raise SqlError(
                "090105",
                "22000",
                f"Cannot perform {what}. This session does not have a current database. "
                "Call 'USE DATABASE', or use a qualified name.",
            )
        parts.insert(0, session["database"].upper())
    return ".".join(parts)


def stage_dir(stage_name):
    path = os.path.join(STATE, "stages", stage_name)
    os.makedirs(path, exist_ok=True)
    return path


def ingest(row):
    """Adds a row to the account's event table, if it has one."""
    with LOCK:
        if ACCOUNT["event_table"]:
            EVENT_TABLE.append({"time": time.time(), **row})


class Job:
    """One job service: a process per replica of the spec's first container,
    each with a thread that reads its output as it comes."""

    def __init__(self, name, pool, spec, replicas):
        self.name = name
        self.pool = pool
        self.replicas = replicas
        self.created = time.time()
        container = spec["spec"]["containers"][0]
        self.container = container["name"]
        self.image = container["image"]
        env = {k: str(v) for k, v in (container.get("env") or {}).items()}
        mounts = {}
        volumes = {v["name"]: v for v in spec["spec"].get("volumes") or []}
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            if volume.get("source") == "stage":
                stage = volume["stageConfig"]["name"].lstrip("@").upper()
                mounts[mount["mountPath"].rstrip("/")] = stage_dir(stage)
        for key, value in env.items():
            for mount_path, local in mounts.items():
                if value == mount_path or value.startswith(mount_path + "/"):
                    env[key] = local + value[len(mount_path):]
        level = ((spec["spec"].get("logExporters") or {}).get("eventTableConfig") or {}).get("logLevel")
        self.exported = {"INFO": ("stdout", "stderr"), "ERROR": ("stderr",)}.get(level, ())
        self.logs = []
        self.log_lock = threading.Lock()
        self.processes = []
        self.exit_codes = [None] * replicas
        self.watchers = []
        for index in range(replicas):
            log_path = os.path.join(STATE, f"job-{uuid.uuid4().hex}-{index}.log")
            self.logs.append(log_path)
            open(log_path, "wb").close()
            self.processes.append(
                subprocess.Popen(
                    [JOB_BINARY],
                    env={
                        **env,
                        "SNOWFLAKE_JOB_INDEX": str(index),
                        "SNOWFLAKE_JOBS_COUNT": str(replicas),
                    },
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
            self.status_change(index, "INFO", "RUNNING", "Running")
            watcher = threading.Thread(target=self.watch, args=(index,), daemon=True)
            self.watchers.append(watcher)
            watcher.start()

    def status_change(self, index, severity, status, message):
        ingest({
            "service": self.name, "instance": index, "container": self.container,
            "kind": "event", "severity": severity, "event": "CONTAINER.STATUS_CHANGE",
            "details": {"status": status, "message": message},
        })

    def read(self, index, stream, name):
        """Each line to the node log, and to the event table if exported."""
        for raw in iter(stream.readline, b""):
            with self.log_lock, open(self.logs[index], "ab") as log:
                log.write(raw)
            if name in self.exported:
                ingest({
                    "service": self.name, "instance": index, "container": self.container,
                    "kind": "log", "stream": name,
                    "line": raw.decode("utf-8", "replace").rstrip("\n"),
                })

    def watch(self, index):
        process = self.processes[index]
        errors = threading.Thread(target=self.read, args=(index, process.stderr, "stderr"), daemon=True)
        errors.start()
        self.read(index, process.stdout, "stdout")
        errors.join()
        code = process.wait()
        self.exit_codes[index] = code
        if code == 0:
            self.status_change(index, "INFO", "DONE", "Completed successfully")
        elif code < 0:
            self.status_change(index, "ERROR", "FAILED", f"Container was stopped by signal {-code}")
        else:
            self.status_change(index, "ERROR", "FAILED", f"Container exited with code {code}")

    def instance_status(self, index):
        # Ended once its output is read to the end and its exit recorded.
        if self.watchers[index].is_alive():
            return "RUNNING"
        return "DONE" if self.exit_codes[index] == 0 else "FAILED"

    def status(self):
        statuses = [self.instance_status(i) for i in range(self.replicas)]
        if "RUNNING" in statuses:
            return "RUNNING"
        return "FAILED" if "FAILED" in statuses else "DONE"

    def wait(self):
        deadline = time.monotonic() + SYNC_TIMEOUT
        for watcher in self.watchers:
            watcher.join(timeout=max(0, deadline - time.monotonic()))

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for watcher in self.watchers:
            watcher.join(timeout=10)


# Column types other than text, as the JSON result format sends them: the
# connector turns them into what it gives snow (int, datetime, JSON text).
TYPES = {
    "fixed": {"precision": 38, "scale": 0},
    "timestamp_ntz": {"precision": 0, "scale": 9},
    "timestamp_ltz": {"precision": 0, "scale": 9},
    "object": {"precision": None, "scale": None},
}


def wire(value, kind):
    if value is None:
        return None
    if kind in ("timestamp_ntz", "timestamp_ltz"):
        return f"{value:.9f}"  # seconds since the epoch
    if kind == "object":
        return json.dumps(value)
    return str(value)


def result(columns, rows, types=None):
    types = types or {}
    return {
        "rowtype": [
            {
                "name": c,
                "type": types.get(c, "text"),
                "nullable": True,
                "length": 16777216,
                "byteLength": 16777216,
                "precision": TYPES.get(types.get(c), {}).get("precision"),
                "scale": TYPES.get(types.get(c), {}).get("scale"),
                "database": "",
                "schema": "",
                "table": "",
                "collation": None,
            }
            for c in columns
        ],
        "rowset": [[wire(v, types.get(c)) for c, v in zip(columns, row)] for row in rows],
        "total": len(rows),
        "returned": len(rows),
        "queryResultFormat": "json",
        "statementTypeId": 4096,
    }


def done(message="Statement executed successfully."):
    return result(["status"], [[message]])


def execute_job(sql, session):
    m = statement(
        rf"EXECUTE\s+JOB\s+SERVICE\s+IN\s+COMPUTE\s+POOL\s+({IDENT})\s+FROM\s+"
        rf"(?:SPECIFICATION\s+\$\$(?P<inline>.*?)\$\$|(?P<stage>@{NAME})\s+SPECIFICATION_FILE\s*=\s*'(?P<file>[^']*)')"
        rf"\s+NAME\s*=\s*(?P<name>{NAME})(?P<options>.*?);?\s*$",
        sql,
        "SQL compilation error: syntax error in EXECUTE JOB SERVICE",
        re.S | re.I,
    )
    pool = m.group(1).upper()
    if m.group("inline") is not None:
        text = m.group("inline")
    else:
        stage = qualify(m.group("stage")[1:], session, "EXECUTE JOB SERVICE")
        path = os.path.join(stage_dir(stage), m.group("file"))
        if not os.path.isfile(path):
            raise SqlError(
                "391909", "22000", f"Specification file '{m.group('file')}' not found in stage @{stage}."
            )
        with open(path, encoding="utf-8") as f:
            text = f.read()
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SqlError("395018", "22023", f"Invalid spec: unable to parse yaml: {e}")
    options = m.group("options")
    replicas = 1
    r = re.search(r"REPLICAS\s*=\s*(\d+)", options, re.I)
    if r:
        replicas = int(r.group(1))
    is_async = re.search(r"ASYNC\s*=\s*TRUE", options, re.I) is not None
    name = qualify(m.group("name"), session, "EXECUTE JOB SERVICE")
    with LOCK:
        if name in SERVICES:
            raise SqlError(
                "002002", "42710", f"SQL compilation error:\nObject '{name}' already exists."
            )
        if not JOB_BINARY:
            raise SqlError("000603", "XX000", "the fake has no FAKE_SNOWFLAKE_JOB_BINARY to run")
        job = Job(name, pool, spec, replicas)
        SERVICES[name] = job
    short = name.split(".")[-1]
    if is_async:
        return done(f"Request to execute job {short} submitted successfully.")
    job.wait()
    status = job.status()
    if status == "RUNNING":
        raise SqlError(
            "000630", "57014", f"Statement reached its timeout of {SYNC_TIMEOUT} seconds (job {short} still runs)."
        )
    if status == "FAILED":
        raise SqlError(
            "395029",
            "22000",
            f"Job {short} failed with status: FAILED. Read its logs with SYSTEM$GET_SERVICE_LOGS.",
        )
    return done(f"Job {short} completed successfully with status: {status}.")


SERVICE_COLUMNS = [
    "name", "status", "database_name", "schema_name", "owner", "compute_pool",
    "created_on", "is_job", "is_async_job",
]


def show_services(sql, session):
    m = statement(
        rf"SHOW\s+(JOB\s+)?SERVICES(?:\s+LIKE\s+'(?P<like>[^']*)')?"
        rf"(?:\s+IN\s+SCHEMA(?:\s+(?P<schema>{IDENT}(?:\.{IDENT})?))?)?"
        rf"(?:\s*->>\s*SELECT\s+(?P<picked>\"[a-z_]+\"(?:\s*,\s*\"[a-z_]+\")*)\s+FROM\s+\$1"
        rf"\s+WHERE\s+\"name\"\s*=\s*'(?P<exact>[^']*)')?\s*;?\s*$",
        sql,
        "SQL compilation error: syntax error in SHOW SERVICES",
        re.S | re.I,
    )
    # IN SCHEMA alone is the session's schema; a bare schema is in the
    # session's database.
    prefix = m.group("schema") + "." if m.group("schema") else ""
    schema = qualify(prefix + "x", session, "SHOW SERVICES").rsplit(".", 1)[0]
    like = None
    if m.group("like") is not None:
        # LIKE is case-insensitive; % and _ are wildcards.
        pattern = "".join(
            ".*" if c == "%" else "." if c == "_" else re.escape(c) for c in m.group("like")
        )
        like = re.compile(pattern + r"\Z", re.I | re.S)
    rows = []
    with LOCK:
        for name, job in sorted(SERVICES.items()):
            db, sch, short = name.split(".")
            if f"{db}.{sch}" != schema or (like and not like.match(short)):
                continue
            rows.append([short, job.status(), db, sch, "TEST_ROLE", job.pool, job.created, "true", "false"])
    types = {"created_on": "timestamp_ltz"}
    if m.group("exact") is not None:
        picked = [c.strip().strip('"') for c in m.group("picked").split(",")]
        for c in picked:
            if c not in SERVICE_COLUMNS:
                raise SqlError("000904", "42000", f"SQL compilation error: invalid identifier '\"{c}\"'")
        index = [SERVICE_COLUMNS.index(c) for c in picked]
        chosen = [[r[i] for i in index] for r in rows if r[0] == m.group("exact")]
        return result(picked, chosen, types)
    return result(SERVICE_COLUMNS, rows, types)


def service(name, session, what):
    full = qualify(name, session, what)
    with LOCK:
        job = SERVICES.get(full)
    if job is None:
        raise SqlError(
            "002003", "02000", f"SQL compilation error:\nService '{full}' does not exist or not authorized."
        )
    return job


def show_containers(sql, session):
    m = statement(
        rf"SHOW\s+SERVICE\s+CONTAINERS\s+IN\s+SERVICE\s+({NAME})\s*;?\s*$",
        sql,
        "SQL compilation error: syntax error in SHOW SERVICE CONTAINERS",
    )
    job = service(m.group(1), session, "SHOW SERVICE CONTAINERS")
    db, sch, short = job.name.split(".")
    rows = []
    messages = {
        "RUNNING": "Running",
        "DONE": "Completed successfully",
        "FAILED": "Encountered fatal error while running, check container logs",
    }
    for i in range(job.replicas):
        status = job.instance_status(i)
        code = job.exit_codes[i] if status != "RUNNING" else None
        rows.append([db, sch, short, i, job.container, status, messages[status], job.image, code])
    columns = [
        "database_name", "schema_name", "service_name", "instance_id",
        "container_name", "status", "message", "image_name", "last_exit_code",
    ]
    return result(columns, rows, {"instance_id": "fixed", "last_exit_code": "fixed"})


def service_logs(sql, session):
    m = statement(
        rf"SELECT\s+SYSTEM\$GET_SERVICE_LOGS\s*\(\s*'({NAME})'\s*,\s*(\d+)\s*,\s*'([^']*)'\s*(?:,\s*\d+\s*)?\)\s*;?\s*$",
        sql,
        "SQL compilation error: syntax error in GET_SERVICE_LOGS",
    )
    job = service(m.group(1), session, "GET_SERVICE_LOGS")
    index, container = int(m.group(2)), m.group(3)
    if index >= job.replicas or container != job.container:
        raise SqlError(
            "391905", "22000",
            f"Container '{container}' of instance {index} does not exist in service {job.name}.",
        )
    reclaimed = reclaimed_nodes().get(str(index)) if job.instance_status(index) != "RUNNING" else None
    if reclaimed == "error":
        raise SqlError(
            "391906", "22000",
            f"Container '{container}' of instance {index} of service {job.name} is not available: "
            "its compute pool node was released.",
        )
    text = ""
    if reclaimed is None:
        with open(job.logs[index], encoding="utf-8", errors="replace") as f:
            text = f.read()
    column = f"SYSTEM$GET_SERVICE_LOGS('{m.group(1).upper()}', {index}, '{container.upper()}')"
    return result([column], [[text]])


def reclaimed_nodes():
    """{"<instance>": "empty" | "error"} from FAKE_SNOWFLAKE_DIR."""
    try:
        with open(os.path.join(STATE, "reclaimed_nodes.json"), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


LOG_COLUMNS = {
    "TIMESTAMP": ("timestamp_ntz", lambda r: r["time"]),
    "INSTANCE_ID": ("fixed", lambda r: r["instance"]),
    "CONTAINER_NAME": ("text", lambda r: r["container"]),
    "LOG": ("text", lambda r: r["line"]),
    "RECORD_ATTRIBUTES": ("object", lambda r: {"log.iostream": r["stream"]}),
}
EVENT_COLUMNS = {
    "TIMESTAMP": ("timestamp_ntz", lambda r: r["time"]),
    "INSTANCE_ID": ("fixed", lambda r: r["instance"]),
    "CONTAINER_NAME": ("text", lambda r: r["container"]),
    "SEVERITY": ("text", lambda r: r["severity"]),
    "EVENT_NAME": ("text", lambda r: r["event"]),
    "EVENT_DETAILS": ("object", lambda r: r["details"]),
    "RECORD": ("object", lambda r: {"severity_text": r["severity"], "name": r["event"]}),
    "RECORD_ATTRIBUTES": ("object", lambda r: {}),
}


def service_table(sql, session):
    """SELECT ... FROM TABLE(<job>!SPCS_GET_LOGS(...)) or SPCS_GET_EVENTS."""
    m = statement(
        rf"SELECT\s+(?P<columns>\*|[A-Z_]+(?:\s*,\s*[A-Z_]+)*)\s+FROM\s+TABLE\s*\(\s*(?P<name>{NAME})"
        rf"!SPCS_GET_(?P<kind>LOGS|EVENTS)\s*\((?P<args>(?:[^()]|\([^()]*\))*)\)\s*\)"
        rf"(?:\s+WHERE\s+INSTANCE_ID\s+IN\s*\((?P<ids>[\d\s,]+)\))?"
        rf"(?P<ordered>\s+ORDER\s+BY\s+TIMESTAMP)?\s*;?\s*$",
        sql,
        "SQL compilation error: syntax error in a SPCS_GET_LOGS or SPCS_GET_EVENTS query (the fake reads the project's)",
        re.S | re.I,
    )
    job = service(m.group("name"), session, f"SPCS_GET_{m.group('kind').upper()}")
    with LOCK:
        event_table = ACCOUNT["event_table"]
        rows = list(EVENT_TABLE)
    if not event_table:
        raise SqlError(
            "391930", "22000",
            "SQL execution error: this account has no event table (its EVENT_TABLE parameter is not set).",
        )
    window = {"START_TIME": time.time() - 86400, "END_TIME": time.time()}
    for arg in re.finditer(r"(START_TIME|END_TIME)\s*=>\s*TO_TIMESTAMP_LTZ\s*\(\s*'([^']*)'\s*\)", m.group("args"), re.I):
        try:
            window[arg.group(1).upper()] = datetime.fromisoformat(arg.group(2)).timestamp()
        except ValueError:
            raise SqlError("100035", "22007", f"Timestamp '{arg.group(2)}' is not recognized")
    kind = "log" if m.group("kind").upper() == "LOGS" else "event"
    ids = None
    if m.group("ids"):
        ids = {int(i) for i in m.group("ids").replace(",", " ").split()}
    rows = [
        r for r in rows
        if r["kind"] == kind and r["service"] == job.name
        and window["START_TIME"] <= r["time"] <= window["END_TIME"]
        and (ids is None or r["instance"] in ids)
    ]
    if m.group("ordered"):
        rows.sort(key=lambda r: r["time"])
    known = LOG_COLUMNS if kind == "log" else EVENT_COLUMNS
    columns = list(known) if m.group("columns") == "*" else [c.strip().upper() for c in m.group("columns").split(",")]
    for c in columns:
        if c not in known:
            raise SqlError("000904", "42000", f"SQL compilation error: error line 1 at position 7\ninvalid identifier '{c}'")
    return result(
        columns,
        [[known[c][1](r) for c in columns] for r in rows],
        {c: known[c][0] for c in columns},
    )


def alter_account(sql, session):
    m = statement(
        rf"ALTER\s+ACCOUNT\s+(?:SET\s+EVENT_TABLE\s*=\s*(?P<table>{NAME})|(?P<unset>UNSET\s+EVENT_TABLE))\s*;?\s*$",
        sql,
        "SQL compilation error: the fake's ALTER ACCOUNT sets or unsets EVENT_TABLE only",
    )
    with LOCK:
        ACCOUNT["event_table"] = "" if m.group("unset") else m.group("table").upper()
    return done()


def show_parameters(sql, session):
    statement(
        r"SHOW\s+PARAMETERS\s+LIKE\s+'EVENT_TABLE'\s+IN\s+ACCOUNT\s*;?\s*$",
        sql,
        "SQL compilation error: the fake shows the EVENT_TABLE parameter only",
    )
    with LOCK:
        value = ACCOUNT["event_table"]
    columns = ["key", "value", "default", "level", "description", "type"]
    row = ["EVENT_TABLE", value, "", "ACCOUNT" if value else "", "Event table for logs and traces.", "STRING"]
    return result(columns, [row])


def drop_service(sql, session):
    m = statement(
        rf"DROP\s+SERVICE\s+(IF\s+EXISTS\s+)?({NAME})\s*;?\s*$",
        sql,
        "SQL compilation error: syntax error in DROP SERVICE",
    )
    full = qualify(m.group(2), session, "DROP SERVICE")
    with LOCK:
        job = SERVICES.pop(full, None)
    if job is None:
        if m.group(1):
            return done(f"Drop statement executed successfully ({full.split('.')[-1]} already dropped).")
        raise SqlError(
            "002003", "02000", f"SQL compilation error:\nService '{full}' does not exist or not authorized."
        )
    job.stop()
    return done(f"{full.split('.')[-1]} successfully dropped.")


def stop_pool(sql, session):
    m = statement(
        rf"ALTER\s+COMPUTE\s+POOL\s+({IDENT})\s+STOP\s+ALL\s*;?\s*$",
        sql,
        "SQL compilation error: syntax error in ALTER COMPUTE POOL",
    )
    pool = m.group(1).upper()
    with LOCK:
        stopped = [n for n, j in SERVICES.items() if j.pool == pool]
        jobs = [SERVICES.pop(n) for n in stopped]
    for job in jobs:
        job.stop()
    return done()


def put(sql, session):
    m = statement(
        rf"PUT\s+'file://([^']+)'\s+@({NAME})(/[^\s]*)?(?P<options>.*?);?\s*$",
        sql,
        "SQL compilation error: syntax error in PUT",
        re.S | re.I,
    )
    stage = qualify(m.group(2), session, "PUT")
    sub = (m.group(3) or "").strip("/")
    location = os.path.join(stage_dir(stage), sub)
    options = m.group("options")
    auto_compress = re.search(r"AUTO_COMPRESS\s*=\s*FALSE", options, re.I) is None
    overwrite = re.search(r"OVERWRITE\s*=\s*TRUE", options, re.I) is not None
    return {
        "command": "UPLOAD",
        "src_locations": [m.group(1)],
        "parallel": 1,
        "autoCompress": auto_compress,
        "overwrite": overwrite,
        "sourceCompression": "auto_detect",
        "stageInfo": {
            "locationType": "LOCAL_FS",
            "location": location,
            "path": "",
            "region": None,
            "storageAccount": None,
            "isClientSideEncrypted": False,
            "creds": {},
            "endPoint": None,
        },
        "encryptionMaterial": None,
        "rowtype": [],
        "rowset": [],
        "statementTypeId": 28673,
    }


def get(sql, session):
    m = statement(
        rf"GET\s+@({NAME})(/[^\s']*)?\s+'file://([^']+)'(?:\s+PATTERN\s*=\s*'([^']*)')?\s*;?\s*$",
        sql,
        "SQL compilation error: syntax error in GET",
        re.S | re.I,
    )
    stage = qualify(m.group(1), session, "GET")
    root = stage_dir(stage)
    sub = (m.group(2) or "").strip("/")
    pattern = re.compile(m.group(4) + r"\Z", re.S) if m.group(4) else None
    files = []
    for dirpath, _, names in os.walk(os.path.join(root, sub)):
        for n in sorted(names):
            rel = os.path.relpath(os.path.join(dirpath, n), root)
            if pattern is None or pattern.match(rel):
                files.append(rel)
    return {
        "command": "DOWNLOAD",
        "src_locations": files,
        "localLocation": m.group(3),
        "parallel": 1,
        "stageInfo": {
            "locationType": "LOCAL_FS",
            "location": root,
            "path": "",
            "region": None,
            "storageAccount": None,
            "isClientSideEncrypted": False,
            "creds": {},
            "endPoint": None,
        },
        "encryptionMaterial": [None] * len(files),
        "rowtype": [],
        "rowset": [],
        "statementTypeId": 28674,
    }


def copy_into(sql, session):
    """Unloads a table to a stage, as COPY INTO @stage FROM (SELECT
    ARRAY_CONSTRUCT(col, ...) FROM table) FILE_FORMAT = (TYPE = JSON ...)
    does: one compact JSON array a line, gzip-compressed unless COMPRESSION =
    NONE. Tables come from FAKE_SNOWFLAKE_DIR/tables.json, {"NAME":
    {"columns": [...], "rows": [[...], ...]}}, found by the last part of
    their name."""
    m = statement(
        rf"COPY\s+INTO\s+@({NAME})(/[^\s]*)?\s+FROM\s+\(\s*SELECT\s+ARRAY_CONSTRUCT\s*\(([^)]*)\)"
        rf"\s+FROM\s+({NAME})\s*\)\s+FILE_FORMAT\s*=\s*\((?P<format>[^)]*)\)(?P<options>.*?);?\s*$",
        sql,
        "SQL compilation error: syntax error in COPY INTO (the fake unloads ARRAY_CONSTRUCT of columns only)",
        re.S | re.I,
    )
    stage = qualify(m.group(1), session, "COPY INTO")
    file_format, options = m.group("format"), m.group("options")
    if not re.search(r"TYPE\s*=\s*'?JSON'?", file_format, re.I):
        raise SqlError("001003", "42000", "SQL compilation error: the fake unloads TYPE = JSON only")
    compressed = not re.search(r"COMPRESSION\s*=\s*'?NONE'?", file_format, re.I)
    single = re.search(r"SINGLE\s*=\s*TRUE", options, re.I) is not None
    overwrite = re.search(r"OVERWRITE\s*=\s*TRUE", options, re.I) is not None
    try:
        with open(os.path.join(STATE, "tables.json"), encoding="utf-8") as f:
            tables = json.load(f)
    except FileNotFoundError:
        tables = {}
    table_name = m.group(4).split(".")[-1].upper()
    if table_name not in tables:
        raise SqlError("002003", "42S02", f"SQL compilation error:\nObject '{table_name}' does not exist or not authorized.")
    table = tables[table_name]
    columns = [c.upper() for c in table["columns"]]
    picked = []
    for column in m.group(3).split(","):
        name = column.strip().upper()
        if name not in columns:
            raise SqlError("000904", "42000", f"SQL compilation error: error line 1 at position 0\ninvalid identifier '{name}'")
        picked.append(columns.index(name))
    text = "".join(
        json.dumps([row[i] for i in picked], separators=(",", ":"), ensure_ascii=False) + "\n"
        for row in table["rows"]
    ).encode("utf-8")
    path = (m.group(2) or "/data_").strip("/")
    if not single:
        path += "_0_0_0.json" + (".gz" if compressed else "")
    target = os.path.join(stage_dir(stage), path)
    if os.path.exists(target) and not overwrite:
        raise SqlError("001030", "22000", "Files already existing at the unload destination. Use overwrite option to force unloading.")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    data = gzip.compress(text) if compressed else text
    with open(target, "wb") as f:
        f.write(data)
    return result(
        ["rows_unloaded", "input_bytes", "output_bytes"],
        [[str(len(table["rows"])), str(len(text)), str(len(data))]],
    )


def image_repositories(sql, session):
    columns = ["created_on", "name", "database_name", "schema_name", "repository_url", "owner"]
    row = [
        "2026-01-01 00:00:00.000 -0800",
        "TUTORIAL_REPOSITORY",
        "TUTORIAL_DB",
        "DATA_SCHEMA",
        f"{REGISTRY}/tutorial_db/data_schema/tutorial_repository",
        "TEST_ROLE",
    ]
    return result(columns, [row])


STATEMENTS = [
    (r"ALTER\s+SESSION\b", lambda sql, session: done()),
    (r"EXECUTE\s+JOB\s+SERVICE\b", execute_job),
    (r"SHOW\s+(JOB\s+)?SERVICES\b", show_services),
    (r"SHOW\s+SERVICE\s+CONTAINERS\b", show_containers),
    (r"SHOW\s+IMAGE\s+REPOSITORIES\b", image_repositories),
    (r"SELECT\s+SYSTEM\$GET_SERVICE_LOGS\b", service_logs),
    (r"SELECT\s.*?\bFROM\s+TABLE\s*\(\s*[^()]*!SPCS_GET_", service_table),
    (r"ALTER\s+ACCOUNT\b", alter_account),
    (r"SHOW\s+PARAMETERS\b", show_parameters),
    (r"DROP\s+SERVICE\b", drop_service),
    (r"ALTER\s+COMPUTE\s+POOL\b", stop_pool),
    (r"PUT\s", put),
    (r"COPY\s+INTO\s+@", copy_into),
    (r"GET\s", get),
    (r"SELECT\s+CURRENT_VERSION\s*\(\s*\)", lambda sql, session: result(["CURRENT_VERSION()"], [["9.0.0"]])),
]


def run_sql(sql, session):
    text = sql.strip()
    for pattern, handler in STATEMENTS:
        if re.match(pattern, text, re.I):
            return handler(text, session)
    raise SqlError(
        "001003", "42000", f"SQL compilation error:\nthe fake Snowflake does not know: {text[:80]}"
    )


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            data = gzip.decompress(data)
        return json.loads(data) if data else {}

    def reply(self, payload, status=200):
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def session(self):
        auth = self.headers.get("Authorization", "")
        m = re.match(r'Snowflake Token="([^"]*)"', auth)
        if not m:
            return None
        # Token requests carry the master token instead of the session token.
        token = m.group(1).removeprefix("master-")
        with LOCK:
            return SESSIONS.get(token)

    def do_POST(self):
        url = urlparse(self.path)
        params = parse_qs(url.query)
        body = self.body()
        if url.path == "/session/v1/login-request":
            record({"path": url.path})
            token = "session-" + secrets.token_hex(8)
            session = {
                "database": (params.get("databaseName") or [""])[0],
                "schema": (params.get("schemaName") or [""])[0],
            }
            with LOCK:
                SESSIONS[token] = session
            self.reply({
                "success": True,
                "code": None,
                "message": None,
                "data": {
                    "token": token,
                    "masterToken": "master-" + token,
                    "validityInSeconds": 3600,
                    "masterValidityInSeconds": 14400,
                    "sessionId": 1,
                    "parameters": [],
                    "sessionInfo": {
                        "databaseName": session["database"].upper() or None,
                        "schemaName": session["schema"].upper() or None,
                        "warehouseName": None,
                        "roleName": "TEST_ROLE",
                    },
                },
            })
            return
        session = self.session()
        if session is None:
            record({"path": url.path, "error": "no session", "auth": self.headers.get("Authorization", "")})
            self.reply({"success": False, "code": "390104", "message": "no session", "data": None})
            return
        if url.path == "/session/token-request":
            record({"path": url.path, "requestType": body.get("requestType")})
            token = "registry-" + secrets.token_hex(16)
            with LOCK, open(os.path.join(STATE, "tokens.txt"), "a", encoding="utf-8") as f:
                f.write(token + "\n")
                SESSIONS[token] = session
            self.reply({
                "success": True,
                "code": None,
                "message": None,
                "data": {
                    "sessionToken": token,
                    "validityInSecondsST": 3600,
                    "masterToken": "master-" + token,
                    "masterValidityInSeconds": 14400,
                },
            })
            return
        if url.path == "/session":
            record({"path": url.path})
            self.reply({"success": True, "code": None, "message": None, "data": None})
            return
        if url.path == "/queries/v1/query-request":
            sql = body.get("sqlText", "")
            record({"path": url.path, "sql": sql})
            query_id = str(uuid.uuid4())
            try:
                data = run_sql(sql, session)
            except SqlError as e:
                self.reply({
                    "success": False,
                    "code": e.code,
                    "message": e.message,
                    "data": {"errorCode": e.code, "sqlState": e.sqlstate, "queryId": query_id},
                })
                return
            data["queryId"] = query_id
            data["parameters"] = []
            self.reply({"success": True, "code": None, "message": None, "data": data})
            return
        # Telemetry and anything else: accepted and recorded.
        record({"path": url.path})
        self.reply({"success": True, "code": None, "message": None, "data": None})


def main():
    if not STATE or not os.path.isdir(STATE):
        print("fake_snowflake: FAKE_SNOWFLAKE_DIR must name a directory", file=sys.stderr)
        return 2
    port = int(os.environ.get("FAKE_SNOWFLAKE_PORT", "0"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"fake_snowflake listening on 127.0.0.1:{server.server_address[1]}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        with LOCK:
            jobs = list(SERVICES.values())
        for job in jobs:
            job.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
