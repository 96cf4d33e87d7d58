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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the target directory, removed by nobody: tests
/// inspect what the job left behind.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
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

/// Skips a test that needs something this machine lacks: fails under
/// `CI=true`, where everything must be there, and otherwise says so in one
/// line that the test harness does not capture.
pub fn skip_unless_ci(what: &str) {
    use std::io::Write;
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} is required under CI=true"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what} is not available here");
}
