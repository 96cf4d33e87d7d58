//! The socket under the HTTP client (src/transport.rs): a request leaves in
//! one send however it is split inside, bodies larger than the send buffer
//! arrive whole, and a batch request costs a few system calls, not a dozen.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Instant;

use common::*;

fn write_rows(dir: &Path, rows: &[String]) -> String {
    let path = dir.join("input.txt");
    std::fs::write(&path, format!("{}\n", rows.join("\n"))).expect("write input");
    path.display().to_string()
}

fn expected_output(rows: &[String]) -> String {
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let reply = miniserde::json::to_string(&format!("Bob said {row}"));
            format!("[{i},{reply}]\n")
        })
        .collect()
}

#[test]
fn a_request_many_times_the_send_buffer_arrives_whole() {
    let server = serve(|request, _| echo("Bob", request));
    let dir = temp_dir("large-request");
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
        expected_output(&rows)
    );
}

#[test]
fn bodies_around_the_send_buffer_size_arrive_whole_over_one_connection() {
    let server = serve(|request, _| echo("Bob", request));
    let dir = temp_dir("buffer-edges");
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
        expected_output(&rows)
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
            let rows: Vec<String> = request
                .rows()
                .iter()
                .map(|(i, text)| format!("[{i},{}]", miniserde::json::to_string(text)))
                .collect();
            let body = format!("{{\"data\":[{}]}}", rows.join(","));
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut &stream, reply.as_bytes());
        }
    });
    let dir = temp_dir("closing-peer");
    let rows: Vec<String> = (0..50).map(|i| format!("row {i}")).collect();
    let input = write_rows(&dir, &rows);
    let output = dir.join("out.jsonl");
    let outcome = job(&format!("http://{addr}/echo"))
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "5")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    let expected: String = rows
        .iter()
        .enumerate()
        .map(|(i, row)| format!("[{i},{}]\n", miniserde::json::to_string(row)))
        .collect();
    assert_eq!(std::fs::read_to_string(&output).expect("output"), expected);
}

/// What strace saw of one run: calls by name, and the failed ones by name
/// and error.
struct Syscalls {
    calls: BTreeMap<String, usize>,
    failed: BTreeMap<(String, String), usize>,
}

impl Syscalls {
    fn count(&self, name: &str) -> usize {
        self.calls.get(name).copied().unwrap_or(0)
    }

    fn failed(&self, name: &str, error: &str) -> usize {
        let key = (name.to_owned(), error.to_owned());
        self.failed.get(&key).copied().unwrap_or(0)
    }

    fn parse(text: &str) -> Syscalls {
        let mut calls = BTreeMap::new();
        let mut failed = BTreeMap::new();
        for line in text.lines() {
            // "PID name(args) = result". A call that another thread's line
            // splits ends as "PID <... name resumed>...= result": counted at
            // its start, and its result read at its end.
            let Some((_, call)) = line.split_once(' ') else {
                continue;
            };
            let call = call.trim_start();
            let name = match call.strip_prefix("<... ") {
                Some(rest) => match rest.split_once(" resumed>") {
                    Some((name, _)) => name,
                    None => continue,
                },
                None => match call.split_once('(') {
                    Some((name, _)) if !name.contains(' ') => {
                        *calls.entry(name.to_owned()).or_insert(0) += 1;
                        name
                    }
                    _ => continue,
                },
            };
            if let Some(error) = line
                .rsplit_once(" = -1 ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
            {
                *failed
                    .entry((name.to_owned(), error.to_owned()))
                    .or_insert(0) += 1;
            }
        }
        Syscalls { calls, failed }
    }
}

#[test]
fn the_strace_reader_counts_split_calls_once_and_their_errors() {
    let text = "\
7 recvfrom(5, 0x1, 1, MSG_DONTWAIT|MSG_PEEK, NULL, NULL) = -1 EAGAIN (Resource temporarily unavailable)
7 recvfrom(5,  <unfinished ...>
8 rt_sigtimedwait([TERM INT], NULL, NULL, 8 <unfinished ...>
7 <... recvfrom resumed>0x1, 1, MSG_DONTWAIT|MSG_PEEK, NULL, NULL) = -1 EAGAIN (Resource temporarily unavailable)
7 writev(5, [{iov_base=\"POST\", iov_len=4}], 1) = 4
7 +++ exited with 0 +++
";
    let seen = Syscalls::parse(text);
    assert_eq!(seen.count("recvfrom"), 2);
    assert_eq!(seen.failed("recvfrom", "EAGAIN"), 2);
    assert_eq!(seen.count("writev"), 1);
    assert_eq!(seen.count("rt_sigtimedwait"), 1);
}

#[test]
fn a_batch_request_costs_one_send_and_no_thread_hand_off() {
    let have_strace = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_strace {
        skip_unless_ci("strace (apt-get install strace)");
        return;
    }
    let server = serve(|request, _| echo("Bob", request));
    let dir = temp_dir("syscalls");
    let requests = 20;
    let rows: Vec<String> = (0..requests * 100)
        .map(|i| format!("row number {i}"))
        .collect();
    let input = write_rows(&dir, &rows);
    let output = dir.join("out.jsonl");
    let trace = dir.join("strace.txt");
    let child = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(binary())
        .env_clear()
        .env("SERVICE_URL", server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "100")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strace");
    let outcome = finish(child, Instant::now());
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(
        std::fs::read_to_string(&output).expect("output"),
        expected_output(&rows)
    );
    let text = std::fs::read_to_string(&trace).expect("strace output");
    let seen = Syscalls::parse(&text);
    let summary = format!("{:?}\n{:?}", seen.calls, seen.failed);
    // ureq's own TCP transport made 2 sends, 3 receives (2 of them EAGAIN),
    // 4 ioctls and 3 setsockopts a request, and the hand-off to a worker
    // thread 2 futex calls.
    let sends = seen.count("sendto") + seen.count("sendmsg") + seen.count("writev");
    assert_eq!(sends, requests, "one send a request:\n{summary}");
    // At most one idle check a request (the first goes out on a new
    // connection, unchecked), where ureq made two.
    let checks = seen.failed("recvfrom", "EAGAIN");
    assert!(
        (requests / 2..=requests).contains(&checks),
        "one idle check a request:\n{summary}"
    );
    // A reply's head and body may come in separate reads: the test server
    // writes them apart.
    assert!(seen.count("recvfrom") <= 3 * requests, "{summary}");
    // connect_timeout's two, and none a request.
    assert!(seen.count("ioctl") <= 2, "{summary}");
    // TCP_NODELAY, then each direction's timeout once; again only when a
    // request waits long (tens of milliseconds on a loaded machine).
    assert!(seen.count("setsockopt") < requests / 2, "{summary}");
    // A few at start-up and exit, whatever the timing (6 seen under load):
    // not one a request.
    assert!(seen.count("futex") < requests / 2, "{summary}");
}

#[test]
fn a_url_too_long_for_any_request_head_is_a_configuration_error() {
    let server = serve(|request, _| echo("Bob", request));
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
