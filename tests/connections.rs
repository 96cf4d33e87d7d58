//! Connections, and what real servers do to them: requests many times the
//! client's buffers arrive whole, and servers that close kept-alive
//! connections, reset them, or lie about a body's length cost a retry at most,
//! never a wrong answer or the memory a hostile length asks for.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use common::http::*;
use common::job::*;
use common::*;

fn write_rows(dir: &Path, rows: &[String]) -> PathBuf {
    write_input(dir, format!("{}\n", rows.join("\n")))
}

/// The output file for `rows`, each answered `<prefix><row>`.
fn expected_output(rows: &[String], prefix: &str) -> String {
    rows.iter()
        .enumerate()
        .map(|(i, text)| row(i, &format!("{prefix}{text}")) + "\n")
        .collect()
}

#[test]
fn a_request_many_times_the_send_buffer_arrives_whole() {
    let server = serve_echo("Bob");
    let dir = TempDir::new("large-request");
    // 300 rows of 1,000 characters: one request of about 300 KB, 19 times
    // the 16 KiB send buffer, with quotes and non-ASCII to escape.
    let rows: Vec<String> = (0..300)
        .map(|i| format!("{i:04} {}", "ä\"x".repeat(332)))
        .collect();
    let input = write_rows(&dir, &rows);
    let output = dir.join("out.jsonl");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "300")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{outcome}");
    let sent: Vec<String> = requests[0].rows().into_iter().map(|(_, t)| t).collect();
    assert_eq!(sent, rows);
    assert_eq!(
        std::fs::read_to_string(&output).expect("output"),
        expected_output(&rows, "Bob said ")
    );
}

#[test]
fn bodies_around_the_send_buffer_size_arrive_whole_over_one_connection() {
    let server = serve_echo("Bob");
    let dir = TempDir::new("buffer-edges");
    // One batch per body size, from a few bytes under half the 16 KiB
    // buffer (where a request is held back whole) to a few over all of it.
    let mut rows = Vec::new();
    for size in [8_000, 8_150, 8_192, 8_300, 16_200, 16_384, 16_500, 33_000] {
        rows.push(format!("{:x<size$}", rows.len()));
    }
    let input = write_rows(&dir, &rows);
    let output = dir.join("out.jsonl");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "1")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(
        std::fs::read_to_string(&output).expect("output"),
        expected_output(&rows, "Bob said ")
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 1, "{outcome}");
    assert!(outcome.lines("WARN").is_empty(), "{outcome}");
}

#[test]
fn a_peer_that_closes_after_each_reply_gets_every_row_once() {
    // No "Connection: close": the client learns of each close from the
    // socket alone, and must not send the next batch into it, or retry a
    // batch the peer already answered.
    let addr = serve_raw(|stream| {
        if let Some(request) = read_raw_request(&stream) {
            let _ = std::io::Write::write_all(&mut &stream, &echo_reply(&request));
        }
    });
    let dir = TempDir::new("closing-peer");
    let rows: Vec<String> = (0..50).map(|i| format!("row {i}")).collect();
    let input = write_rows(&dir, &rows);
    let output = dir.join("out.jsonl");
    let outcome = job(&format!("http://{addr}/echo"))
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "5")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(
        std::fs::read_to_string(&output).expect("output"),
        expected_output(&rows, "")
    );
}

#[test]
fn a_url_too_long_for_any_request_head_is_a_configuration_error() {
    let server = serve_echo("Bob");
    let url = format!("{}?{}", server.url(), "q".repeat(20_000));
    let outcome = job(&url).run();
    outcome.assert_fails(
        64,
        "SERVICE_URL: no valid HTTP/1.1 request can be made for it",
    );
    assert!(server.requests().is_empty(), "{outcome}");
    assert!(
        outcome.lines("WARNING").is_empty(),
        "not retried:\n{outcome}"
    );
}

// ------------------------------------------------ what real servers do

/// The reply a well-behaved echo service gives `request`, each row's text
/// as it came.
fn echo_reply(request: &Request) -> Vec<u8> {
    let rows: Vec<String> = request
        .rows()
        .iter()
        .map(|(i, text)| row(i, text))
        .collect();
    let body = format!("{{\"data\":[{}]}}", rows.join(","));
    http_reply("200 OK", "", body.as_bytes())
}

/// `rows` one-row requests over one kept-alive connection at a time, with
/// no retries allowed.
fn one_row_requests(url: &str, rows: usize, name: &str) -> (Outcome, String) {
    let dir = TempDir::new(name);
    let texts: Vec<String> = (0..rows).map(|i| format!("row {i}")).collect();
    let input = write_rows(&dir, &texts);
    let output = dir.join("out.jsonl");
    let outcome = job(url)
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "1")
        .env("RETRY_DEADLINE", "0")
        .env("REQUEST_TIMEOUT", "5s")
        .env("RUST_LOG", "debug")
        .run();
    let written = std::fs::read_to_string(&output).unwrap_or_default();
    assert_eq!(
        outcome.code,
        Some(0),
        "{outcome}\n(written: {} lines)",
        written.lines().count()
    );
    assert_eq!(written, expected_output(&texts, ""));
    assert!(
        outcome.lines("WARNING").is_empty(),
        "no retry was needed:\n{outcome}"
    );
    (outcome, written)
}

/// How many requests went out again on a new connection, as the job logs
/// it at DEBUG.
fn sent_again(outcome: &Outcome) -> usize {
    outcome
        .lines("DEBUG")
        .iter()
        .filter(|line| line.contains("sending the request again on a new connection"))
        .count()
}

#[test]
fn a_kept_alive_connection_closed_as_the_next_request_arrives_costs_no_retry() {
    // Every connection answers one request and closes when the next one
    // comes in: the job saw it open, and its request goes nowhere. What a
    // server with a short keep-alive timeout does to a client that is a
    // little late.
    let addr = serve_raw(|stream| {
        let Some(request) = read_raw_request(&stream) else {
            return;
        };
        if std::io::Write::write_all(&mut &stream, &echo_reply(&request)).is_ok() {
            // The next request arrives, and the connection closes under it.
            let _ = read_raw_request(&stream);
        }
    });
    let (outcome, _) = one_row_requests(&format!("http://{addr}/echo"), 50, "closed-under");
    assert_eq!(sent_again(&outcome), 49, "{outcome}");
}

#[test]
fn a_kept_alive_connection_reset_as_the_next_request_arrives_costs_no_retry() {
    let addr = serve_raw(|stream| {
        let Some(request) = read_raw_request(&stream) else {
            return;
        };
        if std::io::Write::write_all(&mut &stream, &echo_reply(&request)).is_ok() {
            let mut first = [0u8; 1];
            if std::io::Read::read(&mut &stream, &mut first).is_ok() {
                reset(stream);
            }
        }
    });
    let (outcome, _) = one_row_requests(&format!("http://{addr}/echo"), 50, "reset-under");
    assert_eq!(sent_again(&outcome), 49, "{outcome}");
}

#[test]
fn a_server_that_closes_after_each_reply_without_saying_so_needs_no_retry() {
    // No "Connection: close": the close itself is the only word. 200
    // requests, none retried, each answered once in order.
    let addr = serve_raw(|stream| {
        if let Some(request) = read_raw_request(&stream) {
            let _ = std::io::Write::write_all(&mut &stream, &echo_reply(&request));
        }
    });
    one_row_requests(&format!("http://{addr}/echo"), 200, "closes-after");
}

#[test]
fn a_server_that_resets_after_each_reply_needs_no_retry() {
    let addr = serve_raw(|stream| {
        if let Some(request) = read_raw_request(&stream) {
            if std::io::Write::write_all(&mut &stream, &echo_reply(&request)).is_ok() {
                // Let the reply arrive before the reset does.
                std::thread::sleep(std::time::Duration::from_millis(5));
                reset(stream);
            }
        }
    });
    one_row_requests(&format!("http://{addr}/echo"), 50, "resets-after");
}

#[test]
fn a_reset_anywhere_in_a_body_that_ends_at_close_is_retried() {
    // The first connection's reply has no length, so its body would end at
    // the close; a reset cuts it: mid-string, inside a character, an
    // escape, a number or a literal. Each is a transient failure, not a bad
    // reply: the retry gets the whole reply.
    let cuts: [&'static [u8]; 5] = [
        b"{\"data\":[[0,\"Bob sa",
        b"{\"data\":[[0,\"Bob said \xc3",
        b"{\"data\":[[0,\"Bob said \\u00",
        b"{\"data\":[[0,12",
        b"{\"data\":[[0,tr",
    ];
    for cut in cuts {
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = std::sync::Arc::clone(&connections);
        let addr = serve_raw(move |stream| {
            let Some(request) = read_raw_request(&stream) else {
                return;
            };
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                let mut reply = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
                reply.extend_from_slice(cut);
                let _ = std::io::Write::write_all(&mut &stream, &reply);
                // Long enough for the job to have read the head, even on a
                // loaded machine: the reset then cuts a reply, not a request.
                std::thread::sleep(std::time::Duration::from_millis(300));
                reset(stream);
            } else {
                let _ = std::io::Write::write_all(&mut &stream, &echo_reply(&request));
            }
        });
        let outcome = job(&format!("http://{addr}/echo")).run();
        let shown = String::from_utf8_lossy(cut);
        assert_eq!(outcome.code, Some(0), "cut {shown:?}:\n{outcome}");
        let warnings = outcome.lines("WARNING");
        assert_eq!(warnings.len(), 1, "cut {shown:?}:\n{outcome}");
        assert!(
            warnings[0].contains("closed before the reply's JSON was complete"),
            "cut {shown:?}:\n{outcome}"
        );
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }
}

#[test]
fn memory_follows_the_bytes_received_not_the_length_declared() {
    // Each request is answered with a head declaring 10 MiB, one byte of
    // body, and then nothing: 64 requests in flight at once.
    let addr = serve_raw(|stream| {
        if read_raw_request(&stream).is_some() {
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n{";
            if std::io::Write::write_all(&mut &stream, head.as_bytes()).is_ok() {
                // Until the job hangs up.
                let mut rest = Vec::new();
                let _ = std::io::Read::read_to_end(&mut &stream, &mut rest);
            }
        }
    });
    let dir = TempDir::new("declared-10-mib");
    let texts: Vec<String> = (0..256).map(|i| format!("row {i}")).collect();
    let input = write_rows(&dir, &texts);
    let (outcome, peak_kib) = job(&format!("http://{addr}/echo"))
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", dir.join("out.jsonl"))
        .env("BATCH_SIZE", "1")
        .env("CONCURRENCY", "64")
        .env("REQUEST_TIMEOUT", "1s")
        .env("RETRY_DEADLINE", "0")
        .run_with_rss();
    outcome.assert_fails(69, "no complete reply within REQUEST_TIMEOUT=1.00s");
    assert!(
        peak_kib < 64 * 1024,
        "peak RSS {peak_kib} KiB with 64 replies declaring 10 MiB each:\n{outcome}"
    );
}

#[test]
fn no_retry_runs_past_the_retry_deadline() {
    // Connects that time out, a second each, within a 3 s deadline: the
    // last attempt is cut short to end by it, not let run its full second.
    let (addr, _fillers, _listener) = unanswered_address();
    let outcome = job(&format!("http://{addr}/echo"))
        .env("CONNECT_TIMEOUT", "1s")
        .env("RETRY_DEADLINE", "3s")
        .run();
    // The last attempt has only what is left of the deadline.
    outcome.assert_fails(69, "(RETRY_DEADLINE=3.00s): no ");
    assert!(
        outcome
            .error()
            .ends_with(" left before RETRY_DEADLINE=3.00s"),
        "{outcome}"
    );
    assert!(
        outcome.logged("WARNING", "no connection within CONNECT_TIMEOUT=1.00s;"),
        "{outcome}"
    );
    // The job's own count, from its first attempt: "... over 3.00s: ...".
    let error = outcome.error();
    let over: f64 = error
        .split(" over ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {error:?}"));
    // Above: a busy machine wakes a thread late; that the last attempt was
    // cut short is the ERROR line's "left before" already.
    assert!(
        (2.9..=3.25).contains(&over),
        "gave up after {over} s, not at the 3 s deadline:\n{outcome}"
    );
    assert!(outcome.lines("WARNING").len() >= 2, "{outcome}");
}
