//! One HTTP/1.1 exchange over a kept-alive connection: a POST and its reply.
//!
//! The protocol is ureq-proto's, the state machine under ureq: it writes the
//! request head (Host, and Authorization from the URL's user and password)
//! and parses the reply, its 1xx interim replies, and its framing (length,
//! chunked, or until close), and says whether the connection may carry
//! another request. The I/O is `transport`'s, with one deadline for the whole
//! exchange. ureq's own agent, pool and body layers, which this replaces, cost
//! about a sixth of the batch job's CPU (issue 11).
//!
//! Left out, as the job needs none of them: following redirects (they are
//! reported), sending `Expect: 100-continue`, TLS, proxies, compression,
//! cookies.

use std::io::{self, ErrorKind, Read};
use std::time::Instant;

use ureq_proto::BodyMode;
use ureq_proto::client::state::{RecvBody, RecvResponse};
use ureq_proto::client::{Call, RecvBodyResult, RecvResponseResult, SendRequestResult};
use ureq_proto::http::header::{CONTENT_LENGTH, LOCATION};
use ureq_proto::http::{HeaderMap, HeaderValue, Method, Request, Uri};

use crate::rows::Reply;
use crate::transport::{Connection, IoFailure};

/// Room for the request head: the request line and six headers. A URL too
/// long for it fails as ureq-proto's "output overflow".
const REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// What to send.
pub struct Post<'a> {
    pub uri: &'a Uri,
    /// All but Host, Authorization and Content-Length, which are added here.
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub deadline: Instant,
    /// The largest reply head accepted.
    pub max_head_bytes: usize,
    /// The largest reply body accepted.
    pub max_body_bytes: u64,
}

/// A reply, read whole; its body is in the `Reply` it was read into.
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    /// The connection may carry another request.
    pub reusable: bool,
}

/// How an exchange failed. The connection is not to be used again.
#[derive(Debug)]
pub enum Failure {
    TimedOut,
    Io(io::Error),
    /// The peer closed the connection before the reply was complete.
    Closed,
    /// The request could not be written (the URL made it invalid).
    Request(String),
    /// The reply broke HTTP/1.1.
    Protocol(String),
    /// The reply's body is longer than `max_body_bytes`.
    BodyTooLarge(u64),
}

impl From<IoFailure> for Failure {
    fn from(failure: IoFailure) -> Failure {
        match failure {
            IoFailure::TimedOut => Failure::TimedOut,
            IoFailure::Io(error) => Failure::Io(error),
        }
    }
}

impl From<ureq_proto::Error> for Failure {
    fn from(error: ureq_proto::Error) -> Failure {
        Failure::Protocol(error.to_string())
    }
}

/// Sends `post` over `connection` and reads the reply's body into `reply`.
/// `head` is a buffer kept between exchanges, for the request head.
pub fn post(
    connection: &mut Connection,
    post: &Post,
    head: &mut Vec<u8>,
    reply: &mut Reply,
) -> Result<Answer, Failure> {
    let call = send_request(connection, post, head)?;
    let (status, location, call) = receive_head(connection, post, call)?;
    let reusable = match call.proceed() {
        Some(RecvResponseResult::RecvBody(call)) => {
            let declared = match call.body_mode() {
                BodyMode::LengthDelimited(length) => Some(length),
                _ => None,
            };
            if declared.is_some_and(|length| length > post.max_body_bytes) {
                return Err(Failure::BodyTooLarge(post.max_body_bytes));
            }
            let mut body = Body {
                connection,
                call,
                deadline: post.deadline,
                limit: post.max_body_bytes,
                read: 0,
                closed: false,
                failure: None,
            };
            if let Err(error) = reply.read_body(&mut body, declared, post.max_body_bytes) {
                return Err(body.failure.take().unwrap_or(Failure::Io(error)));
            }
            body.reusable()
        }
        // No body: a 204, a 304, or a Content-Length of 0.
        Some(RecvResponseResult::Redirect(call)) => {
            reply
                .read_body(io::empty(), Some(0), 0)
                .map_err(Failure::Io)?;
            !call.must_close_connection()
        }
        Some(RecvResponseResult::Cleanup(call)) => {
            reply
                .read_body(io::empty(), Some(0), 0)
                .map_err(Failure::Io)?;
            !call.must_close_connection()
        }
        None => return Err(Failure::Protocol("no reply head".to_owned())),
    };
    Ok(Answer {
        status,
        location,
        reusable,
    })
}

fn send_request(
    connection: &mut Connection,
    post: &Post,
    head: &mut Vec<u8>,
) -> Result<Call<RecvResponse>, Failure> {
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = post.uri.clone();
    *request.headers_mut() = post.headers.clone();
    request
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(post.body.len()));
    let request_failure = |error: ureq_proto::Error| Failure::Request(error.to_string());
    let mut call = Call::new(request).map_err(request_failure)?.proceed();
    if head.len() < REQUEST_HEAD_BYTES {
        head.resize(REQUEST_HEAD_BYTES, 0);
    }
    let mut written = 0;
    while !call.can_proceed() {
        written += call.write(&mut head[written..]).map_err(request_failure)?;
    }
    let call = match call.proceed().map_err(request_failure)? {
        Some(SendRequestResult::SendBody(mut call)) => {
            // The body goes out as it is, beside the head, not through a
            // buffer.
            call.consume_direct_write(post.body.len())
                .map_err(request_failure)?;
            connection.send(&head[..written], post.body, post.deadline)?;
            call.proceed()
                .ok_or_else(|| Failure::Request("request body incomplete".to_owned()))?
        }
        // An empty body (Content-Length: 0).
        Some(SendRequestResult::RecvResponse(call)) => {
            connection.send(&head[..written], &[], post.deadline)?;
            call
        }
        // Await100 comes only after `Expect: 100-continue`, never sent.
        Some(SendRequestResult::Await100(_)) | None => {
            return Err(Failure::Request("request head incomplete".to_owned()));
        }
    };
    Ok(call)
}

type Head = (u16, Option<String>, Call<RecvResponse>);

/// Reads until the reply's head is parsed, skipping 1xx interim replies.
fn receive_head(
    connection: &mut Connection,
    post: &Post,
    mut call: Call<RecvResponse>,
) -> Result<Head, Failure> {
    loop {
        let input = connection.input();
        if !input.is_empty() {
            let too_long =
                || Failure::Protocol(format!("its headers exceed {} bytes", post.max_head_bytes));
            match call.try_response(input, false)? {
                (used, Some(response)) => {
                    if used > post.max_head_bytes {
                        return Err(too_long());
                    }
                    connection.take(used);
                    let headers = response.headers();
                    let location = headers
                        .get(LOCATION)
                        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
                    return Ok((response.status().as_u16(), location, call));
                }
                // An interim reply (1xx) was taken: the rest may be the real one.
                (used @ 1.., None) => {
                    connection.take(used);
                    continue;
                }
                (_, None) if input.len() > post.max_head_bytes => return Err(too_long()),
                (_, None) => {}
            }
        }
        if connection.fill(post.deadline)? == 0 {
            return Err(Failure::Closed);
        }
    }
}

/// The reply's body as a reader, decoded from its framing.
struct Body<'a> {
    connection: &'a mut Connection,
    call: Call<RecvBody>,
    deadline: Instant,
    limit: u64,
    read: u64,
    /// The peer has closed the connection.
    closed: bool,
    /// Why `read` failed, in full; io::Error only carries it this far.
    failure: Option<Failure>,
}

impl Body<'_> {
    fn next(&mut self, buffer: &mut [u8]) -> Result<usize, Failure> {
        let until_close = self.call.body_mode() == BodyMode::CloseDelimited;
        loop {
            if !until_close && self.call.can_proceed() {
                return Ok(0);
            }
            let input = self.connection.input();
            if !input.is_empty() {
                let (used, produced) = self.call.read(input, buffer)?;
                self.connection.take(used);
                if produced > 0 {
                    self.read += produced as u64;
                    if self.read > self.limit {
                        return Err(Failure::BodyTooLarge(self.limit));
                    }
                    return Ok(produced);
                }
                if used > 0 {
                    continue;
                }
            }
            if self.connection.is_full() {
                return Err(Failure::Protocol(
                    "a chunk size line does not fit the read buffer".to_owned(),
                ));
            }
            if self.closed {
                // A chunked body whose last chunk came before the close is
                // whole; a body that only ends at a close ends here.
                return if until_close || self.call.is_ended_chunked() {
                    Ok(0)
                } else {
                    Err(Failure::Closed)
                };
            }
            match self.connection.fill(self.deadline) {
                Ok(0) => self.closed = true,
                Ok(_) => {}
                Err(IoFailure::Io(error))
                    if matches!(
                        error.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    self.closed = true
                }
                Err(failure) => return Err(failure.into()),
            }
        }
    }

    /// Whether the connection may carry another request, once the body is
    /// read.
    fn reusable(self) -> bool {
        if self.closed {
            return false;
        }
        match self.call.proceed() {
            Some(RecvBodyResult::Redirect(call)) => !call.must_close_connection(),
            Some(RecvBodyResult::Cleanup(call)) => !call.must_close_connection(),
            None => false,
        }
    }
}

impl Read for Body<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.next(buffer).map_err(|failure| {
            self.failure = Some(failure);
            io::Error::other("the reply body could not be read")
        })
    }
}
