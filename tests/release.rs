//! The binary that ships, as the release link cuts it (src/unwind.rs,
//! release.ld from build.rs, src/thread_name.rs):
//!
//! - what the link kept: the same build made again with its symbols
//!   (`scripts/build --unstripped`, and `--tiny` too when TINY_IMAGE is set),
//!   read with `nm`. libunwind, std's symbolizer and musl's printf engine
//!   must be gone, and the replacements there;
//! - the shipped binaries: no unwind tables, still position-independent with
//!   RELR relocations, threads still named;
//! - a panic: a release build with the test-only `panic-trigger` feature
//!   prints the message and exits non-zero (SIGABRT), and the shipped
//!   binaries ignore the trigger.
//!
//! Needs no container engine (scripts/build gets a stand-in that never
//! answers, so it builds binaries only); needs binutils' nm and readelf.
//! Each build is a release build (the tiny ones compile std): minutes, once.

mod common;

use common::docker::*;
use common::http::{EchoService, SilentServer};
use common::*;
use std::collections::BTreeSet;
use std::env;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const PANIC_MESSAGE: &str = "deliberate test panic";

/// The tiny binaries take minutes to build: only when TINY_IMAGE asks.
fn tiny_wanted() -> bool {
    tiny_requested().unwrap_or(false)
}

/// Runs scripts/build with `args`, binaries only, and returns the binary it
/// reports.
fn build(args: &[&str]) -> PathBuf {
    let mut cmd = build_command(args);
    let _engines = without_engine(&mut cmd);
    built_binary(&run_build(&mut cmd, Duration::from_secs(1800))).0
}

fn once(cell: &'static OnceLock<PathBuf>, args: &[&str]) -> &'static Path {
    cell.get_or_init(|| build(args))
}

fn stable() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    once(&BINARY, &[])
}

fn tiny() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    once(&BINARY, &["--tiny"])
}

fn stable_unstripped() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    once(&BINARY, &["--unstripped"])
}

fn tiny_unstripped() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    once(&BINARY, &["--tiny", "--unstripped"])
}

/// The shipped binaries under test: stable, and tiny when requested.
fn shipped() -> Vec<&'static Path> {
    let mut binaries = vec![stable()];
    if tiny_wanted() {
        binaries.push(tiny());
    } else {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            loud("tiny build not requested (TINY_IMAGE unset): only the stable binary checked")
        });
    }
    binaries
}

/// The stable release build plus the `panic-trigger` feature, stripped as
/// shipped, in its own target directory.
fn with_panic_trigger() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let target = repo_root().join("target/panic-trigger");
        let out = run_with_timeout(
            Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(repo_root())
                .args(["build", "--release", "--locked", "--features"])
                .arg("panic-trigger")
                .arg("--target-dir")
                .arg(&target),
            Duration::from_secs(900),
        );
        assert_success("cargo build --release --features panic-trigger", &out);
        target.join(MUSL).join("release/service-to-service")
    })
}

/// Defined and referenced symbols: (nm's type letter, demangled name).
fn symbols(binary: &Path) -> Vec<(char, String)> {
    let out = run_with_timeout(
        Command::new("nm").arg("--demangle").arg(binary),
        Duration::from_secs(60),
    );
    assert_success("nm", &out);
    let symbols: Vec<(char, String)> = text(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "ADDRESS TYPE NAME", or "         U NAME" for undefined ones.
            let mut fields = line.split_whitespace();
            let first = fields.next()?;
            let (kind, name) = if first.len() == 1 {
                (first, fields.collect::<Vec<_>>().join(" "))
            } else {
                (fields.next()?, fields.collect::<Vec<_>>().join(" "))
            };
            Some((kind.chars().next()?, name))
        })
        .collect();
    assert!(
        symbols.len() > 500,
        "{} has only {} symbols: is it stripped?",
        binary.display(),
        symbols.len()
    );
    symbols
}

/// The names in `symbols` that belong to something the cuts removed.
fn removed_but_present(symbols: &[(char, String)]) -> Vec<String> {
    // Demangled paths of std's symbolizer crates, for example
    // `gimli::read::unit::...` or `<addr2line::Context<_>>::new`. Generic
    // code merely instantiated by them (a `RawVec<u8>` drop) is not theirs.
    const SYMBOLIZER: [&str; 5] = [
        "gimli::",
        "addr2line::",
        "miniz_oxide::",
        "rustc_demangle::",
        "std::backtrace_rs::symbolize",
    ];
    // musl's printf engine; libunwind's internals all start with __unw_ or
    // unw_.
    const MUSL: [&str; 3] = ["printf_core", "vfprintf", "fmt_fp"];
    symbols
        .iter()
        .map(|(_, name)| name)
        .filter(|name| {
            let path = name.trim_start_matches('<');
            SYMBOLIZER.iter().any(|p| path.starts_with(p))
                || MUSL.contains(&name.as_str())
                || name.starts_with("__unw_")
                || name.starts_with("unw_")
                || name.contains("libunwind::")
        })
        .cloned()
        .collect()
}

fn check_symbols(binary: &Path, ours: &[&str]) {
    let symbols = symbols(binary);
    let present = removed_but_present(&symbols);
    assert!(
        present.is_empty(),
        "{} links what the release cuts remove ({} symbols), e.g.:\n{}",
        binary.display(),
        present.len(),
        present[..present.len().min(20)].join("\n")
    );
    let defined: BTreeSet<&str> = symbols
        .iter()
        .filter(|(kind, _)| *kind == 'T')
        .map(|(_, name)| name.as_str())
        .collect();
    for name in ours {
        assert!(
            defined.contains(name),
            "{} lacks our {name} (src/thread_name.rs, src/unwind.rs)",
            binary.display()
        );
    }
}

/// The replacements the stable binary must link: std calls every one.
/// (`_Unwind_Backtrace` is there too, but inlined: it returns a constant.)
const OURS: [&str; 2] = ["pthread_setname_np", "_Unwind_Resume"];

#[test]
fn the_stable_link_keeps_none_of_what_the_cuts_remove() {
    check_symbols(stable_unstripped(), &OURS);
}

#[test]
fn the_tiny_link_keeps_none_of_what_the_cuts_remove() {
    if !tiny_wanted() {
        loud("tiny build not requested (TINY_IMAGE unset): its symbols not checked");
        return;
    }
    // Tiny's std is built to abort: it has no landing pads to resume from.
    check_symbols(tiny_unstripped(), &OURS[..1]);
}

#[test]
fn the_cut_symbols_checks_would_see_libunwind_and_musls_printf() {
    // The check itself, on names as nm prints them before the cuts.
    let before = [
        ('t', "__unw_step".to_string()),
        ('t', "gimli::read::unit::parse_attribute".to_string()),
        ('t', "<addr2line::Context<_>>::find_frames".to_string()),
        ('t', "fmt_fp".to_string()),
        ('t', "printf_core".to_string()),
        (
            't',
            "<alloc::raw_vec::RawVec<u8> as core::ops::drop::Drop>::drop".to_string(),
        ),
    ];
    assert_eq!(removed_but_present(&before).len(), 5);
}

/// Section names and the ELF type line, from readelf.
fn elf_facts(binary: &Path) -> (BTreeSet<String>, String) {
    let out = run_with_timeout(
        Command::new("readelf").args(["-h", "-S", "-W"]).arg(binary),
        Duration::from_secs(60),
    );
    assert_success("readelf", &out);
    let report = text(&out.stdout);
    let sections = report
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("] ")?;
            rest.split_whitespace().next().map(str::to_string)
        })
        .collect();
    let kind = report
        .lines()
        .find(|line| line.trim_start().starts_with("Type:"))
        .unwrap_or_default()
        .to_string();
    (sections, kind)
}

#[test]
fn shipped_binaries_have_no_unwind_tables_and_stay_pie_with_relr() {
    for binary in shipped() {
        let (sections, kind) = elf_facts(binary);
        for gone in [".eh_frame", ".eh_frame_hdr", ".gcc_except_table"] {
            assert!(!sections.contains(gone), "{} has {gone}", binary.display());
        }
        assert!(
            kind.contains("DYN"),
            "{} is not position-independent: {kind}",
            binary.display()
        );
        assert!(
            sections.contains(".relr.dyn"),
            "{} has no RELR relocations: {sections:?}",
            binary.display()
        );
    }
}

#[test]
fn shipped_binaries_still_name_their_threads() {
    for binary in shipped() {
        let server = SilentServer::start();
        let mut child = ChildGuard(
            Command::new(binary)
                .env_clear()
                .env("SERVICE_URL", format!("http://{}/echo", server.addr))
                .env("REQUEST_TIMEOUT", "30s")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the job"),
        );
        server
            .accepted
            .recv_timeout(Duration::from_secs(10))
            .expect("the job did not connect");
        // A thread names itself once it first runs, which on a loaded
        // machine may come after the job has connected.
        let tasks = PathBuf::from(format!("/proc/{}/task", child.0.id()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let names: BTreeSet<String> = fs::read_dir(&tasks)
                .expect("read the job's tasks")
                .flatten()
                .filter_map(|task| fs::read_to_string(task.path().join("comm")).ok())
                .map(|name| name.trim_end().to_string())
                .collect();
            if names.contains("signals") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no thread named 'signals' among {names:?}",
                binary.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.0.kill();
    }
}

#[test]
fn a_panic_prints_its_message_and_exits_non_zero() {
    let binary = with_panic_trigger();
    for backtrace in ["0", "1"] {
        let started = Instant::now();
        let out = run_with_timeout(
            Command::new(binary)
                .env_clear()
                .env("SERVICE_URL", "http://127.0.0.1:9/echo")
                .env("RUST_BACKTRACE", backtrace)
                .env("S2S_TEST_PANIC", PANIC_MESSAGE),
            Duration::from_secs(30),
        );
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "a panic exited 0:\n{stderr}");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "panic=abort ends the process with SIGABRT:\n{stderr}"
        );
        assert!(
            stderr.contains("panicked at src/main.rs") && stderr.contains(PANIC_MESSAGE),
            "no panic message:\n{stderr}"
        );
        if backtrace == "1" {
            // The backtrace has a header and no frames: README says so.
            let after = stderr.split("stack backtrace:\n").nth(1);
            let after = after.unwrap_or_else(|| panic!("no backtrace header:\n{stderr}"));
            assert!(
                !after.trim_start().starts_with("0:"),
                "frames came back:\n{stderr}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

#[test]
fn shipped_binaries_ignore_the_panic_trigger() {
    let echo = EchoService::start(0, Some("Bob"));
    for binary in shipped() {
        let out = run_with_timeout(
            Command::new(binary)
                .env_clear()
                .env("SERVICE_URL", format!("http://{}/echo", echo.addr))
                .env("S2S_TEST_PANIC", PANIC_MESSAGE),
            Duration::from_secs(30),
        );
        assert_success(&format!("{} with S2S_TEST_PANIC", binary.display()), &out);
        assert!(
            text(&out.stdout).contains("Bob said Hello"),
            "{}",
            text(&out.stdout)
        );
        assert!(!text(&out.stderr).contains("panicked"));
    }
}
