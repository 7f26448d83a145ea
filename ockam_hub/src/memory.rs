//! Giving memory back to the operating system after the hub lets go of a
//! burst of per-peer state.
//!
//! One of the two modules of the workspace that use `unsafe` (the other is
//! the vault's key storage): glibc's `malloc_trim` and mimalloc's
//! `mi_collect` have no safe binding.
#![allow(unsafe_code)]

/// Returns the memory the allocator holds free to the operating system,
/// where the allocator keeps it otherwise: glibc's `malloc` keeps what a
/// burst of allocations freed (issue 18: after 6,000 connections that each
/// registered a forwarder and closed, every forwarder stopped, the hub
/// still held its peak, 52 MiB against 13 MiB before). Called after a
/// janitor stopped workers, at most once per janitor round; it walks the
/// allocator's free lists, so not on every message. Elsewhere (musl,
/// other systems) it does nothing. With mimalloc (the `ockam_hub`
/// binary's allocator), glibc's heap holds only what C libraries
/// allocated, and this also asks each of the runtime's worker threads to
/// collect its own heap as it next goes idle ([`collect_when_asked`]).
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases pages of free chunks; it is
    // thread-safe (it takes each arena's lock) and touches no Rust object.
    unsafe {
        libc::malloc_trim(0);
    }
    #[cfg(feature = "mimalloc")]
    COLLECT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Asked of every thread by [`release_free_memory`] (mimalloc): a count,
/// bumped at each ask.
#[cfg(feature = "mimalloc")]
static COLLECT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(feature = "mimalloc")]
thread_local! {
    /// The last [`COLLECT`] this thread answered.
    static COLLECTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// For the hub binary's runtime (`on_thread_park`), with mimalloc as the
/// allocator: mimalloc keeps the pages a thread freed in that thread's own
/// heap until the thread collects them, which an idle thread never does
/// (after 6,000 connections came and went, the hub kept 15 MiB of its
/// peak). So each worker thread, as it goes idle after the hub asked
/// (after a janitor stopped workers), collects its heap and gives the free
/// pages back. Otherwise one atomic load. Without the `mimalloc` feature
/// it does nothing.
pub fn collect_when_asked() {
    #[cfg(feature = "mimalloc")]
    {
        let asked = COLLECT.load(std::sync::atomic::Ordering::Relaxed);
        if COLLECTED.get() != asked {
            COLLECTED.set(asked);
            // SAFETY: `mi_collect` walks the calling thread's own heap and
            // frees its empty pages; it touches no Rust object.
            unsafe {
                libmimalloc_sys::mi_collect(true);
            }
        }
    }
}
