//! Helpers for the tests that drive a container engine (docker, or podman
//! with `CONTAINER_ENGINE=podman`) and the scripts around the image.
//!
//! Network rule: everything here talks to 127.0.0.1 only, and containers run
//! with `--network host` (names mapped with `--add-host`); no bridge, no
//! private-range address.

use std::env;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::{
    TempDir, assert_success, repo_root, run_with_timeout, skip_unless_ci, stdout, succeeds,
    write_executable,
};

pub const IMAGE: &str = "service_to_service:latest";
pub const TINY_IMAGE: &str = "service_to_service:tiny";
pub const MUSL: &str = "x86_64-unknown-linux-musl";

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

/// `engine args...`, which must succeed within a minute; returns stdout.
pub fn engine_ok(engine: &str, args: &[&str]) -> String {
    let out = run_with_timeout(Command::new(engine).args(args), Duration::from_secs(60));
    assert_success(&format!("{engine} {}", args.join(" ")), &out);
    stdout(&out)
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

/// The number, and what follows it, on the line that starts with `label`.
fn figure(printed: &str, label: &str) -> Option<(u64, String)> {
    let line = printed.lines().find(|l| l.starts_with(label))?;
    let rest = line[label.len()..].trim();
    let (number, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let number = number
        .parse()
        .unwrap_or_else(|_| panic!("bad number in '{line}'"));
    Some((number, tail.trim().to_string()))
}

/// scripts/build with `args`, for `run_build`.
pub fn build_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(repo_root().join("scripts/build"));
    cmd.args(args);
    cmd
}

/// Runs a `build_command` within `limit`, failing the test unless it
/// succeeds, and returns what it printed.
pub fn run_build(cmd: &mut Command, limit: Duration) -> String {
    let out = run_with_timeout(cmd, limit);
    assert_success(&format!("{cmd:?}"), &out);
    stdout(&out)
}

/// The binary scripts/build reported it built, and its size in bytes.
pub fn built_binary(printed: &str) -> (PathBuf, u64) {
    let (bytes, binary) = figure(printed, "binary bytes:")
        .unwrap_or_else(|| panic!("scripts/build printed no 'binary bytes:' line:\n{printed}"));
    (repo_root().join(binary), bytes)
}

/// Puts a `docker` and a `podman` that never answer (and say on stderr that
/// they were called) first on `cmd`'s PATH, and unsets CONTAINER_ENGINE:
/// scripts/build then builds the binary and stops before the image. Keep the
/// returned directory until `cmd` has run.
pub fn without_engine(cmd: &mut Command) -> TempDir {
    let dir = TempDir::new("no-engine");
    for engine in ["docker", "podman"] {
        write_executable(
            &dir.join(engine),
            "#!/bin/sh\necho \"engine stand-in: $*\" >&2\nexit 1\n",
        );
    }
    let path = format!("{}:{}", dir.display(), env::var("PATH").unwrap_or_default());
    cmd.env("PATH", path).env_remove("CONTAINER_ENGINE");
    dir
}

fn build_image(tiny: bool) -> Build {
    let args: &[&str] = if tiny { &["--tiny"] } else { &[] };
    // The first tiny build compiles std from source.
    let printed = run_build(&mut build_command(args), Duration::from_secs(1200));
    let (binary, binary_bytes) = built_binary(&printed);
    Build {
        tag: if tiny { TINY_IMAGE } else { IMAGE },
        binary,
        binary_bytes,
        image_bytes: figure(&printed, "image bytes:").map(|f| f.0),
        layer_gzip_bytes: figure(&printed, "compressed layer bytes:").map(|f| f.0),
    }
}

/// Builds the stable image once per test binary, through scripts/build.
pub fn stable_build() -> &'static Build {
    static BUILD: OnceLock<Build> = OnceLock::new();
    BUILD.get_or_init(|| build_image(false))
}

/// Builds the tiny image once per test binary, through scripts/build --tiny.
pub fn tiny_build() -> &'static Build {
    static BUILD: OnceLock<Build> = OnceLock::new();
    BUILD.get_or_init(|| build_image(true))
}

/// What TINY_IMAGE asks for: the tiny build too when set to anything but
/// "0", not when "0", and None when unset, for each suite to decide.
pub fn tiny_requested() -> Option<bool> {
    env::var("TINY_IMAGE")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v != "0")
}

/// The tiny image is tested when TINY_IMAGE asks for it, or, unset, when a
/// tiny image already exists (it is then rebuilt from the current sources).
pub fn tiny_wanted(engine: &str) -> bool {
    tiny_requested().unwrap_or_else(|| succeeds(engine, &["image", "inspect", TINY_IMAGE]))
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

/// The tests that need the tutorial's fixed port 8000 take this lock.
pub fn port_8000() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
