//! The HTTP client: a batch of rows POSTed as Snowflake sends it to a
//! service function, with its headers, with timeouts, with retries and
//! backoff while the failure is the kind that passes (the service is still
//! starting, restarting, or overloaded), and with GET polls while an
//! asynchronous service answers 202 (accepted, not finished).
//!
//! HTTP is ureq's: its agent keeps the connections alive, parses replies and
//! their framing, and times each call out. The body's format lives in
//! `request` and `reply`; this module decides which failures to retry, and
//! how soon.

use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ureq::Agent;
use ureq::http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, TRANSFER_ENCODING,
};
use ureq::http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use ureq::unversioned::transport::TcpConnector;

use crate::config::{Config, ServiceUrl};
use crate::decimal;
use crate::error::Error;
use crate::logging;
use crate::reply::{BadReply, PREVIEW_BYTES, Reply, preview};
use crate::resolve::{CachingResolver, ResolveCache};
use crate::time::Seconds;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Polls of an accepted batch start soon, since most asynchronous work is
/// short, and slow down to this: a finished batch waits at most that long.
const FIRST_POLL_DELAY: Duration = Duration::from_millis(100);
const MAX_POLL_DELAY: Duration = Duration::from_secs(2);

/// The headers Snowflake sends with every batch to a service function.
const FORMAT: HeaderName = HeaderName::from_static("sf-external-function-format");
const FORMAT_VERSION: HeaderName = HeaderName::from_static("sf-external-function-format-version");
const QUERY_ID: HeaderName = HeaderName::from_static("sf-external-function-current-query-id");
const BATCH_ID: HeaderName = HeaderName::from_static("sf-external-function-query-batch-id");

/// The largest block of reply headers accepted.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Statuses that mean "not now" rather than "no": a proxy or load balancer in
/// front of a service that is starting, or a service shedding load.
const TRANSIENT_STATUSES: [u16; 4] = [429, 502, 503, 504];

pub struct Client {
    agent: Agent,
    resolved: Arc<ResolveCache>,
    url: ServiceUrl,
    /// The headers every request has, built once and cloned per batch.
    headers: HeaderMap,
    query_id: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    retry_deadline: Duration,
    async_timeout: Duration,
    max_response_bytes: u64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// One request of a batch's: its POST, or a GET that polls for its rows.
struct Exchange<'a> {
    method: Method,
    body: &'a [u8],
    /// The batch's id, as its header sends it.
    batch_id: &'a HeaderValue,
}

/// A service's answer to an exchange that went well.
#[derive(PartialEq)]
enum Answer {
    /// The rows, checked, in the reply.
    Rows,
    /// HTTP 202: accepted, not yet finished; ask again with a GET.
    Accepted,
}

/// How one attempt ended, as far as the load on the service goes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Attempt {
    /// The service answered with the rows, or took the batch (HTTP 202).
    Answered,
    /// HTTP 429 or 503: the service says it is over capacity.
    Overloaded,
    /// The attempt timed out, or a gateway did (HTTP 504).
    TimedOut,
    /// Anything else: no answer (refused, reset, DNS), HTTP 502, or an
    /// answer that fails the batch for good, which says nothing of load.
    Failed,
    /// A poll of an accepted batch answered: it asks nothing of the service
    /// but a look, so its time says nothing of the service's load.
    Polled,
}

/// The caller's hold on each attempt of a request: it may make an attempt
/// wait for a free slot, or refuse it with an error, and hears how each
/// ended.
pub trait Attempts {
    fn start(&self) -> Result<(), Error>;
    fn end(&self, attempt: Attempt);
}

/// What a failed attempt means for the request.
enum Verdict {
    /// The connection was closed or reset before the reply began. On a
    /// kept-alive connection that is most often a server that closed it
    /// while it sat idle, so the request is worth sending again at once.
    SendAgain(String),
    /// Worth another attempt, after a backoff, until the retry deadline.
    RetryLater(String),
    /// The same, and a sign of too many requests at once: HTTP 429 or 503.
    Overloaded(String),
    /// The same, from a timeout (ours, or a gateway's HTTP 504).
    TimedOut(String),
    GiveUp(Error),
}

/// What one attempt may take.
struct Limits {
    connect: Duration,
    request: Duration,
    /// Open a new connection rather than reuse a kept-alive one.
    new_connection: bool,
}

impl Client {
    pub fn new(config: &Config) -> Client {
        let agent_config = Agent::config_builder()
            .timeout_connect(Some(config.connect_timeout))
            .timeout_global(Some(config.request_timeout))
            // Status codes are ours to judge; a 3xx answer to a POST is an
            // error to report, not a hop to follow.
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            // Service-to-service traffic stays inside the SPCS network; an
            // HTTP_PROXY meant for egress must not capture it.
            .proxy(None)
            .user_agent(concat!("service-to-service/", env!("CARGO_PKG_VERSION")))
            .accept("application/json")
            // One idle connection per request thread.
            .max_idle_connections(config.concurrency.most())
            .max_idle_connections_per_host(config.concurrency.most())
            // ureq's default buffers are 128 KiB each way per connection.
            // Replies' headers must fit the input buffer, so it is a little
            // larger than the header limit: longer headers get a clear error,
            // not a stall. Request bodies stream through the output buffer.
            .max_response_header_size(MAX_HEADER_BYTES)
            .input_buffer_size(MAX_HEADER_BYTES + 4096)
            .output_buffer_size(MAX_HEADER_BYTES)
            .build();
        let mut headers = HeaderMap::with_capacity(7);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(FORMAT, HeaderValue::from_static("json"));
        headers.insert(FORMAT_VERSION, HeaderValue::from_static("1.0"));
        // Checked by the configuration: visible ASCII, so a valid value.
        if let Ok(query_id) = HeaderValue::from_str(&config.query_id) {
            headers.insert(QUERY_ID, query_id);
        }
        if let Some(credentials) = config.service.authorization() {
            headers.insert(AUTHORIZATION, credentials.clone());
        }
        let resolved = Arc::new(ResolveCache::default());
        let agent = Agent::with_parts(
            agent_config,
            // Plain TCP: the SOCKS and CONNECT proxy steps of ureq's default
            // chain would be skipped anyway, with no proxy.
            TcpConnector::default(),
            CachingResolver(Arc::clone(&resolved)),
        );
        Client {
            agent,
            resolved,
            url: config.service.clone(),
            headers,
            query_id: config.query_id.clone(),
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            retry_deadline: config.retry_deadline,
            async_timeout: config.async_timeout,
            max_response_bytes: config.max_response_bytes,
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    pub fn url(&self) -> &ServiceUrl {
        &self.url
    }

    /// Retries so far, over all batches.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Requests sent so far, over all batches: every attempt, retries,
    /// polls and the halves of split batches included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Sends the request `body` for rows with the indices `sent`
    /// (ascending) as one batch, and leaves the checked reply in `reply`:
    /// a POST and, while the service answers 202, GET polls. `attempts`
    /// holds each attempt, and hears how it ended.
    pub fn send(
        &self,
        body: &[u8],
        sent: &[u64],
        reply: &mut Reply,
        attempts: &dyn Attempts,
    ) -> Result<(), Error> {
        let batch_id = self.batch_id(sent);
        let post = Exchange {
            method: Method::POST,
            body,
            batch_id: &batch_id,
        };
        if self.exchange(&post, sent, reply, attempts)? == Answer::Rows {
            return Ok(());
        }
        let poll = Exchange {
            method: Method::GET,
            body: &[],
            batch_id: &batch_id,
        };
        self.poll(&poll, sent, reply, attempts)
    }

    /// The id of the batch of rows `sent`: the query id, the first row's
    /// index and the number of rows, unique to the batch in this run and
    /// the same on every retry and poll of it.
    fn batch_id(&self, sent: &[u64]) -> HeaderValue {
        let mut id = Vec::with_capacity(self.query_id.len() + 24);
        id.extend_from_slice(self.query_id.as_bytes());
        id.push(b':');
        decimal::push_u64(&mut id, sent.first().copied().unwrap_or(0));
        id.push(b':');
        decimal::push_u64(&mut id, sent.len() as u64);
        // The query id is visible ASCII, checked by the configuration.
        HeaderValue::try_from(id).unwrap_or(HeaderValue::from_static(""))
    }

    /// Polls an accepted batch until its rows come, with a growing delay,
    /// for at most ASYNC_TIMEOUT from the first 202. A poll is not a retry:
    /// each has its own RETRY_DEADLINE for failures that pass.
    fn poll(
        &self,
        poll: &Exchange,
        sent: &[u64],
        reply: &mut Reply,
        attempts: &dyn Attempts,
    ) -> Result<(), Error> {
        let accepted = Instant::now();
        let give_up = accepted + self.async_timeout;
        let mut delay = FIRST_POLL_DELAY;
        let mut polls = 0;
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Unfinished {
                    url: self.url.to_string(),
                    batch: shown(poll.batch_id).to_owned(),
                    polls,
                    limit: self.async_timeout,
                });
            }
            let wait = delay.min(left);
            log::debug!(
                "Batch {} accepted and not finished (HTTP 202); polling in {}",
                shown(poll.batch_id),
                Seconds(wait)
            );
            std::thread::sleep(wait);
            polls += 1;
            if self.exchange(poll, sent, reply, attempts)? == Answer::Rows {
                return Ok(());
            }
            delay = delay.saturating_mul(2).min(MAX_POLL_DELAY);
        }
    }

    /// One request, POST or GET, until it is answered.
    ///
    /// The first attempt has the full CONNECT_TIMEOUT and REQUEST_TIMEOUT.
    /// Retries follow while RETRY_DEADLINE, counted from the first attempt,
    /// has time left, and each is cut short so as to end by it.
    fn exchange(
        &self,
        exchange: &Exchange,
        sent: &[u64],
        reply: &mut Reply,
        attempts: &dyn Attempts,
    ) -> Result<Answer, Error> {
        let started = Instant::now();
        let deadline = started + self.retry_deadline;
        let mut limits = Limits {
            connect: self.connect_timeout,
            request: self.request_timeout,
            new_connection: false,
        };
        let mut attempt = 1;
        let mut sent_again = false;
        loop {
            attempts.start()?;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let result = self.attempt(exchange, sent, reply, &limits);
            attempts.end(match &result {
                Ok(_) if exchange.method == Method::GET => Attempt::Polled,
                Ok(_) => Attempt::Answered,
                Err(Verdict::Overloaded(_)) => Attempt::Overloaded,
                Err(Verdict::TimedOut(_)) => Attempt::TimedOut,
                Err(_) => Attempt::Failed,
            });
            let cause = match result {
                Ok(answer) => return Ok(answer),
                Err(Verdict::GiveUp(error)) => return Err(error),
                Err(Verdict::SendAgain(cause)) if !sent_again => {
                    log::debug!("{cause}; sending the request again on a new connection");
                    sent_again = true;
                    limits.new_connection = true;
                    continue;
                }
                Err(
                    Verdict::SendAgain(cause)
                    | Verdict::RetryLater(cause)
                    | Verdict::Overloaded(cause)
                    | Verdict::TimedOut(cause),
                ) => cause,
            };
            // The service may have moved: look its name up again next time.
            self.resolved.forget();
            let unreachable = || Error::Unreachable {
                url: self.url.to_string(),
                attempts: attempt,
                elapsed: started.elapsed(),
                deadline: self.retry_deadline,
                cause: cause.clone(),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(unreachable());
            }
            let delay = backoff(attempt).min(left);
            log::warn!(
                "Attempt {attempt} to reach {} failed: {cause}; retrying in {}",
                self.url,
                Seconds(delay)
            );
            self.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(delay);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(unreachable());
            }
            limits = Limits {
                connect: self.connect_timeout.min(left),
                request: self.request_timeout.min(left),
                new_connection: false,
            };
            attempt += 1;
        }
    }

    fn attempt(
        &self,
        exchange: &Exchange,
        sent: &[u64],
        reply: &mut Reply,
        limits: &Limits,
    ) -> Result<Answer, Verdict> {
        let mut request = Request::new(());
        *request.method_mut() = exchange.method.clone();
        *request.uri_mut() = self.url.uri().clone();
        // Every request's headers, and the batch's id; a poll has no body,
        // so no Content-Type either.
        let headers = request.headers_mut();
        *headers = self.headers.clone();
        headers.insert(BATCH_ID, exchange.batch_id.clone());
        if exchange.method == Method::GET {
            headers.remove(CONTENT_TYPE);
        }
        let own_limits = limits.new_connection
            || limits.connect != self.connect_timeout
            || limits.request != self.request_timeout;
        if own_limits {
            let mut config = self
                .agent
                .configure_request(request)
                .timeout_connect(Some(limits.connect))
                .timeout_global(Some(limits.request));
            if limits.new_connection {
                // No kept-alive connection is young enough for this request.
                config = config.max_idle_age(Duration::ZERO);
            }
            request = config.build();
        }
        log::debug!(
            "{} {} batch {} ({} bytes)",
            exchange.method,
            self.url,
            shown(exchange.batch_id),
            exchange.body.len()
        );
        // A GET polls with no body at all, as Snowflake's do.
        let response = match exchange.method {
            Method::GET => self.agent.run(request),
            _ => self.agent.run(request.map(|()| exchange.body)),
        };
        let mut response = response.map_err(|e| self.before_reply(e, limits))?;
        let status = response.status().as_u16();
        let length = response.body().content_length();
        if length.is_some_and(|length| length > self.max_response_bytes) {
            return Err(self.classify(
                ureq::Error::BodyExceedsLimit(self.max_response_bytes),
                limits,
            ));
        }
        // Neither a length nor chunks: the body ends where the connection
        // does, so a body cut short by a reset looks complete.
        let headers = response.headers();
        // Chunked is the last of the codings when the body is chunked.
        let chunked = |value: &HeaderValue| {
            let last = value.as_bytes().rsplit(|&b| b == b',').next();
            last.is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        };
        let ends_at_close = !headers.contains_key(CONTENT_LENGTH)
            && !headers.get(TRANSFER_ENCODING).is_some_and(chunked);
        let location = response
            .headers()
            .get(LOCATION)
            .map(|value| logging::escaped(&String::from_utf8_lossy(value.as_bytes())).into_owned());
        let reader = response
            .body_mut()
            .with_config()
            .limit(self.max_response_bytes)
            .reader();
        reply
            .read_body(reader, self.max_response_bytes)
            .map_err(|e| self.classify(e.into(), limits))?;
        log::debug!("HTTP {status} ({} bytes)", reply.body().len());

        if TRANSIENT_STATUSES.contains(&status) {
            let cause = format!("HTTP {status}");
            return Err(match status {
                429 | 503 => Verdict::Overloaded(cause),
                504 => Verdict::TimedOut(cause),
                _ => Verdict::RetryLater(cause),
            });
        }
        // Accepted, whatever the body says.
        if status == 202 {
            return Ok(Answer::Accepted);
        }
        // What the service says goes into the ERROR line, and a service or
        // proxy may echo the request's Authorization header or URL back: so
        // the password is taken out first, before any cut to 200 bytes.
        // Only on this error path: a good reply is never searched.
        let rejected = |status: Option<u16>, problem: String| {
            Verdict::GiveUp(Error::Rejected {
                url: self.url.to_string(),
                status,
                problem: self.url.secrets().redact_str(problem),
            })
        };
        match status {
            200..=299 => match reply.decode(sent) {
                Ok(()) => Ok(Answer::Rows),
                Err(BadReply::EndsEarly) if ends_at_close => Err(Verdict::RetryLater(
                    "the connection closed before the reply's JSON was complete".to_owned(),
                )),
                Err(problem) => Err(rejected(
                    None,
                    problem.describe(reply.body().len(), &self.quoted(reply.body())),
                )),
            },
            300..=399 => Err(Verdict::GiveUp(Error::protocol(
                &self.url.to_string(),
                self.url.secrets().redact_str(format!(
                    "HTTP {status} redirect to {}; redirects are not followed for POST, so \
                     point SERVICE_URL there",
                    location.as_deref().unwrap_or("(no Location header)")
                )),
            ))),
            _ => Err(rejected(
                Some(status),
                format!("HTTP {status}: {}", preview(&self.quoted(reply.body()))),
            )),
        }
    }

    /// A failure before the reply's head was read whole.
    fn before_reply(&self, error: ureq::Error, limits: &Limits) -> Verdict {
        match &error {
            ureq::Error::Io(io) => match io.kind() {
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => Verdict::SendAgain("connection reset".to_owned()),
                ErrorKind::UnexpectedEof => {
                    Verdict::SendAgain("connection closed before the reply was complete".to_owned())
                }
                _ => self.classify(error, limits),
            },
            _ => self.classify(error, limits),
        }
    }

    /// What a failed attempt with `limits` means, and its cause in words.
    fn classify(&self, error: ureq::Error, limits: &Limits) -> Verdict {
        use ureq::Error as E;
        let protocol =
            |problem: String| Verdict::GiveUp(Error::protocol(&self.url.to_string(), problem));
        match error {
            E::HostNotFound => Verdict::RetryLater("host not found (DNS)".to_owned()),
            E::ConnectionFailed => Verdict::RetryLater("connection failed".to_owned()),
            E::Timeout(ureq::Timeout::Connect) => Verdict::TimedOut(format!(
                "no connection {}",
                self.limit("CONNECT_TIMEOUT", self.connect_timeout, limits.connect)
            )),
            E::Timeout(_) => Verdict::TimedOut(self.no_reply_within(limits)),
            E::BodyStalled => Verdict::RetryLater("the reply stalled".to_owned()),
            E::Io(io) => match io.kind() {
                ErrorKind::ConnectionRefused => {
                    Verdict::RetryLater("connection refused".to_owned())
                }
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => Verdict::RetryLater("connection reset".to_owned()),
                // The peer closed mid-exchange: a restart looks exactly like this.
                ErrorKind::UnexpectedEof => Verdict::RetryLater(
                    "connection closed before the reply was complete".to_owned(),
                ),
                ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                    Verdict::TimedOut(self.no_reply_within(limits))
                }
                // The peer's bytes broke HTTP framing: the service answered wrongly.
                ErrorKind::InvalidData | ErrorKind::InvalidInput => {
                    protocol(format!("malformed reply: {io}"))
                }
                // Everything else is the network's: a failed DNS lookup
                // arrives here too.
                _ => Verdict::RetryLater(format!("network error: {io}")),
            },
            // Too large for this batch: a smaller one may do.
            E::BodyExceedsLimit(limit) => Verdict::GiveUp(Error::Rejected {
                url: self.url.to_string(),
                status: None,
                problem: format!("reply is larger than MAX_RESPONSE_BYTES ({limit} bytes)"),
            }),
            E::Protocol(problem) => protocol(format!("reply is not valid HTTP/1.1: {problem}")),
            E::LargeResponseHeader(_, limit) => protocol(format!(
                "reply is not valid HTTP/1.1: its headers exceed {limit} bytes"
            )),
            other => protocol(other.to_string()),
        }
    }
}

impl Client {
    /// What an error message may quote of `body`: its start, the password
    /// taken out.
    fn quoted<'a>(&self, body: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        self.url.secrets().redact_head(body, PREVIEW_BYTES)
    }

    fn no_reply_within(&self, limits: &Limits) -> String {
        format!(
            "no complete reply {}",
            self.limit("REQUEST_TIMEOUT", self.request_timeout, limits.request)
        )
    }

    /// The time limit that ran out, named by the setting to raise: as set,
    /// or the time left before the retry deadline when that was shorter.
    fn limit(&self, setting: &str, configured: Duration, given: Duration) -> String {
        if given < configured {
            format!(
                "in the {} left before RETRY_DEADLINE={}",
                Seconds(given),
                Seconds(self.retry_deadline)
            )
        } else {
            format!("within {setting}={}", Seconds(configured))
        }
    }
}

/// A batch id as log lines show it.
fn shown(batch_id: &HeaderValue) -> &str {
    batch_id.to_str().unwrap_or_default()
}

/// Exponential from 100 ms, capped at 5 s, with "equal jitter": half the step
/// is fixed and half random, so that replicas started together spread out.
fn backoff(attempt: u32) -> Duration {
    let step = FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let half = step / 2;
    let random = crate::random::number() % (half.as_micros() as u64 + 1);
    half + Duration::from_micros(random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        for attempt in 1..40 {
            let step =
                Duration::from_millis(100 * (1u64 << (attempt - 1).min(16))).min(MAX_BACKOFF);
            let delay = backoff(attempt);
            assert!(
                delay >= step / 2 && delay <= step,
                "attempt {attempt}: {delay:?}"
            );
        }
        let delays: std::collections::HashSet<_> = (0..20).map(|_| backoff(10)).collect();
        assert!(delays.len() > 1, "no jitter");
    }
}
