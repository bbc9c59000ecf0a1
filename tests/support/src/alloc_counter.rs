//! A global allocator that counts allocations made by the current thread.
//!
//! Install it in a test or bench binary with
//! `#[global_allocator] static A: CountingAllocator = CountingAllocator;`, then wrap the code
//! under test in [`count`]. Counts are per thread, so tests running in parallel threads of the
//! same binary do not see each other's allocations.
//!
//! A binary that runs code on threads it does not own (a client's I/O thread, a runtime's
//! workers) can also count for the whole process: call [`enable_process_counting`] once, then
//! read [`process_snapshot`]. That count is off by default, so per-thread users pay nothing
//! for it beyond one relaxed load per allocation.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

thread_local! {
    /// Allocations (alloc, alloc_zeroed, realloc) made by this thread. Const-initialised with no
    /// destructor, so reading it from inside the allocator never allocates or panics.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Bytes requested by those allocations.
    static BYTES: Cell<u64> = const { Cell::new(0) };
    /// Those of them under [`SMALL`] bytes.
    static SMALL_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Allocations under this many bytes count as small ([`Counts::small`]): the size of a
/// per-message object, not of a buffer.
pub const SMALL: usize = 1024;

/// Whether allocations are also counted process-wide (see [`enable_process_counting`]).
static PROCESS_COUNTING: AtomicBool = AtomicBool::new(false);
/// Allocations made by every thread of the process while process counting was on.
static PROCESS_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Bytes requested by those allocations.
static PROCESS_BYTES: AtomicU64 = AtomicU64::new(0);
/// Those of them under [`SMALL`] bytes.
static PROCESS_SMALL: AtomicU64 = AtomicU64::new(0);

/// Delegates to the system allocator and counts, per thread (and, once
/// [`enable_process_counting`] was called, for the whole process), what it is asked for.
pub struct CountingAllocator;

fn record(size: usize) {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
    let _ = BYTES.try_with(|c| c.set(c.get() + size as u64));
    let small = size < SMALL;
    if small {
        let _ = SMALL_ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
    }
    if PROCESS_COUNTING.load(Ordering::Relaxed) {
        PROCESS_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        PROCESS_BYTES.fetch_add(size as u64, Ordering::Relaxed);
        if small {
            PROCESS_SMALL.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Turns the process-wide count on (`true`) or off. Atomics never allocate, so this is safe to
/// call from anywhere; allocations made while it is off are not counted in [`process_snapshot`].
pub fn enable_process_counting(on: bool) {
    PROCESS_COUNTING.store(on, Ordering::Relaxed);
}

/// The process-wide counts so far: every thread's allocations made while process counting was
/// on. Take two snapshots and subtract them ([`Counts::since`]) to count a phase.
pub fn process_snapshot() -> Counts {
    Counts {
        allocations: PROCESS_ALLOCATIONS.load(Ordering::Relaxed),
        bytes: PROCESS_BYTES.load(Ordering::Relaxed),
        small: PROCESS_SMALL.load(Ordering::Relaxed),
    }
}

// SAFETY: every method forwards to `System` with the caller's own arguments, so the
// `GlobalAlloc` contract (layout validity, pointer provenance) is exactly the system allocator's;
// the bookkeeping touches only const-initialised thread-locals, which neither allocate nor unwind.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations and bytes counted on this thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Number of allocations (reallocations included).
    pub allocations: u64,
    /// Bytes requested.
    pub bytes: u64,
    /// Allocations (of the above) under [`SMALL`] bytes.
    pub small: u64,
}

impl Counts {
    /// What was counted between `earlier` and `self` (two snapshots of the same counter).
    pub fn since(self, earlier: Counts) -> Counts {
        Counts {
            allocations: self.allocations.saturating_sub(earlier.allocations),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            small: self.small.saturating_sub(earlier.small),
        }
    }
}

/// The counts of this thread so far.
pub fn snapshot() -> Counts {
    Counts {
        allocations: ALLOCATIONS.try_with(Cell::get).unwrap_or(0),
        bytes: BYTES.try_with(Cell::get).unwrap_or(0),
        small: SMALL_ALLOCATIONS.try_with(Cell::get).unwrap_or(0),
    }
}

/// Runs `f` and returns its result with the allocations this thread made while it ran. Only
/// meaningful in a binary whose global allocator is [`CountingAllocator`].
pub fn count<T>(f: impl FnOnce() -> T) -> (T, Counts) {
    let before = snapshot();
    let out = f();
    (out, snapshot().since(before))
}
