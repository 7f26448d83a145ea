//! Locks that carry on after a panic (the workspace's one spelling of
//! "poison-tolerant lock").
//!
//! A std lock is poisoned when a thread panics while holding it, and every
//! later `lock()` returns an error. In a node, a worker that panics is
//! stopped and reported (`ockam_node`'s worker lifecycle); the state it
//! shared stays consistent at each step the code takes under the lock, so
//! the other workers go on with it instead of failing too.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, poisoned or not.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Locks `lock` for reading, poisoned or not.
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Locks `lock` for writing, poisoned or not.
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The value of `mutex` through a unique borrow, poisoned or not.
pub fn get_mut<T: ?Sized>(mutex: &mut Mutex<T>) -> &mut T {
    mutex
        .get_mut()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_lock_poisoned_by_a_panic_still_locks() {
        let shared = Arc::new(Mutex::new(1));
        let rw = Arc::new(RwLock::new(1));
        let (s, r) = (shared.clone(), rw.clone());
        let _ = std::thread::spawn(move || {
            let _held = s.lock();
            let _held_too = r.write();
            panic!("poison them");
        })
        .join();
        assert!(shared.is_poisoned() && rw.is_poisoned());
        *lock(&shared) += 1;
        *write(&rw) += 1;
        assert_eq!((*lock(&shared), *read(&rw)), (2, 2));
    }
}
