//! Thread names, set without musl's printf engine.
//!
//! std names each thread it starts by calling `pthread_setname_np` on that
//! thread itself. musl's version can also rename other threads, through a
//! `/proc/self/task/<tid>/comm` path that it formats with `snprintf`, and so
//! links all of `vfprintf` for a job that never prints with it. This one
//! renames only the calling thread, with `prctl(PR_SET_NAME)` as musl does
//! for that case, and the release binary keeps within its compressed size
//! goal (README, Building, has the figures). `tests/release.rs` checks
//! that musl's printf engine stays out and that thread names are still set.
#![cfg(target_env = "musl")]

use std::ffi::{CStr, c_char, c_int};

/// Longest name Linux keeps, without its terminating NUL.
const MAX_NAME_BYTES: usize = 15;

#[unsafe(no_mangle)]
extern "C" fn pthread_setname_np(thread: libc::pthread_t, name: *const c_char) -> c_int {
    // SAFETY: the caller passes a NUL-terminated string, as for musl's.
    let length = unsafe { CStr::from_ptr(name) }.count_bytes();
    if length > MAX_NAME_BYTES {
        return libc::ERANGE;
    }
    // SAFETY: pthread_self has no preconditions.
    if thread != unsafe { libc::pthread_self() } {
        return libc::ENOTSUP;
    }
    // SAFETY: `name` is a NUL-terminated string of at most 16 bytes.
    if unsafe { libc::prctl(libc::PR_SET_NAME, name) } == 0 {
        0
    } else {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    }
}
