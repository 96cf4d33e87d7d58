//! The tiny nightly build (scripts/build --tiny) must behave exactly like the
//! stable release build: same exit status, same log lines (timestamps
//! aside), same output files, for success and for every failure class.
//!
//! Runs when TINY_IMAGE is set (and not "0"), or when a tiny build already
//! exists under target/tiny; both binaries are (re)built by scripts/build.
//! Needs no container engine.

mod common;

use common::docker::*;
use common::http::{EchoService, canned, http_reply};
use common::job::without_timestamps;
use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// As TINY_IMAGE asks; unset, when a tiny build is already there.
fn tiny_wanted() -> bool {
    tiny_requested().unwrap_or_else(|| {
        repo_root()
            .join("target/tiny")
            .join(MUSL)
            .join("release/service-to-service")
            .exists()
    })
}

/// A scenario: name, environment, arguments.
type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<&'a str>);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    output_file: Option<String>,
}

/// Runs `binary` with exactly `vars` (plus PATH) and `args`, in `dir`.
fn run(binary: &Path, dir: &Path, vars: &[(&str, String)], args: &[&str]) -> Run {
    let mut cmd = Command::new(binary);
    // One query id for both builds, whose logs are compared line by line;
    // a case may set its own.
    cmd.env_clear()
        .current_dir(dir)
        .args(args)
        .env("QUERY_ID", "tiny-and-stable");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    let output_file = vars
        .iter()
        .find(|(k, _)| *k == "OUTPUT_FILE")
        .and_then(|(_, v)| fs::read_to_string(dir.join(v.replace("{index}", "0"))).ok());
    Run {
        code: out.status.code(),
        stdout: without_timestamps(&text(&out.stdout)),
        stderr: without_timestamps(&text(&out.stderr)),
        output_file,
    }
}

/// Timing varies from run to run: retry delays are jittered (so the number
/// of WARNING retry lines varies too), and summaries give attempts, seconds
/// and rows per second. Those are masked; every other byte is compared.
fn comparable(log: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for line in log.lines() {
        let line = &without_unique_names(line);
        if line.contains("] [WARNING] ") {
            let masked = "service-to-service [TIME] [WARNING] <one or more retries>".to_string();
            if out.last() != Some(&masked) {
                out.push(masked);
            }
        } else if line.contains("attempt") || line.contains("rows/s") {
            // A run of digits becomes one '#': timings and rates differ in
            // their number of digits from run to run, not only in value.
            let mut masked = String::with_capacity(line.len());
            for c in line.chars() {
                if !c.is_ascii_digit() {
                    masked.push(c);
                } else if !masked.ends_with('#') {
                    masked.push('#');
                }
            }
            out.push(masked);
        } else {
            out.push(line.to_string());
        }
    }
    out.join("\n")
}

/// `line` with the 16 hex digits that make each run's temporary file name
/// unique (`.NAME.<digits>.tmp`) masked.
fn without_unique_names(line: &str) -> String {
    const MASK: &str = "<unique>";
    let mut out = line.to_string();
    let mut from = 0;
    while let Some(at) = out[from..].find(".tmp") {
        let end = from + at;
        let start = end.saturating_sub(16);
        let unique = end > 16
            && out.as_bytes()[start - 1] == b'.'
            && out[start..end].bytes().all(|b| b.is_ascii_hexdigit());
        if unique {
            out.replace_range(start..end, MASK);
            from = start + MASK.len() + 4;
        } else {
            from = end + 4;
        }
    }
    out
}

#[test]
fn tiny_build_behaves_like_the_stable_build() {
    if !tiny_wanted() {
        loud(
            "tiny build not requested (set TINY_IMAGE=1 or run scripts/build --tiny); skipping the parity test",
        );
        return;
    }
    let stable = stable_build().binary.clone();
    let tiny = tiny_build().binary.clone();
    assert_ne!(stable, tiny);
    assert!(
        tiny_build().binary_bytes < stable_build().binary_bytes,
        "the tiny build ({} bytes) is not smaller than the stable one ({} bytes)",
        tiny_build().binary_bytes,
        stable_build().binary_bytes
    );

    let echo = EchoService::start(0, Some("Bob"));
    let echo_url = format!("http://{}/echo", echo.addr);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let answer = |status: &str, content_type: &str, body: &[u8]| {
        let headers = format!("Content-Type: {content_type}\r\nConnection: close\r\n");
        canned(http_reply(status, &headers, body))
    };
    let status_500 = answer(
        "500 Internal Server Error",
        "text/plain",
        b"the echo service fell over",
    );
    let not_json = answer("200 OK", "application/json", b"Bob said Hello");
    let wrong_shape = answer("200 OK", "application/json", br#"{"rows":[[0,"x"]]}"#);
    let wrong_index = answer("200 OK", "application/json", br#"{"data":[[7,"x"]]}"#);
    let non_string = answer(
        "200 OK",
        "application/json",
        br#"{"data":[[0,{"said":["Hello",1.5,null,true]}]]}"#,
    );
    let huge = answer(
        "200 OK",
        "application/json",
        format!(r#"{{"data":[[0,"{}"]]}}"#, "x".repeat(4096)).as_bytes(),
    );

    let url = |u: &str| ("SERVICE_URL", u.to_string());
    let http = |a: std::net::SocketAddr| format!("http://{a}/echo");
    let fast = [
        ("RETRY_DEADLINE", "300ms".to_string()),
        ("CONNECT_TIMEOUT", "200ms".to_string()),
    ];

    let mut cases: Vec<Case> = vec![
        ("success", vec![url(&echo_url)], vec![]),
        (
            "quotes, backslashes, control characters and UTF-8",
            vec![
                url(&echo_url),
                ("ECHO_TEXT", "\"q\" \\ \t\u{1} é ✓ 😀".to_string()),
            ],
            vec![],
        ),
        (
            "debug logging",
            vec![url(&echo_url), ("RUST_LOG", "debug".to_string())],
            vec![],
        ),
        ("--help", vec![], vec!["--help"]),
        ("--version", vec![], vec!["--version"]),
        ("unknown argument", vec![], vec!["--bogus"]),
        ("unparseable URL", vec![url("not a url")], vec![]),
        (
            "https without TLS",
            vec![url("https://127.0.0.1:9/echo")],
            vec![],
        ),
        (
            "bad duration",
            vec![url(&echo_url), ("CONNECT_TIMEOUT", "soon".to_string())],
            vec![],
        ),
        (
            "bad size",
            vec![url(&echo_url), ("MAX_RESPONSE_BYTES", "-1".to_string())],
            vec![],
        ),
        ("refused", vec![url(&http(closed))], vec![]),
        ("HTTP 500", vec![url(&http(status_500))], vec![]),
        ("not JSON", vec![url(&http(not_json))], vec![]),
        ("wrong shape", vec![url(&http(wrong_shape))], vec![]),
        ("wrong index", vec![url(&http(wrong_index))], vec![]),
        ("non-string reply", vec![url(&http(non_string))], vec![]),
        (
            "reply over the limit",
            vec![url(&http(huge)), ("MAX_RESPONSE_BYTES", "1000".to_string())],
            vec![],
        ),
        // Batch mode (files relative to a scratch directory).
        (
            "batch",
            vec![
                url(&echo_url),
                ("INPUT_FILE", "input.txt".to_string()),
                ("OUTPUT_FILE", "out-{index}.jsonl".to_string()),
                ("BATCH_SIZE", "2".to_string()),
            ],
            vec![],
        ),
        (
            "batch replica",
            vec![
                url(&echo_url),
                ("INPUT_FILE", "input.txt".to_string()),
                ("OUTPUT_FILE", "out-{index}.jsonl".to_string()),
                ("SNOWFLAKE_JOBS_COUNT", "2".to_string()),
                ("SNOWFLAKE_JOB_INDEX", "1".to_string()),
            ],
            vec![],
        ),
        (
            "replica index out of range",
            vec![
                url(&echo_url),
                ("SNOWFLAKE_JOBS_COUNT", "2".to_string()),
                ("SNOWFLAKE_JOB_INDEX", "2".to_string()),
            ],
            vec![],
        ),
        (
            "missing input",
            vec![url(&echo_url), ("INPUT_FILE", "absent.txt".to_string())],
            vec![],
        ),
        (
            "invalid UTF-8 input",
            vec![url(&echo_url), ("INPUT_FILE", "latin1.txt".to_string())],
            vec![],
        ),
        (
            "uncreatable output",
            vec![
                url(&echo_url),
                ("INPUT_FILE", "input.txt".to_string()),
                ("OUTPUT_FILE", "no/such/dir/out.jsonl".to_string()),
            ],
            vec![],
        ),
    ];
    for (_, vars, _) in cases.iter_mut() {
        vars.extend(fast.iter().cloned());
    }

    let mut compared = 0;
    for (name, vars, args) in &cases {
        let runs: Vec<Run> = [&stable, &tiny]
            .iter()
            .map(|binary| {
                let dir = TempDir::new("parity");
                fs::write(dir.join("input.txt"), "Hello\n\nwörld \"quoted\"\nlast").unwrap();
                fs::write(dir.join("latin1.txt"), b"ok\ncaf\xe9\n").unwrap();
                run(binary, &dir, vars, args)
            })
            .collect();
        let (a, b) = (&runs[0], &runs[1]);
        assert_eq!(
            a.code, b.code,
            "{name}: exit status differs\nstable:\n{}\ntiny:\n{}",
            a.stdout, b.stdout
        );
        assert_eq!(
            comparable(&a.stdout),
            comparable(&b.stdout),
            "{name}: stdout differs"
        );
        assert_eq!(
            comparable(&a.stderr),
            comparable(&b.stderr),
            "{name}: stderr differs"
        );
        assert_eq!(a.output_file, b.output_file, "{name}: output file differs");
        assert!(
            !a.stdout.contains("panicked") && !a.stderr.contains("panicked"),
            "{name}: a panic message reached the output"
        );
        compared += 1;
    }
    assert_eq!(compared, cases.len());

    // The success case really succeeded (so the comparison compared something).
    let dir = TempDir::new("parity-ok");
    let ok = run(&tiny, &dir, &[url(&echo_url)], &[]);
    assert_eq!(ok.code, Some(0), "{}", ok.stdout);
    assert!(ok.stdout.ends_with(": Bob said Hello"), "{}", ok.stdout);
}
