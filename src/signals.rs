//! SIGTERM and SIGINT: a cancelled SPCS job, `docker stop`, or Ctrl-C.
//!
//! The signals are blocked in every thread and taken by one watcher thread
//! with `sigwait`, so the stopping work (a log line, removing a half-written
//! output file) runs as ordinary code rather than in a signal handler. As PID 1
//! in a container the kernel drops SIGTERM unless the process handles it;
//! blocked signals are queued instead, so this works there too.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// What a stop must do, shared by the watcher and the job.
struct Stopping {
    /// Temporary files to remove if the job is stopped before it finishes.
    files: Vec<PathBuf>,
    /// While above 0, a stop now could leave a file half-written, or one
    /// output in place without the other: the job stops itself at a safe
    /// point instead. A count, as one deferral may hold another.
    deferred: u32,
    /// The signal of a deferred stop.
    asked: Option<i32>,
}

static STOPPING: Mutex<Stopping> = Mutex::new(Stopping {
    files: Vec::new(),
    deferred: 0,
    asked: None,
});

fn stopping() -> MutexGuard<'static, Stopping> {
    // Nothing panics while holding the lock; a poisoned one is still whole.
    STOPPING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the watcher. Call before any other thread exists, so that every
/// later thread inherits the blocked mask.
pub fn watch() {
    // SAFETY: the sigset is initialised by sigemptyset before use, and
    // pthread_sigmask only reads it.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    // If the thread cannot start, the default dispositions still end the job.
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            loop {
                let mut signal = 0;
                // SAFETY: `set` and `signal` are valid for the call.
                if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                    continue;
                }
                let (name, status) = described(signal);
                let mut state = stopping();
                // A second signal does not wait.
                if state.deferred > 0 && state.asked.is_none() {
                    state.asked = Some(signal);
                    drop(state);
                    log::warn!(
                        "Received {name}; stopping the job once the files being put in \
                         place can be removed"
                    );
                    continue;
                }
                // Under the same lock as the check: a deferral cannot begin
                // in between.
                log::warn!("Received {name}; stopping the job before it finished");
                // A file may be open for writing here: one try each, since
                // a filesystem that refuses to remove an open file would
                // refuse every try until the exit closes it.
                for path in state.files.iter() {
                    let _ = std::fs::remove_file(path);
                }
                std::process::exit(status)
            }
        });
}

/// Removes `path` if the job is stopped by a signal.
pub fn remove_on_stop(path: PathBuf) {
    stopping().files.push(path);
}

/// The job has dealt with `path` itself: a stop leaves it alone.
pub fn leave_on_stop(path: &Path) {
    // The very path registered, so its bytes match: Path's `==` would
    // compare component by component, with code of its own.
    let path = path.as_os_str();
    stopping().files.retain(|p| p.as_os_str() != path);
}

/// From now on a stop waits for the job to reach a safe point, where it
/// calls `resume_stops`; a second signal stops the job all the same.
pub fn defer_stops() {
    stopping().deferred += 1;
}

/// Whether a stop is waiting for the job.
pub fn stop_deferred() -> bool {
    stopping().asked.is_some()
}

/// Ends one deferral. When it was the last, the signal of the stop that
/// waited, if one did, for the caller to clean up after itself and call
/// `stop` with; an inner deferral leaves that to the outer one.
pub fn resume_stops() -> Option<i32> {
    let mut state = stopping();
    state.deferred = state.deferred.saturating_sub(1);
    match state.deferred {
        0 => state.asked.take(),
        _ => None,
    }
}

/// Ends the job as a deferred stop asks, at the safe point where the job
/// has closed its files: removes the files registered, exits with 128 + the
/// signal.
pub fn stop(signal: i32) -> ! {
    for path in stopping().files.iter() {
        let _ = crate::output::remove_closed(path);
    }
    std::process::exit(described(signal).1)
}

fn described(signal: i32) -> (&'static str, i32) {
    match signal {
        libc::SIGINT => ("SIGINT", 130),
        _ => ("SIGTERM", 143),
    }
}
