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
use std::io::Write;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

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
