//! Connections, and what real servers do to them: requests many times the
//! client's buffers arrive whole, and servers that close kept-alive
//! connections, reset them, or lie about a body's length cost a retry at most,
//! never a wrong answer or the memory a hostile length asks for.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;

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
