//! The single-row job of Tutorial 3, end to end: the real binary against real
//! sockets on 127.0.0.1.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::http::*;
use common::job::*;
use common::*;

#[test]
fn says_hello_to_bob_like_the_tutorial() {
    let server = serve_echo("Bob");
    let outcome = job(&server.url()).run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    let url = server.url();
    assert_eq!(
        outcome.tutorial_lines(),
        vec![
            format!("Calling {url} with input Hello"),
            format!("Received response from {url}: Bob said Hello"),
        ]
    );
    // The tutorial's two lines, after the one naming the query id.
    assert_eq!(outcome.stdout.lines().count(), 3, "{outcome}");
    assert_eq!(outcome.stderr, "");

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/echo")
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.body, br#"{"data":[[0,"Hello"]]}"#);
}

#[test]
fn echo_text_round_trips_quotes_controls_and_unicode() {
    let server = serve_echo("Bob");
    let text = "say \"hi\" \\ back\tslash \u{1} é 日本 🦀";
    let outcome = job(&server.url()).env("ECHO_TEXT", text).run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(server.requests()[0].rows(), vec![(0, text.to_owned())]);
    // Logged on one line: the tab, the control and the backslash escaped.
    let logged = r#"say "hi" \\ back\tslash \u0001 é 日本 🦀"#;
    let url = server.url();
    assert_eq!(
        outcome.tutorial_lines(),
        vec![
            format!("Calling {url} with input {logged}"),
            format!("Received response from {url}: Bob said {logged}"),
        ]
    );
}

#[test]
fn a_reply_cannot_forge_a_log_record() {
    let server = serve(|_, _| {
        Reply::json(
            200,
            r#"{"data":[[0,"Bob said Hello\nservice-to-service [2026-01-01 00:00:00,000] [ERROR] forged record"]]}"#,
        )
    });
    let outcome = job(&server.url()).run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    outcome.assert_every_line_is_a_log_record();
    assert!(outcome.errors().is_empty(), "{outcome}");
    let url = server.url();
    assert_eq!(
        outcome.tutorial_lines(),
        vec![
            format!("Calling {url} with input Hello"),
            format!(
                "Received response from {url}: Bob said Hello\\nservice-to-service \
                 [2026-01-01 00:00:00,000] [ERROR] forged record"
            ),
        ]
    );
}

#[test]
fn non_string_replies_are_logged_as_compact_json() {
    let server = serve(|_, _| Reply::json(200, r#"{"data": [[0, {"said": [1, 2.5, null]}]]}"#));
    let outcome = job(&server.url()).run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert!(
        outcome.tutorial_lines()[1].ends_with(r#": {"said":[1,2.5,null]}"#),
        "{outcome}"
    );
}

#[test]
fn an_error_status_is_a_protocol_error_showing_status_and_body() {
    let server = serve(|_, _| Reply::json(500, format!("internal trouble {}", "x".repeat(500))));
    let outcome = job(&server.url()).run();
    outcome.assert_fails(76, "HTTP 500: \"internal trouble xxx");
    assert!(outcome.error().len() < 400, "body not cut at 200 bytes");
    assert_eq!(server.requests().len(), 1, "a 500 is not retried");
}

#[test]
fn an_error_body_with_line_breaks_is_one_error_line() {
    let server = serve(|_, _| {
        Reply::json(
            500,
            "Traceback (most recent call last):\n  File \"app.py\"\r\n\u{1b}[31mKeyError\u{1b}[0m\n",
        )
    });
    let outcome = job(&server.url()).run();
    outcome.assert_every_line_is_a_log_record();
    // Quoted as a JSON string: its quotes, line breaks and ESC escaped.
    outcome.assert_fails(
        76,
        r#"HTTP 500: "Traceback (most recent call last):\n  File \"app.py\"\r\n\u001b[31mKeyError\u001b[0m""#,
    );
    assert!(outcome.error().ends_with("[0m\""), "{outcome}");
}

#[test]
fn wrong_replies_are_protocol_errors_naming_the_cause() {
    let cases = [
        ("Bob said Hello", "not valid JSON"),
        ("", "not valid JSON"),
        ("null", "reply is null"),
        ("{}", "no \"data\" key"),
        (r#"{"data": []}"#, "no reply for index 0"),
        (r#"{"data": [[0]]}"#, "has 1 element(s)"),
        (r#"{"data": [[1, "x"]]}"#, "did not send"),
        (
            r#"{"data": [[0, "x"], [0, "y"]]}"#,
            "index 0 more than once",
        ),
        (r#"{"data": [["0", "x"]]}"#, "a string as its index"),
    ];
    for (body, cause) in cases {
        let server = serve(move |_, _| Reply::json(200, body));
        job(&server.url()).run().assert_fails(76, cause);
    }
}

#[test]
fn a_reply_over_the_size_limit_is_refused() {
    let server =
        serve(|_, _| Reply::json(200, format!(r#"{{"data":[[0,"{}"]]}}"#, "x".repeat(5000))));
    let outcome = job(&server.url()).env("MAX_RESPONSE_BYTES", "1000").run();
    outcome.assert_fails(76, "larger than MAX_RESPONSE_BYTES (1000 bytes)");
}

#[test]
fn redirects_are_not_followed() {
    let server =
        serve(|_, _| Reply::json(307, "").header("Location", "http://127.0.0.1:1/elsewhere"));
    let outcome = job(&server.url()).run();
    outcome.assert_fails(76, "HTTP 307 redirect to http://127.0.0.1:1/elsewhere");
}

#[test]
fn bad_configuration_exits_64_before_any_request() {
    let server = serve_echo("Bob");
    let cases = [
        ("SERVICE_URL", "not a url", "SERVICE_URL"),
        ("SERVICE_URL", "https://echo-service:8000/echo", "no TLS"),
        ("CONNECT_TIMEOUT", "5 parsecs", "CONNECT_TIMEOUT"),
        ("REQUEST_TIMEOUT", "-1s", "negative"),
        ("RETRY_DEADLINE", "1w", "unknown unit"),
        ("MAX_RESPONSE_BYTES", "lots", "MAX_RESPONSE_BYTES"),
        ("RUST_LOG", "chatty", "RUST_LOG"),
    ];
    for (name, value, cause) in cases {
        let outcome = job(&server.url()).env(name, value).run();
        outcome.assert_fails(64, cause);
    }
    assert!(server.requests().is_empty());
}

#[test]
fn an_unreachable_service_exits_69_after_retrying() {
    let nobody = ReservedPort::new();
    let outcome = job(&nobody.url()).env("RETRY_DEADLINE", "1s").run();
    outcome.assert_fails(69, "connection refused");
    let warnings = outcome.lines("WARNING");
    assert!(warnings.len() >= 3, "{outcome}");
    assert!(warnings[0].starts_with("Attempt 1 to reach"), "{outcome}");
    assert!(
        warnings[0].contains("connection refused; retrying in 0."),
        "{outcome}"
    );
    assert!(outcome.elapsed < Duration::from_secs(3), "{outcome}");
}

#[test]
fn a_service_that_starts_late_is_waited_for() {
    let port = ReservedPort::new();
    let child = job(&port.url()).env("RETRY_DEADLINE", "20s").spawn();
    let started = Instant::now();
    thread::sleep(Duration::from_secs(2));
    let _server = serve_on(port.listen(), |r, _| echo("Bob", r));
    let outcome = finish(child, started);
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert!(outcome.lines("WARNING").len() >= 2, "{outcome}");
    assert!(
        outcome.tutorial_lines()[1].ends_with("Bob said Hello"),
        "{outcome}"
    );
}

#[test]
fn overload_statuses_are_retried() {
    let server = serve(|request, n| match n {
        0 => Reply::json(503, "starting"),
        1 => Reply::json(429, "slow down"),
        _ => echo("Bob", request),
    });
    let outcome = job(&server.url()).run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    let warnings = outcome.lines("WARNING");
    assert_eq!(warnings.len(), 2, "{outcome}");
    assert!(
        warnings[0].contains("HTTP 503") && warnings[1].contains("HTTP 429"),
        "{outcome}"
    );
}

#[test]
fn a_service_that_never_answers_times_out_within_bounds() {
    let addr = serve_raw(|stream| {
        let _request = read_raw_request(&stream);
        thread::sleep(Duration::from_secs(30));
    });
    let outcome = job(&format!("http://{addr}/echo"))
        .env("REQUEST_TIMEOUT", "1s")
        .env("RETRY_DEADLINE", "2s")
        .run();
    outcome.assert_fails(69, "(RETRY_DEADLINE=2.00s): no complete reply ");
    assert!(
        outcome.logged("WARNING", "no complete reply within REQUEST_TIMEOUT=1.00s;"),
        "the first attempt has the whole REQUEST_TIMEOUT:\n{outcome}"
    );
    assert!(
        outcome.elapsed < Duration::from_secs(1 + 2 + 1),
        "{outcome}"
    );
    // Without retries, the one attempt's limit is all the ERROR line names.
    let outcome = job(&format!("http://{addr}/echo"))
        .env("REQUEST_TIMEOUT", "500ms")
        .env("RETRY_DEADLINE", "0")
        .run();
    outcome.assert_fails(
        69,
        "(RETRY_DEADLINE=0.00s): no complete reply within REQUEST_TIMEOUT=0.50s",
    );
}

#[test]
fn sigterm_and_sigint_stop_a_waiting_job_at_once() {
    for (signal, status, name) in [
        (libc::SIGTERM, 143, "SIGTERM"),
        (libc::SIGINT, 130, "SIGINT"),
    ] {
        let (asked, request) = mpsc::channel();
        let addr = serve_raw(move |stream| {
            let _ = asked.send(read_raw_request(&stream));
            thread::sleep(Duration::from_secs(30));
        });
        let child = job(&format!("http://{addr}/echo")).spawn();
        // Waiting for the reply, not starting up: the job has sent its request.
        let _ = request.recv_timeout(Duration::from_secs(20));
        let sent = Instant::now();
        send_signal(&child, signal);
        let outcome = finish(child, sent);
        assert_eq!(outcome.code, Some(status), "{outcome}");
        assert!(outcome.elapsed < Duration::from_secs(1), "{outcome}");
        assert!(outcome.logged("WARNING", name), "{outcome}");
        assert!(outcome.errors().is_empty(), "{outcome}");
    }
}

#[test]
fn passwords_never_reach_the_log() {
    let server = serve_echo("Bob");
    let url = server.url().replace("http://", "http://bob:hunter2@");
    let outcome = job(&url).env("RUST_LOG", "trace").run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert!(
        !outcome.stdout.contains("hunter2") && !outcome.stderr.contains("hunter2"),
        "{outcome}"
    );
    assert!(outcome.stdout.contains("bob:***@"), "{outcome}");
    let authorization = server.requests()[0]
        .header("authorization")
        .map(str::to_owned);
    assert_eq!(authorization.as_deref(), Some("Basic Ym9iOmh1bnRlcjI="));
}

#[test]
fn help_lists_every_variable_and_version_prints() {
    let outcome = job("").arg("--help").run();
    assert_eq!(outcome.code, Some(0));
    assert_help_mentions(
        &outcome.stdout,
        &[
            "SERVICE_URL",
            "ECHO_TEXT",
            "INPUT_FILE",
            "OUTPUT_FILE",
            "BATCH_SIZE",
            "CONCURRENCY",
            "CONNECT_TIMEOUT",
            "REQUEST_TIMEOUT",
            "RETRY_DEADLINE",
            "MAX_RESPONSE_BYTES",
            "SNOWFLAKE_JOBS_COUNT",
            "SNOWFLAKE_JOB_INDEX",
            "RUST_LOG",
        ],
    );
    assert!(
        outcome.stdout.contains("http://localhost:8080/echo") && outcome.stdout.contains("30s")
    );
    let version = job("").arg("--version").run();
    assert_eq!(
        version.stdout,
        format!("service-to-service {}\n", env!("CARGO_PKG_VERSION"))
    );
    let unknown = job("").arg("--frob\nnicate").run();
    assert_eq!(unknown.code, Some(64));
    assert_eq!(
        unknown.stderr,
        "service-to-service: unexpected argument \"--frob\\nnicate\"; settings come from \
         environment variables, see --help\n"
    );
}

#[test]
fn debug_logging_keeps_the_line_format() {
    let server = serve_echo("Bob");
    let outcome = job(&server.url()).env("RUST_LOG", "debug").run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert!(!outcome.lines("DEBUG").is_empty(), "{outcome}");
    outcome.assert_every_line_is_a_log_record();
}

/// A name that does not resolve, with DNS pointed at loopback so that no query
/// leaves the machine: a private mount namespace swaps in a resolv.conf
/// naming 127.0.0.1, where nothing answers.
#[test]
fn a_name_that_does_not_resolve_is_retried_then_exits_69() {
    let dir = TempDir::new("dns");
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .expect("write resolv.conf");
    let url = "http://no-such-service.invalid:8000/echo";
    let Some(job) = job_with_resolv_conf(url, &resolv) else {
        return;
    };
    let outcome = job.env("RETRY_DEADLINE", "2s").run();
    outcome.assert_fails(69, "DNS lookup of no-such-service.invalid");
    assert!(!outcome.lines("WARNING").is_empty(), "{outcome}");
}
