//! Giving memory back to the operating system after the hub lets go of a
//! burst of per-peer state.
//!
//! One of the two modules of the workspace that use `unsafe` (the other is
//! the vault's key storage): glibc's `malloc_trim` has no safe binding.
#![allow(unsafe_code)]

/// Returns the memory the allocator holds free to the operating system,
/// where the allocator keeps it otherwise: glibc's `malloc` keeps what a
/// burst of allocations freed (issue 18: after 6,000 connections that each
/// registered a forwarder and closed, every forwarder stopped, the hub
/// still held its peak, 52 MiB against 13 MiB before). Called after a
/// janitor stopped workers, at most once per janitor round; it walks the
/// allocator's free lists, so not on every message. Elsewhere (musl,
/// other systems) it does nothing.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases pages of free chunks; it is
    // thread-safe (it takes each arena's lock) and touches no Rust object.
    unsafe {
        libc::malloc_trim(0);
    }
}
