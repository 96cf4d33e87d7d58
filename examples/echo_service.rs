//! The project's own echo service, following the contract of Snowpark
//! Container Services Tutorial 1, so that the job can be demonstrated and
//! benchmarked without Python.
//!
//! * `POST /echo` takes `{"data": [[i, text], ...]}` and answers
//!   `{"data": [[i, "<CHARACTER_NAME> said <text>"], ...]}`
//!   (`application/json`). A string `text` is used verbatim, any other JSON
//!   value as its compact JSON. A body whose `data` is missing, `null` or
//!   empty gets `{}`.
//! * `GET /healthcheck` answers `I'm ready!`.
//! * Anything else: 404 (unknown path), 405 (wrong method), 400 (bad request).
//!
//! Environment: `SERVER_HOST` (default `127.0.0.1`), `SERVER_PORT` (default
//! `8080`; `0` binds an ephemeral port), `CHARACTER_NAME` (default `I`).
//!
//! A service of limited capacity, for `scripts/bench`'s concurrency section:
//! `ECHO_SLOTS=K` serves at most K `POST /echo` at once, each taking
//! `ECHO_LATENCY_MS` (default 0) before its reply; past K it answers
//! `429 Too Many Requests` at once (`ECHO_OVERFLOW=refuse`, the default) or
//! waits for a slot, first come first served (`ECHO_OVERFLOW=queue`).
//! `ECHO_LATENCY_MS` alone delays every reply without a limit. With either
//! set, `GET /stats` answers what the service saw since it started or since
//! the last `DELETE /stats`:
//! `{"requests":N,"refused":N,"peak_in_flight":N}`, where in flight counts
//! each `POST /echo` from its head read to its reply, queued ones included.
//!
//! HTTP/1.1 with keep-alive and pipelining, `Content-Length` or chunked request
//! bodies, `Expect: 100-continue`, one thread per connection. Once bound it
//! prints exactly one line to stderr, `echo_service listening on <addr>`
//! (for example `echo_service listening on 127.0.0.1:8080`), with the address
//! actually bound, and nothing per request.
//!
//! Std only plus the crate's `miniserde`:
//! `cargo build --release --example echo_service`.

use std::env;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use miniserde::json::{self, Array, Number, Value};

/// Longest request line or header line, and the whole header block.
const MAX_HEAD_BYTES: u64 = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// Largest request body accepted (413 beyond it).
const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// An idle keep-alive connection is closed after this long without a byte.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    let host = match env_or("SERVER_HOST", "127.0.0.1") {
        Ok(host) => host,
        Err(message) => return fail(&message),
    };
    let port = match env_or("SERVER_PORT", "8080") {
        Ok(port) => match port.trim().parse::<u16>() {
            Ok(port) => port,
            Err(_) => return fail(&format!("SERVER_PORT must be 0..=65535, got {port:?}")),
        },
        Err(message) => return fail(&message),
    };
    let name: Arc<str> = match env::var("CHARACTER_NAME") {
        Ok(name) => name.into(),
        Err(env::VarError::NotPresent) => "I".into(),
        Err(env::VarError::NotUnicode(_)) => return fail("CHARACTER_NAME is not valid UTF-8"),
    };

    let capacity = match Capacity::from_env() {
        Ok(capacity) => capacity.map(Arc::new),
        Err(message) => return fail(&message),
    };

    let listener = match TcpListener::bind((host.as_str(), port)) {
        Ok(listener) => listener,
        Err(err) => return fail(&format!("cannot listen on {host}:{port}: {err}")),
    };
    match listener.local_addr() {
        Ok(addr) => eprintln!("echo_service listening on {addr}"),
        Err(err) => return fail(&format!("cannot read the bound address: {err}")),
    }

    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let name = Arc::clone(&name);
                let capacity = capacity.clone();
                // If no thread can be had, dropping the stream closes it.
                let _ = thread::Builder::new()
                    .name("connection".into())
                    .stack_size(256 * 1024)
                    .spawn(move || serve(stream, &name, capacity.as_deref()));
            }
            // Out of descriptors or memory, or an aborted handshake: go on.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A service that can do only so much at once (`ECHO_SLOTS`,
/// `ECHO_LATENCY_MS`, `ECHO_OVERFLOW`), and what it saw.
struct Capacity {
    /// 0: no limit.
    slots: u64,
    latency: Duration,
    queue: bool,
    state: Mutex<Seen>,
    freed: Condvar,
}

#[derive(Default)]
struct Seen {
    requests: u64,
    refused: u64,
    in_flight: u64,
    peak_in_flight: u64,
    /// Tickets handed out to requests that hold or wait for a slot, and
    /// those served: ticket t may go once `done + slots > t`.
    tickets: u64,
    done: u64,
}

impl Capacity {
    fn from_env() -> Result<Option<Capacity>, String> {
        let number = |key: &str| -> Result<u64, String> {
            let text = env_or(key, "0")?;
            text.parse()
                .map_err(|_| format!("{key} must be a whole number, got {text:?}"))
        };
        let slots = number("ECHO_SLOTS")?;
        let latency = Duration::from_millis(number("ECHO_LATENCY_MS")?);
        let queue = match env_or("ECHO_OVERFLOW", "refuse")?.as_str() {
            "refuse" => false,
            "queue" => true,
            other => {
                return Err(format!(
                    "ECHO_OVERFLOW must be refuse or queue, got {other:?}"
                ));
            }
        };
        if slots == 0 && latency.is_zero() {
            return Ok(None);
        }
        Ok(Some(Capacity {
            slots,
            latency,
            queue,
            state: Mutex::new(Seen::default()),
            freed: Condvar::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds a slot for the request's latency; false when it is refused.
    fn serve(&self) -> bool {
        let mut seen = self.lock();
        seen.requests += 1;
        seen.in_flight += 1;
        seen.peak_in_flight = seen.peak_in_flight.max(seen.in_flight);
        let limited = self.slots > 0;
        if limited && !self.queue && seen.tickets - seen.done >= self.slots {
            seen.refused += 1;
            seen.in_flight -= 1;
            return false;
        }
        let ticket = seen.tickets;
        seen.tickets += 1;
        while limited && seen.done + self.slots <= ticket {
            seen = self.freed.wait(seen).unwrap_or_else(|e| e.into_inner());
        }
        drop(seen);
        thread::sleep(self.latency);
        let mut seen = self.lock();
        seen.done += 1;
        seen.in_flight -= 1;
        drop(seen);
        self.freed.notify_all();
        true
    }

    fn stats(&self, payload: &mut Vec<u8>) {
        let seen = self.lock();
        payload.clear();
        let _ = write!(
            payload,
            "{{\"requests\":{},\"refused\":{},\"peak_in_flight\":{}}}",
            seen.requests, seen.refused, seen.peak_in_flight
        );
    }

    fn reset(&self) {
        let mut seen = self.lock();
        seen.requests = 0;
        seen.refused = 0;
        seen.peak_in_flight = seen.in_flight;
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("echo_service: {message}");
    ExitCode::from(2)
}

/// The variable's value, or `default` when it is unset or empty.
fn env_or(key: &str, default: &str) -> Result<String, String> {
    match env::var(key) {
        Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        Ok(_) | Err(env::VarError::NotPresent) => Ok(default.to_owned()),
        Err(env::VarError::NotUnicode(_)) => Err(format!("{key} is not valid UTF-8")),
    }
}

/// A request line and the header fields that matter; the body is read into
/// the connection's reusable buffer.
struct Head {
    method: String,
    path: String,
    keep_alive: bool,
}

/// Status, type and extra header of a reply whose body is in the connection's
/// reusable payload buffer.
struct Reply {
    status: u16,
    content_type: &'static str,
    allow: Option<&'static str>,
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

impl Reply {
    fn json() -> Self {
        Reply {
            status: 200,
            content_type: JSON,
            allow: None,
        }
    }

    /// A plain-text reply: `message` goes into `payload`.
    fn text(status: u16, message: &str, payload: &mut Vec<u8>) -> Self {
        payload.clear();
        payload.extend_from_slice(message.as_bytes());
        Reply {
            status,
            content_type: TEXT,
            allow: None,
        }
    }

    fn not_allowed(allow: &'static str, payload: &mut Vec<u8>) -> Self {
        Reply {
            allow: Some(allow),
            ..Reply::text(405, "method not allowed", payload)
        }
    }
}

/// Why no request could be read.
enum ReadError {
    /// The peer went away, timed out, or broke off mid-request: just close.
    Gone,
    /// A malformed request: answer it, then close.
    Bad(u16, &'static str),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Gone
    }
}

/// Buffers kept for the life of a connection, so that a request allocates
/// little (musl's allocator is slow, and the example builds for musl).
#[derive(Default)]
struct Buffers {
    line: Vec<u8>,
    body: Vec<u8>,
    payload: Vec<u8>,
    wire: Vec<u8>,
}

fn serve(stream: TcpStream, name: &str, capacity: Option<&Capacity>) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut buffers = Buffers::default();
    loop {
        let head = match read_request(&mut reader, &mut writer, &mut buffers) {
            Ok(Some(head)) => head,
            Ok(None) | Err(ReadError::Gone) => return,
            Err(ReadError::Bad(status, message)) => {
                let reply = Reply::text(status, message, &mut buffers.payload);
                if write_reply(&mut writer, &reply, false, false, &mut buffers).is_ok() {
                    linger(reader, &writer);
                }
                return;
            }
        };
        let reply = route(&head, name, &buffers.body, &mut buffers.payload, capacity);
        let head_only = head.method == "HEAD";
        if write_reply(
            &mut writer,
            &reply,
            head.keep_alive,
            head_only,
            &mut buffers,
        )
        .is_err()
            || !head.keep_alive
        {
            return;
        }
        // Let a connection that once carried a huge body give the memory back.
        for buffer in [&mut buffers.body, &mut buffers.payload, &mut buffers.wire] {
            if buffer.capacity() > 4 << 20 {
                *buffer = Vec::new();
            }
        }
    }
}

/// Closes gracefully after an error reply that left request bytes unread:
/// closing with unread input would reset the connection, and the client could
/// lose the reply. Half-close, then discard input for a bounded time.
fn linger(mut reader: BufReader<TcpStream>, writer: &TcpStream) {
    let _ = writer.shutdown(Shutdown::Write);
    let _ = writer.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = io::copy(&mut reader.by_ref().take(1 << 20), &mut io::sink());
}

fn route(
    head: &Head,
    name: &str,
    body: &[u8],
    payload: &mut Vec<u8>,
    capacity: Option<&Capacity>,
) -> Reply {
    let path = head.path.split('?').next().unwrap_or("");
    match (path, head.method.as_str(), capacity) {
        ("/echo", "POST", Some(capacity)) if !capacity.serve() => {
            Reply::text(429, "too many requests at once", payload)
        }
        ("/stats", "GET", Some(capacity)) => {
            capacity.stats(payload);
            Reply::json()
        }
        ("/stats", "DELETE", Some(capacity)) => {
            capacity.reset();
            Reply::text(200, "reset", payload)
        }
        _ => route_unlimited(head, path, name, body, payload),
    }
}

fn route_unlimited(
    head: &Head,
    path: &str,
    name: &str,
    body: &[u8],
    payload: &mut Vec<u8>,
) -> Reply {
    match (path, head.method.as_str()) {
        ("/echo", "POST") => match echo(body, name, payload) {
            Ok(()) => Reply::json(),
            Err(message) => Reply::text(400, message, payload),
        },
        ("/echo", _) => Reply::not_allowed("POST", payload),
        ("/healthcheck", "GET" | "HEAD") => Reply::text(200, "I'm ready!", payload),
        ("/healthcheck", _) => Reply::not_allowed("GET, HEAD", payload),
        _ => Reply::text(404, "not found", payload),
    }
}

/// Writes the reply to a `POST /echo` body into `out`, or gives a short reason
/// for a 400.
fn echo(body: &[u8], name: &str, out: &mut Vec<u8>) -> Result<(), &'static str> {
    let text = std::str::from_utf8(body).map_err(|_| "request body is not UTF-8")?;
    let value: Value = json::from_str(text).map_err(|_| "request body is not valid JSON")?;
    let Value::Object(mut object) = value else {
        return Err("request body must be a JSON object");
    };
    let mut rows = match object.remove("data") {
        None | Some(Value::Null) => Array::new(),
        Some(Value::Array(rows)) => rows,
        Some(_) => return Err("\"data\" must be an array of rows"),
    };
    out.clear();
    if rows.is_empty() {
        out.extend_from_slice(b"{}");
        return Ok(());
    }
    out.reserve(text.len() + rows.len() * (name.len() + 8) + 16);
    out.extend_from_slice(b"{\"data\":[");
    for (n, row) in rows.drain(..).enumerate() {
        let Value::Array(row) = row else {
            return Err("each row must be an array [index, value]");
        };
        let (Some(index), Some(input)) = (row.first(), row.get(1)) else {
            return Err("each row must be an array [index, value]");
        };
        if n > 0 {
            out.push(b',');
        }
        out.push(b'[');
        push_compact(out, index);
        out.extend_from_slice(b",\"");
        push_escaped(out, name);
        out.extend_from_slice(b" said ");
        match input {
            Value::String(input) => push_escaped(out, input),
            other => push_escaped(out, &json::to_string(other)),
        }
        out.extend_from_slice(b"\"]");
    }
    out.extend_from_slice(b"]}");
    Ok(())
}

/// Appends `value` as compact JSON, without allocating for the usual index.
fn push_compact(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Number(Number::U64(n)) => {
            let _ = write!(out, "{n}");
        }
        Value::Number(Number::I64(n)) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => {
            out.push(b'"');
            push_escaped(out, s);
            out.push(b'"');
        }
        other => out.extend_from_slice(json::to_string(other).as_bytes()),
    }
}

/// Appends the JSON string escape of `s`, without the quotes, escaping exactly
/// what miniserde escapes: `"`, `\` and the control characters U+0000..U+001F.
fn push_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let short: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Reads one request; `Ok(None)` on a clean end of stream between requests.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    buffers: &mut Buffers,
) -> Result<Option<Head>, ReadError> {
    let mut budget = MAX_HEAD_BYTES;
    let Buffers { line, body, .. } = buffers;

    // Request line; blank lines before it are tolerated (RFC 9112 2.2).
    loop {
        line.clear();
        if read_line(reader, line, &mut budget)? == 0 {
            return Ok(None);
        }
        if !trim_eol(line).is_empty() {
            break;
        }
    }
    let request_line =
        std::str::from_utf8(trim_eol(line)).map_err(|_| ReadError::Bad(400, "bad request line"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(400, "bad request line"));
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(ReadError::Bad(505, "HTTP version not supported")),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) || path.is_empty() {
        return Err(ReadError::Bad(400, "bad request line"));
    }
    let method = method.to_owned();
    let path = path.to_owned();

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut keep_alive = http11;
    let mut expect_continue = false;
    let mut headers = 0;
    loop {
        line.clear();
        if read_line(reader, line, &mut budget)? == 0 {
            return Err(ReadError::Gone);
        }
        let header = trim_eol(line);
        if header.is_empty() {
            break;
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return Err(ReadError::Bad(431, "too many header fields"));
        }
        let Some(colon) = header.iter().position(|&b| b == b':') else {
            return Err(ReadError::Bad(400, "bad header line"));
        };
        let (key, value) = (&header[..colon], trim_ows(&header[colon + 1..]));
        if key.is_empty() || key.iter().any(|b| b.is_ascii_whitespace()) {
            // Also rejects obsolete line folding.
            return Err(ReadError::Bad(400, "bad header line"));
        }
        if key.eq_ignore_ascii_case(b"content-length") {
            let length = parse_decimal(value).ok_or(ReadError::Bad(400, "bad content-length"))?;
            if content_length.is_some_and(|previous| previous != length) {
                return Err(ReadError::Bad(400, "conflicting content-length"));
            }
            content_length = Some(length);
        } else if key.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only a lone `chunked` coding is supported.
            if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                return Err(ReadError::Bad(501, "unsupported transfer-encoding"));
            }
            chunked = true;
        } else if key.eq_ignore_ascii_case(b"connection") {
            for option in value.split(|&b| b == b',').map(trim_ows) {
                if option.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    keep_alive = true;
                }
            }
        } else if key.eq_ignore_ascii_case(b"expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Err(ReadError::Bad(417, "expectation failed"));
            }
            expect_continue = http11;
        }
    }
    if chunked && content_length.is_some() {
        return Err(ReadError::Bad(400, "both content-length and chunked"));
    }
    if content_length.is_some_and(|length| length > MAX_BODY_BYTES) {
        return Err(ReadError::Bad(413, "request body too large"));
    }

    let has_body = chunked || content_length.is_some_and(|length| length > 0);
    if expect_continue && has_body {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    body.clear();
    if chunked {
        read_chunked(reader, line, body)?;
    } else if let Some(length) = content_length {
        reader.by_ref().take(length).read_to_end(body)?;
        if body.len() as u64 != length {
            return Err(ReadError::Gone);
        }
    }

    Ok(Some(Head {
        method,
        path,
        keep_alive,
    }))
}

fn read_chunked(
    reader: &mut BufReader<TcpStream>,
    line: &mut Vec<u8>,
    body: &mut Vec<u8>,
) -> Result<(), ReadError> {
    // Each chunk-size line and trailer line may take up to this much.
    const LINE: u64 = 8 * 1024;
    let mut budget;
    loop {
        line.clear();
        budget = LINE;
        if read_line(reader, line, &mut budget)? == 0 {
            return Err(ReadError::Gone);
        }
        let size_field = trim_eol(line);
        let size_field = match size_field.iter().position(|&b| b == b';') {
            Some(semicolon) => &size_field[..semicolon],
            None => size_field,
        };
        let size = parse_hex(trim_ows(size_field)).ok_or(ReadError::Bad(400, "bad chunk size"))?;
        if size == 0 {
            break;
        }
        if body.len() as u64 + size > MAX_BODY_BYTES {
            return Err(ReadError::Bad(413, "request body too large"));
        }
        let before = body.len();
        reader.by_ref().take(size).read_to_end(body)?;
        if (body.len() - before) as u64 != size {
            return Err(ReadError::Gone);
        }
        line.clear();
        budget = LINE;
        if read_line(reader, line, &mut budget)? == 0 {
            return Err(ReadError::Gone);
        }
        if !trim_eol(line).is_empty() {
            return Err(ReadError::Bad(400, "bad chunk terminator"));
        }
    }
    // Trailer fields, ignored, up to the blank line.
    budget = MAX_HEAD_BYTES;
    loop {
        line.clear();
        if read_line(reader, line, &mut budget)? == 0 {
            return Err(ReadError::Gone);
        }
        if trim_eol(line).is_empty() {
            return Ok(());
        }
    }
}

/// Appends one line (with its `\n`) to `line`, charging `budget`; returns the
/// bytes read, 0 at end of stream. A line without `\n` at end of stream is
/// a broken-off request.
fn read_line(
    reader: &mut BufReader<TcpStream>,
    line: &mut Vec<u8>,
    budget: &mut u64,
) -> Result<usize, ReadError> {
    let read = reader.by_ref().take(*budget).read_until(b'\n', line)?;
    *budget -= read as u64;
    if read > 0 && line.last() != Some(&b'\n') {
        return if *budget == 0 {
            Err(ReadError::Bad(431, "request head too large"))
        } else {
            Err(ReadError::Gone)
        };
    }
    Ok(read)
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

fn write_reply(
    writer: &mut TcpStream,
    reply: &Reply,
    keep_alive: bool,
    head_only: bool,
    buffers: &mut Buffers,
) -> io::Result<()> {
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    };
    let Buffers { payload, wire, .. } = buffers;
    let out = wire;
    out.clear();
    write!(
        out,
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        reply.status,
        reply.content_type,
        payload.len()
    )?;
    if let Some(allow) = reply.allow {
        write!(out, "Allow: {allow}\r\n")?;
    }
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
    if !head_only {
        out.extend_from_slice(payload);
    }
    writer.write_all(out)?;
    writer.flush()
}
