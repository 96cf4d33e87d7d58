//! Batch mode: many rows from a file or stdin, batched and concurrent
//! requests, replicas, and output that is complete or absent.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::http::*;
use common::job::*;
use common::*;

/// An echo server that answers each batch's rows in reverse order, after a
/// delay that differs per request, so concurrent batches finish out of order.
fn shuffling_echo() -> Server {
    serve(|request, n| {
        let mut rows: Vec<String> = request
            .rows()
            .iter()
            .map(|(i, text)| row(i, &format!("echo {text}")))
            .collect();
        rows.reverse();
        Reply::json(200, format!("{{\"data\":[{}]}}", rows.join(",")))
            .after(Duration::from_millis((n as u64 * 7) % 20))
    })
}

#[test]
fn rows_come_back_in_index_order_with_concurrency() {
    let server = shuffling_echo();
    let dir = TempDir::new("order");
    let lines: Vec<String> = (0..250).map(|i| format!("row {i}")).collect();
    let input = write_input(&dir, format!("{}\n", lines.join("\n")).as_bytes());
    let output = dir.join("out.jsonl");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "7")
        .env("CONCURRENCY", "4")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    let expected: Vec<String> = (0..250)
        .map(|i| format!("[{i},\"echo row {i}\"]"))
        .collect();
    assert_eq!(file_lines(&output), expected);
    assert_eq!(server.requests().len(), 250usize.div_ceil(7));
    assert!(server.requests().iter().all(|r| r.rows().len() <= 7));
    assert!(
        server.connections.load(Ordering::SeqCst) <= 4,
        "connections are kept alive"
    );
    let done = outcome.lines("INFO");
    assert!(
        done.last()
            .is_some_and(|l| l.starts_with("Done: 250/250 rows")),
        "{outcome}"
    );
    assert_eq!(files_in(&dir), ["input.txt", "out.jsonl"]);
}

#[test]
fn empty_lines_are_rows_and_a_final_newline_is_not() {
    let server = shuffling_echo();
    for (text, rows) in [
        (&b"a\n\nb\n"[..], vec!["a", "", "b"]),
        (b"a\n\nb", vec!["a", "", "b"]),
        (b"a\r\nb\r\n", vec!["a", "b"]),
        (b"\n", vec![""]),
        (b"", vec![]),
    ] {
        let dir = TempDir::new("lines");
        let input = write_input(&dir, text);
        let output = dir.join("out.jsonl");
        let outcome = job(&server.url())
            .env("INPUT_FILE", &input)
            .env("OUTPUT_FILE", &output)
            .run();
        assert_eq!(outcome.code, Some(0), "{outcome}");
        let expected: Vec<String> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| format!("[{i},\"echo {r}\"]"))
            .collect();
        assert_eq!(file_lines(&output), expected, "input {text:?}");
    }
}

#[test]
fn without_output_file_replies_go_to_the_log() {
    let server = shuffling_echo();
    let outcome = job(&server.url())
        .env("INPUT_FILE", "-")
        .stdin_bytes(b"x\ny\n".to_vec());
    assert_eq!(outcome.code, Some(0), "{outcome}");
    let url = server.url();
    let info = outcome.lines("INFO");
    assert!(
        info.contains(&format!("Received response from {url}: echo x")),
        "{outcome}"
    );
    assert!(
        info.contains(&format!("Received response from {url}: echo y")),
        "{outcome}"
    );
    assert!(
        info.last().is_some_and(|l| l.starts_with("Done: 2/? rows")),
        "{outcome}"
    );
}

#[test]
fn logged_rows_and_replies_are_one_record_each() {
    // Each reply adds a line break and what would read as a record of its
    // own.
    let server = serve(|request, _| {
        let forged = "\nservice-to-service [2026-01-01 00:00:00,000] [ERROR] forged";
        let rows: Vec<String> = request
            .rows()
            .iter()
            .map(|(i, text)| row(i, &format!("{text}{forged}")))
            .collect();
        Reply::json(200, format!("{{\"data\":[{}]}}", rows.join(",")))
    });
    let dir = TempDir::new("one-line");
    let input = write_input(
        &dir,
        "cr\rinside\nesc \u{1b}[31m red\nback\\slash\n\u{2028}\u{85}\u{202e} end\n",
    );
    let outcome = job(&server.url()).env("INPUT_FILE", &input).run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    outcome.assert_every_line_is_a_log_record();
    assert!(outcome.errors().is_empty(), "{outcome}");
    let url = server.url();
    let rows = [
        r"cr\rinside",
        r"esc \u001b[31m red",
        r"back\\slash",
        r"\u2028\u0085\u202e end",
    ];
    let forged = r"\nservice-to-service [2026-01-01 00:00:00,000] [ERROR] forged";
    let mut expected: Vec<String> = rows
        .iter()
        .map(|text| format!("Calling {url} with input {text}"))
        .collect();
    expected.extend(
        rows.iter()
            .map(|text| format!("Received response from {url}: {text}{forged}")),
    );
    let mut info = outcome.tutorial_lines();
    assert!(
        info.pop()
            .is_some_and(|done| done.starts_with("Done: 4/4 rows"))
    );
    assert_eq!(info, expected);
    assert_eq!(outcome.stdout.lines().count(), 10, "{outcome}");
}

#[test]
fn invalid_utf8_is_a_data_error_naming_the_line() {
    let server = shuffling_echo();
    let dir = TempDir::new("utf8");
    let input = write_input(&dir, b"fine\nalso fine\nbad \xff byte\n");
    let output = dir.join("out.jsonl");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .run();
    outcome.assert_fails(65, "line 3");
    assert_eq!(
        files_in(&dir),
        ["input.txt"],
        "no output, no temporary file"
    );
}

#[test]
fn file_problems_have_their_own_exit_codes() {
    let server = shuffling_echo();
    let dir = TempDir::new("files");
    job(&server.url())
        .env("INPUT_FILE", dir.join("missing.txt"))
        .run()
        .assert_fails(66, "missing.txt");
    let input = write_input(&dir, b"a\n");
    job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", dir.join("no/such/dir/out.jsonl"))
        .run()
        .assert_fails(73, "out.jsonl");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", dir.join("no/such/dir/out.jsonl"))
        .run();
    // The file that could not be made, and what it was for.
    assert!(
        outcome
            .error()
            .contains(", the temporary file of OUTPUT_FILE "),
        "{outcome}"
    );
    assert!(
        outcome.error().contains("no/such/dir/.out.jsonl."),
        "{outcome}"
    );
    assert!(
        server.requests().is_empty(),
        "nothing is sent when the output cannot be created"
    );
}

#[test]
fn a_failed_batch_leaves_no_output_file() {
    let server = serve(|request, n| match n {
        3 => Reply::json(500, "boom"),
        _ => echo("Bob", request),
    });
    let dir = TempDir::new("failed");
    let input = write_input(&dir, "x\n".repeat(100).as_bytes());
    let output = dir.join("out.jsonl");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "10")
        .run();
    outcome.assert_fails(76, "HTTP 500");
    assert_eq!(files_in(&dir), ["input.txt"]);
}

#[test]
fn sigterm_mid_job_leaves_no_output_file() {
    let server = serve_three_then_stall();
    let dir = TempDir::new("sigterm");
    let input = write_input(&dir, "x\n".repeat(100).as_bytes());
    let child = spawn_stalled(job(&server.url()), &server, &input, &dir.join("out.jsonl"));
    send_signal(&child, libc::SIGTERM);
    let outcome = finish(child, Instant::now());
    assert_eq!(outcome.code, Some(143), "{outcome}");
    assert_eq!(
        files_in(&dir),
        ["input.txt"],
        "the temporary file is removed too"
    );
}

#[test]
fn kill_9_mid_job_leaves_nothing_under_the_final_name() {
    let server = serve_three_then_stall();
    let dir = TempDir::new("kill9");
    let input = write_input(&dir, "x\n".repeat(100).as_bytes());
    let mut child = spawn_stalled(job(&server.url()), &server, &input, &dir.join("out.jsonl"));
    child.kill().expect("kill -9");
    let _ = child.wait();
    let files = files_in(&dir);
    assert!(!files.contains(&"out.jsonl".to_owned()), "{files:?}");
    // What is left is only the hidden temporary file, which a rerun removes.
    assert!(
        files
            .iter()
            .all(|f| f == "input.txt" || f.starts_with(".out.jsonl.")),
        "{files:?}"
    );
}

/// Whether `name` is a temporary name the job gives `out.jsonl` now:
/// `.out.jsonl.` and 16 hex digits.
fn is_temporary_of_out_jsonl(name: &str) -> bool {
    name.strip_prefix(".out.jsonl.")
        .and_then(|rest| rest.strip_suffix(".tmp"))
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// In a container the job is always PID 1: a temporary file named by the
/// process id would be the same in every run, and what a killed run left
/// would block the next. Killed as PID 1, then run again as PID 1 over the
/// leftovers (its own, and one named as earlier versions named them).
#[test]
fn a_job_killed_as_pid_1_does_not_block_its_rerun() {
    let stalling = serve_three_then_stall();
    let dir = TempDir::new("rerun");
    let input = write_input(&dir, "x\n".repeat(100).as_bytes());
    let output = dir.join("out.jsonl");
    let Some(first) = job_as_pid_1(&stalling.url()) else {
        return;
    };
    let mut child = spawn_stalled(first, &stalling, &input, &output);
    child.kill().expect("kill -9");
    let _ = child.wait();
    let left = files_in(&dir);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(is_temporary_of_out_jsonl(&left[0]), "{left:?}");
    // Earlier versions named it by the process id; and two bystanders
    // that only look alike.
    for name in [
        ".out.jsonl.1.tmp",
        ".out.jsonl.1.tmp.keep",
        ".other.jsonl.1.tmp",
    ] {
        std::fs::write(dir.join(name), "x").expect("write");
    }

    let server = shuffling_echo();
    let Some(rerun) = job_as_pid_1(&server.url()) else {
        return;
    };
    let outcome = rerun
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "10")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(file_lines(&output).len(), 100);
    for leftover in [&left[0], ".out.jsonl.1.tmp"] {
        let removed = format!(
            "Removed {}, left by an earlier run that did not finish",
            dir.join(leftover).display()
        );
        assert!(outcome.logged("INFO", &removed), "{removed}\n{outcome}");
    }
    assert_eq!(
        files_in(&dir),
        [
            ".other.jsonl.1.tmp",
            ".out.jsonl.1.tmp.keep",
            "input.txt",
            "out.jsonl"
        ]
    );
}

#[test]
fn replicas_refuse_to_share_one_output_file() {
    let server = shuffling_echo();
    let dir = TempDir::new("shared-output");
    let input = write_input(&dir, b"a\nb\n");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", dir.join("out.jsonl"))
        .env("SNOWFLAKE_JOBS_COUNT", "4")
        .env("SNOWFLAKE_JOB_INDEX", "2")
        .run();
    outcome.assert_fails(64, "OUTPUT_FILE: is ");
    assert!(
        outcome
            .error()
            .contains("without {index}, and all 4 replicas"),
        "{outcome}"
    );
    assert!(
        outcome.error().contains("/data/output-{index}.jsonl"),
        "{outcome}"
    );
    assert!(server.requests().is_empty(), "nothing is sent");
    assert_eq!(files_in(&dir), ["input.txt"], "nothing is written");
}

/// An input that can be read only once, a FIFO or a pipe, is read once:
/// every row sent, none lost to a count of rows ahead.
#[test]
fn a_fifo_or_a_pipe_is_read_once_to_its_end() {
    let rows = 100_000;
    let text: String = (0..rows).map(|i| format!("row {i}\n")).collect();
    let expected: Vec<String> = (0..rows)
        .map(|i| format!("[{i},\"I said row {i}\"]"))
        .collect();
    let server = serve_echo("I");
    let dir = TempDir::new("fifo");
    let fifo = dir.join("rows.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo");
    let writer = {
        let (fifo, text) = (fifo.clone(), text.clone());
        thread::spawn(move || std::fs::write(fifo, text).expect("write the FIFO"))
    };
    let output = dir.join("out.jsonl");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &fifo)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "500")
        .run();
    // A job that failed before it opened the FIFO would leave the writer
    // blocked in its open: a reader of our own lets it go (and fail).
    // Opened without waiting for a writer, so that it never blocks itself.
    if !writer.is_finished() {
        use std::os::unix::fs::OpenOptionsExt;
        let _unblock = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
    }
    writer.join().expect("writer");
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_lines(&file_lines(&output), &expected);
    let done = format!("Done: {rows}/? rows");
    assert!(
        outcome
            .lines("INFO")
            .last()
            .is_some_and(|l| l.starts_with(&done)),
        "{outcome}"
    );

    // /dev/stdin, a path to a pipe here, as a process substitution is.
    let outcome = job(&server.url())
        .env("INPUT_FILE", "/dev/stdin")
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "500")
        .stdin_bytes(text.into_bytes());
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_lines(&file_lines(&output), &expected);
}

#[test]
fn replicas_split_the_rows_and_together_cover_each_once() {
    let server = shuffling_echo();
    let dir = TempDir::new("replicas");
    let input = write_input(
        &dir,
        (0..1000)
            .map(|i| format!("r{i}\n"))
            .collect::<String>()
            .as_bytes(),
    );
    let replicas = 3;
    let children: Vec<_> = (0..replicas)
        .map(|k| {
            job(&server.url())
                .env("INPUT_FILE", &input)
                .env("OUTPUT_FILE", dir.join("out-{index}.jsonl"))
                .env("SNOWFLAKE_JOBS_COUNT", replicas.to_string())
                .env("SNOWFLAKE_JOB_INDEX", k.to_string())
                .env("BATCH_SIZE", "50")
                .spawn()
        })
        .collect();
    let mut seen = BTreeSet::new();
    for (k, child) in children.into_iter().enumerate() {
        let outcome = finish(child, Instant::now());
        assert_eq!(outcome.code, Some(0), "{outcome}");
        for line in file_lines(&dir.join(format!("out-{k}.jsonl"))) {
            let index: u64 = line[1..line.find(',').expect("comma")]
                .parse()
                .expect("index");
            assert_eq!(index % replicas, k as u64, "replica {k} took row {index}");
            assert_eq!(line, format!("[{index},\"echo r{index}\"]"));
            assert!(seen.insert(index), "row {index} twice");
        }
    }
    assert_eq!(seen, (0..1000).collect::<BTreeSet<u64>>());
}

#[test]
fn bad_replica_settings_exit_64() {
    let server = shuffling_echo();
    for (count, index, cause) in [
        ("0", "0", "SNOWFLAKE_JOBS_COUNT"),
        ("4", "4", "must be 0 to 3"),
        ("x", "0", "not a whole number"),
    ] {
        job(&server.url())
            .env("SNOWFLAKE_JOBS_COUNT", count)
            .env("SNOWFLAKE_JOB_INDEX", index)
            .run()
            .assert_fails(64, cause);
    }
}

#[test]
fn retries_work_per_batch() {
    let failures = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&failures);
    let server = serve(move |request, n| {
        if n % 3 == 1 {
            counted.fetch_add(1, Ordering::SeqCst);
            Reply::json(503, "busy")
        } else {
            echo("Bob", request)
        }
    });
    let dir = TempDir::new("retries");
    let input = write_input(&dir, "x\n".repeat(30).as_bytes());
    let output = dir.join("out.jsonl");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "5")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(file_lines(&output).len(), 30);
    let retries = failures.load(Ordering::SeqCst);
    assert!(retries > 0);
    assert!(
        outcome
            .lines("INFO")
            .last()
            .is_some_and(|l| l.ends_with(&format!("{retries} retries"))),
        "{outcome}"
    );
}

#[test]
fn a_million_rows_stream_in_flat_memory() {
    let server = serve_echo("I");
    let dir = TempDir::new("million");
    let mut text = String::with_capacity(8_000_000);
    for i in 0..1_000_000 {
        text.push_str(&format!("{i}\n"));
    }
    let input = write_input(&dir, text.as_bytes());
    drop(text);
    let output = dir.join("out.jsonl");
    // The job's own peak: wait4's would include this process's 8 MB input.
    let (outcome, peak_kib) = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "1000")
        .env("CONCURRENCY", "2")
        .run_with_rss();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert!(peak_kib <= 8 * 1024, "peak RSS {peak_kib} KiB over 8 MiB");
    let written = std::fs::read_to_string(&output).expect("output");
    assert_eq!(written.lines().count(), 1_000_000);
    assert_eq!(
        written.lines().nth(999_999),
        Some("[999999,\"I said 999999\"]")
    );
}

/// Where rename fails (as on a Snowflake stage volume), the finished output
/// is copied into place. Simulated with a file bind-mounted over the output
/// name in a private mount namespace: rename onto a mount point fails with
/// EBUSY, while writing through it works.
#[test]
fn output_is_copied_into_place_where_rename_fails() {
    let server = shuffling_echo();
    let dir = TempDir::new("no-rename");
    let input = write_input(&dir, b"a\nb\n");
    let out_dir = dir.join("stage");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let output = out_dir.join("out.jsonl");
    let backing = dir.join("backing.jsonl");
    std::fs::write(&output, "").expect("touch");
    std::fs::write(&backing, "stale").expect("touch");
    let Some(job) = job_with_bind_mount(&server.url(), &backing, &output) else {
        return;
    };
    let outcome = job
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("RUST_LOG", "debug")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert!(
        outcome.logged("DEBUG", "Cannot rename into place"),
        "{outcome}"
    );
    assert_eq!(file_lines(&backing), ["[0,\"echo a\"]", "[1,\"echo b\"]"]);
    assert_eq!(
        files_in(&out_dir),
        ["out.jsonl"],
        "the temporary file is removed"
    );
}

/// A service that answers each row `[i, v1, v2, ...]` with `[i, [v1, v2, ...]]`:
/// the columns as it received them, re-encoded.
fn columns_echo() -> Server {
    serve(|request, _| {
        let body = std::str::from_utf8(&request.body).expect("UTF-8");
        let Ok(miniserde::json::Value::Object(object)) = miniserde::json::from_str(body) else {
            return Reply::json(400, "not an object");
        };
        let Some(miniserde::json::Value::Array(rows)) = object.get("data") else {
            return Reply::json(400, "no data");
        };
        let rows: Vec<String> = rows
            .iter()
            .map(|row| match row {
                miniserde::json::Value::Array(row) => {
                    let columns = miniserde::json::Value::Array(row[1..].iter().cloned().collect());
                    format!(
                        "[{},{}]",
                        miniserde::json::to_string(&row[0]),
                        miniserde::json::to_string(&columns)
                    )
                }
                other => format!("[-1,{}]", miniserde::json::to_string(other)),
            })
            .collect();
        Reply::json(200, format!("{{\"data\":[{}]}}", rows.join(",")))
    })
}

#[test]
fn jsonl_rows_send_their_columns_as_they_are() {
    let server = columns_echo();
    let dir = TempDir::new("jsonl");
    // What COPY INTO @stage FROM (SELECT ARRAY_CONSTRUCT(a, b) ...)
    // FILE_FORMAT = (TYPE = JSON) unloads: one array per line.
    let input = write_input(
        &dir,
        "[\"a\",1]\n[ \"b\" , 2.5 ]\r\n[null,{\"k\":[true,\"\\u00e9\"]}]\n[]\n[\"only\"]\n"
            .as_bytes(),
    );
    let output = dir.join("out.jsonl");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("INPUT_FORMAT", "jsonl")
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "2")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    let bodies: Vec<String> = server
        .requests()
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).expect("UTF-8"))
        .collect();
    // Values go out as written, white space inside a line included.
    assert_eq!(
        bodies,
        [
            "{\"data\":[[0,\"a\",1],[1,\"b\" , 2.5]]}",
            "{\"data\":[[2,null,{\"k\":[true,\"\\u00e9\"]}],[3]]}",
            "{\"data\":[[4,\"only\"]]}",
        ]
    );
    assert_eq!(
        file_lines(&output),
        [
            "[0,[\"a\",1]]",
            "[1,[\"b\",2.5]]",
            "[2,[null,{\"k\":[true,\"é\"]}]]",
            "[3,[]]",
            "[4,[\"only\"]]",
        ]
    );
}

#[test]
fn logged_jsonl_rows_are_one_record_each_and_keep_their_escapes() {
    let server = columns_echo();
    let dir = TempDir::new("jsonl-one-line");
    // A carriage return is white space to JSON, and a line separator may
    // stand raw in a string.
    let input = write_input(&dir, "[\"a\\\"b\",\r1]\n[\"x\u{2028}y\"]\n");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("INPUT_FORMAT", "jsonl")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    outcome.assert_every_line_is_a_log_record();
    let url = server.url();
    let mut info = outcome.tutorial_lines();
    info.pop();
    assert_eq!(
        info,
        [
            format!(r#"Calling {url} with input ["a\"b",\r1]"#),
            format!(r#"Calling {url} with input ["x\u2028y"]"#),
            format!(r#"Received response from {url}: ["a\"b",1]"#),
            format!(r#"Received response from {url}: ["x\u2028y"]"#),
        ]
    );
}

#[test]
fn a_jsonl_line_that_is_not_an_array_is_a_data_error_naming_it() {
    let server = columns_echo();
    for (line, cause) in [
        (
            "\"just a string\"",
            "line 2: the line is a string, not an array",
        ),
        ("[1,", "line 2: the line is not valid JSON"),
        ("", "line 2: the line is not valid JSON"),
        ("{\"a\":1}", "line 2: the line is an object, not an array"),
    ] {
        let dir = TempDir::new("jsonl-bad");
        let input = write_input(&dir, format!("[1]\n{line}\n[3]\n").as_bytes());
        let outcome = job(&server.url())
            .env("INPUT_FILE", &input)
            .env("INPUT_FORMAT", "jsonl")
            .env("OUTPUT_FILE", dir.join("out.jsonl"))
            .run();
        outcome.assert_fails(65, cause);
        assert!(outcome.error().contains("INPUT_FORMAT=jsonl"), "{outcome}");
        assert_eq!(files_in(&dir), ["input.txt"], "no output for {line:?}");
    }
    job(&server.url())
        .env("INPUT_FORMAT", "csv")
        .run()
        .assert_fails(64, "INPUT_FORMAT");
}

#[test]
fn gzip_input_is_refused_with_the_fix_named() {
    let server = columns_echo();
    let dir = TempDir::new("gzip");
    // The first bytes of `gzip` output: magic, deflate, flags, mtime...
    let gzipped = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03+\xca/W0\xe4\x02\x00";
    let input = write_input(&dir, gzipped);
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", dir.join("out.jsonl"))
        .run();
    outcome.assert_fails(65, "gzip-compressed");
    for fix in ["COMPRESSION = NONE", "AUTO_COMPRESS = FALSE"] {
        assert!(outcome.error().contains(fix), "{outcome}");
    }
    assert!(!outcome.error().contains("UTF-8"), "{outcome}");
    assert_eq!(files_in(&dir), ["input.txt"]);
    // The same through stdin, and with jsonl.
    let outcome = job(&server.url())
        .env("INPUT_FILE", "-")
        .env("INPUT_FORMAT", "jsonl")
        .stdin_bytes(gzipped.to_vec());
    outcome.assert_fails(65, "gzip-compressed");
    assert!(server.requests().is_empty(), "nothing is sent");
}

/// A service that serves `slots` requests at once, each for `latency`, and
/// past that either answers 429 at once or queues them. It counts the most
/// requests it held at once, queued ones included, and the 429s.
struct Capacity {
    server: Server,
    peak: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

/// In flight, and how many of them are being served; the queue's tickets.
#[derive(Default)]
struct Slots {
    in_flight: usize,
    served: usize,
    next_ticket: usize,
    serving_ticket: usize,
}

/// Serves `slots` requests at once, each for `latency`; past that it
/// answers 429, or with `queue` serves the rest in the order they came, as
/// a service's accept queue does.
fn limited_echo(slots: usize, latency: Duration, queue: bool) -> Capacity {
    let busy = Arc::new((
        std::sync::Mutex::new(Slots::default()),
        std::sync::Condvar::new(),
    ));
    let peak = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let (seen_peak, seen_refused) = (Arc::clone(&peak), Arc::clone(&refused));
    let server = serve(move |request, _| {
        let (lock, freed) = &*busy;
        let mut state = lock.lock().unwrap();
        state.in_flight += 1;
        seen_peak.fetch_max(state.in_flight, Ordering::SeqCst);
        if !queue && state.served >= slots {
            state.in_flight -= 1;
            seen_refused.fetch_add(1, Ordering::SeqCst);
            return Reply::json(429, "busy");
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        while state.served >= slots || state.serving_ticket != ticket {
            state = freed.wait(state).unwrap();
        }
        state.serving_ticket += 1;
        state.served += 1;
        drop(state);
        // The next in the queue may have a free slot too.
        freed.notify_all();
        thread::sleep(latency);
        let mut state = lock.lock().unwrap();
        state.in_flight -= 1;
        state.served -= 1;
        drop(state);
        freed.notify_all();
        echo("Bob", request)
    });
    Capacity {
        server,
        peak,
        refused,
    }
}

fn auto_job(service: &Capacity, rows: usize, dir: &TempDir) -> (Outcome, Vec<String>) {
    let lines: Vec<String> = (0..rows).map(|i| format!("row {i}")).collect();
    let input = write_input(dir, format!("{}\n", lines.join("\n")).as_bytes());
    let output = dir.join("out.jsonl");
    let outcome = job(&service.server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "5")
        .env("CONCURRENCY", "auto")
        .env("RUST_LOG", "info,service_to_service=debug")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    let expected: Vec<String> = (0..rows)
        .map(|i| format!("[{i},\"Bob said row {i}\"]"))
        .collect();
    assert_eq!(file_lines(&output), expected);
    (outcome, expected)
}

#[test]
fn auto_finds_capacity_and_backs_off_from_a_service_that_refuses() {
    let service = limited_echo(8, Duration::from_millis(20), false);
    let dir = TempDir::new("auto-refuses");
    let (outcome, _) = auto_job(&service, 2000, &dir);
    let peak = service.peak.load(Ordering::SeqCst);
    let requests = service.server.requests().len();
    let refused = service.refused.load(Ordering::SeqCst);
    assert!(peak > 1, "never more than one request in flight: {outcome}");
    // Generous: the goal is 5%; a busy machine makes latencies noisy.
    assert!(
        refused * 5 <= requests,
        "{refused} of {requests} requests refused: {outcome}"
    );
    assert!(
        outcome
            .lines("DEBUG")
            .iter()
            .any(|l| l.starts_with("Concurrency limit 1 -> 2")),
        "{outcome}"
    );
    let done = outcome.lines("INFO");
    assert!(
        done.last().is_some_and(
            |l| l.starts_with("Done: 2000/2000 rows") && l.contains(", concurrency limit ")
        ),
        "{outcome}"
    );
}

#[test]
fn auto_stays_within_three_times_the_slots_of_a_service_that_queues() {
    let service = limited_echo(4, Duration::from_millis(20), true);
    let dir = TempDir::new("auto-queues");
    let (outcome, _) = auto_job(&service, 1000, &dir);
    let peak = service.peak.load(Ordering::SeqCst);
    eprintln!("observed: a peak of {peak} in flight against 4 slots that queue");
    assert!(peak > 1, "never more than one request in flight: {outcome}");
    assert!(peak <= 3 * 4, "{peak} requests at once: {outcome}");
    assert_eq!(service.refused.load(Ordering::SeqCst), 0);
}

#[test]
fn fixed_concurrency_keeps_its_limit_when_batches_are_retried() {
    // A batch waiting out its backoff gives its slot to another; at no
    // time are more than CONCURRENCY requests at the service.
    let service = limited_echo(2, Duration::from_millis(5), false);
    let dir = TempDir::new("fixed-retries");
    let input = write_input(&dir, "x\n".repeat(200).as_bytes());
    let output = dir.join("out.jsonl");
    let outcome = job(&service.server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "5")
        .env("CONCURRENCY", "3")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(file_lines(&output).len(), 200);
    assert!(service.refused.load(Ordering::SeqCst) > 0, "{outcome}");
    assert!(service.peak.load(Ordering::SeqCst) <= 3);
}
