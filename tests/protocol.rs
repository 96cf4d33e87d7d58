//! The row format as Snowflake speaks it to a service function: the
//! `sf-external-function-*` headers of every request, a batch id that stays
//! the same across retries and polls, and asynchronous services that answer
//! a batch with 202 and its rows later, to GET polls.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::http::*;
use common::job::*;
use common::*;

const FORMAT: &str = "sf-external-function-format";
const FORMAT_VERSION: &str = "sf-external-function-format-version";
const QUERY_ID: &str = "sf-external-function-current-query-id";
const BATCH_ID: &str = "sf-external-function-query-batch-id";

fn header<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .header(name)
        .unwrap_or_else(|| panic!("{} {} without {name}", request.method, request.path))
}

/// The query id the job logged in its first INFO line.
fn logged_query_id(outcome: &Outcome) -> String {
    let first = outcome.lines("INFO").into_iter().next().unwrap_or_default();
    first
        .strip_prefix("Query id ")
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no query id logged:\n{outcome}"))
        .to_owned()
}

fn rows_input(dir: &std::path::Path, rows: usize) -> std::path::PathBuf {
    let text: String = (0..rows).map(|i| format!("row {i}\n")).collect();
    write_input(dir, text)
}

fn echoed(rows: usize, name: &str) -> String {
    (0..rows)
        .map(|i| format!("[{i},\"{name} said row {i}\"]\n"))
        .collect()
}

#[test]
fn every_request_carries_snowflakes_headers_and_the_tutorial_lines_stay() {
    let server = serve_echo("Bob");
    let outcome = job(&server.url()).run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    let url = server.url();
    // One line more than the tutorial's two, first: the query id.
    let query_id = logged_query_id(&outcome);
    assert_eq!(
        outcome.lines("INFO"),
        [
            format!(
                "Query id {query_id}, sent with every batch as \
                 sf-external-function-current-query-id"
            ),
            format!("Calling {url} with input Hello"),
            format!("Received response from {url}: Bob said Hello"),
        ]
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(header(request, FORMAT), "json");
    assert_eq!(header(request, FORMAT_VERSION), "1.0");
    assert_eq!(header(request, QUERY_ID), query_id);
    assert_eq!(header(request, BATCH_ID), format!("{query_id}:0:1"));
    // A random (version 4) UUID, new on every run.
    assert_eq!(query_id.len(), 36, "{query_id}");
    assert_eq!(&query_id[14..15], "4", "{query_id}");
    let again = job(&server.url()).run();
    assert_ne!(logged_query_id(&again), query_id);
    // The body is what it always was.
    assert_eq!(request.body, br#"{"data":[[0,"Hello"]]}"#);
}

#[test]
fn a_given_query_id_is_used_by_every_replica() {
    let server = serve_echo("Bob");
    let dir = TempDir::new("query-id");
    let input = rows_input(&dir, 40);
    for index in 0..2 {
        let outcome = job(&server.url())
            .env("INPUT_FILE", &input)
            .env("OUTPUT_FILE", dir.join("out-{index}.jsonl"))
            .env("BATCH_SIZE", "5")
            .env("QUERY_ID", "run-2026-12-06")
            .env("SNOWFLAKE_JOBS_COUNT", "2")
            .env("SNOWFLAKE_JOB_INDEX", index.to_string())
            .run();
        assert_eq!(outcome.code, Some(0), "{outcome}");
        assert_eq!(logged_query_id(&outcome), "run-2026-12-06");
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 4 * 2);
    let batches: BTreeSet<&str> = requests.iter().map(|r| header(r, BATCH_ID)).collect();
    assert_eq!(
        batches.len(),
        requests.len(),
        "batch ids repeat: {batches:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| header(r, QUERY_ID) == "run-2026-12-06")
    );
    // Replica 1 sends the odd rows, from index 1.
    assert!(batches.contains("run-2026-12-06:1:5"), "{batches:?}");
    job(&server.url())
        .env("QUERY_ID", "has a space")
        .run()
        .assert_fails(64, "QUERY_ID: ");
}

/// A batch an asynchronous service holds: its rows, and how often it has
/// been polled.
type Accepted = (Vec<(u64, String)>, usize);

/// An asynchronous echo service: a POST is accepted (202, with a body that
/// is not the reply, which must be ignored) and its rows kept under the
/// batch id; GET polls are answered 202 until the batch has been polled
/// `polls` times, then 200 with the rows. With `starting`, a 503 comes
/// first for every batch, once. Every request is recorded with its method
/// and headers.
fn async_echo(polls: usize, starting: bool) -> Server {
    let batches: Arc<Mutex<HashMap<String, Accepted>>> = Arc::default();
    let seen_503: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    serve(move |request, _| {
        let id = header(request, BATCH_ID).to_owned();
        if starting && seen_503.lock().unwrap().insert(id.clone()) {
            return Reply::json(503, "starting");
        }
        let mut batches = batches.lock().unwrap();
        match request.method.as_str() {
            "POST" => {
                batches.insert(id, (request.rows(), 0));
                Reply::json(202, r#"{"data":[[0,"not the reply"]]}"#)
            }
            "GET" => {
                let Some((rows, polled)) = batches.get_mut(&id) else {
                    return Reply::json(404, format!("no batch {id}"));
                };
                *polled += 1;
                if *polled < polls {
                    return Reply::json(202, "");
                }
                let rows: Vec<String> = rows
                    .iter()
                    .map(|(i, text)| row(i, &format!("Async said {text}")))
                    .collect();
                Reply::json(200, format!("{{\"data\":[{}]}}", rows.join(",")))
            }
            other => Reply::json(405, other.to_owned()),
        }
    })
}

#[test]
fn an_asynchronous_service_is_polled_until_its_rows_come() {
    let server = async_echo(3, true);
    let dir = TempDir::new("async");
    let input = rows_input(&dir, 60);
    let output = dir.join("out.jsonl");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "7")
        .env("CONCURRENCY", "4")
        .env("RUST_LOG", "debug")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        echoed(60, "Async")
    );
    // The 503s are retries; the polls are not: they log at DEBUG.
    let batches = 60usize.div_ceil(7);
    assert_eq!(outcome.lines("WARNING").len(), batches, "{outcome}");
    assert!(
        outcome.logged(
            "DEBUG",
            "accepted and not finished (HTTP 202); polling in 0.10s"
        ),
        "{outcome}"
    );
    assert!(
        outcome
            .lines("INFO")
            .last()
            .is_some_and(|l| l.ends_with(&format!("{batches} retries"))),
        "{outcome}"
    );

    // Per batch: POST (503), POST (202), then GET, GET, GET (202, 202,
    // 200), all with the same batch id and the run's one query id.
    let query_id = logged_query_id(&outcome);
    let mut by_batch: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for request in server.requests() {
        assert_eq!(header(&request, QUERY_ID), query_id);
        assert_eq!(header(&request, FORMAT), "json");
        assert_eq!(header(&request, FORMAT_VERSION), "1.0");
        if request.method == "GET" {
            assert!(request.body.is_empty(), "a poll has no body");
            assert_eq!(request.header("content-length"), None, "a poll has no body");
            assert_eq!(request.path, "/echo", "polls go to the same URL");
        }
        by_batch
            .entry(header(&request, BATCH_ID).to_owned())
            .or_default()
            .push(request.method);
    }
    assert_eq!(by_batch.len(), batches, "{by_batch:?}");
    for (id, methods) in &by_batch {
        assert!(id.starts_with(&format!("{query_id}:")), "{id}");
        assert_eq!(
            methods,
            &["POST", "POST", "GET", "GET", "GET"],
            "batch {id}"
        );
    }
}

#[test]
fn polls_are_not_retries_and_fail_as_a_post_would() {
    // RETRY_DEADLINE=0 allows no retry; five polls still go on.
    let server = async_echo(5, false);
    let outcome = job(&server.url()).env("RETRY_DEADLINE", "0").run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(
        outcome.tutorial_lines()[1],
        format!("Received response from {}: Async said Hello", server.url())
    );
    assert!(outcome.lines("WARNING").is_empty(), "{outcome}");
    assert_eq!(server.requests().len(), 1 + 5);

    // A failure that passes, on a poll, is retried; one that does not
    // fails the job as it would for a POST.
    for (status, says) in [(503, None), (404, Some("HTTP 404: \"gone\""))] {
        let server = serve(move |request, n| match (request.method.as_str(), n) {
            ("POST", _) => Reply::json(202, ""),
            (_, 1) => Reply::json(status, "gone"),
            _ => Reply::json(200, r#"{"data":[[0,"Bob said Hello"]]}"#),
        });
        let outcome = job(&server.url()).run();
        match says {
            None => {
                assert_eq!(outcome.code, Some(0), "{outcome}");
                assert!(outcome.logged("WARNING", "HTTP 503"), "{outcome}");
            }
            Some(says) => outcome.assert_fails(76, says),
        }
    }
}

#[test]
fn a_batch_accepted_and_never_finished_fails_at_async_timeout() {
    let server = serve(|_, _| Reply::json(202, ""));
    let outcome = job(&server.url())
        .env("ASYNC_TIMEOUT", "1s")
        .env("RUST_LOG", "debug")
        .run();
    outcome.assert_fails(69, "ASYNC_TIMEOUT=1.00s");
    let query_id = logged_query_id(&outcome);
    assert!(
        outcome
            .error()
            .contains(&format!("accepted batch {query_id}:0:1 (HTTP 202)")),
        "{outcome}"
    );
    assert!(outcome.lines("WARNING").is_empty(), "{outcome}");
    assert!(
        outcome.elapsed >= Duration::from_secs(1) && outcome.elapsed < Duration::from_secs(5),
        "{outcome}"
    );
    // 100 ms, doubling: 100 + 200 + 400 + the 300 left = 4 polls in 1 s,
    // or 3 where the machine is so slow that the last wait is all used up.
    let polls = server
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .count();
    assert!((3..=4).contains(&polls), "{polls} polls:\n{outcome}");
    job(&server.url())
        .env("ASYNC_TIMEOUT", "0")
        .run()
        .assert_fails(64, "ASYNC_TIMEOUT");
}
