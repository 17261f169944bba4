//! Poison-tolerant locking, for every module: a lock whose holder panicked is still usable, because
//! each user rebuilds or re-checks what it guards (a map of in-flight steps, a cached probe, a
//! queue's state). One helper instead of `lock().unwrap_or_else(|p| p.into_inner())` at each site.
//!
//! Must not: use any other kiln module (it sits at the top of the module map).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Lock `m`, taking the data over from a holder that panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wait on `cv` with `guard`, as [`lock`] does when a holder panicked.
pub fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(|p| p.into_inner())
}

/// Wait on `cv` with `guard` for at most `timeout`; the guard comes back either way.
pub fn wait_timeout<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    match cv.wait_timeout(guard, timeout) {
        Ok((g, _)) => g,
        Err(p) => p.into_inner().0,
    }
}
