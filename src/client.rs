//! The HTTP client: one POST of a batch of rows, with timeouts, and retries
//! with backoff while the failure is the kind that passes (the service is
//! still starting, restarting, or overloaded).
//!
//! The wire format lives in `rows`, HTTP in `http`, the socket in
//! `transport`; this module keeps connections, and decides which failures to
//! retry.

use std::hash::{BuildHasher, RandomState};
use std::io::ErrorKind;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ureq_proto::http::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use ureq_proto::http::{HeaderMap, HeaderValue, Uri};

use crate::config::{Config, ServiceUrl};
use crate::error::Error;
use crate::http::{self, Post};
use crate::logging::Seconds;
use crate::resolve::ResolveCache;
use crate::rows::{self, Reply};
use crate::transport::{Connection, IoFailure};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The largest block of reply headers accepted.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Read buffer per connection: a little more than the header limit, so that
/// longer headers get a clear error, not a stall.
const INPUT_BYTES: usize = MAX_HEADER_BYTES + 4096;

/// A kept-alive connection idle longer than this is closed, not reused, as
/// ureq did: a NAT or load balancer on the way may have dropped it without a
/// word, and a request sent into it would wait out REQUEST_TIMEOUT.
const MAX_IDLE: Duration = Duration::from_secs(15);

/// Statuses that mean "not now" rather than "no": a proxy or load balancer in
/// front of a service that is starting, or a service shedding load.
const TRANSIENT_STATUSES: [u16; 4] = [429, 502, 503, 504];

pub struct Client {
    resolved: ResolveCache,
    /// Kept-alive connections not in use, one per worker at most, and when
    /// each became idle.
    idle: Mutex<Vec<(Instant, Connection)>>,
    url: ServiceUrl,
    /// Parsed once: every request of a batch job goes to it.
    uri: Result<Uri, String>,
    /// The request's own headers, built once and cloned per request.
    headers: HeaderMap,
    connect_timeout: Duration,
    request_timeout: Duration,
    retry_deadline: Duration,
    max_response_bytes: u64,
    retries: AtomicU64,
}

/// How one attempt failed.
enum Failure {
    /// Worth another attempt until the retry deadline.
    Transient(String),
    Fatal(Error),
}

impl Client {
    pub fn new(config: &Config) -> Client {
        // Before the first request: ureq-proto's log lines may quote what the
        // service sends back, password and all.
        crate::logging::hide(config.service.secrets());
        // Header names and values as constants, checked at compile time.
        const JSON: HeaderValue = HeaderValue::from_static("application/json");
        const AGENT: HeaderValue =
            HeaderValue::from_static(concat!("service-to-service/", env!("CARGO_PKG_VERSION")));
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(CONTENT_TYPE, JSON);
        headers.insert(ACCEPT, JSON);
        headers.insert(USER_AGENT, AGENT);
        Client {
            resolved: ResolveCache::default(),
            idle: Mutex::new(Vec::new()),
            url: config.service.clone(),
            uri: Uri::try_from(config.service.as_request_url()).map_err(|e| e.to_string()),
            headers,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            retry_deadline: config.retry_deadline,
            max_response_bytes: config.max_response_bytes,
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

    /// POSTs the request `body` for rows with the indices `sent`
    /// (ascending), and leaves the checked reply in `reply`. `head` is a
    /// buffer kept between requests, for the request's head.
    pub fn send(
        &self,
        body: &[u8],
        sent: &[u64],
        head: &mut Vec<u8>,
        reply: &mut Reply,
    ) -> Result<(), Error> {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let cause = match self.attempt(body, sent, head, reply) {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Transient(cause)) => cause,
            };
            // The service may have moved: look its name up again next time.
            self.resolved.forget();
            let elapsed = started.elapsed();
            let Some(left) = self
                .retry_deadline
                .checked_sub(elapsed)
                .filter(|d| !d.is_zero())
            else {
                return Err(Error::Unreachable {
                    url: self.url.to_string(),
                    attempts: attempt,
                    elapsed,
                    cause,
                });
            };
            let delay = backoff(attempt).min(left);
            log::warn!(
                "Attempt {attempt} to reach {} failed: {cause}; retrying in {}",
                self.url,
                Seconds(delay)
            );
            self.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(delay);
            attempt += 1;
        }
    }

    fn attempt(
        &self,
        body: &[u8],
        sent: &[u64],
        head: &mut Vec<u8>,
        reply: &mut Reply,
    ) -> Result<(), Failure> {
        let uri = match &self.uri {
            Ok(uri) => uri,
            Err(problem) => return Err(Failure::Fatal(Error::config("SERVICE_URL", problem))),
        };
        let deadline = Instant::now() + self.request_timeout;
        let mut connection = self.connection(uri, deadline)?;
        log::debug!("POST {} ({} bytes)", self.url, body.len());
        let post = Post {
            uri,
            headers: &self.headers,
            body,
            deadline,
            max_head_bytes: MAX_HEADER_BYTES,
            max_body_bytes: self.max_response_bytes,
        };
        let answer =
            http::post(&mut connection, &post, head, reply).map_err(|e| self.classify(e))?;
        let status = answer.status;
        log::debug!("HTTP {status} ({} bytes)", reply.body().len());
        if answer.reusable {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push((Instant::now(), connection));
            }
        }

        if TRANSIENT_STATUSES.contains(&status) {
            return Err(Failure::Transient(format!("HTTP {status}")));
        }
        // What the service says goes into the ERROR line, and a service or
        // proxy may echo the request's Authorization header or URL back: so
        // the password is taken out first, before any cut to 200 bytes.
        // Only on this error path: a good reply is never searched.
        let protocol = |problem: String| {
            Failure::Fatal(Error::protocol(
                &self.url.to_string(),
                self.url.redact_str(problem),
            ))
        };
        match status {
            200..=299 => reply
                .decode(sent)
                .map_err(|problem| protocol(problem.describe(&self.url.redact(reply.body())))),
            300..=399 => Err(protocol(format!(
                "HTTP {status} redirect to {}; redirects are not followed for POST, so point SERVICE_URL there",
                answer.location.as_deref().unwrap_or("(no Location header)")
            ))),
            _ => Err(protocol(format!(
                "HTTP {status}: {}",
                rows::preview(&self.url.redact(reply.body()))
            ))),
        }
    }

    /// A kept-alive connection that is still good, or a new one.
    fn connection(&self, uri: &Uri, deadline: Instant) -> Result<Connection, Failure> {
        while let Some((since, connection)) = self.idle.lock().ok().and_then(|mut idle| idle.pop())
        {
            if since.elapsed() < MAX_IDLE && connection.is_idle_and_open() {
                return Ok(connection);
            }
        }
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().unwrap_or(80);
        let addresses = self
            .resolved
            .resolve(host, port, deadline)
            .map_err(|problem| Failure::Transient(format!("network error: {problem}")))?;
        if addresses.is_empty() {
            return Err(Failure::Transient("host not found (DNS)".to_owned()));
        }
        let connect_by = deadline.min(Instant::now() + self.connect_timeout);
        Connection::open(&addresses, connect_by, INPUT_BYTES).map_err(|failure| match failure {
            IoFailure::TimedOut => Failure::Transient("timed out (connect)".to_owned()),
            IoFailure::Io(io) => self.classify(http::Failure::Io(io)),
        })
    }

    fn classify(&self, failure: http::Failure) -> Failure {
        use http::Failure as F;
        match failure {
            F::TimedOut => Failure::Transient("timed out".to_owned()),
            // The peer closed mid-exchange: a restart looks exactly like this.
            F::Closed => {
                Failure::Transient("connection closed before the reply was complete".to_owned())
            }
            F::Io(io) => match io.kind() {
                ErrorKind::ConnectionRefused => Failure::Transient("connection refused".to_owned()),
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => Failure::Transient("connection reset".to_owned()),
                ErrorKind::UnexpectedEof => {
                    Failure::Transient("connection closed before the reply was complete".to_owned())
                }
                // Everything else is the network's.
                _ => Failure::Transient(format!("network error: {io}")),
            },
            F::BodyTooLarge(limit) => Failure::Fatal(Error::protocol(
                &self.url.to_string(),
                format!("reply is larger than MAX_RESPONSE_BYTES ({limit} bytes)"),
            )),
            F::Request(problem) => Failure::Fatal(Error::config(
                "SERVICE_URL",
                format!("no valid HTTP/1.1 request can be made for it: {problem}"),
            )),
            F::Protocol(problem) => Failure::Fatal(Error::protocol(
                &self.url.to_string(),
                format!("reply is not valid HTTP/1.1: {problem}"),
            )),
        }
    }
}

/// Exponential from 100 ms, capped at 5 s, with "equal jitter": half the step
/// is fixed and half random, so that replicas started together spread out.
fn backoff(attempt: u32) -> Duration {
    let step = FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let half = step / 2;
    let random = RandomState::new().hash_one(attempt) % (half.as_micros() as u64 + 1);
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
