//! Secrets stay out of the output. SPCS mounts an OAuth token at
//! /snowflake/session/token and sets SNOWFLAKE_* variables; a specification
//! may pass more secrets as environment variables. The job never reads the
//! token and no log line prints the environment, at any level, on any path.
//!
//! Each job here runs chrooted into a directory that holds only the static
//! binary and /snowflake/session/token, as in the FROM scratch image, with
//! the environment full of secrets, at RUST_LOG=trace; the test fails if any
//! secret reaches stdout or stderr, or if the token file was read at all.

mod common;

use std::fs::{File, FileTimes};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::http::*;
use common::job::*;
use common::*;

const TOKEN: &str = "ver:1-hint:4242-ETMsDgAAAZSECRETTOKENCONTENTS0000";

/// Secret values in the environment, as a specification's `secrets:` or
/// SPCS itself would set them.
const SECRET_VARIABLES: &[(&str, &str)] = &[
    ("SNOWFLAKE_PASSWORD", "pw-SECRETENVVALUE-1"),
    ("SNOWFLAKE_TOKEN", "tok-SECRETENVVALUE-2"),
    ("API_KEY", "key-SECRETENVVALUE-3"),
    (
        "HTTP_PROXY",
        "http://proxyuser:SECRETENVVALUE-4@127.0.0.1:9/",
    ),
    (
        "http_proxy",
        "http://proxyuser:SECRETENVVALUE-5@127.0.0.1:9/",
    ),
];

/// Harmless SPCS variables whose values are also never printed (they are
/// not secret, but seeing one would mean the environment is being logged).
const SPCS_VARIABLES: &[(&str, &str)] = &[
    ("SNOWFLAKE_ACCOUNT", "ENVVALUE-ACCOUNT-XY12345"),
    ("SNOWFLAKE_HOST", "envvalue-host.snowflakecomputing.example"),
    ("SNOWFLAKE_SERVICE_NAME", "ENVVALUE-SERVICE-NAME"),
    ("HOSTNAME", "envvalue-hostname-0"),
];

/// A root directory for the job: the binary and the token, nothing else.
/// The token's access time is set far in the past, so that reading it
/// shows (relatime updates an access time older than the change time).
struct Jail {
    root: TempDir,
    token: PathBuf,
}

impl Jail {
    fn new() -> Jail {
        let root = TempDir::new("jail");
        std::fs::copy(binary(), root.join("service-to-service")).expect("copy the binary");
        let session = root.join("snowflake/session");
        std::fs::create_dir_all(&session).expect("session dir");
        let token = session.join("token");
        std::fs::write(&token, TOKEN).expect("write token");
        set_access_time_long_ago(&token);
        Jail { root, token }
    }

    /// The job inside the jail, with every secret in its environment.
    fn job(&self, service_url: &str) -> Command {
        let mut command = Command::new("/service-to-service");
        command
            .env_clear()
            .env("SERVICE_URL", service_url)
            .env("RUST_LOG", "trace")
            .envs(SECRET_VARIABLES.iter().copied())
            .envs(SPCS_VARIABLES.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let root =
            std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes()).expect("root path");
        // SAFETY: chroot and chdir are async-signal-safe, and the path was
        // allocated before the fork.
        unsafe {
            command.pre_exec(move || {
                if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
    }

    fn token_was_read(&self) -> bool {
        access_time(&self.token) != Some(LONG_AGO)
    }
}

const LONG_AGO: SystemTime = SystemTime::UNIX_EPOCH;

fn set_access_time_long_ago(path: &Path) {
    File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_times(FileTimes::new().set_accessed(LONG_AGO)))
        .expect("set the access time");
}

fn access_time(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.accessed()).ok()
}

/// Whether this file system records reads (not mounted noatime), checked on
/// a file of its own.
fn reads_are_recorded(dir: &Path) -> bool {
    let probe = dir.join("atime-probe");
    std::fs::write(&probe, "x").expect("probe");
    set_access_time_long_ago(&probe);
    let _ = std::fs::read(&probe);
    let recorded = access_time(&probe) != Some(LONG_AGO);
    let _ = std::fs::remove_file(&probe);
    recorded
}

fn can_chroot() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn assert_no_secret(outcome: &Outcome, path: &str) {
    let secrets = std::iter::once(TOKEN)
        .chain(SECRET_VARIABLES.iter().map(|(_, v)| *v))
        .chain(SPCS_VARIABLES.iter().map(|(_, v)| *v))
        .chain(["SECRETENVVALUE", "SECRETTOKEN", "ENVVALUE"]);
    for secret in secrets {
        assert!(
            !outcome.stdout.contains(secret) && !outcome.stderr.contains(secret),
            "{path}: {secret:?} reached the output:\n{outcome}"
        );
    }
    outcome.assert_no_panic();
}

fn run(command: &mut Command) -> Outcome {
    let started = Instant::now();
    finish(command.spawn().expect("start the jailed job"), started)
}

#[test]
fn neither_the_token_nor_the_environment_ever_reaches_the_output() {
    if !can_chroot() {
        skip_unless_ci("chroot (root), to put a token at /snowflake/session/token");
        return;
    }
    let jail = Jail::new();

    // Success, at trace.
    let server = serve_echo("Bob");
    let outcome = run(&mut jail.job(&server.url()));
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert!(outcome.stdout.contains("Bob said Hello"), "{outcome}");
    // The binaries that ship have no trace level at all (log's
    // release_max_level_debug, for a goal's instructions and bytes).
    assert_eq!(
        outcome.lines("TRACE").is_empty(),
        shipped(),
        "trace is on in the debug build alone:\n{outcome}"
    );
    assert_no_secret(&outcome, "success");

    // Unreachable: retried, then 69.
    let nobody = ReservedPort::new();
    let refused = nobody.url();
    let outcome = run(jail.job(&refused).env("RETRY_DEADLINE", "300ms"));
    outcome.assert_fails(69, "connection refused");
    assert_no_secret(&outcome, "unreachable");

    // The service answers wrongly: 76.
    let wrong = serve(|_, _| Reply::json(500, "no"));
    let outcome = run(&mut jail.job(&wrong.url()));
    outcome.assert_fails(76, "HTTP 500");
    assert_no_secret(&outcome, "protocol error");

    // Bad configuration: 64, naming only the bad variable.
    let outcome = run(jail.job(&server.url()).env("REQUEST_TIMEOUT", "soon"));
    outcome.assert_fails(64, "REQUEST_TIMEOUT");
    assert_no_secret(&outcome, "bad configuration");

    // Input file missing (it would be in the jail): 66.
    let outcome = run(jail.job(&server.url()).env("INPUT_FILE", "/rows.txt"));
    outcome.assert_fails(66, "/rows.txt");
    assert_no_secret(&outcome, "no input");

    // Stopped by SIGTERM while waiting for the service.
    let (asked, request) = std::sync::mpsc::channel();
    let silent = serve_raw(move |stream| {
        let _ = asked.send(read_raw_request(&stream));
        thread::sleep(Duration::from_secs(5));
    });
    let child = jail
        .job(&format!("http://{silent}/echo"))
        .spawn()
        .expect("start");
    let _ = request.recv_timeout(Duration::from_secs(20));
    send_signal(&child, libc::SIGTERM);
    let outcome = finish(child, Instant::now());
    assert_eq!(outcome.code, Some(143), "{outcome}");
    assert_no_secret(&outcome, "SIGTERM");

    // --help and --version print no environment either.
    for argument in ["--help", "--version"] {
        let outcome = run(jail.job(&server.url()).arg(argument));
        assert_eq!(outcome.code, Some(0), "{outcome}");
        assert_no_secret(&outcome, argument);
    }

    // And the token was never even opened for reading.
    if reads_are_recorded(&jail.root) {
        assert!(
            !jail.token_was_read(),
            "the job read /snowflake/session/token"
        );
    } else {
        loud("SKIPPED: this file system does not record reads: token reads not checked");
    }
}

/// The check above can fail: a process that does read the token and print
/// it, run the same way, is caught by the same assertions.
#[test]
fn the_jail_catches_a_process_that_reads_the_token() {
    if !can_chroot() {
        skip_unless_ci("chroot (root), to put a token at /snowflake/session/token");
        return;
    }
    let jail = Jail::new();
    if !reads_are_recorded(&jail.root) {
        loud("SKIPPED: this file system does not record reads: the check of the check not run");
        return;
    }
    // Read it from outside, as the job would from inside.
    let leaked = std::fs::read_to_string(&jail.token).expect("read token");
    assert_eq!(leaked, TOKEN);
    assert!(jail.token_was_read());
    let outcome = Outcome {
        code: Some(0),
        stdout: format!("service-to-service [..] [DEBUG] token {leaked}\n"),
        stderr: String::new(),
        elapsed: Duration::ZERO,
    };
    let caught = std::panic::catch_unwind(|| assert_no_secret(&outcome, "leaky"));
    assert!(caught.is_err(), "a leaked token must fail the check");
}
