//! The job under test as a process: started with a clean environment, run
//! to its end, and its output read back as log records.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{drain, skip_unless_ci, succeeds, text};

/// The binary the suites drive: the one `S2S_BINARY` names, so that
/// `scripts/test` can run them again against the release and tiny builds
/// that ship, else the one cargo built for this test run.
pub fn binary() -> PathBuf {
    match std::env::var_os("S2S_BINARY").filter(|path| !path.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "S2S_BINARY={} is not a file",
                path.display()
            );
            path
        }
        None => PathBuf::from(env!("CARGO_BIN_EXE_service-to-service")),
    }
}

/// Whether the suites run against a binary that ships (`S2S_BINARY`), built
/// without the trace level: its `trace!` calls, ureq's among them, are
/// compiled out (log's `release_max_level_debug`), so RUST_LOG=trace shows
/// what debug does.
pub fn shipped() -> bool {
    std::env::var_os("S2S_BINARY").is_some_and(|path| !path.is_empty())
}

/// The job as a process, with a clean environment except what a test sets.
pub struct Job {
    command: Command,
}

pub fn job(service_url: &str) -> Job {
    let mut command = Command::new(binary());
    command
        .env_clear()
        .env("SERVICE_URL", service_url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Job { command }
}

/// The job in a private mount namespace where `source` is bind-mounted over
/// `target`, to give it a different world without touching the machine's.
/// `None`, after a skip line, where that needs root this process lacks.
pub fn job_with_bind_mount(service_url: &str, source: &Path, target: &Path) -> Option<Job> {
    if !can_unshare_mounts() {
        skip_unless_ci("`unshare -m` (root)");
        return None;
    }
    let script = format!(
        "mount --bind '{}' '{}' && exec '{}'",
        source.display(),
        target.display(),
        binary().display()
    );
    let mut command = Command::new("unshare");
    command
        .args(["-m", "sh", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .env("SERVICE_URL", service_url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Some(Job { command })
}

/// The job as PID 1 of a PID namespace of its own, as in every container:
/// `unshare --pid --fork --kill-child`, which passes its exit status back,
/// and a SIGKILL of it on to the job. `None`, after a skip line, where that
/// needs root this process lacks.
pub fn job_as_pid_1(service_url: &str) -> Option<Job> {
    if !succeeds("unshare", &["--pid", "--fork", "--kill-child", "true"]) {
        skip_unless_ci("`unshare --pid --fork` (root)");
        return None;
    }
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--kill-child"])
        .arg(binary())
        .env_clear()
        .env("SERVICE_URL", service_url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Some(Job { command })
}

/// The job with `resolv_conf` over its /etc/resolv.conf, to meet DNS as a
/// test sets it up; as `job_with_bind_mount`.
pub fn job_with_resolv_conf(service_url: &str, resolv_conf: &Path) -> Option<Job> {
    job_with_bind_mount(service_url, resolv_conf, Path::new("/etc/resolv.conf"))
}

impl Job {
    pub fn env(mut self, name: &str, value: impl AsRef<std::ffi::OsStr>) -> Job {
        self.command.env(name, value);
        self
    }

    pub fn arg(mut self, arg: &str) -> Job {
        self.command.arg(arg);
        self
    }

    pub fn stdin_bytes(self, bytes: Vec<u8>) -> Outcome {
        let mut job = self;
        job.command.stdin(Stdio::piped());
        let mut child = job.spawn();
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
        let outcome = finish(child, Instant::now());
        writer.join().expect("stdin writer");
        outcome
    }

    pub fn spawn(mut self) -> Child {
        self.command.spawn().expect("start the job binary")
    }

    pub fn run(self) -> Outcome {
        let started = Instant::now();
        let child = { self }.spawn();
        finish(child, started)
    }

    /// Runs the job to the end and also returns its own peak RSS in KiB.
    ///
    /// `finish_with_peak_rss` reports an upper bound: the kernel starts a
    /// process's peak from that of the address space it replaced at exec,
    /// which for a spawned child is the test process's. Here the job is
    /// traced instead, stopped as it exits (while its memory still exists),
    /// and its peak read from /proc (VmHWM). Where tracing is not allowed,
    /// this falls back to the upper bound.
    pub fn run_with_rss(self) -> (Outcome, u64) {
        let (outcome, usage) = self.run_with_usage();
        (outcome, usage.peak_rss_kib)
    }

    /// Runs the job to the end as `run_with_rss` does, and also returns the
    /// CPU time it used.
    pub fn run_with_usage(mut self) -> (Outcome, Usage) {
        // SAFETY: ptrace is async-signal-safe; nothing is allocated between
        // fork and exec.
        unsafe {
            self.command.pre_exec(|| {
                libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child = { self }.spawn();
        // Drain the pipes first: a job blocked on a full pipe never exits.
        let output = read_output(&mut child);
        let peak = trace_to_exit(child.id() as libc::pid_t);
        let (outcome, usage) = wait_with_usage(child, output, started);
        let usage = Usage {
            peak_rss_kib: peak.unwrap_or(usage.peak_rss_kib),
            ..usage
        };
        (outcome, usage)
    }

    /// Makes the kernel stop the job once it has used `seconds` of CPU
    /// (RLIMIT_CPU: SIGXCPU, then SIGKILL a second later), so that a job
    /// that would spin for minutes ends a test in seconds.
    pub fn cpu_limit(mut self, seconds: u64) -> Job {
        let limit = libc::rlimit {
            rlim_cur: seconds,
            rlim_max: seconds + 1,
        };
        // SAFETY: setrlimit is async-signal-safe, and `limit` is a valid
        // rlimit copied into the closure; nothing is allocated between fork
        // and exec.
        unsafe {
            self.command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_CPU, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        self
    }
}

/// What a finished job used, by the kernel's count.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Peak RSS in KiB: the job's own from `Job::run_with_usage`, an upper
    /// bound from `finish_with_peak_rss` (see there).
    pub peak_rss_kib: u64,
    /// CPU time, user and system, of the job's process and all its threads.
    pub cpu: Duration,
}

/// What a finished job did.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

pub fn finish(child: Child, started: Instant) -> Outcome {
    let output = child.wait_with_output().expect("wait for the job");
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

impl Outcome {
    /// Messages of the log lines at `level`, with the prefix checked and removed.
    pub fn lines(&self, level: &str) -> Vec<String> {
        self.stdout
            .lines()
            .filter_map(parse_log_line)
            .filter(|(l, _)| *l == level)
            .map(|(_, message)| message.to_owned())
            .collect()
    }

    /// The INFO lines after the first, which names the run's query id (and
    /// is checked to): for the tutorial's one row, its `Calling` and
    /// `Received` lines.
    pub fn tutorial_lines(&self) -> Vec<String> {
        let mut info = self.lines("INFO");
        assert!(
            info.first()
                .is_some_and(|line| line.starts_with("Query id ")),
            "the first INFO line does not name the query id:\n{self}"
        );
        info.remove(0);
        info
    }

    /// Whether a log line at `level` contains `needle`.
    pub fn logged(&self, level: &str, needle: &str) -> bool {
        self.lines(level).iter().any(|line| line.contains(needle))
    }

    pub fn errors(&self) -> Vec<String> {
        self.lines("ERROR")
    }

    /// The one ERROR line; fails the test unless there is exactly one.
    pub fn error(&self) -> String {
        let errors = self.errors();
        assert_eq!(errors.len(), 1, "expected exactly one ERROR line:\n{self}");
        errors.into_iter().next().unwrap_or_default()
    }

    /// Asserts the exit code, exactly one ERROR line containing `needle`, and
    /// that nothing panicked.
    pub fn assert_fails(&self, code: i32, needle: &str) {
        assert_eq!(self.code, Some(code), "exit code:\n{self}");
        let error = self.error();
        assert!(
            error.contains(needle),
            "ERROR line lacks {needle:?}:\n{self}"
        );
        self.assert_no_panic();
    }

    pub fn assert_no_panic(&self) {
        for text in [&self.stdout, &self.stderr] {
            assert!(
                !text.contains("panicked"),
                "a panic reached the output:\n{self}"
            );
        }
    }

    pub fn assert_every_line_is_a_log_record(&self) {
        log_records(&self.stdout);
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Splits `service-to-service [2023-04-29 21:52:09,208] [INFO] message`, checking
/// the timestamp's shape digit by digit.
pub fn parse_log_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("service-to-service [")?;
    let (timestamp, rest) = rest.split_at_checked(23)?;
    let shape = "dddd-dd-dd dd:dd:dd,ddd";
    let matches = timestamp.bytes().zip(shape.bytes()).all(|(t, s)| {
        if s == b'd' {
            t.is_ascii_digit()
        } else {
            t == s
        }
    });
    if !matches {
        return None;
    }
    let rest = rest.strip_prefix("] [")?;
    let (level, message) = rest.split_once("] ")?;
    ["ERROR", "WARNING", "INFO", "DEBUG", "TRACE"]
        .contains(&level)
        .then_some((level, message))
}

/// Every line of `text` as a log record, (level, message); fails the test
/// at the first line that is not one.
pub fn log_records(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .map(|line| parse_log_line(line).unwrap_or_else(|| panic!("not a log record: {line:?}")))
        .collect()
}

/// Replaces each log line's timestamp with a fixed one, for comparisons.
pub fn without_timestamps(s: &str) -> String {
    s.lines()
        .map(|line| match line.strip_prefix("service-to-service [") {
            Some(rest) if rest.len() > 24 && &rest[23..25] == "] " => {
                format!("service-to-service [TIME]{}", &rest[24..])
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes the job's input file, `input.txt` in `dir`, and returns its path.
pub fn write_input(dir: &Path, text: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join("input.txt");
    std::fs::write(&path, text).expect("write input");
    path
}

/// Sends `signal` to a child process.
pub fn send_signal(child: &Child, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    let result = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(result, 0, "kill failed");
}

/// Waits for `child` and returns its outcome with its peak RSS in KiB, from
/// the kernel's accounting for that one process. An upper bound: the kernel
/// counts the peak of the address space replaced at exec, here the test
/// process's, so a big test process inflates it; `Job::run_with_rss`
/// measures the job's own.
pub fn finish_with_peak_rss(child: Child, started: Instant) -> (Outcome, u64) {
    let mut child = child;
    let output = read_output(&mut child);
    let (outcome, usage) = wait_with_usage(child, output, started);
    (outcome, usage.peak_rss_kib)
}

type OutputReaders = (thread::JoinHandle<Vec<u8>>, thread::JoinHandle<Vec<u8>>);

/// Threads that read a child's stdout and stderr to their end.
fn read_output(child: &mut Child) -> OutputReaders {
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    (drain(stdout), drain(stderr))
}

/// Reaps `child` with wait4, which also gives what the kernel counted for it.
fn wait_with_usage(child: Child, (out, err): OutputReaders, started: Instant) -> (Outcome, Usage) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data, zeroed and filled by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for this test's own child; both pointers are valid.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let outcome = Outcome {
        code,
        stdout: text(&out.join().unwrap_or_default()),
        stderr: text(&err.join().unwrap_or_default()),
        elapsed: started.elapsed(),
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    let usage = Usage {
        peak_rss_kib: usage.ru_maxrss as u64,
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
    };
    (outcome, usage)
}

/// Follows a child that asked to be traced (PTRACE_TRACEME) until it is
/// about to exit, and returns its peak RSS (VmHWM) in KiB read at that
/// moment. Leaves the child running to its end, to be reaped by the caller.
/// None if the child was not traced. Must run on the thread that spawned it.
fn trace_to_exit(pid: libc::pid_t) -> Option<u64> {
    let wait = || {
        let mut status = 0;
        // SAFETY: waits for one child; __WALL also sees a traced child's stops.
        let waited = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        (waited == pid).then_some(status)
    };
    let resume = |signal: i32| {
        // SAFETY: the child is in a ptrace stop.
        unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, signal) };
    };
    // A traced child stops with SIGTRAP at its exec; untraced, it would
    // only be seen here once it has exited, so peek without reaping first.
    // SAFETY: siginfo_t is plain data, and all zeroes is a valid one.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is valid for writing; WNOWAIT leaves the child as it is.
    let peeked = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WSTOPPED | libc::WNOWAIT | libc::__WALL,
        )
    };
    if peeked != 0
        || info.si_code != libc::CLD_TRAPPED
        // SAFETY: si_status is set for the stops and exits waitid reports.
        || unsafe { info.si_status() } != libc::SIGTRAP
    {
        return None;
    }
    wait()?;
    // SAFETY: the child is in its exec stop.
    unsafe {
        libc::ptrace(
            libc::PTRACE_SETOPTIONS,
            pid,
            0,
            libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL,
        )
    };
    resume(0);
    loop {
        let status = wait()?;
        if !libc::WIFSTOPPED(status) {
            // Ended without an exit stop; the caller can no longer reap it
            // either, so report nothing and let the caller see the error.
            return None;
        }
        if status >> 8 == libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8) {
            let peak = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|status| {
                    status
                        .lines()
                        .find_map(|line| line.strip_prefix("VmHWM:"))
                        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
                });
            // SAFETY: the child is in its exit stop; detaching lets it end.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
            return peak;
        }
        // Any other stop is a signal on its way in: deliver it.
        resume(libc::WSTOPSIG(status));
    }
}

/// Whether a private mount namespace can be made (`unshare -m`, as root).
pub fn can_unshare_mounts() -> bool {
    succeeds("unshare", &["-m", "true"])
}
