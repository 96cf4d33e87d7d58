//! Shared helpers for the integration tests. Here, what suites of every kind
//! need; in the submodules, one concern each: the job binary as a process
//! (`job`), peers on 127.0.0.1 (`http`), the container engine and
//! scripts/build (`docker`), dnsmasq (`dns`), the real Snowflake CLI against
//! a fake account (`snowflake`), and job specifications (`spcs`).
//!
//! Every suite says `mod common;` and compiles the whole tree, but uses only
//! part of it: hence the one `dead_code` allowance, here, for all of it.
#![allow(dead_code)]

pub mod dns;
pub mod docker;
pub mod http;
pub mod job;
pub mod snowflake;
pub mod spcs;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The repository's root, where scripts/, spec/ and tests/ are.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

/// Bytes a program printed, as text (invalid UTF-8 shown, not refused).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn stdout(out: &Output) -> String {
    text(&out.stdout)
}

pub fn stderr(out: &Output) -> String {
    text(&out.stderr)
}

/// Panics with the command's output unless it succeeded.
pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// Asserts that a program's `--help` names each of `words`.
pub fn assert_help_mentions(help: &str, words: &[&str]) {
    for word in words {
        assert!(help.contains(word), "--help does not mention {word}");
    }
}

/// Writes `script` to `path` as an executable: the stand-ins tests put on
/// PATH in place of docker, podman or snow.
pub fn write_executable(path: &Path, script: &str) {
    std::fs::write(path, script).expect("write a stand-in");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("make a stand-in executable");
}

/// Kills and reaps a child process on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh directory under the target directory, for what a test and the
/// job write. Removed on drop, unless the test is failing: what it left is
/// then there to look at.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        // A process id is reused: an earlier failing run may have left one.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<OsStr> for TempDir {
    fn as_ref(&self) -> &OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The lines of the file at `path`; fails the test if it cannot be read.
pub fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Asserts that `actual` is `expected`, naming the first line that differs
/// rather than printing both whole (an output can have a million lines).
pub fn assert_lines(actual: &[String], expected: &[String]) {
    if let Some(at) = actual.iter().zip(expected).position(|(a, e)| a != e) {
        panic!("line {at} is {:?}, expected {:?}", actual[at], expected[at]);
    }
    assert_eq!(actual.len(), expected.len(), "lines");
}

/// Waits until `condition` holds, polling; fails the test naming `what`
/// after 20 s. What a test waits for before it acts, rather than a sleep
/// that a busy machine can outlast.
pub fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "waited 20 s for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// The names of the files in `dir`, sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Whether this is CI (`CI=true`, or `CI=1`), where every test must run.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// Writes one line straight to the process's stderr: the test harness
/// captures `eprintln!`, and a skip must be seen even when tests pass.
pub fn loud(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Skips a test that needs `what`, which this machine lacks: under CI, where
/// everything must be there, the test fails instead. Otherwise one loud line
/// says so, once per test binary for each `what`, however many tests skip.
pub fn skip_unless_ci(what: &str) {
    assert!(
        !in_ci(),
        "CI=true, and this test needs {what}, which is missing"
    );
    static SAID: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let first = SAID
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(what.to_owned());
    if first {
        loud(&format!(
            "!!!!! SKIPPED: tests that need {what}, missing here (with CI=true this fails) !!!!!"
        ));
    }
}

/// Whether `program args` runs and exits 0, its output discarded: the probe
/// for a tool that a test needs.
pub fn succeeds(program: impl AsRef<OsStr>, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
