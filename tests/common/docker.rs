//! Helpers for the tests that drive a container engine (docker, or podman
//! with `CONTAINER_ENGINE=podman`) and the scripts around the image.
//!
//! Network rule: everything here talks to 127.0.0.1 only, and containers run
//! with `--network host` (names mapped with `--add-host`); no bridge, no
//! private-range address.

use std::env;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::{skip_unless_ci, succeeds};

pub const IMAGE: &str = "service_to_service:latest";
pub const TINY_IMAGE: &str = "service_to_service:tiny";
pub const MUSL: &str = "x86_64-unknown-linux-musl";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn engine() -> String {
    env::var("CONTAINER_ENGINE")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "docker".to_string())
}

/// The engine to use, or `None` after `skip_unless_ci` when it does not
/// answer. Asked once per test binary.
pub fn require_engine() -> Option<String> {
    static ANSWERS: OnceLock<bool> = OnceLock::new();
    let engine = engine();
    if *ANSWERS.get_or_init(|| succeeds(&engine, &["info"])) {
        return Some(engine);
    }
    skip_unless_ci(&format!(
        "a container engine ('{engine} info' got no answer; start one as .ci/run does)"
    ));
    None
}

/// Runs `cmd`, failing the test if it takes longer than `limit`.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    let describe = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {describe}: {e}"));
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{describe} took longer than {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&stdout.join().unwrap()),
                String::from_utf8_lossy(&stderr.join().unwrap())
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn drain<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Panics with the command's output unless it succeeded.
pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `engine args...`, which must succeed within a minute; returns stdout.
pub fn engine_ok(engine: &str, args: &[&str]) -> String {
    let out = run_with_timeout(Command::new(engine).args(args), Duration::from_secs(60));
    assert_success(&format!("{engine} {}", args.join(" ")), &out);
    text(&out.stdout)
}

/// What `scripts/build` printed.
#[derive(Debug, Clone)]
pub struct Build {
    pub tag: &'static str,
    pub binary: PathBuf,
    pub binary_bytes: u64,
    /// None when no engine answered (scripts/build then builds the binary only).
    pub image_bytes: Option<u64>,
    pub layer_gzip_bytes: Option<u64>,
}

fn figure(stdout: &str, label: &str) -> Option<(u64, String)> {
    let line = stdout.lines().find(|l| l.starts_with(label))?;
    let rest = line[label.len()..].trim();
    let (number, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let number = number
        .parse()
        .unwrap_or_else(|_| panic!("bad number in '{line}'"));
    Some((number, tail.trim().to_string()))
}

fn run_build(tiny: bool) -> Build {
    let mut cmd = Command::new(repo_root().join("scripts/build"));
    if tiny {
        cmd.arg("--tiny");
    }
    // The first tiny build compiles std from source.
    let out = run_with_timeout(&mut cmd, Duration::from_secs(1200));
    assert_success("scripts/build", &out);
    let stdout = text(&out.stdout);
    let (binary_bytes, binary) = figure(&stdout, "binary bytes:")
        .unwrap_or_else(|| panic!("scripts/build printed no 'binary bytes:' line:\n{stdout}"));
    let image_bytes = figure(&stdout, "image bytes:").map(|f| f.0);
    let layer_gzip_bytes = figure(&stdout, "compressed layer bytes:").map(|f| f.0);
    Build {
        tag: if tiny { TINY_IMAGE } else { IMAGE },
        binary: repo_root().join(binary),
        binary_bytes,
        image_bytes,
        layer_gzip_bytes,
    }
}

/// Builds the stable image once per test binary, through scripts/build.
pub fn stable_build() -> &'static Build {
    static BUILD: OnceLock<Build> = OnceLock::new();
    BUILD.get_or_init(|| run_build(false))
}

/// Builds the tiny image once per test binary, through scripts/build --tiny.
pub fn tiny_build() -> &'static Build {
    static BUILD: OnceLock<Build> = OnceLock::new();
    BUILD.get_or_init(|| run_build(true))
}

/// The tiny image is tested when TINY_IMAGE is set (and not "0"), or when a
/// tiny image already exists (it is then rebuilt from the current sources).
pub fn tiny_wanted(engine: &str) -> bool {
    match env::var("TINY_IMAGE") {
        Ok(v) if !v.is_empty() => v != "0",
        _ => succeeds(engine, &["image", "inspect", TINY_IMAGE]),
    }
}

/// Every image under test, each freshly built: stable, plus tiny when wanted.
pub fn builds(engine: &str) -> Vec<&'static Build> {
    let mut builds = vec![stable_build()];
    if tiny_wanted(engine) {
        builds.push(tiny_build());
    }
    builds
}

/// A unique name for containers made by the tests.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "s2s-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes the named container on drop, whatever the test did.
pub struct ContainerGuard {
    pub engine: String,
    pub name: String,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = Command::new(&self.engine)
            .args(["rm", "-f", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Kills and reaps a child process on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The tests that need the tutorial's fixed port 8000 take this lock.
pub fn port_8000() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
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
    /// Starts it on `port` (0 for any free port) and waits until it listens.
    pub fn start(port: u16, character_name: &str) -> EchoService {
        let mut child = Command::new(echo_service_binary())
            .env("SERVER_HOST", "127.0.0.1")
            .env("SERVER_PORT", port.to_string())
            .env("CHARACTER_NAME", character_name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the echo service");
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
        let addr = line
            .strip_prefix("echo_service listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the echo service: {line}"))
            .trim()
            .parse()
            .unwrap();
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

/// A one-response HTTP server on 127.0.0.1: every request, whatever it is,
/// gets `response` (raw bytes, status line included) and the connection is
/// closed. Runs until the test process ends.
pub fn canned_http_server(response: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let response = Arc::new(response);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let response = Arc::clone(&response);
            thread::spawn(move || {
                let _ = read_request(&mut stream);
                let _ = stream.write_all(&response);
                let _ = stream.flush();
            });
        }
    });
    addr
}

/// Reads one HTTP/1.1 request (head and Content-Length body).
fn read_request(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)
}

/// An HTTP response with the given status line and body.
pub fn http_response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}
