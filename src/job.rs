//! The job: read rows, send them in batches over `CONCURRENCY` worker
//! threads, check every reply, and write the replies in index order.
//!
//! The main thread reads input and writes output; workers only talk HTTP.
//! At most two batches per worker are in flight or waiting to be written, so
//! memory stays flat however long the input is. On the first error the job
//! stops: the caller exits and the operating system ends the workers.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use miniserde::json::Value;

use crate::client::Client;
use crate::config::{Config, Input};
use crate::error::Error;
use crate::input::{self, Rows};
use crate::logging::Seconds;
use crate::output::AtomicFile;
use crate::rows::{self, Row};

const PROGRESS_EVERY: Duration = Duration::from_secs(5);

type Batch = Vec<Row>;
type Answered = (u64, Batch, Result<Vec<Value>, Error>);

pub fn run(config: &Config) -> Result<(), Error> {
    let client = Arc::new(Client::new(config));
    let mut rows = Rows::open(&config.input, config.shard)?;
    let mut output = match &config.output {
        Some(path) => Some(AtomicFile::create(path)?),
        None => None,
    };
    // Replies go to OUTPUT_FILE, or to the log when it is unset, so that
    // nothing is dropped silently.
    let log_rows = output.is_none();
    let mut progress = match config.input {
        Input::Single(_) => None,
        _ => Some(Progress::new(input::count_rows(
            &config.input,
            config.shard,
        ))),
    };

    let (work, results) = start_workers(&client, config.concurrency, log_rows);
    let window = 2 * config.concurrency as u64;
    let mut next_to_send = 0u64;
    let mut next_to_write = 0u64;
    let mut input_done = false;
    let mut answered: BTreeMap<u64, (Batch, Vec<Value>)> = BTreeMap::new();
    let mut lines = String::new();

    loop {
        while !input_done && next_to_send - next_to_write < window {
            let batch = rows.next_batch(config.batch_size)?;
            if batch.is_empty() {
                input_done = true;
            } else {
                // A send fails only if every worker is gone, which the
                // result channel then reports below.
                let _ = work.send((next_to_send, batch));
                next_to_send += 1;
            }
        }
        if next_to_write == next_to_send {
            break;
        }
        let Ok((seq, batch, result)) = results.recv() else {
            return Err(Error::Io {
                what: "waiting for the request threads".to_owned(),
                cause: std::io::Error::other("they stopped unexpectedly"),
            });
        };
        answered.insert(seq, (batch, result?));
        while let Some((batch, values)) = answered.remove(&next_to_write) {
            match &mut output {
                Some(file) => {
                    lines.clear();
                    for (row, value) in batch.iter().zip(&values) {
                        rows::push_output_line(&mut lines, row.index, value);
                    }
                    file.write(&lines)?;
                }
                None => {
                    for value in &values {
                        let reply = rows::display_value(value);
                        log::info!("Received response from {}: {reply}", client.url());
                    }
                }
            }
            next_to_write += 1;
            if let Some(progress) = &mut progress {
                progress.advance(batch.len() as u64, client.retries());
            }
        }
    }
    drop(work);
    if let Some(file) = output {
        file.commit()?;
    }
    if let Some(progress) = &progress {
        progress.finish(client.retries());
    }
    Ok(())
}

fn start_workers(
    client: &Arc<Client>,
    count: usize,
    log_rows: bool,
) -> (SyncSender<(u64, Batch)>, Receiver<Answered>) {
    let (work_sender, work) = mpsc::sync_channel::<(u64, Batch)>(count);
    let (result_sender, results) = mpsc::channel::<Answered>();
    let work = Arc::new(Mutex::new(work));
    for _ in 0..count {
        let work = Arc::clone(&work);
        let client = Arc::clone(client);
        let results = result_sender.clone();
        std::thread::spawn(move || {
            loop {
                // The lock is held only while waiting for the next batch.
                let next = match work.lock() {
                    Ok(work) => work.recv(),
                    Err(_) => return,
                };
                let Ok((seq, batch)) = next else { return };
                if log_rows {
                    for row in &batch {
                        log::info!("Calling {} with input {}", client.url(), row.text);
                    }
                } else {
                    let first = batch.first().map_or(0, |row| row.index);
                    log::debug!("Sending {} rows from index {first}", batch.len());
                }
                let result = client.send(&batch);
                if results.send((seq, batch, result)).is_err() {
                    return;
                }
            }
        });
    }
    (work_sender, results)
}

/// One INFO line at most every five seconds, and one at the end.
struct Progress {
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(total: Option<u64>) -> Progress {
        let now = Instant::now();
        Progress {
            total,
            done: 0,
            started: now,
            last_line: now,
        }
    }

    fn advance(&mut self, rows: u64, retries: u64) {
        self.done += rows;
        if self.last_line.elapsed() >= PROGRESS_EVERY {
            self.last_line = Instant::now();
            log::info!("Progress: {}", self.describe(retries));
        }
    }

    fn finish(&self, retries: u64) {
        log::info!("Done: {}", self.describe(retries));
    }

    fn describe(&self, retries: u64) -> String {
        let elapsed = self.started.elapsed();
        let total = self.total.map_or("?".to_owned(), |t| t.to_string());
        let rate = u128::from(self.done) * 1000 / elapsed.as_millis().max(1);
        format!(
            "{}/{total} rows in {} ({rate} rows/s), {retries} retries",
            self.done,
            Seconds(elapsed)
        )
    }
}
