//! The `_Unwind_*` entry points that the prebuilt std calls, defined here for
//! a binary that never unwinds, so that the static link takes none of them
//! from libunwind.
//!
//! std is shipped compiled for `panic = "unwind"`: its landing pads call
//! `_Unwind_Resume`, its personality routine reads unwind contexts, and its
//! backtrace printer walks the stack with `_Unwind_Backtrace` and then
//! symbolizes every frame (gimli, addr2line, miniz_oxide, rustc-demangle).
//! With `panic = "abort"` no unwind ever starts, so none of that can run
//! except the backtrace. Defining these symbols keeps libunwind out of the
//! link, and because this `_Unwind_Backtrace` never calls back, LTO drops the
//! whole symbolizer, which would otherwise be most of the binary (README,
//! Building, has the figures). The tiny build's std prints no backtraces, so
//! there it changes next to nothing.
//!
//! What a panic prints now: its message and location as before, and with
//! `RUST_BACKTRACE=1` a backtrace with no frames. The stripped binary never
//! had names for them anyway. `tests/release.rs` checks that, and that
//! libunwind and the symbolizer stay out.
//!
//! Only under `panic = "abort"` (the release profile, and the tiny build's
//! immediate-abort): `cargo test` builds unwind, and needs the real thing.
#![cfg(not(panic = "unwind"))]

use std::ffi::{c_int, c_void};

/// libunwind's `_Unwind_Reason_Code` values used here.
const END_OF_STACK: c_int = 5;
const FATAL_PHASE1_ERROR: c_int = 3;

/// Walks no frames: there is no stack to show, and nothing to symbolize.
#[unsafe(no_mangle)]
extern "C" fn _Unwind_Backtrace(_trace: *const c_void, _argument: *mut c_void) -> c_int {
    END_OF_STACK
}

/// Starting an unwind fails at once; the caller then aborts.
#[unsafe(no_mangle)]
extern "C" fn _Unwind_RaiseException(_exception: *mut c_void) -> c_int {
    FATAL_PHASE1_ERROR
}

// The rest take an unwind context or an exception in flight, and neither can
// exist when nothing unwinds: reaching one of them is a bug, so it aborts.

#[unsafe(no_mangle)]
extern "C" fn _Unwind_Resume(_exception: *mut c_void) -> ! {
    std::process::abort()
}

#[unsafe(no_mangle)]
extern "C" fn _Unwind_DeleteException(_exception: *mut c_void) {
    std::process::abort()
}

#[unsafe(no_mangle)]
extern "C" fn _Unwind_GetIP(_context: *mut c_void) -> usize {
    std::process::abort()
}

#[unsafe(no_mangle)]
extern "C" fn _Unwind_GetIPInfo(_context: *mut c_void, _before: *mut c_int) -> usize {
    std::process::abort()
}

#[unsafe(no_mangle)]
extern "C" fn _Unwind_GetCFA(_context: *mut c_void) -> usize {
    std::process::abort()
}

#[unsafe(no_mangle)]
extern "C" fn _Unwind_GetLanguageSpecificData(_context: *mut c_void) -> *mut c_void {
    std::process::abort()
}

#[unsafe(no_mangle)]
extern "C" fn _Unwind_GetRegionStart(_context: *mut c_void) -> usize {
    std::process::abort()
}

#[unsafe(no_mangle)]
extern "C" fn _Unwind_GetTextRelBase(_context: *mut c_void) -> usize {
    std::process::abort()
}

#[unsafe(no_mangle)]
extern "C" fn _Unwind_GetDataRelBase(_context: *mut c_void) -> usize {
    std::process::abort()
}

#[unsafe(no_mangle)]
extern "C" fn _Unwind_SetGR(_context: *mut c_void, _register: c_int, _value: usize) {
    std::process::abort()
}

#[unsafe(no_mangle)]
extern "C" fn _Unwind_SetIP(_context: *mut c_void, _value: usize) {
    std::process::abort()
}

#[unsafe(no_mangle)]
extern "C" fn _Unwind_FindEnclosingFunction(_pc: *mut c_void) -> *mut c_void {
    std::process::abort()
}
