//! HTTP peers on 127.0.0.1 that behave, or misbehave on purpose, and what
//! they saw.

use std::collections::HashMap;
use std::env;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use miniserde::json::{self, Number, Value};

use super::job::Job;
use super::{ChildGuard, assert_success, repo_root, run_with_timeout, skip_unless_ci, wait_until};

/// A request as a test server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The rows of a row-format request, each as the array it is: `[index,
    /// value, ...]`.
    fn data_rows(&self) -> Vec<Vec<Value>> {
        let body = std::str::from_utf8(&self.body).expect("request body is UTF-8");
        let value: Value = json::from_str(body).expect("request body is JSON");
        let Value::Object(mut object) = value else {
            panic!("request is not an object: {body}")
        };
        let Some(Value::Array(rows)) = object.remove("data") else {
            panic!("request has no data array: {body}")
        };
        rows.into_iter()
            .map(|row| match row {
                Value::Array(row) if !row.is_empty() => row.into_iter().collect(),
                _ => panic!("bad request row: {body}"),
            })
            .collect()
    }

    /// The index of each row of a row-format request, whatever its columns.
    pub fn indices(&self) -> Vec<u64> {
        self.data_rows()
            .iter()
            .map(|row| match &row[0] {
                Value::Number(Number::U64(i)) => *i,
                other => panic!("bad row index: {other:?}"),
            })
            .collect()
    }

    /// The `[index, text]` rows of a row-format request.
    pub fn rows(&self) -> Vec<(u64, String)> {
        self.data_rows()
            .iter()
            .map(|row| match (&row[0], row.get(1)) {
                (Value::Number(Number::U64(i)), Some(Value::String(text))) => (*i, text.clone()),
                _ => panic!("bad request row: {row:?}"),
            })
            .collect()
    }
}

/// What a test server answers.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            body: body.into(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// The Tutorial 1 echo reply for `request`: `<name> said <text>` per row.
pub fn echo(name: &str, request: &Request) -> Reply {
    let rows: Vec<String> = request
        .rows()
        .iter()
        .map(|(i, text)| row(i, &format!("{name} said {text}")))
        .collect();
    Reply::json(200, format!("{{\"data\":[{}]}}", rows.join(",")))
}

/// One row as the service function protocol and the output file write it:
/// `[index,"text"]`, the text JSON-escaped.
pub fn row(index: impl std::fmt::Display, text: &str) -> String {
    format!("[{index},{}]", json::to_string(text))
}

/// A server that answers every request as the Tutorial 1 echo service
/// does, as `name`.
pub fn serve_echo(name: &'static str) -> Server {
    serve(move |request, _| echo(name, request))
}

/// A server that answers its first three requests as `serve_echo("Bob")`
/// does, and holds every later one for 30 s: a job stalled mid-way, with
/// its output being written.
pub fn serve_three_then_stall() -> Server {
    serve(|request, n| match n {
        0..=2 => echo("Bob", request),
        _ => Reply::json(200, "").after(Duration::from_secs(30)),
    })
}

/// Starts `job` on `input`, into `output` in batches of 10, against a
/// server of `serve_three_then_stall`, and returns it once its fourth
/// request has arrived: stalled mid-way, its output being written.
pub fn spawn_stalled(job: Job, stalling: &Server, input: &Path, output: &Path) -> Child {
    let child = job
        .env("INPUT_FILE", input)
        .env("OUTPUT_FILE", output)
        .env("BATCH_SIZE", "10")
        .spawn();
    wait_until("the job's fourth request", || {
        stalling.requests().len() >= 4
    });
    child
}

/// An HTTP/1.1 server on 127.0.0.1 that answers every request with `handler`
/// and records what it saw. Runs until the test process exits.
pub struct Server {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Request>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}/echo", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

pub fn serve<F>(handler: F) -> Server
where
    F: Fn(&Request, usize) -> Reply + Send + Sync + 'static,
{
    serve_on(TcpListener::bind("127.0.0.1:0").expect("bind"), handler)
}

pub fn serve_on<F>(listener: TcpListener, handler: F) -> Server
where
    F: Fn(&Request, usize) -> Reply + Send + Sync + 'static,
{
    let addr = listener.local_addr().expect("local addr");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let handler = Arc::new(handler);
    let (seen, count) = (Arc::clone(&requests), Arc::clone(&connections));
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let (seen, handler) = (Arc::clone(&seen), Arc::clone(&handler));
            thread::spawn(move || serve_connection(stream, &seen, &*handler));
        }
    });
    Server {
        addr,
        requests,
        connections,
    }
}

fn serve_connection(
    stream: TcpStream,
    seen: &Mutex<Vec<Request>>,
    handler: &dyn Fn(&Request, usize) -> Reply,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut writer = stream;
    while let Some(request) = read_request(&mut reader) {
        let number = {
            let mut seen = seen.lock().expect("requests lock");
            seen.push(request.clone());
            seen.len() - 1
        };
        let reply = handler(&request, number);
        thread::sleep(reply.delay);
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (name, value) in &reply.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&reply.body).is_err() {
            return;
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = HashMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// A server that runs `handler` on each raw connection, for replies no
/// well-behaved server would send.
pub fn serve_raw<F>(handler: F) -> SocketAddr
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let handler = Arc::new(handler);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handler = Arc::clone(&handler);
            thread::spawn(move || handler(stream));
        }
    });
    addr
}

/// Reads one request's head and body off a raw connection, so a raw handler
/// answers only once the job has sent everything.
pub fn read_raw_request(stream: &TcpStream) -> Option<Request> {
    read_request(&mut BufReader::new(stream.try_clone().ok()?))
}

/// A peer that reads each request, writes `reply` (raw bytes, status line
/// included) and closes the connection.
pub fn canned(reply: impl Into<Vec<u8>>) -> SocketAddr {
    let reply: Arc<Vec<u8>> = Arc::new(reply.into());
    serve_raw(move |mut stream| {
        if read_raw_request(&stream).is_some() {
            let _ = stream.write_all(&reply);
        }
    })
}

/// Like `canned`, for one connection only: the reply is let go once written,
/// so that a large one does not stay for the rest of the test process.
pub fn canned_once(reply: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        if read_raw_request(&stream).is_some() {
            let _ = stream.write_all(&reply);
        }
    });
    addr
}

/// The header line of a JSON body, for `http_reply`.
pub const JSON: &str = "Content-Type: application/json\r\n";

/// An HTTP/1.1 reply: the status line, `headers` (each ending in CRLF), a
/// Content-Length that matches `body`, and the body.
pub fn http_reply(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut reply = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(body);
    reply
}

/// Closes `stream` with a TCP RST instead of a FIN: SO_LINGER on, timeout 0.
pub fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is open for the call, and `linger` is a valid
    // `struct linger` of the size passed.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(result, 0, "setsockopt(SO_LINGER)");
    drop(stream);
}

/// A loopback address where a connect waits and then times out: a listener
/// whose queue of connections not yet accepted is already full, so the
/// kernel drops every further SYN. Keep the returned sockets alive as long
/// as the address is used.
pub fn unanswered_address() -> (SocketAddr, Vec<TcpStream>, OwnedFd) {
    let (listener, addr) = bound_socket();
    listen(&listener, 0);
    // A backlog of 0 still queues one connection; fill it, and then some.
    let mut fillers = Vec::new();
    for _ in 0..2 {
        if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(stream);
        }
    }
    (addr, fillers, listener)
}

/// A listener on [::1], the IPv6 loopback; None, after `skip_unless_ci`,
/// where the machine has none.
pub fn ipv6_loopback() -> Option<TcpListener> {
    match TcpListener::bind("[::1]:0") {
        Ok(listener) => Some(listener),
        Err(error) => {
            skip_unless_ci(&format!("an IPv6 loopback, [::1] ({error})"));
            None
        }
    }
}

/// A TCP socket bound to a free loopback port, and not listening.
fn bound_socket() -> (OwnedFd, SocketAddr) {
    // SAFETY: plain socket calls on a descriptor this function owns; the
    // address structure is fully initialised and of the size passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let socket = OwnedFd::from_raw_fd(fd);
        let mut address: libc::sockaddr_in = std::mem::zeroed();
        address.sin_family = libc::AF_INET as libc::sa_family_t;
        address.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let bound = libc::bind(fd, (&raw const address).cast(), size);
        assert_eq!(bound, 0, "bind");
        let mut length = size;
        let named = libc::getsockname(fd, (&raw mut address).cast(), &mut length);
        assert_eq!(named, 0, "getsockname");
        let port = u16::from_be(address.sin_port);
        (socket, SocketAddr::from(([127, 0, 0, 1], port)))
    }
}

fn listen(socket: &OwnedFd, backlog: i32) {
    // SAFETY: listen on a descriptor the caller owns, open for its lifetime.
    let result = unsafe { libc::listen(socket.as_raw_fd(), backlog) };
    assert_eq!(result, 0, "listen");
}

/// A loopback port where connections are refused, held for as long as this
/// lives: bound and not listening, so no other socket can take it, which a
/// port found free and released cannot promise. `listen` opens it later,
/// for a service that starts late.
pub struct ReservedPort {
    socket: OwnedFd,
    pub addr: SocketAddr,
}

impl ReservedPort {
    pub fn new() -> ReservedPort {
        let (socket, addr) = bound_socket();
        ReservedPort { socket, addr }
    }

    /// `http://127.0.0.1:PORT/echo`.
    pub fn url(&self) -> String {
        format!("http://{}/echo", self.addr)
    }

    pub fn listen(self) -> TcpListener {
        listen(&self.socket, 128);
        TcpListener::from(self.socket)
    }
}

/// The project's Rust echo server (examples/echo_service.rs), built with the
/// same profile as the tests if cargo has not built it already.
pub fn echo_service_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // The test executable lives in target/<triple>/<profile>/deps/.
        let exe = env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let path = profile_dir.join("examples/echo_service");
        if !path.exists() {
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.current_dir(repo_root())
                .args(["build", "--locked", "--example", "echo_service"]);
            if release {
                cmd.arg("--release");
            }
            let out = run_with_timeout(&mut cmd, Duration::from_secs(600));
            assert_success("cargo build --example echo_service", &out);
        }
        assert!(
            path.exists(),
            "{} missing after building it",
            path.display()
        );
        path
    })
    .clone()
}

/// A running Tutorial 1 echo service on 127.0.0.1, stopped on drop.
pub struct EchoService {
    child: Option<ChildGuard>,
    pub addr: SocketAddr,
}

impl EchoService {
    /// Starts it on `port` (0 for any free port), with CHARACTER_NAME set to
    /// `character_name` or unset for None, and waits until it says where it
    /// listens.
    pub fn start(port: u16, character_name: Option<&str>) -> EchoService {
        let mut command = Command::new(echo_service_binary());
        command
            .env("SERVER_HOST", "127.0.0.1")
            .env("SERVER_PORT", port.to_string())
            .env_remove("CHARACTER_NAME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(name) = character_name {
            command.env("CHARACTER_NAME", name);
        }
        let mut child = command.spawn().expect("start the echo service");
        let stderr = child.stderr.take().unwrap();
        let guard = ChildGuard(child);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the echo service did not say it was listening within 10 s");
        let addr: SocketAddr = line
            .strip_prefix("echo_service listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the echo service: {line}"))
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad address in the echo service's first line {line:?}"));
        assert_ne!(addr.port(), 0, "the actual port is printed");
        EchoService {
            child: Some(guard),
            addr,
        }
    }

    pub fn stop(&mut self) {
        self.child.take();
        // The port must refuse connections from here on.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(self.addr).is_ok() {
            assert!(
                Instant::now() < deadline,
                "echo service still answers after kill"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A TCP server on 127.0.0.1 that accepts connections and never answers.
/// `accepted` receives one message per accepted connection.
pub struct SilentServer {
    pub addr: SocketAddr,
    pub accepted: mpsc::Receiver<()>,
    _held: Arc<Mutex<Vec<TcpStream>>>,
}

impl SilentServer {
    pub fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let held = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let keep = Arc::clone(&held);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                keep.lock().unwrap().push(stream);
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
        SilentServer {
            addr,
            accepted: rx,
            _held: held,
        }
    }
}
