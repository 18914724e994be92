//! SQLite's own memory: taken from mimalloc, the hub's allocator, with
//! SQLite's allocation statistics off.
//!
//! SQLite allocates through glibc's `malloc` unless told otherwise, and by
//! default counts every allocation under a global mutex (the statistics
//! behind `sqlite3_memory_used` and the soft heap limit, which the hub does
//! not use). A large import inserts on one thread, SQLite's, which is the
//! import's critical path: there glibc's `malloc`, `free` and consolidation
//! and the statistics' mutex were about a tenth of that thread's time
//! (docs/benchmarks.md, session 26).
//!
//! Both are process-wide settings SQLite accepts only before it first
//! initialises, so [`configure`] runs once, before the store opens its first
//! connection. If SQLite was initialised earlier by other code in the same
//! process, it refuses (`SQLITE_MISUSE`) and keeps its defaults: then
//! nothing changes, and that is logged.

use std::ffi::{c_int, c_void};
use std::sync::Once;

use libmimalloc_sys as mi;
use libsqlite3_sys as ffi;

/// Sets SQLite's allocator and statistics, the first time it is called.
pub(super) fn configure() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let methods = methods();
        // SAFETY: both calls only store settings (SQLite copies `methods`),
        // and SQLite refuses them once it is initialised, so no block
        // allocated by one allocator is ever freed by the other.
        // `sqlite3_config` must not run beside other SQLite calls: every
        // connection of the process is opened by `SqliteStore::open` after
        // this returns, and `Once` holds other callers until it has.
        let (statistics, allocator) = unsafe {
            (
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int),
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &methods as *const ffi::sqlite3_mem_methods),
            )
        };
        if statistics != ffi::SQLITE_OK || allocator != ffi::SQLITE_OK {
            tracing::debug!(statistics, allocator, "SQLite was initialised already: its own allocator stays");
        }
    });
}

/// The allocator SQLite calls; every function hands the request to
/// mimalloc. SQLite asks for 8-byte alignment, which every mimalloc block
/// has.
fn methods() -> ffi::sqlite3_mem_methods {
    ffi::sqlite3_mem_methods {
        xMalloc: Some(malloc),
        xFree: Some(free),
        xRealloc: Some(realloc),
        xSize: Some(size),
        xRoundup: Some(roundup),
        xInit: Some(init),
        xShutdown: Some(shutdown),
        pAppData: std::ptr::null_mut(),
    }
}

/// SQLite never asks for a negative size; treated as zero all the same.
fn bytes(n: c_int) -> usize {
    usize::try_from(n).unwrap_or(0)
}

unsafe extern "C" fn malloc(n: c_int) -> *mut c_void {
    // SAFETY: mimalloc takes any size; null means out of memory.
    unsafe { mi::mi_malloc(bytes(n)) }
}

unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: SQLite frees only what `malloc`/`realloc` above returned.
    unsafe { mi::mi_free(p) }
}

unsafe extern "C" fn realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    // SAFETY: as `free`: `p` came from mimalloc.
    unsafe { mi::mi_realloc(p, bytes(n)) }
}

unsafe extern "C" fn size(p: *mut c_void) -> c_int {
    // SAFETY: as `free`. SQLite's blocks are below 2 GiB (its own limit).
    let usable = unsafe { mi::mi_usable_size(p) };
    c_int::try_from(usable).unwrap_or(c_int::MAX)
}

/// To a multiple of 8, as SQLite's own allocator rounds: no larger than
/// what mimalloc hands out for `n`.
unsafe extern "C" fn roundup(n: c_int) -> c_int {
    n.saturating_add(7) & !7
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn shutdown(_: *mut c_void) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_what_mimalloc_hands_out() {
        for n in [1, 7, 8, 100, 4_096, 16_384 + 272, 1 << 20] {
            // SAFETY: a block allocated, measured, grown and freed here.
            unsafe {
                let p = malloc(n);
                assert!(!p.is_null());
                assert_eq!(p as usize % 8, 0, "8-byte alignment for {n}");
                assert!(size(p) >= roundup(n), "{n}: {} usable, {} rounded", size(p), roundup(n));
                p.cast::<u8>().write_bytes(0xA5, bytes(n));
                let grown = realloc(p, n * 2);
                assert_eq!(*grown.cast::<u8>().add(bytes(n) - 1), 0xA5, "contents kept when grown");
                assert!(size(grown) >= n * 2);
                free(grown);
            }
        }
    }
}
