//! The HTTP client: one POST of a batch of rows, with timeouts, and retries
//! with backoff while the failure is the kind that passes (the service is
//! still starting, restarting, or overloaded).
//!
//! HTTP is ureq's: its agent keeps the connections alive, parses replies and
//! their framing, and times each call out. The wire format lives in `rows`;
//! this module decides which failures to retry, and how soon.

use std::hash::{BuildHasher, RandomState};
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ureq::Agent;
use ureq::http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, TRANSFER_ENCODING};
use ureq::http::{HeaderMap, HeaderValue, Method, Request};
use ureq::unversioned::transport::TcpConnector;

use crate::config::{Config, ServiceUrl};
use crate::error::Error;
use crate::reply::{BadReply, Reply, preview};
use crate::resolve::{CachingResolver, ResolveCache};
use crate::time::Seconds;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The largest block of reply headers accepted.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Statuses that mean "not now" rather than "no": a proxy or load balancer in
/// front of a service that is starting, or a service shedding load.
const TRANSIENT_STATUSES: [u16; 4] = [429, 502, 503, 504];

pub struct Client {
    agent: Agent,
    resolved: Arc<ResolveCache>,
    url: ServiceUrl,
    /// The request's own headers, built once and cloned per request.
    headers: HeaderMap,
    connect_timeout: Duration,
    request_timeout: Duration,
    retry_deadline: Duration,
    max_response_bytes: u64,
    retries: AtomicU64,
}

/// How one attempt ended, as far as the load on the service goes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Attempt {
    /// The service answered, whatever the reply.
    Answered,
    /// HTTP 429 or 503: the service says it is over capacity.
    Overloaded,
    /// The attempt timed out, or a gateway did (HTTP 504).
    TimedOut,
    /// Anything else: no answer (refused, reset, DNS), or HTTP 502.
    Failed,
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
        const JSON: HeaderValue = HeaderValue::from_static("application/json");
        let mut headers = HeaderMap::with_capacity(1);
        headers.insert(CONTENT_TYPE, JSON);
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
    /// (ascending), and leaves the checked reply in `reply`.
    ///
    /// The first attempt has the full CONNECT_TIMEOUT and REQUEST_TIMEOUT.
    /// Retries follow while RETRY_DEADLINE, counted from the first attempt,
    /// has time left, and each is cut short so as to end by it.
    pub fn send(
        &self,
        body: &[u8],
        sent: &[u64],
        reply: &mut Reply,
        attempts: &dyn Attempts,
    ) -> Result<(), Error> {
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
            let result = self.attempt(body, sent, reply, &limits);
            attempts.end(match &result {
                Ok(()) => Attempt::Answered,
                Err(Verdict::Overloaded(_)) => Attempt::Overloaded,
                Err(Verdict::TimedOut(_)) => Attempt::TimedOut,
                Err(_) => Attempt::Failed,
            });
            let cause = match result {
                Ok(()) => return Ok(()),
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
        body: &[u8],
        sent: &[u64],
        reply: &mut Reply,
        limits: &Limits,
    ) -> Result<(), Verdict> {
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.url.uri().clone();
        *request.headers_mut() = self.headers.clone();
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
        log::debug!("POST {} ({} bytes)", self.url, body.len());
        let mut response = self.agent.run(request).map_err(|e| self.before_reply(e))?;
        let status = response.status().as_u16();
        let length = response.body().content_length();
        if length.is_some_and(|length| length > self.max_response_bytes) {
            return Err(self.classify(ureq::Error::BodyExceedsLimit(self.max_response_bytes)));
        }
        // Neither a length nor chunks: the body ends where the connection
        // does, so a body cut short by a reset looks complete.
        let headers = response.headers();
        let ends_at_close = !headers.contains_key(CONTENT_LENGTH)
            && !headers
                .get(TRANSFER_ENCODING)
                .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"chunked"));
        let location = response
            .headers()
            .get(LOCATION)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let reader = response
            .body_mut()
            .with_config()
            .limit(self.max_response_bytes)
            .reader();
        reply
            .read_body(reader, self.max_response_bytes)
            .map_err(|e| self.classify(e.into()))?;
        log::debug!("HTTP {status} ({} bytes)", reply.body().len());

        if TRANSIENT_STATUSES.contains(&status) {
            let cause = format!("HTTP {status}");
            return Err(match status {
                429 | 503 => Verdict::Overloaded(cause),
                504 => Verdict::TimedOut(cause),
                _ => Verdict::RetryLater(cause),
            });
        }
        // What the service says goes into the ERROR line, and a service or
        // proxy may echo the request's Authorization header or URL back: so
        // the password is taken out first, before any cut to 200 bytes.
        // Only on this error path: a good reply is never searched.
        let protocol = |problem: String| {
            Verdict::GiveUp(Error::protocol(
                &self.url.to_string(),
                self.url.secrets().redact_str(problem),
            ))
        };
        match status {
            200..=299 => reply.decode(sent).map_err(|problem| match problem {
                BadReply::EndsEarly if ends_at_close => Verdict::RetryLater(
                    "the connection closed before the reply's JSON was complete".to_owned(),
                ),
                problem => protocol(problem.describe(&self.url.secrets().redact(reply.body()))),
            }),
            300..=399 => Err(protocol(format!(
                "HTTP {status} redirect to {}; redirects are not followed for POST, so point SERVICE_URL there",
                location.as_deref().unwrap_or("(no Location header)")
            ))),
            _ => Err(protocol(format!(
                "HTTP {status}: {}",
                preview(&self.url.secrets().redact(reply.body()))
            ))),
        }
    }

    /// A failure before the reply's head was read whole.
    fn before_reply(&self, error: ureq::Error) -> Verdict {
        match &error {
            ureq::Error::Io(io) => match io.kind() {
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => Verdict::SendAgain("connection reset".to_owned()),
                ErrorKind::UnexpectedEof => {
                    Verdict::SendAgain("connection closed before the reply was complete".to_owned())
                }
                _ => self.classify(error),
            },
            _ => self.classify(error),
        }
    }

    fn classify(&self, error: ureq::Error) -> Verdict {
        use ureq::Error as E;
        let protocol =
            |problem: String| Verdict::GiveUp(Error::protocol(&self.url.to_string(), problem));
        match error {
            E::HostNotFound => Verdict::RetryLater("host not found (DNS)".to_owned()),
            E::ConnectionFailed => Verdict::RetryLater("connection failed".to_owned()),
            E::Timeout(which) => Verdict::TimedOut(format!("timed out ({which})")),
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
                    Verdict::TimedOut("timed out".to_owned())
                }
                // The peer's bytes broke HTTP framing: the service answered wrongly.
                ErrorKind::InvalidData | ErrorKind::InvalidInput => {
                    protocol(format!("malformed reply: {io}"))
                }
                // Everything else is the network's: a failed DNS lookup
                // arrives here too.
                _ => Verdict::RetryLater(format!("network error: {io}")),
            },
            E::BodyExceedsLimit(limit) => protocol(format!(
                "reply is larger than MAX_RESPONSE_BYTES ({limit} bytes)"
            )),
            E::Protocol(problem) => protocol(format!("reply is not valid HTTP/1.1: {problem}")),
            E::LargeResponseHeader(_, limit) => protocol(format!(
                "reply is not valid HTTP/1.1: its headers exceed {limit} bytes"
            )),
            other => protocol(other.to_string()),
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
