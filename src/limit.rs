//! The concurrency limit: how many requests may be in flight at once. A
//! fixed `CONCURRENCY=N` is a limit that never changes; `CONCURRENCY=auto`
//! learns one from how the service answers, between 1 and 256.
//!
//! The algorithm is TCP's congestion control (RFC 5681: slow start, then
//! additive increase and multiplicative decrease) driven by two signals:
//! overload (HTTP 429 or 503, a timeout), as loss drives TCP; and a rise in
//! latency over the service's unloaded latency, as in TCP Vegas and Netflix's
//! concurrency-limits, which is what a service that queues instead of
//! refusing shows. Like Envoy's adaptive concurrency filter, it measures the
//! unloaded latency again now and then at a lower limit, so that a service
//! that became slower for good does not keep the limit down. After an
//! overload it stays below the level that met it for a while, as CUBIC
//! plateaus at its last maximum, and probes above it less often each time
//! the probe meets an overload there.
//!
//! A state machine apart from threads and sockets: the caller says when an
//! attempt starts and how it ended, with the `Instant`s, so that tests drive
//! it with a simulated clock. Who waits for a slot is `job`'s; which replies
//! mean overload is `client`'s.

use std::time::{Duration, Instant};

use crate::client::Attempt;

/// The highest limit, `CONCURRENCY=auto`'s and a fixed setting's.
pub const MOST: usize = 256;

/// On an overload, the limit comes down to this share of the requests that
/// were in flight when the refused one started, or to one under them.
const OVERLOAD_CUT: f64 = 0.9;
/// A timeout says more: the service held the request for REQUEST_TIMEOUT.
const TIMEOUT_CUT: f64 = 0.5;
/// The limit grows while an answer's latency stays below this multiple of
/// the unloaded latency ...
const GROW_BELOW: f64 = 1.5;
/// ... and comes down when a round's mean latency reaches this multiple: the
/// added requests bought waiting, not throughput.
const CUT_AT: f64 = 2.0;
/// Rounds (latencies) spent below the level of the last overload before
/// probing above it, doubled after each overload up to the most.
const FIRST_HOLD_ROUNDS: u32 = 4;
const MOST_HOLD_ROUNDS: u32 = 64;
/// How often the unloaded latency is measured again, at half the limit.
const REMEASURE_EVERY: Duration = Duration::from_secs(10);

/// One attempt in flight: when it started and how many were in flight then,
/// itself included.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    started: Instant,
    in_flight: usize,
}

pub struct Limiter {
    /// Fractional, so that additive increase can add a part of a request.
    limit: f64,
    adapts: bool,
    in_flight: usize,
    lowest: usize,
    highest: usize,
    slow_start: bool,
    /// The shortest latency of an answered attempt: the service's own time,
    /// without waiting in a queue.
    unloaded: Option<Duration>,
    /// A round lasts one latency: it ends with the first answer to an
    /// attempt started after it began.
    round_started: Instant,
    round_total: Duration,
    round_answers: u32,
    /// The last round's mean latency, to time the holds in.
    round_latency: Duration,
    /// One under the in-flight count that last met an overload; the limit
    /// stays at or below it until `hold_until`.
    ceiling: Option<f64>,
    hold_until: Instant,
    hold_rounds: u32,
    overloaded_at: Option<Instant>,
    remeasure_at: Instant,
    remeasure: Option<Remeasure>,
}

/// A round at half the limit, to measure the unloaded latency again.
struct Remeasure {
    started: Instant,
    restore: f64,
    shortest: Option<Duration>,
    answers: u32,
}

impl Limiter {
    pub fn fixed(limit: usize) -> Limiter {
        Limiter::new(limit.clamp(1, MOST), false, Instant::now())
    }

    /// `CONCURRENCY=auto`: from one request in flight, in slow start.
    pub fn adaptive(now: Instant) -> Limiter {
        Limiter::new(1, true, now)
    }

    fn new(limit: usize, adapts: bool, now: Instant) -> Limiter {
        Limiter {
            limit: limit as f64,
            adapts,
            in_flight: 0,
            lowest: limit,
            highest: limit,
            slow_start: true,
            unloaded: None,
            round_started: now,
            round_total: Duration::ZERO,
            round_answers: 0,
            round_latency: Duration::ZERO,
            ceiling: None,
            hold_until: now,
            hold_rounds: FIRST_HOLD_ROUNDS,
            overloaded_at: None,
            remeasure_at: now + REMEASURE_EVERY,
            remeasure: None,
        }
    }

    pub fn adapts(&self) -> bool {
        self.adapts
    }

    /// How many may be in flight now.
    pub fn limit(&self) -> usize {
        (self.limit as usize).clamp(1, MOST)
    }

    /// The lowest and highest limits so far.
    pub fn range(&self) -> (usize, usize) {
        (self.lowest, self.highest)
    }

    /// How many batches the job may read ahead of the last one written:
    /// twice the limit, so that each request thread has the next at hand
    /// and a slow batch holds up the output less; four times when the
    /// limit adapts, as its probes meet a 429 now and then on purpose, and
    /// the refused batch waits out a backoff of a few rounds.
    pub fn read_ahead(&self) -> usize {
        self.limit() * if self.adapts { 4 } else { 2 }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// A slot for an attempt, or None while the limit is reached.
    pub fn try_start(&mut self, now: Instant) -> Option<Ticket> {
        if self.in_flight >= self.limit() {
            return None;
        }
        self.in_flight += 1;
        Some(Ticket {
            started: now,
            in_flight: self.in_flight,
        })
    }

    /// The attempt of `ticket` ended at `now`; its slot is free again.
    pub fn end(&mut self, ticket: Ticket, now: Instant, attempt: Attempt) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if !self.adapts {
            return;
        }
        let before = self.limit();
        match attempt {
            Attempt::Answered => {
                self.answered(ticket, now.saturating_duration_since(ticket.started), now)
            }
            Attempt::Overloaded => self.overloaded(ticket, now, OVERLOAD_CUT),
            Attempt::TimedOut => self.overloaded(ticket, now, TIMEOUT_CUT),
            Attempt::Failed | Attempt::Polled => {}
        }
        let after = self.limit();
        if after != before {
            self.lowest = self.lowest.min(after);
            self.highest = self.highest.max(after);
            log::debug!("Concurrency limit {before} -> {after}");
        }
    }

    fn answered(&mut self, ticket: Ticket, latency: Duration, now: Instant) {
        let unloaded = self.unloaded.map_or(latency, |u| u.min(latency));
        self.unloaded = Some(unloaded);
        if let Some(r) = &mut self.remeasure {
            if ticket.started >= r.started {
                r.shortest = Some(r.shortest.map_or(latency, |s| s.min(latency)));
                r.answers += 1;
                if r.answers as f64 >= self.limit {
                    self.unloaded = r.shortest;
                    self.limit = r.restore;
                    self.remeasure = None;
                    self.remeasure_at = now + REMEASURE_EVERY;
                    self.new_round(now);
                }
            }
            return;
        }
        self.round_total += latency;
        self.round_answers += 1;
        // Only a limit that was reached has been tried: without this, a job
        // that cannot fill its slots would raise the limit untested. In slow
        // start the slots fill in a burst each round, so an answer from the
        // upper half of them counts.
        let reached = match self.slow_start {
            true => 2 * ticket.in_flight >= self.limit(),
            false => ticket.in_flight + 1 >= self.limit(),
        };
        if ratio(latency, unloaded) >= GROW_BELOW {
            // Waiting has begun: from here the limit grows by one a round.
            self.slow_start = false;
        } else if reached {
            let step = if self.slow_start {
                1.0
            } else {
                1.0 / self.limit
            };
            self.grow(step, now);
        }
        if ticket.started >= self.round_started {
            self.end_round(now);
        }
    }

    fn grow(&mut self, step: f64, now: Instant) {
        let mut next = (self.limit + step).min(MOST as f64);
        if let Some(ceiling) = self.ceiling {
            if now < self.hold_until {
                next = next.min(ceiling.max(self.limit));
            } else if next >= ceiling + 2.0 {
                // The probe went two past the old overload without meeting
                // one: the service can take more now.
                self.ceiling = None;
                self.hold_rounds = FIRST_HOLD_ROUNDS;
            }
        }
        self.limit = next;
    }

    fn end_round(&mut self, now: Instant) {
        let mean = self.round_total / self.round_answers.max(1);
        self.round_latency = mean;
        let ratio = ratio(mean, self.unloaded.unwrap_or(mean));
        if ratio >= CUT_AT {
            // Cut in proportion, so that the next round's latency comes
            // back under the growth threshold, but by a tenth at least.
            let cut = (GROW_BELOW / ratio).clamp(0.5, OVERLOAD_CUT);
            self.congested(self.limit, self.limit * cut, now);
        }
        // Also when latency stays high at any limit: the service may have
        // become slower for everyone, which only a new measure tells.
        if !self.slow_start && now >= self.remeasure_at {
            self.remeasure = Some(Remeasure {
                started: now,
                restore: self.limit,
                shortest: None,
                answers: 0,
            });
            self.limit = (self.limit / 2.0).max(1.0);
        }
        self.new_round(now);
    }

    fn new_round(&mut self, now: Instant) {
        self.round_started = now;
        self.round_total = Duration::ZERO;
        self.round_answers = 0;
    }

    fn overloaded(&mut self, ticket: Ticket, now: Instant, cut: f64) {
        if let Some(r) = self.remeasure.take() {
            self.limit = r.restore;
            self.remeasure_at = now + REMEASURE_EVERY;
        }
        // Started under a higher limit than now's: a cut answered it already.
        if ticket.in_flight > self.limit() {
            return;
        }
        // The first overload in a round marks the service's capacity: one
        // under what was in flight. More in the same round mean it shrank.
        let at = ticket.in_flight as f64;
        let to = match self.overloaded_at {
            Some(last) if now.saturating_duration_since(last) < self.round_latency => {
                (self.limit * cut).min(at - 1.0)
            }
            _ if cut < OVERLOAD_CUT => self.limit * cut,
            _ => at - 1.0,
        };
        self.overloaded_at = Some(now);
        self.congested(at, to, now);
        self.new_round(now);
    }

    /// Congestion met at `at` requests in flight: the limit comes down to
    /// `to`, and stays under `at` for a while.
    fn congested(&mut self, at: f64, to: f64, now: Instant) {
        self.slow_start = false;
        self.limit = to.clamp(1.0, MOST as f64);
        self.ceiling = Some((at - 1.0).max(self.limit));
        let latency = self.round_latency.max(self.unloaded.unwrap_or_default());
        self.hold_until = now + latency * self.hold_rounds;
        self.hold_rounds = (self.hold_rounds * 2).min(MOST_HOLD_ROUNDS);
    }
}

/// `latency` as a multiple of `unloaded`.
fn ratio(latency: Duration, unloaded: Duration) -> f64 {
    latency.as_secs_f64() / unloaded.as_secs_f64().max(1e-6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_limit_never_changes() {
        let now = Instant::now();
        let mut limiter = Limiter::fixed(3);
        let tickets: Vec<Ticket> = (0..3).map(|_| limiter.try_start(now).unwrap()).collect();
        assert!(limiter.try_start(now).is_none());
        for (ticket, attempt) in
            tickets
                .into_iter()
                .zip([Attempt::Overloaded, Attempt::TimedOut, Attempt::Answered])
        {
            limiter.end(ticket, now + Duration::from_secs(9), attempt);
        }
        assert_eq!((limiter.limit(), limiter.range()), (3, (3, 3)));
        assert_eq!(Limiter::fixed(1000).limit(), MOST);
    }

    /// How a simulated service treats requests past its slots.
    #[derive(Clone, Copy, Debug)]
    enum Past {
        /// Answers 429 at once.
        Refuses,
        /// Waits for a free slot, first come first served.
        Queues,
    }

    #[derive(Clone, Copy, Debug)]
    struct Service {
        slots: usize,
        latency: Duration,
        past: Past,
        /// From this time on, these slots and this latency.
        change: Option<(Duration, usize, Duration)>,
    }

    impl Service {
        fn at(self, now: Duration) -> (usize, Duration) {
            match self.change {
                Some((from, slots, latency)) if now >= from => (slots, latency),
                _ => (self.slots, self.latency),
            }
        }
    }

    /// What a simulated job saw.
    #[derive(Debug)]
    struct Run {
        wall: Duration,
        requests: usize,
        refused: usize,
        peak_in_flight: usize,
        range: (usize, usize),
    }

    /// The round trip on loopback, added to every answer; a refusal takes
    /// no more.
    const WIRE: Duration = Duration::from_micros(300);

    /// The job of `job.rs` against `service`, on a simulated clock: `batches`
    /// batches read ahead as the job does, each attempt taking a slot of
    /// `limiter`, a refused batch sleeping in the client's backoff without
    /// its slot and coming first when it tries again, replies written in
    /// order.
    fn simulate(mut limiter: Limiter, service: Service, batches: usize, t0: Instant) -> Run {
        use std::cmp::Reverse;
        use std::collections::{BTreeSet, BinaryHeap};

        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        enum Event {
            /// The attempt of a batch ended: (seq, answered).
            Ended(usize, bool),
            /// A batch's backoff is over.
            Awake(usize),
        }
        let mut events: BinaryHeap<Reverse<(Duration, u64, Event)>> = BinaryHeap::new();
        let mut tickets: Vec<Option<Ticket>> = (0..batches).map(|_| None).collect();
        let mut attempts = vec![0u32; batches];
        let mut done = vec![false; batches];
        let mut ready = std::collections::VecDeque::new();
        let mut retries = BTreeSet::new();
        let (mut next_to_send, mut next_to_write) = (0, 0);
        // Slot ends of the service: in service, or queued.
        let mut busy: Vec<Duration> = Vec::new();
        let (mut requests, mut refused, mut peak, mut order) = (0, 0, 0, 0u64);
        let mut random = 0x2545_f491_4f6c_dd1du64;
        let mut now = Duration::ZERO;
        loop {
            while next_to_send < batches && next_to_send - next_to_write < limiter.read_ahead() {
                ready.push_back(next_to_send);
                next_to_send += 1;
            }
            while let Some(seq) = retries.first().copied().or(ready.front().copied()) {
                let Some(ticket) = limiter.try_start(t0 + now) else {
                    break;
                };
                if !retries.remove(&seq) {
                    ready.pop_front();
                }
                tickets[seq] = Some(ticket);
                attempts[seq] += 1;
                requests += 1;
                peak = peak.max(limiter.in_flight());
                busy.retain(|&end| end > now);
                let (slots, latency) = service.at(now);
                // Services vary a little: 1% either way.
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                let latency = latency * (990 + (random % 21) as u32) / 1000;
                let end = match service.past {
                    Past::Refuses if busy.len() >= slots => None,
                    Past::Refuses => Some(now + latency),
                    Past::Queues => {
                        // First come, first served: this one starts when
                        // the slot that frees first is free.
                        let mut ends = busy.clone();
                        ends.sort();
                        let start = if ends.len() < slots {
                            now
                        } else {
                            ends[ends.len() - slots]
                        };
                        Some(start + latency)
                    }
                };
                order += 1;
                match end {
                    Some(end) => {
                        busy.push(end);
                        events.push(Reverse((end + WIRE, order, Event::Ended(seq, true))));
                    }
                    None => {
                        refused += 1;
                        events.push(Reverse((now + WIRE, order, Event::Ended(seq, false))));
                    }
                }
            }
            let Some(Reverse((at, _, event))) = events.pop() else {
                break;
            };
            now = at;
            match event {
                Event::Ended(seq, answered) => {
                    let ticket = tickets[seq].take().unwrap();
                    let attempt = if answered {
                        Attempt::Answered
                    } else {
                        Attempt::Overloaded
                    };
                    limiter.end(ticket, t0 + now, attempt);
                    if answered {
                        done[seq] = true;
                        while next_to_write < batches && done[next_to_write] {
                            next_to_write += 1;
                        }
                    } else {
                        // The client's backoff: exponential from 100 ms,
                        // half of it jitter.
                        let step = Duration::from_millis(100 << (attempts[seq] - 1).min(6))
                            .min(Duration::from_secs(5));
                        random ^= random << 13;
                        random ^= random >> 7;
                        random ^= random << 17;
                        let jitter = step / 2 * (random % 1000) as u32 / 1000;
                        order += 1;
                        events.push(Reverse((now + step / 2 + jitter, order, Event::Awake(seq))));
                    }
                }
                Event::Awake(seq) => {
                    retries.insert(seq);
                }
            }
        }
        assert_eq!(next_to_write, batches, "every batch answered");
        Run {
            wall: now,
            requests,
            refused,
            peak_in_flight: peak,
            range: limiter.range(),
        }
    }

    /// The best fixed limit's run among those up to 4 times the slots.
    fn best_fixed(service: Service, batches: usize, t0: Instant) -> (usize, Run) {
        let mut best: Option<(usize, Run)> = None;
        for limit in [1, 2, 4, 8, 16, 32, 64, 128, 256] {
            if limit > 4 * service.slots {
                break;
            }
            let run = simulate(Limiter::fixed(limit), service, batches, t0);
            if best.as_ref().is_none_or(|(_, b)| run.wall < b.wall) {
                best = Some((limit, run));
            }
        }
        best.unwrap()
    }

    fn auto(service: Service, batches: usize) -> (Run, usize, Run) {
        let t0 = Instant::now();
        let run = simulate(Limiter::adaptive(t0), service, batches, t0);
        let (limit, best) = best_fixed(service, batches, t0);
        eprintln!("{service:?}, {batches} batches: auto {run:?}; best fixed {limit}: {best:?}");
        (run, limit, best)
    }

    fn service(slots: usize, millis: u64, past: Past) -> Service {
        Service {
            slots,
            latency: Duration::from_millis(millis),
            past,
            change: None,
        }
    }

    fn within(run: &Run, best: &Run, share: f64) -> bool {
        run.wall.as_secs_f64() <= best.wall.as_secs_f64() * (1.0 + share)
    }

    #[test]
    fn a_service_that_refuses_past_8_slots() {
        for (batches, share) in [(300, 0.5), (1000, 0.15)] {
            let (run, _, best) = auto(service(8, 40, Past::Refuses), batches);
            assert!(within(&run, &best, share), "{run:?} against {best:?}");
            assert!(run.refused * 20 <= run.requests, "{run:?}");
        }
    }

    #[test]
    fn a_service_that_refuses_past_64_slots() {
        let (run, _, best) = auto(service(64, 20, Past::Refuses), 10_000);
        assert!(within(&run, &best, 0.15), "{run:?} against {best:?}");
        assert!(run.range.1 >= 64, "{run:?}");
        assert!(run.refused * 20 <= run.requests, "{run:?}");
    }

    #[test]
    fn a_service_that_queues_past_4_slots() {
        let (run, _, best) = auto(service(4, 40, Past::Queues), 500);
        assert!(within(&run, &best, 0.15), "{run:?} against {best:?}");
        assert!(run.peak_in_flight <= 3 * 4, "{run:?}");
        assert_eq!(run.refused, 0);
    }

    #[test]
    fn a_service_with_one_slot() {
        for past in [Past::Refuses, Past::Queues] {
            let (run, _, _) = auto(service(1, 50, past), 100);
            let one = simulate(Limiter::fixed(1), service(1, 50, past), 100, Instant::now());
            assert!(within(&run, &one, 0.15), "{run:?} against {one:?}");
        }
    }

    #[test]
    fn a_long_run_against_a_queueing_service_does_not_creep_up() {
        // Long enough to measure the unloaded latency again twice.
        let (run, _, best) = auto(service(4, 40, Past::Queues), 3000);
        assert!(within(&run, &best, 0.15), "{run:?} against {best:?}");
        assert!(run.peak_in_flight <= 3 * 4, "{run:?}");
    }

    #[test]
    fn a_service_that_becomes_slower_for_good_is_not_starved() {
        // Three times slower after 5 s: the unloaded latency measured before
        // must not keep the limit at 1 for longer than until the next
        // measure.
        let mut slower = service(8, 20, Past::Queues);
        slower.change = Some((Duration::from_secs(5), 8, Duration::from_millis(60)));
        let (run, _, best) = auto(slower, 6000);
        assert!(within(&run, &best, 0.25), "{run:?} against {best:?}");
        assert!(run.peak_in_flight <= 3 * 8, "{run:?}");
    }

    #[test]
    fn a_service_whose_capacity_shrinks_is_followed_down() {
        let mut shrinking = service(64, 20, Past::Refuses);
        shrinking.change = Some((Duration::from_secs(1), 16, Duration::from_millis(20)));
        let (run, _, best) = auto(shrinking, 6000);
        assert!(within(&run, &best, 0.25), "{run:?} against {best:?}");
        assert!(run.refused * 20 <= run.requests, "{run:?}");
    }
}
