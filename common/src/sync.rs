//! `std::sync` locks taken past poison. A panic while a lock is held must not take the whole
//! agent (or operator) down with it, as `.lock().unwrap()` would on every later call.
//! Ignoring the poison is sound because each holder changes the value under these locks in
//! steps that leave it whole (an assignment, an insert, a push), so a holder that panics
//! leaves at worst a stale value, never a half-written one. A value that needs several steps
//! to be consistent again does not belong under these.
//!
//! Tokio's locks do not poison and need none of this.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `m` locked, whether or not an earlier holder panicked.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `l` locked for reading, whether or not an earlier writer panicked.
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// `l` locked for writing, whether or not an earlier writer panicked.
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Runs `f` on another thread and waits for it to panic.
    fn panics_on_a_thread(f: impl FnOnce() + Send + 'static) {
        let joined = std::thread::spawn(f).join();
        assert!(joined.is_err(), "the thread was meant to panic");
    }

    #[test]
    fn lock_passes_a_poisoned_mutex() {
        let m = Arc::new(Mutex::new(vec![1]));
        let held = m.clone();
        panics_on_a_thread(move || {
            let mut v = held.lock().unwrap();
            v.push(2);
            panic!("while holding the lock");
        });
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), [1, 2]);
        lock(&m).push(3);
        assert_eq!(*lock(&m), [1, 2, 3]);
    }

    #[test]
    fn read_and_write_pass_a_poisoned_rwlock() {
        let l = Arc::new(RwLock::new(1));
        let held = l.clone();
        panics_on_a_thread(move || {
            let mut v = held.write().unwrap();
            *v = 2;
            panic!("while holding the write lock");
        });
        assert!(l.is_poisoned());
        assert_eq!(*read(&l), 2);
        *write(&l) = 3;
        assert_eq!(*read(&l), 3);
    }
}
