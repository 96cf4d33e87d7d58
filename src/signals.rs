//! SIGTERM and SIGINT: a cancelled SPCS job, `docker stop`, or Ctrl-C.
//!
//! The signals are blocked in every thread and taken by one watcher thread
//! with `sigwait`, so the stopping work (a log line, removing a half-written
//! output file) runs as ordinary code rather than in a signal handler. As PID 1
//! in a container the kernel drops SIGTERM unless the process handles it;
//! blocked signals are queued instead, so this works there too.

use std::path::PathBuf;
use std::sync::Mutex;

/// Temporary files to remove if the job is stopped before it finishes.
static FILES_TO_REMOVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

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
            let mut signal = 0;
            // SAFETY: `set` and `signal` are valid for the call.
            while unsafe { libc::sigwait(&set, &mut signal) } != 0 {}
            stop(signal)
        });
}

/// Removes `path` if the job is stopped by a signal.
pub fn remove_on_stop(path: PathBuf) {
    if let Ok(mut files) = FILES_TO_REMOVE.lock() {
        files.push(path);
    }
}

/// The job has dealt with `path` itself: a stop leaves it alone.
pub fn leave_on_stop(path: &PathBuf) {
    if let Ok(mut files) = FILES_TO_REMOVE.lock() {
        files.retain(|p| p != path);
    }
}

fn stop(signal: i32) -> ! {
    let (name, status) = match signal {
        libc::SIGINT => ("SIGINT", 130),
        _ => ("SIGTERM", 143),
    };
    log::warn!("Received {name}; stopping the job before it finished");
    if let Ok(files) = FILES_TO_REMOVE.lock() {
        for path in files.iter() {
            let _ = std::fs::remove_file(path);
        }
    }
    std::process::exit(status)
}
