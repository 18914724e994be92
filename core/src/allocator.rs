//! The hub's global allocator: mimalloc, asked the way its fast path
//! expects.
//!
//! The hub binary and the benches that measure its hot paths install
//! `HubAllocator` as their `#[global_allocator]`. Every event allocates
//! dozens of small strings, vectors and map nodes; mimalloc serves them in a
//! fraction of glibc's instructions.
//!
//! Why not the `mimalloc` crate's `MiMalloc` as it is: it passes every
//! request to `mi_malloc_aligned`, whatever the alignment. In mimalloc 3 that
//! path takes the plain fast path only while the size's page has a free
//! block. When it has none, a block size that is not a power of two (24, 40,
//! 48 bytes: most strings and vectors) is not "naturally aligned" to
//! mimalloc, so the request is over-allocated from a larger size class and
//! marked as an interior pointer, instead of refilling its own page. Every
//! block mimalloc hands out is aligned to at least 8 bytes, so requests
//! aligned to 8 or less go to `mi_malloc` / `mi_zalloc` / `mi_realloc`, as
//! Rust's own `System` allocator sends them to `malloc`; larger alignments
//! still take the aligned calls. With it, the flow benchmark runs about 1,700
//! fewer instructions per event (docs/benchmarks.md).

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has (its smallest block is a
/// pointer's size).
const PLAIN_ALIGN: usize = 8;

/// mimalloc behind `GlobalAlloc`; see the module doc.
#[derive(Debug, Clone, Copy, Default)]
pub struct HubAllocator;

// SAFETY: every method hands the request to mimalloc, which returns null on
// failure and otherwise a block of at least `layout.size()` bytes aligned to
// at least `PLAIN_ALIGN` (plain calls, used only when the alignment is not
// larger) or to `layout.align()` (aligned calls). `dealloc` frees with
// `mi_free`, which takes blocks from either kind of call.
unsafe impl GlobalAlloc for HubAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl's comment; `GlobalAlloc` callers never ask
        // for zero bytes.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new
        // block keeps its alignment (plain blocks are always 8-aligned).
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size and alignment a program asks for comes back aligned,
    /// zeroed when asked, and keeps its bytes through growing and
    /// shrinking.
    #[test]
    fn blocks_are_aligned_and_keep_their_bytes() {
        let allocator = HubAllocator;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 3, 7, 8, 9, 16, 24, 40, 48, 100, 1_000, 70_000] {
                let size = usize::max(size, align);
                let layout = Layout::from_size_align(size, align).expect("valid layout");
                let bigger = size * 3;
                let smaller = size / 2 + 1;
                // SAFETY: non-zero sizes; every access stays within the
                // block's current size, and each block is freed once with
                // the layout it has then.
                unsafe {
                    let zeroed = allocator.alloc_zeroed(layout);
                    assert!(!zeroed.is_null() && (zeroed as usize).is_multiple_of(align), "zeroed {size}/{align}");
                    assert!(std::slice::from_raw_parts(zeroed, size).iter().all(|b| *b == 0));
                    allocator.dealloc(zeroed, layout);

                    let block = allocator.alloc(layout);
                    assert!(!block.is_null() && (block as usize).is_multiple_of(align), "{size}/{align}");
                    for i in 0..size {
                        block.add(i).write(i as u8);
                    }
                    let grown = allocator.realloc(block, layout, bigger);
                    assert!(!grown.is_null() && (grown as usize).is_multiple_of(align), "grown {size}/{align}");
                    assert!((0..size).all(|i| grown.add(i).read() == i as u8), "bytes kept growing {size}/{align}");
                    let shrunk = allocator.realloc(grown, Layout::from_size_align(bigger, align).unwrap(), smaller);
                    assert!(!shrunk.is_null() && (shrunk as usize).is_multiple_of(align), "shrunk {size}/{align}");
                    assert!((0..smaller).all(|i| shrunk.add(i).read() == i as u8), "bytes kept shrinking");
                    allocator.dealloc(shrunk, Layout::from_size_align(smaller, align).unwrap());
                }
            }
        }
    }
}
