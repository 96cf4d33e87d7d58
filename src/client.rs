//! The HTTP client: one POST of a batch of rows, with timeouts, and retries
//! with backoff while the failure is the kind that passes (the service is
//! still starting, restarting, or overloaded).
//!
//! The wire format lives in `rows`; this module only moves bytes and decides
//! which failures to retry.

use std::hash::{BuildHasher, RandomState};
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ureq::Agent;
use ureq::http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use ureq::http::{HeaderMap, HeaderValue, Method, Request, Uri};

use crate::config::{Config, ServiceUrl};
use crate::error::Error;
use crate::logging::Seconds;
use crate::resolve::{CachingResolver, ResolveCache};
use crate::rows::{self, Reply};
use crate::transport::TcpConnector;

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
    /// Parsed once: every request of a batch job goes to it.
    uri: Option<Uri>,
    /// The request's own headers, built once and cloned per request: adding
    /// them one by one through `RequestBuilder::header` hashed each name and
    /// moved the whole request under construction, about 1,700 instructions
    /// a header.
    headers: HeaderMap,
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
        // Before the first request: ureq's own log lines may quote what the
        // service sends back, password and all.
        crate::logging::hide(config.service.secrets());
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
            // ureq zeroes 256 KiB of buffers per connection by default, which
            // was nine tenths of a single-row job's instructions. Replies'
            // headers must fit the input buffer, so it is a little larger than
            // the header limit: longer headers get a clear error, not a stall.
            .max_response_header_size(MAX_HEADER_BYTES)
            .input_buffer_size(MAX_HEADER_BYTES + 4096)
            .output_buffer_size(16 * 1024)
            .build();
        // Header names and values as constants, checked at compile time.
        const JSON: HeaderValue = HeaderValue::from_static("application/json");
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert(CONTENT_TYPE, JSON);
        headers.insert(ACCEPT, JSON);
        let resolved = Arc::new(ResolveCache::default());
        let agent = Agent::with_parts(
            agent_config,
            // Plain TCP: no SOCKS or CONNECT proxy chain, which `.proxy(None)`
            // would skip anyway, and fewer system calls per request than
            // ureq's own (see src/transport.rs).
            TcpConnector,
            CachingResolver(Arc::clone(&resolved)),
        );
        Client {
            agent,
            resolved,
            url: config.service.clone(),
            uri: Uri::try_from(config.service.as_request_url()).ok(),
            headers,
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
    pub fn send(&self, body: &[u8], sent: &[u64], reply: &mut Reply) -> Result<(), Error> {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let cause = match self.attempt(body, sent, reply) {
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

    fn attempt(&self, body: &[u8], sent: &[u64], reply: &mut Reply) -> Result<(), Failure> {
        let uri = match &self.uri {
            Some(uri) => uri.clone(),
            // What ureq would say of the URL, had it been given the text.
            None => match Uri::try_from(self.url.as_request_url()) {
                Ok(uri) => uri,
                Err(e) => return Err(self.classify(ureq::http::Error::from(e).into())),
            },
        };
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = self.headers.clone();
        let answer = self.agent.run(request);
        let mut response = answer.map_err(|e| self.classify(e))?;
        let status = response.status().as_u16();
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.max_response_bytes) {
            return Err(self.classify(ureq::Error::BodyExceedsLimit(self.max_response_bytes)));
        }
        let location = (300..=399).contains(&status).then(|| {
            response
                .headers()
                .get(LOCATION)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        });
        let reader = response
            .body_mut()
            .with_config()
            .limit(self.max_response_bytes)
            .reader();
        reply
            .read_body(reader, declared, self.max_response_bytes)
            .map_err(|e| self.classify(e.into()))?;

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
                location
                    .flatten()
                    .as_deref()
                    .unwrap_or("(no Location header)")
            ))),
            _ => Err(protocol(format!(
                "HTTP {status}: {}",
                rows::preview(&self.url.redact(reply.body()))
            ))),
        }
    }

    fn classify(&self, error: ureq::Error) -> Failure {
        use ureq::Error as E;
        match error {
            E::HostNotFound => Failure::Transient("host not found (DNS)".to_owned()),
            E::ConnectionFailed => Failure::Transient("connection failed".to_owned()),
            E::Timeout(which) => Failure::Transient(format!("timed out ({which})")),
            E::Io(io) => match io.kind() {
                ErrorKind::ConnectionRefused => Failure::Transient("connection refused".to_owned()),
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => Failure::Transient("connection reset".to_owned()),
                // The peer closed mid-exchange: a restart looks exactly like this.
                ErrorKind::UnexpectedEof => {
                    Failure::Transient("connection closed before the reply was complete".to_owned())
                }
                ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                    Failure::Transient("timed out".to_owned())
                }
                // The peer's bytes broke HTTP framing: the service answered wrongly.
                ErrorKind::InvalidData | ErrorKind::InvalidInput => Failure::Fatal(
                    Error::protocol(&self.url.to_string(), format!("malformed reply: {io}")),
                ),
                // Everything else is the network's: a failed DNS lookup arrives
                // here too, as std's uncategorised getaddrinfo error.
                _ => Failure::Transient(format!("network error: {io}")),
            },
            E::BodyExceedsLimit(limit) => Failure::Fatal(Error::protocol(
                &self.url.to_string(),
                format!("reply is larger than MAX_RESPONSE_BYTES ({limit} bytes)"),
            )),
            E::BadUri(problem) => Failure::Fatal(Error::config("SERVICE_URL", problem)),
            E::Protocol(problem) => Failure::Fatal(Error::protocol(
                &self.url.to_string(),
                format!("reply is not valid HTTP/1.1: {problem}"),
            )),
            E::LargeResponseHeader(_, limit) => Failure::Fatal(Error::protocol(
                &self.url.to_string(),
                format!("reply is not valid HTTP/1.1: its headers exceed {limit} bytes"),
            )),
            other => Failure::Fatal(Error::protocol(&self.url.to_string(), other.to_string())),
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
