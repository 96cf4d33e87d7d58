//! The job: read rows, send them in batches with up to `CONCURRENCY`
//! requests in flight, check every reply, and write the replies in index
//! order.
//!
//! The main thread reads input and writes output; request threads only talk
//! HTTP. With `CONCURRENCY=1` there are none: the main thread sends too.
//! Otherwise request threads start as they are needed, up to the
//! concurrency limit (`limit`: fixed, or learnt with `auto`), and each
//! attempt takes a slot under it. At most twice the limit in batches (four
//! times with `auto`) are in flight or waiting to be written, so memory
//! stays flat however long the input is, and their buffers go round again: after the first few batches
//! the job allocates almost nothing. On the first error no attempt starts;
//! `run` returns once the attempts in flight (and backoffs under way) end,
//! and no thread outlives it.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::Scope;
use std::time::{Duration, Instant};

use crate::client::{Attempt, Attempts, Client};
use crate::config::{Concurrency, Config, Input};
use crate::error::Error;
use crate::input::{self, Rows};
use crate::limit::{Limiter, Ticket};
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
    let client = Client::new(config);
    // Replies go to OUTPUT_FILE, or to the log when it is unset, so that
    // nothing is dropped silently.
    let log_rows = config.output.is_none();
    let limiter = match config.concurrency {
        Concurrency::Fixed(1) => None,
        Concurrency::Fixed(n) => Some(Limiter::fixed(n)),
        Concurrency::Auto => Some(Limiter::adaptive(Instant::now())),
    };
    let pool = limiter.map(Pool::new);
    std::thread::scope(|scope| {
        let mut senders = match &pool {
            None => Senders::Inline {
                client: &client,
                body: Vec::new(),
                log_rows,
                answered: VecDeque::new(),
            },
            Some(pool) => Senders::Threads(Crew {
                scope,
                pool,
                client: &client,
                log_rows,
            }),
        };
        let result = pump(config, &client, &mut senders);
        if let Senders::Threads(crew) = senders {
            crew.pool.close(result.is_err());
        }
        result
    })
}

/// Reads the batches, hands them to `senders`, and writes the replies in
/// index order.
fn pump(config: &Config, client: &Client, senders: &mut Senders) -> Result<(), Error> {
    let mut rows = Rows::open(&config.input, config.input_format, config.shard)?;
    let mut output = match &config.output {
        Some(path) => Some(AtomicFile::create("OUTPUT_FILE", path)?),
        None => None,
    };
    let mut progress = match config.input {
        Input::Single(_) => None,
        _ => Some(Progress::new(input::count_rows(
            &config.input,
            config.shard,
        ))),
    };

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
        while !input_done && next_to_send - next_to_write < senders.window() {
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
        while waiting.len() <= at {
            waiting.push_back(None);
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
                if progress.advance(batch.len() as u64) {
                    progress.report("Progress", client.retries(), senders.limits());
                }
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
        progress.report("Done", client.retries(), senders.limits());
    }
    Ok(())
}

/// Where batches go to be sent: with one request in flight, the main thread
/// sends them itself. A request thread would add nothing there but two
/// thread wake-ups per batch, a large share of the job's CPU at a hundred
/// rows a request.
enum Senders<'scope, 'env> {
    Inline {
        client: &'env Client,
        body: Vec<u8>,
        log_rows: bool,
        answered: VecDeque<Answered>,
    },
    Threads(Crew<'scope, 'env>),
}

impl Senders<'_, '_> {
    fn send(&mut self, slot: Slot) {
        match self {
            Senders::Inline {
                client,
                body,
                log_rows,
                answered,
            } => answered.push_back(send(client, slot, body, *log_rows, &Unlimited)),
            Senders::Threads(crew) => {
                let mut state = crew.pool.lock();
                state.queue.push_back(slot);
                crew.staff(state);
            }
        }
    }

    /// How many batches may be read ahead of the last one written: twice
    /// the limit, so that each request thread has the next at hand and a
    /// slow batch holds up the output less; four times with `auto`, whose
    /// probes meet a 429 now and then on purpose, and the refused batch
    /// waits out a backoff of a few rounds. One when sending inline, so that
    /// nothing more is sent after a batch has failed.
    fn window(&self) -> u64 {
        let Senders::Threads(crew) = self else {
            return 1;
        };
        let state = crew.pool.lock();
        let rounds = if state.limiter.adapts() { 4 } else { 2 };
        (rounds * state.limiter.limit()) as u64
    }

    /// The next batch answered, in the order they were answered; None when
    /// no sender is left to answer.
    fn answered(&mut self) -> Option<Answered> {
        match self {
            Senders::Inline { answered, .. } => answered.pop_front(),
            Senders::Threads(crew) => crew.pool.answered(),
        }
    }

    /// With `CONCURRENCY=auto`: the limit now, and the lowest and highest
    /// so far.
    fn limits(&self) -> Option<(usize, usize, usize)> {
        let Senders::Threads(crew) = self else {
            return None;
        };
        let state = crew.pool.lock();
        let limiter = &state.limiter;
        let (lowest, highest) = limiter.range();
        limiter
            .adapts()
            .then_some((limiter.limit(), lowest, highest))
    }
}

/// The inline sender's attempts: no slot to wait for.
struct Unlimited;

impl Attempts for Unlimited {
    fn start(&self) -> Result<(), Error> {
        Ok(())
    }

    fn end(&self, _: Attempt) {}
}

/// What the main thread and the request threads share: the batches to send
/// and those answered, and the limit with the attempts in flight under it.
struct Pool {
    state: Mutex<PoolState>,
    /// Request threads wait here for a batch to send and a slot for it ...
    idle: Condvar,
    /// ... or for a slot to try their batch again.
    retrying: Condvar,
    /// The main thread waits here for answers.
    answers: Condvar,
}

struct PoolState {
    limiter: Limiter,
    /// Batches read and not yet sent, in order.
    queue: VecDeque<Slot>,
    answered: VecDeque<Answered>,
    /// Batches waiting for a slot to be tried again: they go before any
    /// new batch, as the output waits for them.
    retrying: usize,
    /// Request threads started and not yet ended, and those of them waiting
    /// for a batch.
    threads: usize,
    idle: usize,
    /// No batch will come: idle threads end.
    closed: bool,
    /// The job failed: no attempt starts.
    stopped: bool,
    /// A request thread ended without answering its batch.
    lost: bool,
}

impl Pool {
    fn new(limiter: Limiter) -> Pool {
        Pool {
            state: Mutex::new(PoolState {
                limiter,
                queue: VecDeque::new(),
                answered: VecDeque::new(),
                retrying: 0,
                threads: 0,
                idle: 0,
                closed: false,
                stopped: false,
                lost: false,
            }),
            idle: Condvar::new(),
            retrying: Condvar::new(),
            answers: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A thread that panicked while holding the lock left consistent
        // state behind: nothing here panics halfway through a change.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(
        &self,
        condvar: &Condvar,
        state: MutexGuard<'a, PoolState>,
    ) -> MutexGuard<'a, PoolState> {
        condvar.wait(state).unwrap_or_else(|e| e.into_inner())
    }

    fn answer(&self, answered: Answered) {
        let mut state = self.lock();
        state.answered.push_back(answered);
        drop(state);
        self.answers.notify_one();
    }

    fn answered(&self) -> Option<Answered> {
        let mut state = self.lock();
        loop {
            if let Some(answered) = state.answered.pop_front() {
                return Some(answered);
            }
            if state.lost || state.threads == 0 {
                return None;
            }
            state = self.wait(&self.answers, state);
        }
    }

    /// Every batch is answered, or `failed`: the request threads end once
    /// their attempts in flight do.
    fn close(&self, failed: bool) {
        let mut state = self.lock();
        state.closed = true;
        state.stopped |= failed;
        drop(state);
        self.idle.notify_all();
        self.retrying.notify_all();
    }

    /// The error a batch cut short by the job's end returns; the job has
    /// its own error by then, so no one reads this one.
    fn stopped() -> Error {
        Error::Io {
            what: String::new(),
            cause: std::io::ErrorKind::Interrupted.into(),
        }
    }
}

/// What a request thread needs: where to start more of them, the pool,
/// and the client.
#[derive(Clone, Copy)]
struct Crew<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    pool: &'env Pool,
    client: &'env Client,
    log_rows: bool,
}

impl Crew<'_, '_> {
    /// Wakes or starts request threads for the attempts that may start now.
    fn staff(self, mut state: MutexGuard<'_, PoolState>) {
        let free = state
            .limiter
            .limit()
            .saturating_sub(state.limiter.in_flight());
        if free == 0 {
            return;
        }
        if state.retrying > 0 {
            drop(state);
            self.pool.retrying.notify_all();
            return;
        }
        let startable = free.min(state.queue.len());
        for _ in 0..startable.min(state.idle) {
            self.pool.idle.notify_one();
        }
        let hire = startable.saturating_sub(state.idle);
        state.threads += hire;
        drop(state);
        for _ in 0..hire {
            let started = std::thread::Builder::new().spawn_scoped(self.scope, move || self.work());
            if started.is_err() {
                // Those already there send the batches; with none, the
                // main thread reports it.
                let mut state = self.pool.lock();
                state.threads -= 1;
                drop(state);
                self.pool.answers.notify_one();
            }
        }
    }

    fn work(self) {
        let _leaving = Leaving(self.pool);
        // The request body, built anew in the same buffer each time.
        let mut body = Vec::new();
        while let Some((slot, ticket)) = self.take() {
            let attempts = Slotted {
                crew: self,
                ticket: Cell::new(Some(ticket)),
            };
            let answered = send(self.client, slot, &mut body, self.log_rows, &attempts);
            drop(attempts);
            self.pool.answer(answered);
        }
    }

    /// The next batch, with a slot for its first attempt; None when the job
    /// is over.
    fn take(self) -> Option<(Slot, Ticket)> {
        let pool = self.pool;
        let mut state = pool.lock();
        loop {
            if state.stopped || state.closed && state.queue.is_empty() {
                return None;
            }
            if !state.queue.is_empty() && state.retrying == 0 {
                if let Some(ticket) = state.limiter.try_start(Instant::now()) {
                    let slot = state.queue.pop_front()?;
                    self.staff(state);
                    return Some((slot, ticket));
                }
            }
            state.idle += 1;
            state = pool.wait(&pool.idle, state);
            state.idle -= 1;
        }
    }

    /// A slot to try a batch again.
    fn retry_slot(self) -> Result<Ticket, Error> {
        let pool = self.pool;
        let mut state = pool.lock();
        state.retrying += 1;
        loop {
            let ticket = match state.stopped {
                true => None,
                false => state.limiter.try_start(Instant::now()),
            };
            if state.stopped || ticket.is_some() {
                state.retrying -= 1;
                let Some(ticket) = ticket else {
                    return Err(Pool::stopped());
                };
                self.staff(state);
                return Ok(ticket);
            }
            state = pool.wait(&pool.retrying, state);
        }
    }

    fn end(self, ticket: Ticket, attempt: Attempt) {
        let mut state = self.pool.lock();
        state.limiter.end(ticket, Instant::now(), attempt);
        self.staff(state);
    }
}

/// Counts a request thread out however it ends; one that ends in a panic
/// leaves its batch unanswered, which the main thread must hear of.
struct Leaving<'a>(&'a Pool);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.threads -= 1;
        state.lost |= std::thread::panicking();
        drop(state);
        self.0.answers.notify_one();
    }
}

/// One batch's attempts on a request thread: each holds a slot under the
/// limit while in flight, and none while the batch waits out a backoff
/// (it puts no load on the service then).
struct Slotted<'scope, 'env> {
    crew: Crew<'scope, 'env>,
    /// The slot of the attempt in flight; the first comes with the batch.
    ticket: Cell<Option<Ticket>>,
}

impl Attempts for Slotted<'_, '_> {
    fn start(&self) -> Result<(), Error> {
        if self.ticket.get().is_none() {
            self.ticket.set(Some(self.crew.retry_slot()?));
        }
        Ok(())
    }

    fn end(&self, attempt: Attempt) {
        if let Some(ticket) = self.ticket.take() {
            self.crew.end(ticket, attempt);
        }
    }
}

impl Drop for Slotted<'_, '_> {
    fn drop(&mut self) {
        // An attempt cut off by a panic gives its slot back.
        self.end(Attempt::Failed);
    }
}

fn send(
    client: &Client,
    mut slot: Slot,
    body: &mut Vec<u8>,
    log_rows: bool,
    attempts: &dyn Attempts,
) -> Answered {
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
    let result = client.send(body, batch.indices(), &mut slot.reply, attempts);
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

    /// Counts `rows` written; true when a progress line is due.
    fn advance(&mut self, rows: u64) -> bool {
        self.done += rows;
        let due = self.last_line.elapsed() >= PROGRESS_EVERY;
        if due {
            self.last_line = Instant::now();
        }
        due
    }

    /// Logs what is done so far, with (for `CONCURRENCY=auto`) the
    /// concurrency limit now and the lowest and highest so far.
    fn report(&self, what: &str, retries: u64, limits: Option<(usize, usize, usize)>) {
        let elapsed = self.started.elapsed();
        let total = self.total.map_or("?".to_owned(), |t| t.to_string());
        let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let rate = self.done.saturating_mul(1000) / millis.max(1);
        let mut line = format!(
            "{}/{total} rows in {} ({rate} rows/s), {retries} retries",
            self.done,
            Seconds(elapsed)
        );
        if let Some((now, lowest, highest)) = limits {
            line += &format!(", concurrency limit {now} (from {lowest} to {highest})");
        }
        log::info!("{what}: {line}");
    }
}
