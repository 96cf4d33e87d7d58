//! The job: read rows, send them in batches over `CONCURRENCY` worker
//! threads, check every reply, and write the replies in index order.
//!
//! The main thread reads input and writes output; workers only talk HTTP.
//! With `CONCURRENCY=1` there are no workers: the main thread sends too.
//! At most two batches per worker are in flight or waiting to be written, so
//! memory stays flat however long the input is, and their buffers go round
//! again: after the first few batches the job allocates almost nothing. On
//! the first error the job stops: the caller exits and the operating system
//! ends the workers.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::config::{Config, Input};
use crate::error::Error;
use crate::input::{self, Rows};
use crate::logging;
use crate::output::AtomicFile;
use crate::reply::{Reply, display_value};
use crate::request::encode_request;
use crate::rows::{Batch, InputFormat};
use crate::time::Seconds;

const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// One batch's rows and, once answered, its reply: handed from the main
/// thread to a worker and back, then reused for a later batch.
struct Slot {
    seq: u64,
    batch: Batch,
    reply: Reply,
}

type Answered = (Slot, Result<(), Error>);

pub fn run(config: &Config) -> Result<(), Error> {
    // So that the service's log can be matched with this one.
    log::info!(
        "Query id {}, sent with every batch as sf-external-function-current-query-id",
        config.query_id
    );
    let client = Arc::new(Client::new(config));
    let mut rows = Rows::open(&config.input, config.input_format, config.shard)?;
    let mut output = match &config.output {
        Some(path) => Some(AtomicFile::create("OUTPUT_FILE", path)?),
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

    let mut senders = Senders::start(&client, config.concurrency, log_rows);
    let window = senders.window();
    let mut next_to_send = 0u64;
    let mut next_to_write = 0u64;
    let mut input_done = false;
    // Answered batches waiting for an earlier one; the front is
    // `next_to_write`. Their numbers are a short run of consecutive ones,
    // so a VecDeque indexed from the front holds them.
    let mut waiting: VecDeque<Option<Slot>> = VecDeque::new();
    let mut spare: Vec<Slot> = Vec::new();
    let mut lines = Vec::new();

    loop {
        while !input_done && next_to_send - next_to_write < window {
            let mut slot = spare.pop().unwrap_or_else(|| Slot {
                seq: 0,
                batch: Batch::new(config.input_format),
                reply: Reply::default(),
            });
            rows.next_batch(&mut slot.batch, config.batch_size)?;
            if slot.batch.is_empty() {
                input_done = true;
            } else {
                slot.seq = next_to_send;
                senders.send(slot);
                next_to_send += 1;
            }
        }
        if next_to_write == next_to_send {
            break;
        }
        let Some((slot, result)) = senders.answered() else {
            return Err(Error::Io {
                what: "waiting for the request threads".to_owned(),
                cause: std::io::Error::other("they stopped unexpectedly"),
            });
        };
        result?;
        let at = (slot.seq - next_to_write) as usize;
        if waiting.len() <= at {
            waiting.resize_with(at + 1, || None);
        }
        waiting[at] = Some(slot);
        while let Some(Some(slot)) = waiting.front() {
            let (batch, reply) = (&slot.batch, &slot.reply);
            match &mut output {
                Some(file) => {
                    lines.clear();
                    reply.push_output_lines(batch.indices(), &mut lines);
                    file.write(&lines)?;
                }
                None => {
                    for i in 0..reply.len() {
                        let value = display_value(reply.value(i));
                        log::info!("Received response from {}: {value}", client.url());
                    }
                }
            }
            next_to_write += 1;
            if let Some(progress) = &mut progress {
                progress.advance(batch.len() as u64, client.retries());
            }
            if let Some(Some(slot)) = waiting.pop_front() {
                spare.push(slot);
            }
        }
    }
    if let Some(file) = output {
        file.commit()?;
    }
    if let Some(progress) = &progress {
        progress.finish(client.retries());
    }
    Ok(())
}

/// A queue between threads: a Mutex and a Condvar, as the job needs no more
/// than push and a blocking pop. std::sync::mpsc's channels cost more binary
/// than the size goal leaves room for (README, Building).
struct Queue<T> {
    state: Mutex<QueueState<T>>,
    changed: Condvar,
}

struct QueueState<T> {
    items: VecDeque<T>,
    /// Threads that may still push; a pop on an empty queue with none left
    /// returns None instead of waiting for ever.
    producers: usize,
    /// Threads waiting in `pop`: with none, a push wakes nobody, and saves
    /// the futex system call std's notify makes even then.
    waiting: usize,
}

impl<T> Queue<T> {
    fn new(producers: usize) -> Queue<T> {
        Queue {
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                producers,
                waiting: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState<T>> {
        // A thread that panicked while holding the lock left a consistent
        // VecDeque behind: push and pop do not panic halfway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, item: T) {
        let mut state = self.lock();
        state.items.push_back(item);
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.changed.notify_one();
        }
    }

    fn pop(&self) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                return Some(item);
            }
            if state.producers == 0 {
                return None;
            }
            state.waiting += 1;
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            state.waiting -= 1;
        }
    }

    fn producer_gone(&self) {
        self.lock().producers -= 1;
        self.changed.notify_all();
    }
}

struct Queues {
    work: Queue<Slot>,
    answered: Queue<Answered>,
}

/// Counts a worker out of the answered queue's producers however it ends.
struct Worker(Arc<Queues>);

impl Drop for Worker {
    fn drop(&mut self) {
        self.0.answered.producer_gone();
    }
}

/// Where batches go to be sent: with one request in flight, the main thread
/// sends them itself. A worker thread would add nothing there but two
/// thread wake-ups per batch, a large share of the job's CPU at a hundred
/// rows a request.
enum Senders {
    Inline {
        client: Arc<Client>,
        body: Vec<u8>,
        log_rows: bool,
        answered: VecDeque<Answered>,
    },
    Threads {
        queues: Arc<Queues>,
        workers: usize,
    },
}

impl Senders {
    fn start(client: &Arc<Client>, count: usize, log_rows: bool) -> Senders {
        if count <= 1 {
            return Senders::Inline {
                client: Arc::clone(client),
                body: Vec::new(),
                log_rows,
                answered: VecDeque::new(),
            };
        }
        let queues = Arc::new(Queues {
            work: Queue::new(1),
            answered: Queue::new(count),
        });
        for _ in 0..count {
            let worker = Worker(Arc::clone(&queues));
            let client = Arc::clone(client);
            std::thread::spawn(move || {
                // The request body, built anew in the same buffer each time.
                let mut body = Vec::new();
                while let Some(slot) = worker.0.work.pop() {
                    let answered = send(&client, slot, &mut body, log_rows);
                    worker.0.answered.push(answered);
                }
            });
        }
        Senders::Threads {
            queues,
            workers: count,
        }
    }

    fn send(&mut self, slot: Slot) {
        match self {
            Senders::Inline {
                client,
                body,
                log_rows,
                answered,
            } => answered.push_back(send(client, slot, body, *log_rows)),
            Senders::Threads { queues, .. } => queues.work.push(slot),
        }
    }

    /// How many batches may be read ahead of the last one written: two per
    /// worker, so that each has the next at hand; one when sending inline,
    /// so that nothing more is sent after a batch has failed.
    fn window(&self) -> u64 {
        match self {
            Senders::Inline { .. } => 1,
            Senders::Threads { workers, .. } => 2 * *workers as u64,
        }
    }

    /// The next batch answered, in the order they were answered; None when
    /// no sender is left to answer.
    fn answered(&mut self) -> Option<Answered> {
        match self {
            Senders::Inline { answered, .. } => answered.pop_front(),
            Senders::Threads { queues, .. } => queues.answered.pop(),
        }
    }
}

fn send(client: &Client, mut slot: Slot, body: &mut Vec<u8>, log_rows: bool) -> Answered {
    let batch = &slot.batch;
    if log_rows {
        for i in 0..batch.len() {
            let text = String::from_utf8_lossy(batch.text(i));
            // A Jsonl row is JSON text, whose escapes are its own.
            let text = match batch.format() {
                InputFormat::Lines => logging::escaped(&text),
                InputFormat::Jsonl => logging::one_line(&text),
            };
            log::info!("Calling {} with input {text}", client.url());
        }
    } else {
        let first = batch.indices().first().copied().unwrap_or(0);
        log::debug!("Sending {} rows from index {first}", batch.len());
    }
    encode_request(batch, body);
    let result = client.send(body, batch.indices(), &mut slot.reply);
    (slot, result)
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
        let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let rate = self.done.saturating_mul(1000) / millis.max(1);
        format!(
            "{}/{total} rows in {} ({rate} rows/s), {retries} retries",
            self.done,
            Seconds(elapsed)
        )
    }
}
