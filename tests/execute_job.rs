//! scripts/execute-job: the exact SQL it prints with --dry-run, and the
//! calls it makes to a stand-in `snow` on PATH that records its arguments;
//! then the same through the real Snowflake CLI against a fake account
//! (tests/common/snowflake.rs), which runs the job binary for real: reruns,
//! a failing job and its platform events, a running one, the --async hint
//! pasted into bash, logs read from the event table once a node is gone,
//! --logs for every replica of an earlier job, an account without an event
//! table, and every `snow` and `scripts/execute-job` command of README's
//! deploy section.

mod common;

use common::http::{Reply, serve, serve_echo};
use common::job::job;
use common::snowflake;
use common::spcs::*;
use common::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Installs a stand-in `snow` in `dir`. Each call writes its arguments,
/// NUL-separated, to `dir/call-N`; a PUT also copies the uploaded file to
/// `dir/call-N.uploaded`. EXECUTE exits with $FAIL_EXECUTE (default 0), and
/// the job's status is then FAILED. The --format json answers are shaped
/// like the real snow's: no job before the run, then instance 0's container,
/// its node log, and a status-change event carrying the exit code.
fn install_stand_in(dir: &Path) {
    let script = r#"#!/bin/sh
n=$(ls "$STANDIN_DIR" | grep -c '^call-[0-9]*$')
f="$STANDIN_DIR/call-$n"
q=""
prev=""
for a in "$@"; do
    printf '%s\0' "$a" >> "$f"
    [ "$prev" = "-q" ] && q="$a"
    prev="$a"
done
: >> "$f"
status=DONE
[ "${FAIL_EXECUTE:-0}" = 0 ] || status=FAILED
case "$q" in
    PUT*)
        path=$(printf '%s\n' "$q" | sed -n "s|^PUT 'file://\([^']*\)'.*|\1|p")
        cp "$path" "$f.uploaded"
        echo "uploaded $path"
        ;;
    EXECUTE*)
        echo "Job TUTORIAL3_JOB_SERVICE completed successfully with status: DONE"
        exit "${FAIL_EXECUTE:-0}"
        ;;
    *"SHOW SERVICE CONTAINERS"*)
        printf '[[{"status": "%s", "created_on": "2026-01-01T00:00:00+00:00"}],\n' "$status"
        printf ' [{"instance_id": 0, "container_name": "main", "status": "%s", "message": "-"}]]\n' "$status"
        ;;
    SHOW*) echo "[]" ;;
    *GET_SERVICE_LOGS*)
        printf '%s\n' '[{"LOG": "service-to-service [2026-01-01 00:00:00,000] [INFO] Received response from http://echo-service:8000/echo: Bob said Hello\n"}]'
        ;;
    *SPCS_GET_EVENTS*)
        printf '[{"TIMESTAMP": "2026-01-01T00:00:01", "INSTANCE_ID": 0, "CONTAINER_NAME": "main", "SEVERITY": "ERROR", "EVENT_NAME": "CONTAINER.STATUS_CHANGE", "EVENT_DETAILS": "{\\"message\\": \\"Container exited with code %s\\"}"}]\n' "${FAIL_EXECUTE:-0}"
        ;;
esac
"#;
    write_executable(&dir.join("snow"), script);
}

fn calls(dir: &Path) -> Vec<Vec<String>> {
    let mut calls = Vec::new();
    for n in 0.. {
        let Ok(bytes) = fs::read(dir.join(format!("call-{n}"))) else {
            break;
        };
        let text = String::from_utf8(bytes).unwrap();
        calls.push(
            text.split('\0')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
        );
    }
    calls
}

/// Runs scripts/execute-job with a clean set of its variables, the given
/// ones, and `dir` (holding the stand-in snow, if any) first on PATH.
fn execute_job(dir: &Path, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(repo_root().join("scripts/execute-job"));
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", dir.display());
    cmd.env("PATH", path)
        .env("STANDIN_DIR", dir)
        .stdin(Stdio::null())
        .args(args);
    for var in snowflake::SCRIPT_SETTINGS.iter().chain(&["FAIL_EXECUTE"]) {
        cmd.env_remove(var);
    }
    // Each run draws its own otherwise, and the SQL could not be compared.
    cmd.env("QUERY_ID", DRY_RUN_QUERY_ID);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run scripts/execute-job")
}

/// What every run starts with: is a job of that name there, and in what
/// status; and the DROP that follows only when it is.
const CHECK_SQL: &str = "SHOW JOB SERVICES LIKE 'TUTORIAL3_JOB_SERVICE' IN SCHEMA tutorial_db.data_schema ->> SELECT \"status\", \"created_on\" FROM $1 WHERE \"name\" = 'TUTORIAL3_JOB_SERVICE';

-- only if that job exists and has finished, or with --replace:
DROP SERVICE IF EXISTS tutorial_db.data_schema.tutorial3_job_service;

";

/// The query id the runs compared here are given.
const DRY_RUN_QUERY_ID: &str = "dry-run-query-id";

const DEFAULT_SQL: &str = "EXECUTE JOB SERVICE
  IN COMPUTE POOL tutorial_compute_pool
  FROM SPECIFICATION $$
spec:
  containers:
  - name: main
    image: /tutorial_db/data_schema/tutorial_repository/service_to_service:latest
    env:
      SERVICE_URL: http://echo-service:8000/echo
      QUERY_ID: \"dry-run-query-id\"
    resources:
      requests:
        memory: 16Mi
        cpu: 0.1
      limits:
        memory: 64Mi
        cpu: 0.5
  logExporters:
    eventTableConfig:
      logLevel: INFO
$$
  NAME = tutorial_db.data_schema.tutorial3_job_service;
";

/// After the job: its status and containers, in one snow call.
const STATE_SQL: &str = "SHOW JOB SERVICES LIKE 'TUTORIAL3_JOB_SERVICE' IN SCHEMA tutorial_db.data_schema ->> SELECT \"status\", \"created_on\" FROM $1 WHERE \"name\" = 'TUTORIAL3_JOB_SERVICE';
SHOW SERVICE CONTAINERS IN SERVICE tutorial_db.data_schema.tutorial3_job_service;";

/// SPCS_GET_LOGS for these instances ("1, 2") since the job's creation.
fn event_logs_sql(job: &str, created_on: &str, instances: &str) -> String {
    format!(
        "SELECT TIMESTAMP, INSTANCE_ID, CONTAINER_NAME, LOG FROM TABLE({job}!SPCS_GET_LOGS(START_TIME => TO_TIMESTAMP_LTZ('{created_on}'))) WHERE INSTANCE_ID IN ({instances}) ORDER BY TIMESTAMP;"
    )
}

/// SPCS_GET_EVENTS since the job's creation.
fn events_sql(job: &str, created_on: &str) -> String {
    format!(
        "SELECT TIMESTAMP, INSTANCE_ID, CONTAINER_NAME, SEVERITY, EVENT_NAME, EVENT_DETAILS FROM TABLE({job}!SPCS_GET_EVENTS(START_TIME => TO_TIMESTAMP_LTZ('{created_on}'))) ORDER BY TIMESTAMP;"
    )
}

/// What --dry-run prints for after the job: its status, the node log of
/// each of `instances`, and the reads of the event table that run only
/// when needed.
fn after_sql(instances: usize) -> String {
    let mut sql = format!("{STATE_SQL}\n");
    for i in 0..instances {
        sql += &format!("\n{}\n", logs_sql(i));
    }
    sql + &format!(
        "
-- only for the instances whose node log is empty or gone (<created_on> from SHOW JOB SERVICES):
{}

-- only if the job did not end DONE:
{}

-- only if reading the event table failed, to tell whether the account has one:
SHOW PARAMETERS LIKE 'EVENT_TABLE' IN ACCOUNT;
",
        event_logs_sql(JOB, "<created_on>", "<instances>"),
        events_sql(JOB, "<created_on>")
    )
}

#[test]
fn dry_run_prints_the_tutorial_sql() {
    let dir = TempDir::new("execute-job");
    install_stand_in(&dir);
    let out = execute_job(&dir, &[], &["--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("{CHECK_SQL}{DEFAULT_SQL}\n{}", after_sql(1))
    );
    assert!(calls(&dir).is_empty(), "--dry-run called snow");
}

#[test]
fn dry_run_of_logs_prints_only_what_reads_them() {
    let dir = TempDir::new("execute-job");
    install_stand_in(&dir);
    let out = execute_job(&dir, &[], &["--logs", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The instances are the ones Snowflake lists, so the node log's
    // statement is shown for each.
    let expected = after_sql(0).replacen(
        "\n\n-- only for",
        &format!(
            "\n\n-- for each instance and container that lists:\nSELECT SYSTEM$GET_SERVICE_LOGS('{JOB}', <instance>, '<container>');\n\n-- only for"
        ),
        1,
    );
    assert_eq!(stdout(&out), expected);
    assert!(calls(&dir).is_empty(), "--dry-run called snow");
}

#[test]
fn dry_run_with_the_batch_spec_and_four_replicas() {
    let dir = TempDir::new("execute-job");
    let out = execute_job(
        &dir,
        &[(
            "IMAGE",
            "/tutorial_db/data_schema/tutorial_repository/service_to_service:tiny",
        )],
        &[
            "--dry-run",
            "--spec",
            "spec/batch_job_spec.yaml",
            "--replicas",
            "4",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = CHECK_SQL.to_string()
        + "EXECUTE JOB SERVICE
  IN COMPUTE POOL tutorial_compute_pool
  FROM SPECIFICATION $$
spec:
  containers:
  - name: main
    image: /tutorial_db/data_schema/tutorial_repository/service_to_service:tiny
    env:
      SERVICE_URL: http://echo-service:8000/echo
      QUERY_ID: \"dry-run-query-id\"
      INPUT_FILE: /data/input.txt
      OUTPUT_FILE: /data/output-{index}.jsonl
      BATCH_SIZE: \"100\"
      CONCURRENCY: \"auto\"
    volumeMounts:
    - name: data
      mountPath: /data
    resources:
      requests:
        memory: 16Mi
        cpu: 0.1
      limits:
        memory: 64Mi
        cpu: 1
  volumes:
  - name: data
    source: stage
    uid: 65532
    gid: 65532
    stageConfig:
      name: \"@tutorial_db.data_schema.tutorial_stage\"
  logExporters:
    eventTableConfig:
      logLevel: INFO
$$
  NAME = tutorial_db.data_schema.tutorial3_job_service
  REPLICAS = 4;

" + &after_sql(4);
    assert_eq!(stdout(&out), expected);
}

/// The specification between the $$ quotes of an EXECUTE statement.
fn inline_spec(sql: &str) -> &str {
    let start = sql.find("$$\n").expect("opening $$") + 3;
    let end = sql[start..].find("\n$$").expect("closing $$") + start;
    &sql[start..end]
}

#[test]
fn the_inline_spec_is_valid_and_filled_in() {
    if !yaml_available() {
        return;
    }
    for spec in [
        "spec/service_to_service_spec.yaml",
        "spec/batch_job_spec.yaml",
    ] {
        let dir = TempDir::new("execute-job");
        let out = execute_job(
            &dir,
            &[
                (
                    "IMAGE",
                    "/other_db/other_schema/other_repo/service_to_service:v2",
                ),
                (
                    "SERVICE_URL",
                    "http://echo-service.abcd.svc.spcs.internal:8000/echo?x=1&y=2",
                ),
            ],
            &["--dry-run", "--spec", spec],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let sql = stdout(&out);
        let doc = parse_yaml(inline_spec(&sql)).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let problems = check_spec(&doc);
        assert!(problems.is_empty(), "{spec}: {problems:?}");
        let main = containers(&doc)[0];
        assert_eq!(
            at(main, &["image"]).and_then(string),
            Some("/other_db/other_schema/other_repo/service_to_service:v2")
        );
        assert_eq!(
            at(main, &["env", "SERVICE_URL"]).and_then(string),
            Some("http://echo-service.abcd.svc.spcs.internal:8000/echo?x=1&y=2")
        );
    }
}

#[test]
fn flags_override_the_environment_which_overrides_the_defaults() {
    let dir = TempDir::new("execute-job");
    let vars = [
        ("COMPUTE_POOL", "env_pool"),
        ("JOB_NAME", "env_db.env_schema.env_job"),
        ("SERVICE_URL", "http://env-service:9000/echo"),
    ];
    let out = execute_job(&dir, &vars, &["--dry-run", "--async"]);
    let sql = stdout(&out);
    assert!(sql.contains("  IN COMPUTE POOL env_pool\n"), "{sql}");
    assert!(
        sql.contains("  NAME = env_db.env_schema.env_job\n  ASYNC = TRUE;\n"),
        "{sql}"
    );
    assert!(
        sql.contains("      SERVICE_URL: http://env-service:9000/echo\n"),
        "{sql}"
    );
    assert!(
        !sql.contains("GET_SERVICE_LOGS"),
        "--async must not wait for logs:\n{sql}"
    );

    let out = execute_job(
        &dir,
        &vars,
        &[
            "--dry-run",
            "--compute-pool",
            "flag_pool",
            "--job-name",
            "flag_job",
            "--service-url",
            "http://flag:1/echo",
            "--image",
            "/a/b/c/d:e",
        ],
    );
    let sql = stdout(&out);
    assert!(sql.contains("  IN COMPUTE POOL flag_pool\n"), "{sql}");
    assert!(sql.contains("  NAME = flag_job;\n"), "{sql}");
    assert!(
        sql.contains("      SERVICE_URL: http://flag:1/echo\n"),
        "{sql}"
    );
    assert!(sql.contains("    image: /a/b/c/d:e\n"), "{sql}");
    assert!(
        sql.contains("SYSTEM$GET_SERVICE_LOGS('flag_job', 0, 'main')"),
        "{sql}"
    );
}

#[test]
fn dry_run_with_a_stage_puts_the_filled_in_spec() {
    let dir = TempDir::new("execute-job");
    let out = execute_job(
        &dir,
        &[],
        &[
            "--dry-run",
            "--stage",
            "@tutorial_stage/specs",
            "--replicas",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Kept under a directory named by the first 16 hex digits of its SHA-256.
    let content = format!("{}\n", inline_spec(DEFAULT_SQL));
    let hash = {
        let mut child = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(content.as_bytes())
            .unwrap();
        stdout(&child.wait_with_output().unwrap())[..16].to_string()
    };
    let rendered = repo_root()
        .join("target/execute-job")
        .join(hash)
        .join("service_to_service_spec.yaml");
    // The bare stage takes the job name's database and schema.
    let expected = format!(
        "{CHECK_SQL}PUT 'file://{}' @tutorial_db.data_schema.tutorial_stage/specs AUTO_COMPRESS = FALSE OVERWRITE = TRUE;

EXECUTE JOB SERVICE
  IN COMPUTE POOL tutorial_compute_pool
  FROM @tutorial_db.data_schema.tutorial_stage SPECIFICATION_FILE = 'specs/service_to_service_spec.yaml'
  NAME = tutorial_db.data_schema.tutorial3_job_service
  REPLICAS = 2;

{}",
        rendered.display(),
        after_sql(2)
    );
    assert_eq!(stdout(&out), expected);
    // The file it would upload is the inline spec of the default dry run.
    assert_eq!(fs::read_to_string(&rendered).unwrap(), content);

    let out = execute_job(&dir, &[("STAGE", "@db.schema.stage")], &["--dry-run"]);
    let sql = stdout(&out);
    assert!(sql.contains("\nPUT 'file://"), "{sql}");
    assert!(sql.contains("' @db.schema.stage AUTO_COMPRESS"), "{sql}");
    assert!(
        sql.contains(
            "  FROM @db.schema.stage SPECIFICATION_FILE = 'service_to_service_spec.yaml'\n"
        ),
        "{sql}"
    );
}

#[test]
fn runs_the_statements_through_snow_and_prints_status_then_logs() {
    let dir = TempDir::new("execute-job");
    install_stand_in(&dir);
    let out = execute_job(&dir, &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // No job of that name exists (the stand-in answers []), so the
    // conditional DROP is not sent; the job ends DONE with its node log, so
    // neither is anything that reads the event table. Each statement is as
    // --dry-run prints it.
    let call = |json: bool, q: &str| {
        let mut call: Vec<String> = vec!["sql".into(), "--enable-templating".into(), "NONE".into()];
        if json {
            call.extend(["--format".into(), "json".into()]);
        }
        call.extend(["-q".into(), q.to_string()]);
        call
    };
    let expected = [
        call(true, &check_sql()),
        call(false, &dry_run_execute(&[], &[])),
        call(true, STATE_SQL),
        call(true, &logs_sql(0)),
    ];
    assert_eq!(calls(&dir), expected);
    let dry = stdout(&execute_job(&dir, &[], &["--dry-run"]));
    for statement in expected.iter().map(|c| c.last().unwrap()) {
        assert!(
            dry.contains(statement.as_str()),
            "--dry-run lacks {statement}"
        );
    }
    // The container table, then the log under one line naming its source.
    let printed = stdout(&out);
    let status = printed
        .find("0         main       DONE")
        .expect("status printed");
    let log = printed.find("Bob said Hello").expect("log printed");
    assert!(status < log, "status comes before the logs:\n{printed}");
    assert!(
        stderr(&out).contains(
            "scripts/execute-job: instance 0, container main: the node's log (SYSTEM$GET_SERVICE_LOGS)\n"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_stage_run_uploads_the_filled_in_spec_first() {
    let dir = TempDir::new("execute-job");
    install_stand_in(&dir);
    let out = execute_job(
        &dir,
        &[
            ("SNOW_CONNECTION", "tutorial"),
            ("IMAGE", "/a/b/c/service_to_service:tiny"),
        ],
        &["--stage", "@tutorial_stage"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = calls(&dir);
    assert_eq!(calls.len(), 5, "{calls:?}");
    for call in &calls {
        assert_eq!(
            &call[..5],
            [
                "sql",
                "--enable-templating",
                "NONE",
                "--connection",
                "tutorial"
            ],
            "{call:?}"
        );
    }
    assert_eq!(&calls[0][5..7], ["--format", "json"]);
    assert!(
        calls[0][8].starts_with("SHOW JOB SERVICES"),
        "{:?}",
        calls[0]
    );
    assert!(calls[1][6].starts_with("PUT 'file://"), "{:?}", calls[1]);
    assert!(calls[2][6].contains(
        "FROM @tutorial_db.data_schema.tutorial_stage SPECIFICATION_FILE = 'service_to_service_spec.yaml'"
    ));
    let uploaded = fs::read_to_string(dir.join("call-1.uploaded")).unwrap();
    assert!(
        uploaded.contains("    image: /a/b/c/service_to_service:tiny\n"),
        "{uploaded}"
    );
    assert!(
        uploaded.contains("      SERVICE_URL: http://echo-service:8000/echo\n"),
        "{uploaded}"
    );
}

#[test]
fn a_failed_job_still_shows_status_and_logs_and_fails() {
    let dir = TempDir::new("execute-job");
    install_stand_in(&dir);
    let out = execute_job(&dir, &[("FAIL_EXECUTE", "3")], &["--replicas", "2"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the EXECUTE status is the script's status"
    );
    let calls = calls(&dir);
    assert_eq!(
        calls.len(),
        6,
        "the check, EXECUTE, the status, one log per replica and the events: {calls:?}"
    );
    assert_eq!(calls[4][6], logs_sql(1));
    // The job's creation time, as snow gave it, starts the events' window.
    assert_eq!(calls[5][6], events_sql(JOB, "2026-01-01T00:00:00+00:00"));
    assert!(
        stdout(&out).contains(
            "2026-01-01T00:00:01 instance 0, container main: ERROR CONTAINER.STATUS_CHANGE: Container exited with code 3\n"
        ),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("EXECUTE JOB SERVICE failed"));
}

#[test]
fn bad_settings_fail_in_one_line_before_any_call() {
    let dir = TempDir::new("execute-job");
    install_stand_in(&dir);
    let dollar_spec = dir.join("dollar.yaml");
    fs::write(
        &dollar_spec,
        "spec:\n  containers:\n  - name: main\n    image: /a/b/c/d:e\n    env:\n      SERVICE_URL: http://x/echo\n      X: \"$$\"\n",
    )
    .unwrap();
    // Without SERVICE_URL there is no line to give the run's QUERY_ID after.
    let urlless_spec = dir.join("urlless.yaml");
    fs::write(
        &urlless_spec,
        "spec:\n  containers:\n  - name: main\n    image: /a/b/c/d:e\n",
    )
    .unwrap();
    // (environment, arguments, what the one error line must mention)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], vec!["--replicas", "0"], "--replicas"),
        (vec![], vec!["--replicas", "two"], "--replicas"),
        (vec![("JOB_NAME", "job; DROP TABLE t")], vec![], "job name"),
        (vec![], vec!["--compute-pool", "pool'"], "compute pool"),
        (vec![("IMAGE", "/a/b c/d:e")], vec![], "image"),
        (
            vec![("SERVICE_URL", "echo-service:8000/echo")],
            vec![],
            "service URL",
        ),
        (vec![], vec!["--stage", "tutorial_stage"], "stage"),
        (
            vec![("JOB_NAME", "job")],
            vec!["--stage", "@tutorial_stage"],
            "use @<db>.<schema>.tutorial_stage",
        ),
        (
            vec![("JOB_NAME", "data_schema.job")],
            vec!["--stage", "@data_schema.tutorial_stage/specs"],
            "use @<db>.<schema>.tutorial_stage",
        ),
        (vec![], vec!["--spec", "spec/absent.yaml"], "not found"),
        (vec![], vec!["--spec", dollar_spec.to_str().unwrap()], "$$"),
        (
            vec![],
            vec!["--spec", urlless_spec.to_str().unwrap()],
            "exactly one 'SERVICE_URL:' line",
        ),
        (vec![], vec!["--bogus"], "unknown argument"),
        (vec![], vec!["--job-name"], "needs a value"),
        (
            vec![],
            vec!["--logs", "--replicas", "3"],
            "--replicas does not apply",
        ),
        (vec![], vec!["--async", "--logs"], "--async does not apply"),
        (vec![], vec!["--logs", "--job-name", "a.b.c.d"], "job name"),
    ];
    for (vars, args, expected) in cases {
        let out = execute_job(&dir, &vars, &args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} {vars:?} succeeded");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert!(calls(&dir).is_empty());
}

#[test]
fn without_snow_it_says_so_in_one_line() {
    let dir = TempDir::new("execute-job"); // no stand-in installed
    if Command::new("sh")
        .args(["-c", "PATH=/usr/local/bin:/usr/bin:/bin command -v snow"])
        .output()
        .unwrap()
        .status
        .success()
    {
        loud("a real snow is installed; skipping the missing-snow check");
        return;
    }
    let out = execute_job(&dir, &[], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("'snow' is not on PATH"), "{err}");
}

#[test]
fn help_lists_every_setting() {
    let dir = TempDir::new("execute-job");
    let out = execute_job(&dir, &[], &["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    assert_help_mentions(
        &help,
        &[
            "COMPUTE_POOL",
            "JOB_NAME",
            "IMAGE",
            "SERVICE_URL",
            "--stage",
            "--replicas",
            "--async",
            "--replace",
            "--enable-templating NONE",
            "--dry-run",
            "--spec",
            "--logs",
            "SPCS_GET_LOGS",
            "SPCS_GET_EVENTS",
            "EVENT_TABLE",
        ],
    );
}

// ---- The real Snowflake CLI against the fake account.

const JOB: &str = "tutorial_db.data_schema.tutorial3_job_service";

fn fake_account() -> Option<snowflake::FakeSnowflake> {
    let bin = snowflake::real_snow_bin()?;
    Some(snowflake::FakeSnowflake::start(
        bin,
        "other-org-other-acct.registry.snowflakecomputing.com",
    ))
}

/// spec/service_to_service_spec.yaml with one more `env` line, written to
/// `dir`; its path.
fn default_spec_with(dir: &Path, env_line: &str) -> String {
    let spec = dir.join("spec.yaml");
    let default =
        fs::read_to_string(repo_root().join("spec/service_to_service_spec.yaml")).unwrap();
    let env = format!("    env:\n      {env_line}\n");
    fs::write(&spec, default.replace("    env:\n", &env)).unwrap();
    spec.to_str().unwrap().to_owned()
}

fn real_execute_job(
    fake: &snowflake::FakeSnowflake,
    vars: &[(&str, &str)],
    args: &[&str],
) -> Output {
    let mut cmd = fake.command(repo_root().join("scripts/execute-job"));
    cmd.args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run scripts/execute-job")
}

fn check_sql() -> String {
    CHECK_SQL.split("\n\n").next().unwrap().to_string()
}

fn logs_sql(index: usize) -> String {
    format!("SELECT SYSTEM$GET_SERVICE_LOGS('{JOB}', {index}, 'main');")
}

/// The EXECUTE statement that --dry-run prints for these settings.
fn dry_run_execute(vars: &[(&str, &str)], args: &[&str]) -> String {
    let dir = TempDir::new("execute-job");
    let mut all = vec!["--dry-run"];
    all.extend_from_slice(args);
    let out = execute_job(&dir, vars, &all);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let start = text.find("EXECUTE JOB SERVICE").unwrap();
    let end = text[start..].find(";\n").unwrap() + start + 1;
    text[start..end].to_string()
}

#[test]
fn real_snow_sends_an_ampersand_url_intact_and_runs_the_same_job_twice() {
    let Some(fake) = fake_account() else {
        return;
    };
    let echo = serve_echo("Bob");
    let url = format!("http://{}/echo?a=1&b=2", echo.addr);
    let vars = [("SERVICE_URL", url.as_str()), ("QUERY_ID", "ampersand-run")];

    let out = real_execute_job(&fake, &vars, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(printed.contains("DONE"), "{printed}");
    assert!(printed.contains("Bob said Hello"), "{printed}");
    // What Snowflake received is exactly what --dry-run shows, & and all.
    let execute = dry_run_execute(&vars, &[]);
    assert!(
        execute.contains(&format!("SERVICE_URL: {url}\n")),
        "{execute}"
    );
    let mut expected = vec![check_sql(), execute.clone()];
    expected.extend(STATE_SQL.lines().map(str::to_string));
    expected.push(logs_sql(0));
    assert_eq!(fake.sql(), expected);
    assert_eq!(echo.requests()[0].path, "/echo?a=1&b=2");
    assert!(!stderr(&out).contains("dropping"), "{}", stderr(&out));

    // The same job again: the finished one is dropped first, in one line.
    fake.clear();
    let out = real_execute_job(&fake, &vars, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let dropped: Vec<&str> = err.lines().filter(|l| l.contains("dropping")).collect();
    assert_eq!(dropped.len(), 1, "{err}");
    assert!(
        dropped[0].contains(JOB) && dropped[0].contains("DONE"),
        "{err}"
    );
    assert_eq!(
        fake.sql()[..3],
        [
            check_sql(),
            format!("DROP SERVICE IF EXISTS {JOB};"),
            execute
        ]
    );
    assert!(stdout(&out).contains("Bob said Hello"));
    assert_eq!(echo.requests().len(), 2);
}

#[test]
fn real_snow_a_failing_job_fails_the_script_and_the_rerun_drops_it() {
    let Some(fake) = fake_account() else {
        return;
    };
    let failing = serve(|_, _| Reply::json(500, "no echo today"));
    // Errors alone: instance 1, which has no row, then logs nothing at all.
    let dir = TempDir::new("execute-job");
    let spec = default_spec_with(&dir, "RUST_LOG: error");
    let out = real_execute_job(
        &fake,
        &[("SERVICE_URL", &failing.url())],
        &["--replicas", "2", "--spec", &spec],
    );
    assert!(!out.status.success(), "a failed job must fail the script");
    let printed = stdout(&out);
    assert!(printed.contains("FAILED"), "{printed}");
    assert!(
        printed.contains("no echo today"),
        "the job's log: {printed}"
    );
    assert!(stderr(&out).contains("EXECUTE JOB SERVICE failed"));
    // Why: the platform events. Instance 0, which had the row, exited with
    // the code the job gives a non-2xx reply (76, EX_PROTOCOL); instance 1
    // had no row to send and ended well.
    for event in [
        " instance 0, container main: ERROR CONTAINER.STATUS_CHANGE: Container exited with code 76\n",
        " instance 1, container main: INFO CONTAINER.STATUS_CHANGE: Completed successfully\n",
    ] {
        assert!(printed.contains(event), "{printed}");
    }
    // Instance 1's node log is empty, so the event table is asked for its
    // lines too; it has none either, and says so.
    let sql = fake.sql();
    assert_eq!(sql.len(), 8, "{sql:?}");
    assert_eq!(sql[4..6], [logs_sql(0), logs_sql(1)]);
    assert!(
        sql[6].ends_with("'))) WHERE INSTANCE_ID IN (1) ORDER BY TIMESTAMP;"),
        "{sql:?}"
    );
    assert!(
        sql[7].starts_with(&format!(
            "SELECT TIMESTAMP, INSTANCE_ID, CONTAINER_NAME, SEVERITY, EVENT_NAME, EVENT_DETAILS FROM TABLE({JOB}!SPCS_GET_EVENTS(START_TIME => TO_TIMESTAMP_LTZ('"
        )),
        "{sql:?}"
    );
    assert!(
        stderr(&out).contains(
            "instance 1, container main: no log: the node's log was empty, and the event table has no lines for it either"
        ),
        "{}",
        stderr(&out)
    );

    let echo = serve_echo("Bob");
    let out = real_execute_job(&fake, &[("SERVICE_URL", &echo.url())], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("dropping the finished job {JOB} (status FAILED)")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn real_snow_a_running_job_is_refused_unless_replaced_and_the_async_hint_pastes() {
    let Some(fake) = fake_account() else {
        return;
    };
    // Never answers: the job retries timeouts for RETRY_DEADLINE, ten
    // minutes here, so it is RUNNING through the whole test, however slow
    // the machine.
    let silent = serve(|_, _| Reply::json(200, "{}").after(Duration::from_secs(300)));
    let connection = [("SNOW_CONNECTION", "tutorial")];
    let dir = TempDir::new("execute-job");
    let spec = default_spec_with(&dir, "RETRY_DEADLINE: 10m");
    let out = real_execute_job(
        &fake,
        &[("SERVICE_URL", &silent.url()), connection[0]],
        &["--async", "--spec", &spec],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("RUNNING"), "{}", stdout(&out));

    // The hint is one line, --logs for that job, that works pasted into
    // bash as it is.
    let err = stderr(&out);
    let hints: Vec<&str> = err.lines().filter(|l| l.contains(" --logs ")).collect();
    assert_eq!(hints.len(), 1, "{err}");
    assert_eq!(
        hints[0],
        format!(
            "{} --logs --job-name {JOB} --connection tutorial",
            repo_root().join("scripts/execute-job").display()
        )
    );
    fake.clear();
    let pasted = fake
        .command("bash")
        .args(["-c", hints[0]])
        .output()
        .unwrap();
    assert!(pasted.status.success(), "{}", stderr(&pasted));
    // A running job: its status, the node log so far, and its events, as it
    // has not ended DONE.
    let sql = fake.sql();
    let mut expected: Vec<String> = STATE_SQL.lines().map(str::to_string).collect();
    expected.push(logs_sql(0));
    assert_eq!(sql[..3], expected);
    assert_eq!(sql.len(), 4, "{sql:?}");
    assert!(
        sql[3].contains("!SPCS_GET_EVENTS(START_TIME => "),
        "{sql:?}"
    );
    let printed = stdout(&pasted);
    assert!(
        printed.contains("0         main       RUNNING"),
        "{printed}"
    );
    assert!(printed.contains("Calling"), "{printed}");
    assert!(
        printed.contains(" instance 0, container main: INFO CONTAINER.STATUS_CHANGE: Running\n"),
        "{printed}"
    );

    // Running: refused in one line that names the way out; nothing sent
    // after the check.
    fake.clear();
    let echo = serve_echo("Bob");
    let out = real_execute_job(&fake, &[("SERVICE_URL", &echo.url())], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("still RUNNING") && err.contains("--replace"),
        "{err}"
    );
    assert_eq!(fake.sql(), [check_sql()]);

    // --replace drops it anyway and runs the job.
    let out = real_execute_job(&fake, &[("SERVICE_URL", &echo.url())], &["--replace"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("dropping the RUNNING job {JOB} (--replace)")),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("Bob said Hello"));
}

#[test]
fn real_snow_a_bare_stage_is_qualified_and_the_spec_uploaded() {
    let Some(fake) = fake_account() else {
        return;
    };
    let echo = serve_echo("Bob");
    // The default connection has no database or schema: an unqualified
    // stage would resolve nowhere, as each snow call is a new session.
    let bare = fake
        .command(fake.snow_bin.join("snow"))
        .args(["sql", "-q", "PUT 'file:///dev/null' @tutorial_stage"])
        .output()
        .unwrap();
    assert!(!bare.status.success());
    let out = real_execute_job(
        &fake,
        &[("SERVICE_URL", &echo.url())],
        &["--stage", "@tutorial_stage/specs"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Bob said Hello"), "{}", stdout(&out));
    let uploaded = fake
        .stage("tutorial_db.data_schema.tutorial_stage")
        .join("specs/service_to_service_spec.yaml");
    let spec = fs::read_to_string(&uploaded).unwrap();
    assert!(
        spec.contains(&format!("      SERVICE_URL: {}\n", echo.url())),
        "{spec}"
    );
    let sql = fake.sql();
    assert!(
        sql.iter()
            .any(|q| q
                .contains("' @tutorial_db.data_schema.tutorial_stage/specs AUTO_COMPRESS = FALSE")),
        "{sql:?}"
    );
}

/// `snow sql -q SQL` through the real CLI, as a user types it.
fn real_snow_sql(fake: &snowflake::FakeSnowflake, sql: &str) -> Output {
    fake.command(fake.snow_bin.join("snow"))
        .args(["sql", "--enable-templating", "NONE", "-q", sql])
        .output()
        .unwrap()
}

/// The lines of `text` that contain `needle`.
fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

/// The node that ran the job is reclaimed once the job ends, and its log
/// with it: the job's lines come from the event table instead, each once.
#[test]
fn real_snow_with_the_node_log_gone_the_log_comes_from_the_event_table() {
    let Some(fake) = fake_account() else {
        return;
    };
    let echo = serve_echo("Bob");
    let url = echo.url();
    // The node log empty, then unreadable. The second run has the first
    // one's name, and the event table still holds the first one's lines:
    // they must stay out.
    for how in ["empty", "error"] {
        fake.set_reclaimed_nodes(&format!(r#"{{"0": "{how}"}}"#));
        fake.clear();
        let out = real_execute_job(&fake, &[("SERVICE_URL", &url)], &[]);
        assert!(out.status.success(), "{how}: {}", stderr(&out));
        let printed = stdout(&out);
        let received = format!("] [INFO] Received response from {url}: Bob said Hello");
        assert_eq!(lines_with(&printed, &received).len(), 1, "{how}: {printed}");
        assert_eq!(
            lines_with(&printed, "] [INFO] Calling ").len(),
            1,
            "{how}: {printed}"
        );
        let err = stderr(&out);
        let source = lines_with(&err, "instance 0, container main:");
        assert_eq!(source.len(), 1, "{how}: {err}");
        assert!(
            source[0].contains(&format!(
                "3 lines from the event table ({JOB}!SPCS_GET_LOGS), as the node's log "
            )),
            "{how}: {err}"
        );
        let why = match how {
            "empty" => "as the node's log was empty",
            _ => "as the node's log could not be read (",
        };
        assert!(source[0].contains(why), "{how}: {err}");
        assert!(
            !err.contains('╭'),
            "snow's error box reached the output: {err}"
        );
        // One read of the event table, from the job's creation on, for the
        // one instance; no events, as the job ended DONE.
        let sql = fake.sql();
        let reads: Vec<&String> = sql.iter().filter(|q| q.contains("!SPCS_GET_")).collect();
        assert_eq!(reads.len(), 1, "{sql:?}");
        let prefix = format!(
            "SELECT TIMESTAMP, INSTANCE_ID, CONTAINER_NAME, LOG FROM TABLE({JOB}!SPCS_GET_LOGS(START_TIME => TO_TIMESTAMP_LTZ('"
        );
        assert!(reads[0].starts_with(&prefix), "{sql:?}");
        assert!(
            reads[0].ends_with("'))) WHERE INSTANCE_ID IN (0) ORDER BY TIMESTAMP;"),
            "{sql:?}"
        );
    }
}

/// --logs for an earlier three-replica job: each instance's log under one
/// line naming its source, from the event table for the two whose nodes
/// are gone and from the node for the third.
#[test]
fn real_snow_logs_reads_every_replica_of_an_earlier_job() {
    let Some(fake) = fake_account() else {
        return;
    };
    let echo = serve_echo("Bob");
    // Ten rows: 4, 3 and 3 for the three replicas.
    let stage = fake.stage("tutorial_db.data_schema.tutorial_stage");
    fs::create_dir_all(&stage).unwrap();
    let rows: Vec<String> = (0..10).map(|i| format!("row {i}")).collect();
    fs::write(stage.join("input.txt"), rows.join("\n") + "\n").unwrap();
    fake.set_reclaimed_nodes(r#"{"0": "empty", "1": "error"}"#);
    let run = real_execute_job(
        &fake,
        &[("SERVICE_URL", &echo.url())],
        &["--spec", "spec/batch_job_spec.yaml", "--replicas", "3"],
    );
    assert!(run.status.success(), "{}", stderr(&run));

    fake.clear();
    let out = real_execute_job(&fake, &[], &["--logs", "--job-name", JOB]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    for (instance, source) in [
        (0, "2 lines from the event table"),
        (1, "2 lines from the event table"),
        (2, "the node's log (SYSTEM$GET_SERVICE_LOGS)"),
    ] {
        let lines = lines_with(&err, &format!("instance {instance}, container main: "));
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains(source), "instance {instance}: {err}");
    }
    // Each replica's own last line, in instance order.
    let printed = stdout(&out);
    let done: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.split("] [INFO] Done: ").nth(1))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(done, ["4/4", "3/3", "3/3"], "{printed}");
    // One query id for the run, the same in all three replicas, which SPCS
    // does not give them: scripts/execute-job does.
    let ids: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.split("] [INFO] Query id ").nth(1))
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{printed}");
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(ids[0].len(), 36, "a UUID: {ids:?}");
    for instance in 0..3 {
        assert!(
            printed.contains(&format!("\n{instance}         main       DONE")),
            "{printed}"
        );
    }
    // The status, three node logs, and one read of the event table for the
    // two instances whose node log is gone; nothing else ran.
    let sql = fake.sql();
    let mut expected: Vec<String> = STATE_SQL.lines().map(str::to_string).collect();
    expected.extend((0..3).map(logs_sql));
    assert_eq!(sql[..5], expected);
    assert_eq!(sql.len(), 6, "{sql:?}");
    assert!(
        sql[5].ends_with(" WHERE INSTANCE_ID IN (0, 1) ORDER BY TIMESTAMP;"),
        "{sql:?}"
    );

    // A job that is not there: one line.
    let out = real_execute_job(
        &fake,
        &[],
        &[
            "--logs",
            "--job-name",
            "tutorial_db.data_schema.no_such_job",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let said = lines_with(
        &err,
        "could not read the status of tutorial_db.data_schema.no_such_job: ",
    );
    assert_eq!(said.len(), 1, "{err}");
    assert!(said[0].contains("does not exist"), "{err}");
    assert!(!err.contains('╭'), "{err}");
}

/// An account without an event table: one line that says so and names the
/// fix, instead of snow's errors; that fix, pasted into snow, works.
#[test]
fn real_snow_without_an_event_table_one_line_says_how_to_set_one() {
    let Some(fake) = fake_account() else {
        return;
    };
    let echo = serve_echo("Bob");
    let unset = real_snow_sql(&fake, "ALTER ACCOUNT UNSET EVENT_TABLE");
    assert!(unset.status.success(), "{}", stderr(&unset));
    fake.set_reclaimed_nodes(r#"{"0": "empty"}"#);
    let vars = [("SERVICE_URL", echo.url())];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = real_execute_job(&fake, &vars, &[]);
    assert!(
        out.status.success(),
        "the job's run is still a success: {}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("Bob said Hello"), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(!err.contains('╭') && !err.contains("Error"), "{err}");
    let said = lines_with(
        &err,
        "this account has no event table (EVENT_TABLE is unset)",
    );
    assert_eq!(said.len(), 1, "{err}");
    let fix = said[0].rsplit_once(": ").unwrap().1;
    assert_eq!(
        fix,
        "ALTER ACCOUNT SET EVENT_TABLE = SNOWFLAKE.TELEMETRY.EVENTS"
    );

    let set = real_snow_sql(&fake, fix);
    assert!(set.status.success(), "{}", stderr(&set));
    let out = real_execute_job(&fake, &vars, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Bob said Hello"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("instance 0, container main: 3 lines from the event table"),
        "{}",
        stderr(&out)
    );
}

/// The commands of README's deploy section, in order, as bash gets them
/// when pasted: the `snow` ones and `./scripts/execute-job`. (Build and push
/// need a container engine and registry; tests/push.rs runs push with the
/// real CLI.)
fn readme_deploy_commands() -> Vec<String> {
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme
        .find("## Deploy to Snowflake")
        .expect("deploy section");
    let end = readme[start + 3..]
        .find("\n## ")
        .map_or(readme.len(), |e| e + start + 3);
    let mut commands = Vec::new();
    let mut in_block = false;
    for line in readme[start..end].lines() {
        let line = line.trim();
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if in_block && (line.starts_with("snow ") || line.starts_with("./scripts/execute-job")) {
            commands.push(line.to_string());
        } else if !in_block {
            // Inline ones too, such as the tiny image's run.
            for (i, span) in line.split('`').enumerate() {
                if i % 2 == 1 && span.contains("./scripts/execute-job") {
                    commands.push(span.to_string());
                }
            }
        }
    }
    commands
}

#[test]
fn real_snow_every_readme_deploy_command_works_pasted_into_bash() {
    let Some(fake) = fake_account() else {
        return;
    };
    let echo = serve_echo("Bob");
    let commands = readme_deploy_commands();
    assert!(commands.len() >= 7, "{commands:?}");
    assert!(
        commands
            .iter()
            .any(|c| c.starts_with("IMAGE=") && c.ends_with(":tiny ./scripts/execute-job")),
        "{commands:?}"
    );
    // A directory like a checkout (the scripts find the repository from
    // their own path), holding the batch input the README uploads.
    let work = TempDir::new("readme");
    for name in ["scripts", "spec", "tools"] {
        std::os::unix::fs::symlink(repo_root().join(name), work.join(name)).unwrap();
    }
    let rows: Vec<String> = (0..10).map(|i| format!("row {i}")).collect();
    fs::write(work.join("input.txt"), rows.join("\n") + "\n").unwrap();
    // The table the several-columns example unloads.
    fake.set_tables(
        r#"{"MY_TABLE": {"columns": ["a", "b", "c"], "rows": [["x", 1, true], ["y \"z\"", null, false]]}}"#,
    );
    // Instance 0's node is gone once it ends, so its log comes from the
    // event table; the others' from their nodes.
    fake.set_reclaimed_nodes(r#"{"0": "error"}"#);
    let mut read_logs = Vec::new();
    for command in &commands {
        let out = fake
            .command("bash")
            .args(["-c", command])
            .current_dir(&work)
            .env("SERVICE_URL", echo.url())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        if command.contains(" --logs") {
            read_logs.push(out);
        }
    }
    let sql = fake.sql();
    assert!(sql.contains(&logs_sql(0)), "{sql:?}");
    // Step 4 read the tutorial job's log; the batch section's --logs, the
    // four replicas of the batch job.
    assert_eq!(read_logs.len(), 2);
    assert!(
        stdout(&read_logs[0]).contains("Bob said Hello"),
        "{}",
        stdout(&read_logs[0])
    );
    for (out, instances) in [(&read_logs[0], 1), (&read_logs[1], 4)] {
        let err = stderr(out);
        let sources = lines_with(&err, ", container main: ");
        assert_eq!(sources.len(), instances, "{err}");
        assert!(sources[0].contains("from the event table"), "{err}");
        for source in &sources[1..] {
            assert!(
                source.contains("the node's log (SYSTEM$GET_SERVICE_LOGS)"),
                "{err}"
            );
        }
    }
    // The batch run's outputs came back with GET: every row, once.
    let mut answered = Vec::new();
    for index in 0..4 {
        let output = fs::read_to_string(work.join(format!("output-{index}.jsonl")))
            .unwrap_or_else(|e| panic!("output-{index}.jsonl: {e}"));
        answered.extend(output.lines().map(str::to_string));
    }
    // The several-columns example unloaded its table as jsonl, uncompressed,
    // which is what INPUT_FORMAT=jsonl reads.
    let unloaded = fake
        .stage("tutorial_db.data_schema.tutorial_stage")
        .join("input.jsonl");
    assert_eq!(
        fs::read_to_string(&unloaded).unwrap(),
        "[\"x\",1]\n[\"y \\\"z\\\"\",null]\n"
    );
    answered.sort();
    let mut expected: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| format!("[{i},\"Bob said {r}\"]"))
        .collect();
    expected.sort();
    assert_eq!(answered, expected);
}

#[test]
fn real_snow_an_unqualified_job_name_reruns_in_the_connections_schema() {
    let Some(fake) = fake_account() else {
        return;
    };
    let echo = serve_echo("Bob");
    let vars = [
        ("SERVICE_URL", echo.url()),
        ("SNOW_CONNECTION", "tutorial".to_string()),
        ("JOB_NAME", "plain_job".to_string()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for run in 0..2 {
        let out = real_execute_job(&fake, &vars, &[]);
        assert!(out.status.success(), "run {run}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).contains("dropping the finished job plain_job (status DONE)"),
            run == 1,
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        fake.sql()[0],
        "SHOW JOB SERVICES LIKE 'PLAIN_JOB' IN SCHEMA ->> SELECT \"status\", \"created_on\" FROM $1 WHERE \"name\" = 'PLAIN_JOB';"
    );
}

/// Everything a run of scripts/execute-job connects to is on loopback: every
/// connect(2) of its process tree (the script and each real `snow`), seen by
/// strace. Without SNOWFLAKE_DISABLE_PLATFORM_DETECTION and the version check
/// off, snow also tried 169.254.169.254 and the machine's DNS server.
#[test]
fn real_snow_a_run_connects_to_loopback_only() {
    let Some(fake) = fake_account() else {
        return;
    };
    if !succeeds("strace", &["-V"]) {
        skip_unless_ci("strace (apt-get install strace)");
        return;
    }
    let echo = serve_echo("Bob");
    let trace = TempDir::new("strace");
    let log = trace.join("connect.log");
    let out = fake
        .command("strace")
        .args(["-f", "-qq", "-e", "trace=connect", "-o"])
        .arg(&log)
        .arg(repo_root().join("scripts/execute-job"))
        .env("SERVICE_URL", echo.url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = fs::read_to_string(&log).unwrap();
    let mut inet = 0;
    for line in text.lines().filter(|l| l.contains("connect(")) {
        if line.contains("AF_INET6") {
            inet += 1;
            assert!(line.contains("\"::1\""), "not loopback: {line}");
        } else if line.contains("AF_INET") {
            inet += 1;
            assert!(line.contains("inet_addr(\"127."), "not loopback: {line}");
        }
    }
    // One per snow call: the check, EXECUTE, the status and the log.
    assert!(
        inet >= 4,
        "{inet} connections seen, too few to trust the trace:\n{text}"
    );
}

/// snow renders `&{...}` and `<% ... %>` unless told not to: a spec holding
/// both reaches Snowflake as written, and the job still runs.
#[test]
fn real_snow_template_lookalikes_in_a_spec_reach_snowflake_unchanged() {
    let Some(fake) = fake_account() else {
        return;
    };
    let echo = serve_echo("Bob");
    let dir = TempDir::new("execute-job");
    let spec = dir.join("templated.yaml");
    fs::write(
        &spec,
        "spec:\n  containers:\n  - name: main\n    image: /a/b/c/d:e\n    env:\n      SERVICE_URL: http://x/echo\n      ECHO_TEXT: \"&{ctx.a} and <% ctx.b %>\"\n",
    )
    .unwrap();
    let spec = spec.to_str().unwrap();
    let vars = [
        ("SERVICE_URL", echo.url()),
        ("QUERY_ID", "template-run".to_owned()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = real_execute_job(&fake, &vars, &["--spec", spec]);
    assert!(out.status.success(), "{}", stderr(&out));
    let execute = dry_run_execute(&vars, &["--spec", spec]);
    assert!(
        execute.contains("      ECHO_TEXT: \"&{ctx.a} and <% ctx.b %>\"\n"),
        "{execute}"
    );
    assert_eq!(fake.sql()[1], execute);
    assert!(
        stdout(&out).contains("Bob said &{ctx.a} and <% ctx.b %>"),
        "{}",
        stdout(&out)
    );
}

/// What the README warns about: COPY INTO without `COMPRESSION = NONE`
/// writes gzip, and the job refuses such an input at once, naming the fix.
#[test]
fn real_snow_a_compressed_unload_is_refused_by_the_job_naming_the_fix() {
    let Some(fake) = fake_account() else {
        return;
    };
    fake.set_tables(r#"{"MY_TABLE": {"columns": ["a", "b"], "rows": [["x", 1]]}}"#);
    let out = fake
        .command("bash")
        .args([
            "-c",
            "snow sql --enable-templating NONE -q \"COPY INTO @tutorial_db.data_schema.tutorial_stage/input.jsonl \
             FROM (SELECT ARRAY_CONSTRUCT(a, b) FROM my_table) FILE_FORMAT = (TYPE = JSON) SINGLE = TRUE\"",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let unloaded = fake
        .stage("tutorial_db.data_schema.tutorial_stage")
        .join("input.jsonl");
    let echo = serve_echo("Bob");
    let job = job(&echo.url())
        .env("INPUT_FILE", &unloaded)
        .env("INPUT_FORMAT", "jsonl")
        .run();
    job.assert_fails(65, "COMPRESSION = NONE");
    assert!(
        echo.requests().is_empty(),
        "the job sent rows of a gzip file"
    );
}
