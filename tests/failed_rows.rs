//! Bad rows don't sink a long job: with MAX_FAILED_ROWS, a batch that fails
//! for good is split down to the rows that fail; each gets `[index,null]`
//! in OUTPUT_FILE and a line in REJECTS_FILE saying why, every other row its
//! real reply; more failed rows than allowed fail the job with no output;
//! failures that pass never count as rows; and HTTP 413 splits whatever
//! MAX_FAILED_ROWS says.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::http::*;
use common::job::*;
use common::*;

/// A service that fails any batch holding a poisoned row with 500, and one
/// holding a bad row with 400, and echoes the others; rows that ask for it
/// are left out of its reply. A request over `max_body` bytes gets 413.
fn picky_service(max_body: usize) -> Server {
    serve(move |request, _| {
        if request.body.len() > max_body {
            return Reply::json(413, "request too large");
        }
        let rows = request.rows();
        if rows.iter().any(|(_, text)| text.starts_with("POISON")) {
            return Reply::json(500, "poisoned\nrow");
        }
        if rows.iter().any(|(_, text)| text.starts_with("BAD")) {
            return Reply::json(400, "bad row");
        }
        let answered: Vec<String> = rows
            .iter()
            .filter(|(_, text)| !text.starts_with("DROP"))
            .map(|(i, text)| row(i, &format!("echo {text}")))
            .collect();
        Reply::json(200, format!("{{\"data\":[{}]}}", answered.join(",")))
    })
}

/// Row `i`'s text: poisoned, bad, dropped from the reply, or plain.
fn text_of(i: u64, poisoned: &[u64], bad: &[u64], dropped: &[u64]) -> String {
    if poisoned.contains(&i) {
        format!("POISON {i}")
    } else if bad.contains(&i) {
        format!("BAD {i}")
    } else if dropped.contains(&i) {
        format!("DROP {i}")
    } else {
        format!("row {i}")
    }
}

const POISONED: [u64; 2] = [17, 1234];
const BAD: [u64; 3] = [500, 501, 1999];
const DROPPED: [u64; 1] = [777];
const ROWS: u64 = 2000;

fn expected_output(indices: impl Iterator<Item = u64>) -> Vec<String> {
    indices
        .map(|i| match () {
            _ if POISONED.contains(&i) || BAD.contains(&i) || DROPPED.contains(&i) => {
                format!("[{i},null]")
            }
            _ => format!("[{i},\"echo row {i}\"]"),
        })
        .collect()
}

fn expected_rejects(indices: impl Iterator<Item = u64>) -> Vec<String> {
    indices
        .filter_map(|i| {
            let (text, error) = if POISONED.contains(&i) {
                (
                    format!("POISON {i}"),
                    r#"HTTP 500: \"poisoned\\nrow\""#.to_owned(),
                )
            } else if BAD.contains(&i) {
                (format!("BAD {i}"), r#"HTTP 400: \"bad row\""#.to_owned())
            } else if DROPPED.contains(&i) {
                (
                    format!("DROP {i}"),
                    format!("reply has 0 row(s) for 1 sent; no reply for index {i}"),
                )
            } else {
                return None;
            };
            Some(format!(
                "{{\"index\":{i},\"row\":[\"{text}\"],\"error\":\"{error}\"}}"
            ))
        })
        .collect()
}

fn input(dir: &Path) -> std::path::PathBuf {
    let text: String = (0..ROWS)
        .map(|i| text_of(i, &POISONED, &BAD, &DROPPED) + "\n")
        .collect();
    write_input(dir, text)
}

#[test]
fn failing_batches_are_split_down_to_the_rows_that_fail() {
    for concurrency in ["1", "4", "auto"] {
        let server = picky_service(usize::MAX);
        let dir = TempDir::new("failed-rows");
        let input = input(&dir);
        let (output, rejects) = (dir.join("out.jsonl"), dir.join("rejects.jsonl"));
        let outcome = job(&server.url())
            .env("INPUT_FILE", &input)
            .env("OUTPUT_FILE", &output)
            .env("REJECTS_FILE", &rejects)
            .env("MAX_FAILED_ROWS", "6")
            .env("BATCH_SIZE", "100")
            .env("CONCURRENCY", concurrency)
            .run();
        assert_eq!(
            outcome.code,
            Some(0),
            "CONCURRENCY={concurrency}\n{outcome}"
        );
        assert!(outcome.errors().is_empty(), "{outcome}");
        assert_lines(&file_lines(&output), &expected_output(0..ROWS));
        assert_lines(&file_lines(&rejects), &expected_rejects(0..ROWS));
        // With REJECTS_FILE, no WARNING a row.
        assert!(outcome.lines("WARNING").is_empty(), "{outcome}");
        // Twenty batches, five of them with a bad row (500 and 501 in one):
        // each bad row costs about 2·log2(100) requests, not 100.
        let requests = server.requests().len();
        assert!(
            (20 + 4 * 14..=20 + 5 * 14 + 14).contains(&requests),
            "{requests} requests"
        );
        let done = outcome.lines("INFO").pop().unwrap_or_default();
        assert!(
            done.starts_with("Done: 2000/2000 rows")
                && done.contains(&format!(", {requests} requests, 0 retries, 6 failed rows")),
            "{done}"
        );
        assert_eq!(files_in(&dir), ["input.txt", "out.jsonl", "rejects.jsonl"]);
    }
}

#[test]
fn replicas_each_split_their_own_rows_and_write_their_own_rejects() {
    let server = picky_service(usize::MAX);
    let dir = TempDir::new("failed-rows-replicas");
    let input = input(&dir);
    for index in 0..2u64 {
        let outcome = job(&server.url())
            .env("INPUT_FILE", &input)
            .env("OUTPUT_FILE", dir.join("out-{index}.jsonl"))
            .env("REJECTS_FILE", dir.join("rejects-{index}.jsonl"))
            .env("MAX_FAILED_ROWS", "6")
            .env("BATCH_SIZE", "50")
            .env("CONCURRENCY", "3")
            .env("SNOWFLAKE_JOBS_COUNT", "2")
            .env("SNOWFLAKE_JOB_INDEX", index.to_string())
            .run();
        assert_eq!(outcome.code, Some(0), "{outcome}");
        let mine = (0..ROWS).filter(move |i| i % 2 == index);
        assert_lines(
            &file_lines(&dir.join(format!("out-{index}.jsonl"))),
            &expected_output(mine.clone()),
        );
        assert_lines(
            &file_lines(&dir.join(format!("rejects-{index}.jsonl"))),
            &expected_rejects(mine),
        );
    }
    // REJECTS_FILE, too, is per replica or refused.
    job(&server.url())
        .env("REJECTS_FILE", dir.join("rejects.jsonl"))
        .env("SNOWFLAKE_JOBS_COUNT", "2")
        .run()
        .assert_fails(64, "REJECTS_FILE: is ");
}

#[test]
fn without_rejects_file_each_failed_row_is_a_warning() {
    let server = picky_service(usize::MAX);
    let dir = TempDir::new("failed-rows-warnings");
    let input = input(&dir);
    let output = dir.join("out.jsonl");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("MAX_FAILED_ROWS", "6")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_lines(&file_lines(&output), &expected_output(0..ROWS));
    let failed: BTreeSet<u64> = POISONED
        .iter()
        .chain(&BAD)
        .chain(&DROPPED)
        .copied()
        .collect();
    let warnings = outcome.lines("WARNING");
    assert_eq!(warnings.len(), failed.len(), "{outcome}");
    for (warning, index) in warnings.iter().zip(&failed) {
        assert!(
            warning.starts_with(&format!("Row {index} failed: ")),
            "{warning}"
        );
    }
    assert!(
        warnings.contains(&r#"Row 17 failed: HTTP 500: "poisoned\nrow""#.to_owned()),
        "{warnings:?}"
    );
}

#[test]
fn more_failed_rows_than_allowed_fail_the_job_with_no_output() {
    let server = picky_service(usize::MAX);
    let dir = TempDir::new("failed-rows-over");
    let input = input(&dir);
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", dir.join("out.jsonl"))
        .env("REJECTS_FILE", dir.join("rejects.jsonl"))
        .env("MAX_FAILED_ROWS", "4")
        .env("CONCURRENCY", "2")
        .run();
    // The fifth of the six, in index order, is one too many.
    outcome.assert_fails(
        76,
        "5 row(s) failed, more than MAX_FAILED_ROWS=4 allows; row 1234 failed with HTTP 500",
    );
    assert_eq!(files_in(&dir), ["input.txt"], "no output, no rejects");
}

#[test]
fn by_default_the_first_batch_that_fails_fails_the_job_unsplit() {
    let server = picky_service(usize::MAX);
    let dir = TempDir::new("failed-rows-default");
    let input = input(&dir);
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", dir.join("out.jsonl"))
        .env("BATCH_SIZE", "100")
        .run();
    outcome.assert_fails(76, "answered wrongly: HTTP 500: \"poisoned\\nrow\"");
    // The first batch holds row 17: one request, no split.
    assert_eq!(server.requests().len(), 1);
    assert_eq!(files_in(&dir), ["input.txt"]);
}

#[test]
fn a_request_too_large_is_split_whatever_max_failed_rows_says() {
    // Rows of about 20 bytes, 100 to a batch: over 1,500 bytes a request
    // is refused, so each batch goes in halves.
    let server = picky_service(1500);
    let dir = TempDir::new("too-large");
    let rows: Vec<String> = (0..1000).map(|i| format!("row {i}")).collect();
    let input = write_input(&dir, rows.join("\n") + "\n");
    let output = dir.join("out.jsonl");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "100")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    let expected: Vec<String> = (0..1000)
        .map(|i| format!("[{i},\"echo row {i}\"]"))
        .collect();
    assert_lines(&file_lines(&output), &expected);
    // Each batch once whole, and each one refused then in two halves.
    let requests = server.requests();
    let refused = requests.iter().filter(|r| r.body.len() > 1500).count();
    assert!(refused >= 8, "{refused} refused");
    assert_eq!(requests.len(), 10 + 2 * refused);

    // A row too large alone: a failed row, which MAX_FAILED_ROWS=0 allows
    // none of; with 1, its line is null.
    let mut rows = rows;
    rows[7] = "x".repeat(2000);
    let input = write_input(&dir, rows.join("\n") + "\n");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .run();
    outcome.assert_fails(
        76,
        "1 row(s) failed, more than MAX_FAILED_ROWS=0 allows; row 7 failed with HTTP 413",
    );
    std::fs::remove_file(&output).ok();
    let rejects = dir.join("rejects.jsonl");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("REJECTS_FILE", &rejects)
        .env("MAX_FAILED_ROWS", "1")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(file_lines(&output)[7], "[7,null]");
    assert_eq!(
        file_lines(&rejects),
        [format!(
            r#"{{"index":7,"row":["{}"],"error":"HTTP 413: \"request too large\""}}"#,
            "x".repeat(2000)
        )]
    );
}

#[test]
fn an_outage_is_never_a_failed_row() {
    // Nothing listens: every batch fails with a failure that passes, until
    // RETRY_DEADLINE; however many rows may fail, the job fails.
    let dir = TempDir::new("failed-rows-outage");
    let input = input(&dir);
    let nobody = ReservedPort::new();
    let outcome = job(&nobody.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", dir.join("out.jsonl"))
        .env("REJECTS_FILE", dir.join("rejects.jsonl"))
        .env("MAX_FAILED_ROWS", "1000000")
        .env("RETRY_DEADLINE", "1s")
        .run();
    outcome.assert_fails(69, "unreachable");
    assert_eq!(files_in(&dir), ["input.txt"]);
    // And a service that answers 503 for good, the same.
    let busy = serve(|_, _| Reply::json(503, "busy"));
    let outcome = job(&busy.url())
        .env("INPUT_FILE", &input)
        .env("MAX_FAILED_ROWS", "1000000")
        .env("RETRY_DEADLINE", "1s")
        .run();
    outcome.assert_fails(69, "HTTP 503");
}

#[test]
fn a_jsonl_row_is_rejected_with_its_columns_as_sent() {
    let server = serve(|request, _| {
        let body = String::from_utf8_lossy(&request.body).into_owned();
        if body.contains("\"poison\"") {
            return Reply::json(500, "no");
        }
        let answered: Vec<String> = request.indices().iter().map(|i| row(i, "ok")).collect();
        Reply::json(200, format!("{{\"data\":[{}]}}", answered.join(",")))
    });
    let dir = TempDir::new("failed-jsonl");
    let input = write_input(&dir, "[1,\"a\"]\n[ 2 , \"poison\" ]\n[3,null]\n");
    let rejects = dir.join("rejects.jsonl");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("INPUT_FORMAT", "jsonl")
        .env("OUTPUT_FILE", dir.join("out.jsonl"))
        .env("REJECTS_FILE", &rejects)
        .env("MAX_FAILED_ROWS", "1")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(
        file_lines(&rejects),
        [r#"{"index":1,"row":[2 , "poison"],"error":"HTTP 500: \"no\""}"#]
    );
    assert_eq!(
        file_lines(&dir.join("out.jsonl")),
        ["[0,\"ok\"]", "[1,null]", "[2,\"ok\"]"]
    );
}

/// What one bad row costs: the batch once whole, then two requests at each
/// halving down to the row, about 2·log2(B) more, not B.
#[test]
fn one_bad_row_costs_two_requests_a_halving() {
    for (rows, bad) in [(2u64, 1u64), (100, 37), (1000, 999)] {
        let server = picky_service(usize::MAX);
        let dir = TempDir::new("one-bad-row");
        let text: String = (0..rows)
            .map(|i| text_of(i, &[bad], &[], &[]) + "\n")
            .collect();
        let input = write_input(&dir, text);
        let outcome = job(&server.url())
            .env("INPUT_FILE", &input)
            .env("OUTPUT_FILE", dir.join("out.jsonl"))
            .env("MAX_FAILED_ROWS", "1")
            .env("BATCH_SIZE", rows.to_string())
            .run();
        assert_eq!(outcome.code, Some(0), "{outcome}");
        let extra = server.requests().len() as u64 - 1;
        let halvings = u64::from(rows.next_power_of_two().trailing_zeros());
        assert!(
            extra <= 2 * halvings && extra >= 2 * (halvings - 1),
            "{rows} rows, one bad: {extra} requests more"
        );
        eprintln!("observed: one bad row in a batch of {rows}: {extra} requests more");
    }
}

/// A service that refuses everything is broken, not a source of bad rows:
/// however many rows may fail, the split of the first batch finds none the
/// service takes, and the job fails, with no output. And an answer that no
/// other rows would change (a wrong URL, method or credentials) is never
/// split at all.
#[test]
fn a_service_that_refuses_everything_fails_the_job_after_one_split() {
    let dir = TempDir::new("refuses-everything");
    let input = input(&dir);
    let broken = serve(|_, _| Reply::json(500, "database down"));
    let outcome = job(&broken.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", dir.join("out.jsonl"))
        .env("MAX_FAILED_ROWS", "1000000")
        .env("BATCH_SIZE", "8")
        .run();
    outcome.assert_fails(
        76,
        "every row of a batch of 8 failed on its own, so the service refuses more than some \
         rows: HTTP 500: \"database down\"",
    );
    assert_eq!(
        broken.requests().len(),
        2 * 8 - 1,
        "one batch, split to its rows"
    );
    assert_eq!(files_in(&dir), ["input.txt"]);

    for status in [401, 403, 404, 405] {
        let refusing = serve(move |_, _| Reply::json(status, "no"));
        let outcome = job(&refusing.url())
            .env("INPUT_FILE", &input)
            .env("MAX_FAILED_ROWS", "1000000")
            .run();
        outcome.assert_fails(76, &format!("HTTP {status}: \"no\""));
        assert_eq!(refusing.requests().len(), 1, "HTTP {status} is not split");
    }
}

/// A batch with more bad rows than allowed fails the job at its last one
/// needed, without splitting the rest of it.
#[test]
fn a_split_stops_once_its_batch_has_too_many_failed_rows() {
    let server = picky_service(usize::MAX);
    let dir = TempDir::new("split-stops");
    let text: String = (0..100)
        .map(|i| text_of(i, &[10, 20, 30, 40], &[], &[]) + "\n")
        .collect();
    let input = write_input(&dir, text);
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", dir.join("out.jsonl"))
        .env("MAX_FAILED_ROWS", "2")
        .env("BATCH_SIZE", "100")
        .run();
    outcome.assert_fails(
        76,
        "3 row(s) failed, more than MAX_FAILED_ROWS=2 allows; row 30 failed with HTTP 500",
    );
    // Row 40 was never reached alone.
    let alone: Vec<Vec<(u64, String)>> = server
        .requests()
        .iter()
        .map(Request::rows)
        .filter(|rows| rows.len() == 1)
        .collect();
    assert!(alone.iter().all(|rows| rows[0].0 != 40), "{alone:?}");
    assert_eq!(files_in(&dir), ["input.txt"]);
}

/// REJECTS_FILE goes into place first: should OUTPUT_FILE then fail to,
/// REJECTS_FILE is removed again, so that neither is there without the
/// other.
#[test]
fn no_rejects_file_is_left_without_its_output_file() {
    let server = picky_service(usize::MAX);
    let dir = TempDir::new("rejects-alone");
    let input = input(&dir);
    // A directory where the output file would go: no file can replace it.
    let output = dir.join("out.jsonl");
    std::fs::create_dir(&output).unwrap();
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("REJECTS_FILE", dir.join("rejects.jsonl"))
        .env("MAX_FAILED_ROWS", "6")
        .run();
    outcome.assert_fails(74, "moving ");
    assert_eq!(files_in(&dir), ["input.txt", "out.jsonl"]);
    assert!(output.is_dir());
}
