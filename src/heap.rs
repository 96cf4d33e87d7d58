//! The one heap: dlmalloc, for Rust's allocations and for the C ones that
//! musl makes for the job (getaddrinfo's answers, among others).
//!
//! musl's own allocator maps and unmaps pages on nearly every request of a
//! batch job; dlmalloc keeps them, which halved a 100,000-row job's client
//! CPU (0.21 s to 0.10 s) for 11.7 KB of binary.
//!
//! musl lets a program replace malloc as a whole set (malloc, calloc,
//! realloc, free and the aligned ones), and the set here is served from the
//! same heap, so musl's allocator is not linked at all. Measured: the stable
//! release binary 9,200 bytes smaller (gzip -9: 6,169), the tiny one 9,800
//! (6,705). `tests/release.rs`
//! checks that musl's allocator stays out and that these are linked instead.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Mutex, MutexGuard, PoisonError};

use dlmalloc::Dlmalloc;

struct Heap(Dlmalloc);

// SAFETY: the heap's pointers are to memory of the whole process, not of one
// thread, and the mutex lets one thread at a time use it.
unsafe impl Send for Heap {}

/// std's futex mutex: it never allocates, so it may guard the allocator.
static HEAP: Mutex<Heap> = Mutex::new(Heap(Dlmalloc::new()));

fn heap() -> MutexGuard<'static, Heap> {
    // Nothing that holds the lock can panic; a poisoned heap is still whole.
    HEAP.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Allocator;

#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

// SAFETY: dlmalloc upholds GlobalAlloc's contract for the layouts it gets.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { heap().0.malloc(layout.size(), layout.align()) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { heap().0.calloc(layout.size(), layout.align()) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { heap().0.free(ptr, layout.size(), layout.align()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe {
            heap()
                .0
                .realloc(ptr, layout.size(), layout.align(), new_size)
        }
    }
}

/// C's allocation functions, with musl's contracts: failures return NULL
/// (or the error code, for posix_memalign) and set errno to ENOMEM or
/// EINVAL; `free(NULL)` does nothing; `realloc(NULL, n)` is `malloc(n)`.
/// Every block carries its own size in dlmalloc's chunk header, so `free`
/// needs none, and blocks from any of them may be freed by any other.
#[cfg(target_env = "musl")]
mod c {
    use std::alloc::Layout;
    use std::ffi::{c_int, c_void};
    use std::ptr;

    use super::heap;

    /// dlmalloc's natural alignment, that of C's `max_align_t` on x86-64:
    /// what `malloc` and `calloc` promise.
    const MALLOC_ALIGN: usize = 2 * size_of::<usize>();

    fn fail(errno: c_int) -> *mut c_void {
        // SAFETY: musl's errno location is valid for the calling thread.
        unsafe { *libc::__errno_location() = errno };
        ptr::null_mut()
    }

    fn checked(block: *mut u8) -> *mut c_void {
        if block.is_null() {
            fail(libc::ENOMEM)
        } else {
            block.cast()
        }
    }

    /// A block of `size` bytes aligned to `align`, or the errno for why not.
    fn aligned(align: usize, size: usize) -> Result<*mut c_void, c_int> {
        if !align.is_power_of_two() {
            return Err(libc::EINVAL);
        }
        // dlmalloc's own size arithmetic assumes what Layout checks.
        if Layout::from_size_align(size, align).is_err() {
            return Err(libc::ENOMEM);
        }
        // SAFETY: `align` is a power of two.
        let block = unsafe { heap().0.c_memalign(align, size) };
        if block.is_null() {
            Err(libc::ENOMEM)
        } else {
            Ok(block.cast())
        }
    }

    #[unsafe(no_mangle)]
    extern "C" fn malloc(size: usize) -> *mut c_void {
        // SAFETY: c_malloc takes any size.
        checked(unsafe { heap().0.c_malloc(size) })
    }

    #[unsafe(no_mangle)]
    extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
        let Some(bytes) = count.checked_mul(size) else {
            return fail(libc::ENOMEM);
        };
        // SAFETY: the alignment is dlmalloc's own; calloc zeroes what a
        // reused chunk held.
        checked(unsafe { heap().0.calloc(bytes, MALLOC_ALIGN) })
    }

    /// # Safety
    /// `block` is NULL or a live block from this heap, as C requires.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn realloc(block: *mut c_void, size: usize) -> *mut c_void {
        // SAFETY: as above; on failure the old block stays valid.
        checked(unsafe { heap().0.c_realloc(block.cast(), size) })
    }

    /// # Safety
    /// `block` is NULL or a live block from this heap, as C requires.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn free(block: *mut c_void) {
        // SAFETY: as above; c_free ignores NULL.
        unsafe { heap().0.c_free(block.cast()) }
    }

    #[unsafe(no_mangle)]
    extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
        aligned(align, size).unwrap_or_else(fail)
    }

    #[unsafe(no_mangle)]
    extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
        aligned(align, size).unwrap_or_else(fail)
    }

    /// # Safety
    /// `result` is valid for writing a pointer.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn posix_memalign(
        result: *mut *mut c_void,
        align: usize,
        size: usize,
    ) -> c_int {
        // POSIX also asks for a multiple of the pointer size; errno is untouched.
        if align % size_of::<*mut c_void>() != 0 {
            return libc::EINVAL;
        }
        match aligned(align, size) {
            Ok(block) => {
                // SAFETY: the caller's pointer is valid for writing.
                unsafe { *result = block };
                0
            }
            Err(errno) => errno,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn errno() -> c_int {
            // SAFETY: musl's errno location is valid for the calling thread.
            unsafe { *libc::__errno_location() }
        }

        fn clear_errno() {
            // SAFETY: as above.
            unsafe { *libc::__errno_location() = 0 };
        }

        fn is_aligned(block: *mut c_void, align: usize) -> bool {
            !block.is_null() && block as usize % align == 0
        }

        #[test]
        fn malloc_aligns_for_any_type_and_blocks_do_not_overlap() {
            let blocks: Vec<*mut c_void> = [0, 1, 15, 16, 17, 1000, 300_000]
                .into_iter()
                .map(|size| {
                    let block = malloc(size);
                    assert!(is_aligned(block, MALLOC_ALIGN), "malloc({size})");
                    // SAFETY: the block holds `size` bytes.
                    unsafe { ptr::write_bytes(block.cast::<u8>(), 0xAA, size) };
                    block
                })
                .collect();
            let mut starts: Vec<usize> = blocks.iter().map(|b| *b as usize).collect();
            starts.sort_unstable();
            starts.dedup();
            assert_eq!(starts.len(), blocks.len(), "malloc(0) must be unique too");
            for block in blocks {
                // SAFETY: each block is live and freed once.
                unsafe { free(block) };
            }
        }

        #[test]
        fn free_and_realloc_take_null() {
            // SAFETY: NULL is allowed for both.
            unsafe {
                free(ptr::null_mut());
                let block = realloc(ptr::null_mut(), 40);
                assert!(is_aligned(block, MALLOC_ALIGN));
                free(block);
            }
        }

        #[test]
        fn realloc_keeps_the_contents_growing_and_shrinking() {
            let bytes: Vec<u8> = (0..200u8).collect();
            let block = malloc(bytes.len()).cast::<u8>();
            // SAFETY: every block below is live and at least as long as
            // what is copied into or read from it.
            unsafe {
                ptr::copy_nonoverlapping(bytes.as_ptr(), block, bytes.len());
                let grown = realloc(block.cast(), 1 << 20).cast::<u8>();
                assert!(is_aligned(grown.cast(), MALLOC_ALIGN));
                assert_eq!(std::slice::from_raw_parts(grown, 200), &bytes[..]);
                let shrunk = realloc(grown.cast(), 50).cast::<u8>();
                assert_eq!(std::slice::from_raw_parts(shrunk, 50), &bytes[..50]);
                free(shrunk.cast());
            }
        }

        #[test]
        fn calloc_zeroes_reused_memory() {
            for _ in 0..20 {
                let dirty = malloc(4096);
                // SAFETY: the block holds 4096 bytes; it is freed once.
                unsafe {
                    ptr::write_bytes(dirty.cast::<u8>(), 0xFF, 4096);
                    free(dirty);
                }
                let clean = calloc(64, 64).cast::<u8>();
                assert!(is_aligned(clean.cast(), MALLOC_ALIGN));
                // SAFETY: the block holds 64 * 64 bytes; it is freed once.
                unsafe {
                    assert!(
                        std::slice::from_raw_parts(clean, 4096)
                            .iter()
                            .all(|b| *b == 0)
                    );
                    free(clean.cast());
                }
            }
        }

        #[test]
        fn impossible_sizes_fail_with_enomem() {
            clear_errno();
            assert!(malloc(usize::MAX).is_null());
            assert_eq!(errno(), libc::ENOMEM);
            clear_errno();
            assert!(
                calloc(usize::MAX / 2, 3).is_null(),
                "count * size overflows"
            );
            assert_eq!(errno(), libc::ENOMEM);
            let block = malloc(10);
            clear_errno();
            // SAFETY: `block` is live; a failed realloc leaves it so.
            unsafe {
                assert!(realloc(block, usize::MAX - 8).is_null());
                assert_eq!(errno(), libc::ENOMEM);
                free(block);
            }
        }

        #[test]
        fn aligned_allocations_check_their_alignment() {
            for align in [8, 16, 64, 4096, 1 << 16] {
                for allocate in [aligned_alloc, memalign] {
                    let block = allocate(align, 100);
                    assert!(is_aligned(block, align), "align {align}");
                    // SAFETY: live, freed once.
                    unsafe { free(block) };
                }
                let mut block = ptr::null_mut();
                // SAFETY: `block` is valid for writing.
                assert_eq!(unsafe { posix_memalign(&mut block, align, 100) }, 0);
                assert!(is_aligned(block, align), "posix_memalign {align}");
                // SAFETY: live, freed once.
                unsafe { free(block) };
            }
            clear_errno();
            assert!(aligned_alloc(48, 16).is_null(), "not a power of two");
            assert_eq!(errno(), libc::EINVAL);
            clear_errno();
            assert!(memalign(1 << 62, 16).is_null());
            assert_eq!(errno(), libc::ENOMEM);
            let mut block = ptr::null_mut();
            // SAFETY: `block` is valid for writing.
            unsafe {
                assert_eq!(posix_memalign(&mut block, 4, 16), libc::EINVAL);
                assert_eq!(posix_memalign(&mut block, 24, 16), libc::EINVAL);
                assert_eq!(posix_memalign(&mut block, 64, usize::MAX), libc::ENOMEM);
            }
            assert!(block.is_null(), "a failed posix_memalign wrote its result");
        }
    }
}
