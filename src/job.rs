//! The job: read rows, send them in batches with up to `CONCURRENCY`
//! requests in flight, check every reply, and write the replies (and the
//! rows that failed for good) in index order.
//!
//! The main thread reads input and writes output; request threads only talk
//! HTTP. With `CONCURRENCY=1` there are none: the main thread sends too.
//! Otherwise request threads start as they are needed, never more than the
//! concurrency limit (`limit`: fixed, or learnt with `auto`), and each
//! attempt takes a slot under it. At most twice the limit in batches (four
//! times with `auto`) are in flight or waiting to be written, so memory
//! stays flat however long the input is, and their buffers go round again:
//! after the first few batches the job allocates almost nothing. On the
//! first error no attempt starts; `run` returns once the attempts in flight
//! (and backoffs under way) end, with every request thread's work done.
//! (A name lookup runs on a thread of its own, which `resolve` lets finish
//! on its own: it can outlive `run` by the lookup's own timeout.)

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::Scope;
use std::time::{Duration, Instant};

use crate::client::{Attempt, Attempts, Client};
use crate::config::{Concurrency, Config, Input, ServiceUrl};
use crate::error::Error;
use crate::input::{self, Rows};
use crate::limit::{Limiter, Ticket};
use crate::logging;
use crate::output::{self, AtomicFile};
use crate::reply::{Reply, display_value, push_output_line};
use crate::request::{encode_request, push_json_string, push_row_values};
use crate::rows::{Batch, InputFormat};
use crate::signals;
use crate::split::{self, Parts};
use crate::time::Seconds;

const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// One batch's rows and, once answered, its reply (or, for a batch that
/// was split, its parts): handed from the main thread to a worker and back,
/// then reused for a later batch.
struct Slot {
    seq: u64,
    batch: Batch,
    reply: Reply,
    parts: Option<Parts>,
}

/// How batches are sent, the same for every one.
#[derive(Clone, Copy)]
struct Sending {
    /// Each row and its reply go to the log, as OUTPUT_FILE is unset.
    log_rows: bool,
    max_failed_rows: u64,
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
    let sending = Sending {
        log_rows: config.output.is_none(),
        max_failed_rows: config.max_failed_rows,
    };
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
                sending,
                answered: VecDeque::new(),
            },
            Some(pool) => Senders::Threads(Crew {
                scope,
                pool,
                client: &client,
                sending,
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
    let mut sink = Sink::open(config)?;
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

    loop {
        while !input_done && next_to_send - next_to_write < senders.window() {
            let mut slot = spare.pop().unwrap_or_else(|| Slot {
                seq: 0,
                batch: Batch::new(config.input_format),
                reply: Reply::default(),
                parts: None,
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
            sink.write(slot, client.url())?;
            next_to_write += 1;
            if let Some(progress) = &mut progress {
                if progress.advance(slot.batch.len() as u64) {
                    progress.report("Progress", client, sink.failed(), senders.limits());
                }
            }
            if let Some(Some(mut slot)) = waiting.pop_front() {
                slot.parts = None;
                spare.push(slot);
            }
        }
    }
    let failed = sink.failed();
    sink.commit()?;
    if let Some(progress) = &progress {
        progress.report("Done", client, failed, senders.limits());
    }
    Ok(())
}

/// Where answered batches go, in index order: their replies to OUTPUT_FILE,
/// or to the log when it is unset; the rows that failed for good, with
/// why, to REJECTS_FILE, or to the log; and the count of those, against
/// MAX_FAILED_ROWS.
struct Sink {
    output: Option<AtomicFile>,
    rejects: Option<AtomicFile>,
    /// MAX_FAILED_ROWS, unless it is 0 and nothing is counted.
    max_failed_rows: Option<u64>,
    failed: u64,
    lines: Vec<u8>,
    rejected: Vec<u8>,
}

impl Sink {
    fn open(config: &Config) -> Result<Sink, Error> {
        let file = |setting, path: &Option<std::path::PathBuf>| match path {
            Some(path) => AtomicFile::create(setting, path).map(Some),
            None => Ok(None),
        };
        Ok(Sink {
            output: file("OUTPUT_FILE", &config.output)?,
            rejects: file("REJECTS_FILE", &config.rejects)?,
            max_failed_rows: Some(config.max_failed_rows).filter(|&n| n > 0),
            failed: 0,
            lines: Vec::new(),
            rejected: Vec::new(),
        })
    }

    /// The rows that failed so far, when MAX_FAILED_ROWS counts them.
    fn failed(&self) -> Option<u64> {
        self.max_failed_rows.map(|_| self.failed)
    }

    fn write(&mut self, slot: &Slot, url: &ServiceUrl) -> Result<(), Error> {
        let (batch, reply) = (&slot.batch, &slot.reply);
        if let Some(parts) = &slot.parts {
            return self.write_parts(batch, parts, url);
        }
        match &mut self.output {
            Some(file) => {
                self.lines.clear();
                reply.push_output_lines(batch.indices(), &mut self.lines);
                file.write(&self.lines)
            }
            None => {
                for i in 0..reply.len() {
                    log_reply(url, reply.value(i));
                }
                Ok(())
            }
        }
    }

    /// A batch that was split: a failed row's line is `[index,null]`, in its
    /// place.
    fn write_parts(&mut self, batch: &Batch, parts: &Parts, url: &ServiceUrl) -> Result<(), Error> {
        self.lines.clear();
        self.rejected.clear();
        for (i, &index) in batch.indices().iter().enumerate() {
            let value = match parts.row(i) {
                Ok(value) => Some(value),
                Err(problem) => {
                    self.failed += 1;
                    let allowed = self.max_failed_rows.unwrap_or(0);
                    if self.failed > allowed {
                        return Err(Error::FailedRows {
                            failed: self.failed,
                            allowed,
                            row: index,
                            problem: problem.to_owned(),
                        });
                    }
                    match self.rejects {
                        Some(_) => push_rejected_row(&mut self.rejected, batch, i, problem),
                        None => log::warn!("Row {index} failed: {problem}"),
                    }
                    None
                }
            };
            match (&self.output, value) {
                (Some(_), value) => {
                    push_output_line(&mut self.lines, index, value.unwrap_or(b"null"))
                }
                (None, Some(value)) => log_reply(url, value),
                (None, None) => {}
            }
        }
        if let Some(file) = &mut self.output {
            file.write(&self.lines)?;
        }
        if let Some(file) = &mut self.rejects {
            file.write(&self.rejected)?;
        }
        Ok(())
    }

    /// Both files into place, REJECTS_FILE first. A stop is deferred while
    /// they go, and should it come, or should one fail, those already in
    /// place are removed again: neither is there without the other.
    fn commit(self) -> Result<(), Error> {
        signals::defer_stops();
        let mut placed = Vec::new();
        let mut committed = Ok(());
        for file in [self.rejects, self.output].into_iter().flatten() {
            let path = file.destination().to_owned();
            committed = file.commit();
            if committed.is_err() {
                break;
            }
            // A second signal, which does not wait, removes it too.
            signals::remove_on_stop(path.clone());
            placed.push(path);
        }
        let stopped = signals::resume_stops();
        for path in &placed {
            if committed.is_err() || stopped.is_some() {
                let _ = output::remove_closed(path);
            }
            signals::leave_on_stop(path);
        }
        if let Some(signal) = stopped {
            signals::stop(signal);
        }
        committed
    }
}

/// A reply value as the log shows it without OUTPUT_FILE, the tutorial's
/// line.
fn log_reply(url: &ServiceUrl, value: &[u8]) {
    let value = display_value(value);
    log::info!("Received response from {url}: {value}");
}

/// Appends REJECTS_FILE's line for row `i` of `batch`, which failed for
/// `problem`: `{"index":…,"row":[the values as sent],"error":"…"}`.
fn push_rejected_row(out: &mut Vec<u8>, batch: &Batch, i: usize, problem: &str) {
    out.extend_from_slice(b"{\"index\":");
    crate::decimal::push_u64(out, batch.indices()[i]);
    out.extend_from_slice(b",\"row\":");
    push_row_values(batch, i, out);
    out.extend_from_slice(b",\"error\":");
    push_json_string(out, problem.as_bytes());
    out.extend_from_slice(b"}\n");
}

/// Where batches go to be sent: with one request in flight, the main thread
/// sends them itself. A request thread would add nothing there but two
/// thread wake-ups per batch, a large share of the job's CPU at a hundred
/// rows a request.
enum Senders<'scope, 'env> {
    Inline {
        client: &'env Client,
        body: Vec<u8>,
        sending: Sending,
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
                sending,
                answered,
            } => answered.push_back(send(client, slot, body, *sending, &Unlimited)),
            Senders::Threads(crew) => {
                let mut state = crew.pool.lock();
                state.queue.push_back(slot);
                crew.staff(state);
            }
        }
    }

    /// How many batches may be read ahead of the last one written: the
    /// limiter's read-ahead; one when sending inline, so that nothing more
    /// is sent after a batch has failed.
    fn window(&self) -> u64 {
        let Senders::Threads(crew) = self else {
            return 1;
        };
        crew.pool.lock().limiter.read_ahead() as u64
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
    /// Request threads started and not yet ended; those of them started
    /// and not yet come for their first batch; those waiting for a batch.
    threads: usize,
    starting: usize,
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
                starting: 0,
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
    sending: Sending,
}

impl Crew<'_, '_> {
    /// Wakes or starts request threads for the attempts that may start now:
    /// a thread for each, counting those waiting and those on their way.
    fn staff(self, state: MutexGuard<'_, PoolState>) {
        if let Some(mut state) = self.wake(state) {
            let free = state
                .limiter
                .limit()
                .saturating_sub(state.limiter.in_flight());
            // Never more threads than the limit: one that has just
            // finished an attempt holds no slot, and is coming back.
            let startable = free.min(state.queue.len());
            let hire = startable
                .saturating_sub(state.idle + state.starting)
                .min(state.limiter.limit().saturating_sub(state.threads));
            state.threads += hire;
            state.starting += hire;
            drop(state);
            self.hire(hire);
        }
    }

    /// Wakes the request threads that may start an attempt now: a batch to
    /// try again goes first. The state back when new batches may start.
    fn wake<'a>(self, state: MutexGuard<'a, PoolState>) -> Option<MutexGuard<'a, PoolState>> {
        let free = state
            .limiter
            .limit()
            .saturating_sub(state.limiter.in_flight());
        if free == 0 || state.stopped || state.closed && state.retrying == 0 {
            return None;
        }
        if state.retrying > 0 {
            drop(state);
            self.pool.retrying.notify_all();
            return None;
        }
        for _ in 0..free.min(state.queue.len()).min(state.idle) {
            self.pool.idle.notify_one();
        }
        Some(state)
    }

    fn hire(self, hire: usize) {
        for _ in 0..hire {
            let started = std::thread::Builder::new().spawn_scoped(self.scope, move || self.work());
            if started.is_err() {
                // Those already there send the batches; with none, the
                // main thread reports it.
                let mut state = self.pool.lock();
                state.threads -= 1;
                state.starting -= 1;
                drop(state);
                self.pool.answers.notify_one();
            }
        }
    }

    fn work(self) {
        let _leaving = Leaving(self.pool);
        // The request body, built anew in the same buffer each time.
        let mut body = Vec::new();
        let mut first = true;
        while let Some((slot, ticket)) = self.take(std::mem::take(&mut first)) {
            let attempts = Slotted {
                crew: self,
                ticket: Cell::new(Some(ticket)),
            };
            let answered = send(self.client, slot, &mut body, self.sending, &attempts);
            drop(attempts);
            self.pool.answer(answered);
        }
    }

    /// The next batch, with a slot for its first attempt; None when the job
    /// is over. `first` for a thread's first call, which ends its start.
    fn take(self, first: bool) -> Option<(Slot, Ticket)> {
        let pool = self.pool;
        let mut state = pool.lock();
        state.starting -= usize::from(first);
        loop {
            if state.stopped || state.closed && state.queue.is_empty() {
                return None;
            }
            let free = state.limiter.in_flight() < state.limiter.limit();
            if free && state.retrying == 0 {
                if let Some(slot) = state.queue.pop_front() {
                    match state.limiter.try_start(Instant::now()) {
                        Some(ticket) => {
                            self.staff(state);
                            return Some((slot, ticket));
                        }
                        // Not with a free slot; were it so, the batch
                        // would wait for the next.
                        None => state.queue.push_front(slot),
                    }
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

    /// An attempt ended: its slot is free for a thread that waits. None is
    /// started here, as the thread that ends it is about to come back for
    /// more, or to wait out a backoff.
    fn end(self, ticket: Ticket, attempt: Attempt) {
        let mut state = self.pool.lock();
        state.limiter.end(ticket, Instant::now(), attempt);
        self.wake(state);
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

/// Sends a batch, and splits it down to the rows that fail if it fails so
/// (`split`).
fn send(
    client: &Client,
    mut slot: Slot,
    body: &mut Vec<u8>,
    sending: Sending,
    attempts: &dyn Attempts,
) -> Answered {
    let batch = &slot.batch;
    if sending.log_rows {
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
    encode_request(batch, 0..batch.len(), body);
    let result = match client.send(body, batch.indices(), &mut slot.reply, attempts) {
        Err(error) if split::splits(&error, sending.max_failed_rows) => {
            let max = sending.max_failed_rows;
            split::send_in_parts(client, batch, body, attempts, max, error)
                .map(|parts| slot.parts = Some(parts))
        }
        result => result,
    };
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

    /// Logs what is done so far: rows, requests and retries, rows that
    /// failed for good (when MAX_FAILED_ROWS counts them), and (for
    /// `CONCURRENCY=auto`) the concurrency limit now and the lowest and
    /// highest so far.
    fn report(
        &self,
        what: &str,
        client: &Client,
        failed: Option<u64>,
        limits: Option<(usize, usize, usize)>,
    ) {
        let elapsed = self.started.elapsed();
        let total = self.total.map_or("?".to_owned(), |t| t.to_string());
        let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let rate = self.done.saturating_mul(1000) / millis.max(1);
        let mut line = format!(
            "{}/{total} rows in {} ({rate} rows/s), {} requests, {} retries",
            self.done,
            Seconds(elapsed),
            client.requests(),
            client.retries()
        );
        if let Some(failed) = failed {
            line += &format!(", {failed} failed rows");
        }
        if let Some((now, lowest, highest)) = limits {
            line += &format!(", concurrency limit {now} (from {lowest} to {highest})");
        }
        log::info!("{what}: {line}");
    }
}
