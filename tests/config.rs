//! Configuration at its edges: values that must be refused with exit 64 and
//! a message that says what is wrong and what would be right, and unusual
//! values that must work (credentials, IPv6, query strings, long text).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::http::*;
use common::job::*;
use common::*;

/// Asserts exit 64 before any request, with one ERROR line naming the
/// variable and containing each of `says` (what is wrong, what is right).
fn assert_refused(server: &Server, name: &str, value: &str, says: &[&str]) {
    let outcome = job(&server.url()).env(name, value).run();
    outcome.assert_fails(64, &format!("bad configuration: {name}: "));
    let error = outcome.error();
    for part in says {
        assert!(
            error.contains(part),
            "{name}={value:?}: ERROR line lacks {part:?}:\n{outcome}"
        );
    }
    // At once, not after the 60 s RETRY_DEADLINE; a busy machine can take
    // a second to start a process.
    assert!(
        outcome.elapsed < Duration::from_secs(5),
        "refused at once:\n{outcome}"
    );
    eprintln!("observed: {name}={value:?} -> exit 64, ERROR: {error}");
}

const URL_EXAMPLE: &str = "expected something like http://echo-service:8000/echo";
const DURATION_EXAMPLE: &str = "expected a duration such as 250ms, 5s, 2m or a number of seconds";

#[test]
fn bad_service_urls_exit_64_saying_what_would_be_right() {
    let server = serve_echo("Bob");
    let cases: &[(&str, &[&str])] = &[
        ("", &["is empty", URL_EXAMPLE]),
        ("   ", &["is empty", URL_EXAMPLE]),
        ("http://", &["has no host", URL_EXAMPLE]),
        ("http:///echo", &["has no host", URL_EXAMPLE]),
        ("http://:8000/echo", &["has no host", URL_EXAMPLE]),
        ("http://bob:pw@/echo", &["has no host", URL_EXAMPLE]),
        (
            "http://h:0/echo",
            &["has port \"0\"", "a port is 1 to 65535"],
        ),
        (
            "http://h:65536/echo",
            &["has port \"65536\"", "a port is 1 to 65535"],
        ),
        (
            "http://h:99999999999/echo",
            &["has port \"99999999999\"", "a port is 1 to 65535"],
        ),
        (
            "http://echo service:8000/echo",
            &["contains white space", "percent-encode spaces as %20"],
        ),
        (
            "http://h:8000/say hello",
            &["contains white space", "percent-encode spaces as %20"],
        ),
        (
            " http://h:8000/echo",
            &["contains white space", URL_EXAMPLE],
        ),
        ("echo-service:8000/echo", &["has no scheme", URL_EXAMPLE]),
        ("https://h/echo", &["no TLS", "plain http://"]),
    ];
    for (url, says) in cases {
        assert_refused(&server, "SERVICE_URL", url, says);
    }
    assert!(server.requests().is_empty());
}

#[test]
fn bad_durations_exit_64_saying_what_would_be_right() {
    let server = serve_echo("Bob");
    let cases: &[(&str, &[&str])] = &[
        ("5d", &["has unknown unit \"d\"", "use ms, s, m or h"]),
        ("30sec", &["has unknown unit \"sec\"", "use ms, s, m or h"]),
        ("5 s", &["has unknown unit \" s\"", "use ms, s, m or h"]),
        ("-1s", &["\"-1s\" is negative", DURATION_EXAMPLE]),
        ("-0.5", &["is negative", DURATION_EXAMPLE]),
        ("25h", &["\"25h\" is too large", "the most allowed is 24h"]),
        ("100000", &["is too large", "the most allowed is 24h"]),
        (
            "99999999999999999999s",
            &["is too large", "the most allowed is 24h"],
        ),
        ("", &["is empty", DURATION_EXAMPLE]),
        ("fast", &["has unknown unit", "use ms, s, m or h"]),
    ];
    for name in ["CONNECT_TIMEOUT", "REQUEST_TIMEOUT", "RETRY_DEADLINE"] {
        for (value, says) in cases {
            assert_refused(&server, name, value, says);
        }
    }
    // Zero is a value of its own: fine for the deadline (never retry), not
    // for a timeout.
    for name in ["CONNECT_TIMEOUT", "REQUEST_TIMEOUT"] {
        assert_refused(
            &server,
            name,
            "0",
            &["is zero", "it must be greater than zero"],
        );
    }
    assert!(server.requests().is_empty());
}

// ------------------------------------------------------------ what must work

/// Asserts that `secret` and, for credentials, its Basic encoding appear in
/// no line of the output, on stdout or stderr.
/// A reply is held in memory whole, in a buffer reserved up to the limit:
/// an absurd limit must be refused up front, not abort at the first large
/// reply without an ERROR line.
#[test]
fn the_reply_size_limit_is_bounded() {
    let server = serve_echo("Bob");
    for value in ["1073741825", "100000000000000", "99999999999999999999999"] {
        assert_refused(
            &server,
            "MAX_RESPONSE_BYTES",
            value,
            &[&format!("is {value}; the most allowed is 1073741824")],
        );
    }
    assert!(server.requests().is_empty());
    // The most allowed works, with a reply large enough to be reserved for.
    let large = serve(|request, _| {
        let text = "x".repeat(200_000);
        let rows: Vec<String> = request.rows().iter().map(|(i, _)| row(i, &text)).collect();
        Reply::json(200, format!("{{\"data\":[{}]}}", rows.join(",")))
    });
    let outcome = job(&large.url())
        .env("MAX_RESPONSE_BYTES", "1073741824")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
}

fn assert_never_shown(outcome: &Outcome, secrets: &[&str]) {
    // A hex dump (ureq-proto's, at trace) would split a secret over lines:
    // join the text columns of the TRACE lines too.
    let dumped: String = outcome
        .lines("TRACE")
        .iter()
        .filter_map(|line| line.get(line.len().saturating_sub(16)..))
        .collect();
    for secret in secrets {
        assert!(
            !outcome.stdout.contains(secret)
                && !outcome.stderr.contains(secret)
                && !dumped.contains(secret),
            "{secret:?} reached the output:\n{outcome}"
        );
    }
}

/// `bob:hunter2` as a Basic authorization header carries it, and the
/// password URL-encoded: neither may be logged either.
const PASSWORD_FORMS: &[&str] = &["hunter2", "Ym9iOmh1bnRlcjI", "aHVudGVyMg"];

fn with_password(url: &str) -> String {
    url.replace("http://", "http://bob:hunter2@")
}

#[test]
fn a_password_in_the_url_is_never_logged_on_any_path() {
    // Success (tests/job.rs also checks the Authorization header).
    let server = serve_echo("Bob");
    let outcome = job(&with_password(&server.url()))
        .env("RUST_LOG", "trace")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_never_shown(&outcome, PASSWORD_FORMS);
    assert!(outcome.stdout.contains("bob:***@"), "{outcome}");

    // Unreachable: refused, retried, given up.
    let nobody = ReservedPort::new();
    let refused = format!("http://bob:hunter2@{}/echo", nobody.addr);
    let outcome = job(&refused)
        .env("RUST_LOG", "trace")
        .env("RETRY_DEADLINE", "500ms")
        .run();
    outcome.assert_fails(69, "service http://bob:***@127.0.0.1:");
    assert!(!outcome.lines("WARNING").is_empty(), "{outcome}");
    assert_never_shown(&outcome, PASSWORD_FORMS);

    // Timed out.
    let silent = serve_raw(|stream| {
        let _request = read_raw_request(&stream);
        std::thread::sleep(Duration::from_secs(3));
    });
    let outcome = job(&format!("http://bob:hunter2@{silent}/echo"))
        .env("RUST_LOG", "trace")
        .env("REQUEST_TIMEOUT", "300ms")
        .env("RETRY_DEADLINE", "0")
        .run();
    outcome.assert_fails(69, "no complete reply within REQUEST_TIMEOUT=0.30s");
    assert_never_shown(&outcome, PASSWORD_FORMS);

    // Protocol errors: an error status echoing the request's headers back
    // (as a debugging proxy might), a wrong reply, a redirect, bad HTTP.
    let cases: Vec<(SocketAddr, &str)> = vec![
        (
            serve_raw(|mut stream| {
                use std::io::Write;
                if let Some(request) = read_raw_request(&stream) {
                    let body = format!("{:?}", request.headers);
                    let _ = write!(
                        stream,
                        "HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                }
            }),
            "HTTP 401",
        ),
        (
            serve_raw(|mut stream| {
                use std::io::Write;
                if read_raw_request(&stream).is_some() {
                    let body = "Basic Ym9iOmh1bnRlcjI= rejected, hunter2 is wrong";
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                }
            }),
            "not valid JSON: \"Basic *** rejected, *** is wrong\"",
        ),
        (
            serve_raw(|mut stream| {
                use std::io::Write;
                if read_raw_request(&stream).is_some() {
                    let _ = stream.write_all(
                        b"HTTP/1.1 308 Permanent Redirect\r\nLocation: http://bob:hunter2@127.0.0.1:1/v2\r\nContent-Length: 0\r\n\r\n",
                    );
                }
            }),
            "HTTP 308 redirect to http://bob:***@127.0.0.1:1/v2",
        ),
        (
            serve_raw(|mut stream| {
                use std::io::Write;
                if read_raw_request(&stream).is_some() {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
                }
            }),
            "no \"data\" key",
        ),
        (
            serve_raw(|mut stream| {
                use std::io::Write;
                if read_raw_request(&stream).is_some() {
                    let _ = stream.write_all(
                        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
                    );
                }
            }),
            "HTTP 307 redirect to /elsewhere",
        ),
        (
            serve_raw(|mut stream| {
                use std::io::Write;
                if read_raw_request(&stream).is_some() {
                    let _ = stream.write_all(b"garbage\r\n\r\n");
                }
            }),
            "not valid HTTP/1.1",
        ),
    ];
    for (addr, cause) in cases {
        let outcome = job(&format!("http://bob:hunter2@{addr}/echo"))
            .env("RUST_LOG", "trace")
            .run();
        outcome.assert_fails(76, cause);
        assert!(outcome.error().contains("bob:***@"), "{outcome}");
        assert_never_shown(&outcome, PASSWORD_FORMS);
    }

    // Bad configuration elsewhere in the URL.
    for url in [
        "http://bob:hunter2@h:0/echo",
        "http://bob:hunter2@/echo",
        "http://bob:hunter2@h:8000/say hello",
        "https://bob:hunter2@h/echo",
    ] {
        let outcome = job(url).env("RUST_LOG", "trace").run();
        assert_eq!(outcome.code, Some(64), "{outcome}");
        assert_never_shown(&outcome, PASSWORD_FORMS);
    }
}

/// A password with a raw `/`, `?` or `#` ends the URL's authority early, so
/// the rest of it reads as a port or a path. Each is refused before a
/// request, at every log level, with the fix named and no part of the
/// password shown: neither the part that would read as a port, nor the
/// part after it, nor the whole, in any form.
#[test]
fn a_password_with_a_raw_reserved_character_is_refused_showing_none_of_it() {
    let server = serve_echo("Bob");
    let cases: &[(&str, &[&str])] = &[
        ("alice:s3cr/et", &["s3cr", "/et@"]),
        // A port-like password: before, the URL parsed, as host alice.
        ("alice:1234/et", &["1234", "/et@"]),
        ("alice:hunt?er2", &["hunt", "?er2"]),
        ("alice:hunt#er2", &["hunt", "#er2"]),
        ("alice:p@ss/w0rd", &["p@ss", "/w0rd", "w0rd"]),
    ];
    for (userinfo, parts) in cases {
        let url = server
            .url()
            .replace("http://", &format!("http://{userinfo}@"));
        let outcome = job(&url).env("RUST_LOG", "trace").run();
        outcome.assert_fails(
            64,
            "percent-encode /, ? and # in a password as %2F, %3F and %23",
        );
        let password = &userinfo["alice:".len()..];
        assert_never_shown(&outcome, &[password]);
        assert_never_shown(&outcome, parts);
        eprintln!(
            "observed: {userinfo}@ -> exit 64, ERROR: {}",
            outcome.error()
        );
    }
    // An `@` in a query after a port reads the same way, and the message
    // names its fix too.
    let outcome = job(&format!("{}?mail=bob@example.com", server.url())).run();
    outcome.assert_fails(64, "and an @ in a path or query as %40");
    assert!(server.requests().is_empty());
}

/// Percent-encoded as the message asks, the password works: the service
/// gets it decoded, as curl sends it, and the log shows none of it.
#[test]
fn a_percent_encoded_password_is_sent_decoded() {
    let server = serve_echo("Bob");
    let url = server
        .url()
        .replace("http://", "http://alice:s3cr%2Fet%3F%23@");
    let outcome = job(&url).env("RUST_LOG", "trace").run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    // base64("alice:s3cr/et?#"), and of the password as written.
    let sent = "YWxpY2U6czNjci9ldD8j";
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some(format!("Basic {sent}").as_str())
    );
    assert_never_shown(&outcome, &["s3cr", sent, "YWxpY2U6czNjciUyRmV0JTNGJTIz"]);
    assert!(outcome.stdout.contains("alice:***@"), "{outcome}");
}

#[test]
fn an_ipv6_literal_works() {
    let Some(listener) = ipv6_loopback() else {
        return;
    };
    let server = serve_on(listener, |request, _| echo("Bob", request));
    let url = server.url();
    assert!(url.starts_with("http://[::1]:"), "{url}");
    let outcome = job(&url).run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(
        outcome.tutorial_lines(),
        vec![
            format!("Calling {url} with input Hello"),
            format!("Received response from {url}: Bob said Hello"),
        ]
    );
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_query_string_is_kept() {
    let server = serve_echo("Bob");
    let url = format!("{}?x=1&name=a%20b&empty=", server.url());
    let outcome = job(&url).run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(server.requests()[0].path, "/echo?x=1&name=a%20b&empty=");
    assert_eq!(
        outcome.tutorial_lines()[0],
        format!("Calling {url} with input Hello")
    );
}

/// Text of exactly `bytes` bytes mixing ASCII, escapes, controls and
/// multi-byte UTF-8, cut on a character boundary and padded with ASCII.
fn mixed_text(bytes: usize) -> String {
    let pattern = "Hello \"quoted\" back\\slash\ttab \u{1} é 日本 🦀 ";
    let mut text = String::with_capacity(bytes);
    while text.len() + pattern.len() <= bytes {
        text.push_str(pattern);
    }
    while text.len() < bytes {
        text.push('x');
    }
    text
}

/// `mixed_text` as a log line shows it: its backslashes, tabs and controls
/// escaped.
fn as_logged(mixed: &str) -> String {
    mixed
        .replace('\\', r"\\")
        .replace('\t', r"\t")
        .replace('\u{1}', r"\u0001")
}

/// Linux caps one environment string at 128 KiB (MAX_ARG_STRLEN) including
/// `ECHO_TEXT=` and the final NUL, so the largest ECHO_TEXT any process can
/// be started with is 131,061 bytes, and a 1 MiB ECHO_TEXT cannot reach the
/// job at all: exec refuses it (E2BIG) before the job runs. The largest one
/// is checked here; 1 MiB of text goes through INPUT_FILE (next test).
#[test]
fn the_largest_echo_text_linux_allows_round_trips() {
    let server = serve_echo("Bob");
    let largest = mixed_text(131_072 - "ECHO_TEXT=".len() - 1);
    let (outcome, peak_kib) = job(&server.url()).env("ECHO_TEXT", &largest).run_with_rss();
    assert_eq!(outcome.code, Some(0), "exit {:?}", outcome.code);
    assert_eq!(server.requests()[0].rows(), vec![(0, largest.clone())]);
    let received = &outcome.tutorial_lines()[1];
    assert!(received.ends_with(&format!(": Bob said {}", as_logged(&largest))));
    assert!(peak_kib < 16 * 1024, "peak RSS {peak_kib} KiB");
    eprintln!(
        "observed: ECHO_TEXT of {} bytes: exit 0, peak RSS {peak_kib} KiB",
        largest.len()
    );

    let too_long = mixed_text(1 << 20);
    let refused = std::process::Command::new(binary())
        .env_clear()
        .env("SERVICE_URL", server.url())
        .env("ECHO_TEXT", &too_long)
        .output();
    let error = refused.expect_err("the kernel refuses a 1 MiB environment string");
    assert_eq!(error.raw_os_error(), Some(libc::E2BIG), "{error}");
}

#[test]
fn one_mib_of_text_round_trips_as_an_input_line() {
    let server = serve_echo("Bob");
    let text = mixed_text(1 << 20);
    let dir = TempDir::new("one-mib");
    let input = write_input(&dir, format!("{text}\n"));
    let (outcome, peak_kib) = job(&server.url()).env("INPUT_FILE", &input).run_with_rss();
    assert_eq!(outcome.code, Some(0), "exit {:?}", outcome.code);
    assert_eq!(server.requests()[0].rows(), vec![(0, text.clone())]);
    let received = outcome.lines("INFO");
    assert!(
        received
            .iter()
            .any(|line| line.ends_with(&format!(": Bob said {}", as_logged(&text)))),
        "the 1 MiB reply was not logged whole"
    );
    assert!(peak_kib < 16 * 1024, "peak RSS {peak_kib} KiB");
    eprintln!("observed: 1 MiB input line: exit 0, peak RSS {peak_kib} KiB");
}
