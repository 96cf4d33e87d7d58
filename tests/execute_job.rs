//! scripts/execute-job: the exact SQL it prints with --dry-run, and the
//! calls it makes to a stand-in `snow` on PATH that records its arguments.

#[path = "common/spcs.rs"]
mod spcs;

use spcs::*;
use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = env::temp_dir().join(format!(
            "s2s-execute-job-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Installs a stand-in `snow` in `dir`. Each call writes its arguments,
/// NUL-separated, to `dir/call-N`; a PUT also copies the uploaded file to
/// `dir/call-N.uploaded`. EXECUTE exits with $FAIL_EXECUTE (default 0).
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
    SHOW*) echo "| main | DONE | Completed successfully |" ;;
    SELECT*) echo "| service-to-service [2026-01-01 00:00:00,000] [INFO] Received response from http://echo-service:8000/echo: Bob said Hello |" ;;
esac
"#;
    let path = dir.join("snow");
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
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
    let mut cmd = Command::new(repo().join("scripts/execute-job"));
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", dir.display());
    cmd.env("PATH", path)
        .env("STANDIN_DIR", dir)
        .stdin(Stdio::null())
        .args(args);
    for var in [
        "COMPUTE_POOL",
        "JOB_NAME",
        "IMAGE",
        "SERVICE_URL",
        "STAGE",
        "SNOW_CONNECTION",
        "FAIL_EXECUTE",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run scripts/execute-job")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

const DEFAULT_SQL: &str = "EXECUTE JOB SERVICE
  IN COMPUTE POOL tutorial_compute_pool
  FROM SPECIFICATION $$
spec:
  containers:
  - name: main
    image: /tutorial_db/data_schema/tutorial_repository/service_to_service:latest
    env:
      SERVICE_URL: http://echo-service:8000/echo
    resources:
      requests:
        memory: 16Mi
        cpu: 0.1
      limits:
        memory: 64Mi
        cpu: 0.5
$$
  NAME = tutorial_db.data_schema.tutorial3_job_service;

SHOW SERVICE CONTAINERS IN SERVICE tutorial_db.data_schema.tutorial3_job_service;

SELECT SYSTEM$GET_SERVICE_LOGS('tutorial_db.data_schema.tutorial3_job_service', 0, 'main');
";

#[test]
fn dry_run_prints_the_tutorial_sql() {
    let dir = Scratch::new();
    install_stand_in(&dir.0);
    let out = execute_job(&dir.0, &[], &["--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), DEFAULT_SQL);
    assert!(calls(&dir.0).is_empty(), "--dry-run called snow");
}

#[test]
fn dry_run_with_the_batch_spec_and_four_replicas() {
    let dir = Scratch::new();
    let out = execute_job(
        &dir.0,
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
    let expected = "EXECUTE JOB SERVICE
  IN COMPUTE POOL tutorial_compute_pool
  FROM SPECIFICATION $$
spec:
  containers:
  - name: main
    image: /tutorial_db/data_schema/tutorial_repository/service_to_service:tiny
    env:
      SERVICE_URL: http://echo-service:8000/echo
      INPUT_FILE: /data/input.txt
      OUTPUT_FILE: /data/output-{index}.jsonl
      BATCH_SIZE: \"100\"
      CONCURRENCY: \"4\"
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
    stageConfig:
      name: \"@tutorial_db.data_schema.tutorial_stage\"
$$
  NAME = tutorial_db.data_schema.tutorial3_job_service
  REPLICAS = 4;

SHOW SERVICE CONTAINERS IN SERVICE tutorial_db.data_schema.tutorial3_job_service;

SELECT SYSTEM$GET_SERVICE_LOGS('tutorial_db.data_schema.tutorial3_job_service', 0, 'main');

SELECT SYSTEM$GET_SERVICE_LOGS('tutorial_db.data_schema.tutorial3_job_service', 1, 'main');

SELECT SYSTEM$GET_SERVICE_LOGS('tutorial_db.data_schema.tutorial3_job_service', 2, 'main');

SELECT SYSTEM$GET_SERVICE_LOGS('tutorial_db.data_schema.tutorial3_job_service', 3, 'main');
";
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
        let dir = Scratch::new();
        let out = execute_job(
            &dir.0,
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
    let dir = Scratch::new();
    let vars = [
        ("COMPUTE_POOL", "env_pool"),
        ("JOB_NAME", "env_db.env_schema.env_job"),
        ("SERVICE_URL", "http://env-service:9000/echo"),
    ];
    let out = execute_job(&dir.0, &vars, &["--dry-run", "--async"]);
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
        &dir.0,
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
    let dir = Scratch::new();
    let out = execute_job(
        &dir.0,
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
    let rendered = repo()
        .join("target/execute-job")
        .join(hash)
        .join("service_to_service_spec.yaml");
    let expected = format!(
        "PUT 'file://{}' @tutorial_stage/specs AUTO_COMPRESS = FALSE OVERWRITE = TRUE;

EXECUTE JOB SERVICE
  IN COMPUTE POOL tutorial_compute_pool
  FROM @tutorial_stage SPECIFICATION_FILE = 'specs/service_to_service_spec.yaml'
  NAME = tutorial_db.data_schema.tutorial3_job_service
  REPLICAS = 2;

SHOW SERVICE CONTAINERS IN SERVICE tutorial_db.data_schema.tutorial3_job_service;

SELECT SYSTEM$GET_SERVICE_LOGS('tutorial_db.data_schema.tutorial3_job_service', 0, 'main');

SELECT SYSTEM$GET_SERVICE_LOGS('tutorial_db.data_schema.tutorial3_job_service', 1, 'main');
",
        rendered.display()
    );
    assert_eq!(stdout(&out), expected);
    // The file it would upload is the inline spec of the default dry run.
    assert_eq!(fs::read_to_string(&rendered).unwrap(), content);

    let out = execute_job(&dir.0, &[("STAGE", "@db.schema.stage")], &["--dry-run"]);
    let sql = stdout(&out);
    assert!(sql.starts_with("PUT 'file://"), "{sql}");
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
    let dir = Scratch::new();
    install_stand_in(&dir.0);
    let out = execute_job(&dir.0, &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = calls(&dir.0);
    let dry = execute_job(&dir.0, &[], &["--dry-run"]);
    let statements: Vec<String> = stdout(&dry)
        .split(";\n")
        .map(|s| s.trim_start_matches('\n'))
        .filter(|s| !s.is_empty())
        .map(|s| format!("{s};"))
        .collect();
    assert_eq!(statements.len(), 3);
    let expected: Vec<Vec<String>> = statements
        .iter()
        .map(|q| vec!["sql".into(), "-q".into(), q.clone()])
        .collect();
    assert_eq!(
        calls, expected,
        "snow got other calls than the dry run printed"
    );
    let printed = stdout(&out);
    let status = printed.find("| main | DONE").expect("status printed");
    let log = printed.find("Bob said Hello").expect("log printed");
    assert!(status < log, "status comes before the logs:\n{printed}");
}

#[test]
fn a_stage_run_uploads_the_filled_in_spec_first() {
    let dir = Scratch::new();
    install_stand_in(&dir.0);
    let out = execute_job(
        &dir.0,
        &[
            ("SNOW_CONNECTION", "tutorial"),
            ("IMAGE", "/a/b/c/service_to_service:tiny"),
        ],
        &["--stage", "@tutorial_stage"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = calls(&dir.0);
    assert_eq!(calls.len(), 4, "{calls:?}");
    for call in &calls {
        assert_eq!(
            &call[..4],
            ["sql", "--connection", "tutorial", "-q"],
            "{call:?}"
        );
    }
    assert!(calls[0][4].starts_with("PUT 'file://"), "{:?}", calls[0]);
    assert!(
        calls[1][4]
            .contains("FROM @tutorial_stage SPECIFICATION_FILE = 'service_to_service_spec.yaml'")
    );
    let uploaded = fs::read_to_string(dir.0.join("call-0.uploaded")).unwrap();
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
    let dir = Scratch::new();
    install_stand_in(&dir.0);
    let out = execute_job(&dir.0, &[("FAIL_EXECUTE", "3")], &["--replicas", "2"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the EXECUTE status is the script's status"
    );
    let calls = calls(&dir.0);
    assert_eq!(
        calls.len(),
        4,
        "EXECUTE, SHOW and one log per replica: {calls:?}"
    );
    assert!(
        calls[3][2].contains(
            "GET_SERVICE_LOGS('tutorial_db.data_schema.tutorial3_job_service', 1, 'main')"
        )
    );
    assert!(stderr(&out).contains("EXECUTE JOB SERVICE failed"));
}

#[test]
fn bad_settings_fail_in_one_line_before_any_call() {
    let dir = Scratch::new();
    install_stand_in(&dir.0);
    let dollar_spec = dir.0.join("dollar.yaml");
    fs::write(
        &dollar_spec,
        "spec:\n  containers:\n  - name: main\n    image: /a/b/c/d:e\n    env:\n      X: \"$$\"\n",
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
        (vec![], vec!["--spec", "spec/absent.yaml"], "not found"),
        (vec![], vec!["--spec", dollar_spec.to_str().unwrap()], "$$"),
        (vec![], vec!["--bogus"], "unknown argument"),
        (vec![], vec!["--job-name"], "needs a value"),
    ];
    for (vars, args, expected) in cases {
        let out = execute_job(&dir.0, &vars, &args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} {vars:?} succeeded");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert!(calls(&dir.0).is_empty());
}

#[test]
fn without_snow_it_says_so_in_one_line() {
    let dir = Scratch::new(); // no stand-in installed
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
    let out = execute_job(&dir.0, &[], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("'snow' is not on PATH"), "{err}");
}

#[test]
fn help_lists_every_setting() {
    let dir = Scratch::new();
    let out = execute_job(&dir.0, &[], &["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for word in [
        "COMPUTE_POOL",
        "JOB_NAME",
        "IMAGE",
        "SERVICE_URL",
        "--stage",
        "--replicas",
        "--async",
        "--dry-run",
        "--spec",
    ] {
        assert!(help.contains(word), "--help does not mention {word}");
    }
}
