//! Interoperability with a Flask echo service that follows Tutorial 1's
//! contract (tests/peers/echo_service.py), as the job meets it in SPCS.
//!
//! Needs python3 with Flask. Under `CI=true` a missing Flask fails the test;
//! elsewhere the test is skipped with one loud line.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::http::row;
use common::job::*;
use common::*;

struct FlaskPeer {
    _child: ChildGuard,
    url: String,
}

/// The interpreter itself, not a version-manager shim whose PID would not be
/// the server's (killing a shim leaves the server running).
fn python() -> Option<String> {
    let output = Command::new("python3")
        .args(["-c", "import flask, sys; print(sys.executable)"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn start_flask(character: &str) -> Option<FlaskPeer> {
    let Some(python) = python() else {
        skip_unless_ci("python3 with Flask (pip install flask)");
        return None;
    };
    let peer = repo_root().join("tests/peers/echo_service.py");
    let mut child = Command::new(python)
        .arg(peer)
        .env("SERVER_PORT", "0")
        .env("CHARACTER_NAME", character)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Flask peer");
    let stderr = child.stderr.take().expect("stderr");
    // From here on, dropping the peer kills and reaps the process.
    let mut peer = FlaskPeer {
        _child: ChildGuard(child),
        url: String::new(),
    };
    let mut stderr = BufReader::new(stderr);
    let mut line = String::new();
    while stderr.read_line(&mut line).expect("read peer stderr") > 0 {
        if let Some(addr) = line.trim().strip_prefix("echo_service listening on ") {
            peer.url = format!("http://{addr}/echo");
            // Keep draining stderr so the peer never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return Some(peer);
        }
        line.clear();
    }
    panic!("the Flask peer exited before listening");
}

#[test]
fn the_job_says_hello_to_bob_over_flask() {
    let Some(peer) = start_flask("Bob") else {
        return;
    };
    let outcome = job(&peer.url).run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    let url = &peer.url;
    assert_eq!(
        outcome.tutorial_lines(),
        vec![
            format!("Calling {url} with input Hello"),
            format!("Received response from {url}: Bob said Hello"),
        ]
    );
}

#[test]
fn batches_and_unicode_go_through_flask() {
    let Some(peer) = start_flask("I") else { return };
    let dir = TempDir::new("flask");
    let lines = [
        "plain",
        "",
        "quote \" and \\ backslash",
        "日本語 🦀",
        "tab\there",
    ];
    let input = dir.join("in.txt");
    std::fs::write(&input, lines.join("\n")).expect("write input");
    let output = dir.join("out.jsonl");
    let outcome = job(&peer.url)
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "2")
        .env("CONCURRENCY", "2")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    let written = std::fs::read_to_string(&output).expect("output");
    let expected: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, text)| row(i, &format!("I said {text}")))
        .collect();
    assert_eq!(written.lines().collect::<Vec<_>>(), expected);
}

/// A service function with two arguments, fed a file as
/// `COPY INTO @stage FROM (SELECT ARRAY_CONSTRUCT(a, b) ...)` unloads it.
#[test]
fn two_columns_go_through_flask_with_jsonl() {
    let Some(peer) = start_flask("I") else { return };
    let url = peer.url.replace("/echo", "/concat");
    let dir = TempDir::new("flask-jsonl");
    let input = dir.join("in.jsonl");
    std::fs::write(
        &input,
        "[\"Hello, \",\"Bob\"]\n[\"日本\",\"語 🦀\"]\n[\"n=\",42]\n[\"quote \\\" \",null]\n",
    )
    .expect("write input");
    let output = dir.join("out.jsonl");
    let outcome = job(&url)
        .env("INPUT_FILE", &input)
        .env("INPUT_FORMAT", "jsonl")
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "3")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    let written = std::fs::read_to_string(&output).expect("output");
    assert_eq!(
        written.lines().collect::<Vec<_>>(),
        [
            "[0,\"Hello, Bob\"]",
            "[1,\"日本語 🦀\"]",
            "[2,\"n=42\"]",
            "[3,\"quote \\\" null\"]",
        ]
    );
}
