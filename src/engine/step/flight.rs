//! Single-flight for steps: when two builds in this process (concurrent daemon builds, or parallel
//! stages of one build) reach a step with the same cache key, one runs it and the other waits, then
//! takes the result from the step cache — BuildKit's solver merges identical vertices the same way.
//! If the leader fails, a waiter runs the step itself.
//!
//! Must not: hold a lock while a step runs (only the per-key "done" flag is waited on), or decide
//! cache hits (the step cache does).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crate::cache::CacheKey;

type Slot = Arc<(Mutex<bool>, Condvar)>;

fn inflight() -> &'static Mutex<HashMap<String, Slot>> {
    static MAP: OnceLock<Mutex<HashMap<String, Slot>>> = OnceLock::new();
    MAP.get_or_init(Default::default)
}

/// What [`join`] decided.
pub(crate) enum Turn {
    /// Run the step; waiters wake when the guard drops (after the record is saved).
    Lead(Leader),
    /// Another build ran it meanwhile: look in the step cache again.
    Followed,
}

/// Held by the build running a step; dropping it releases the waiters.
pub(crate) struct Leader {
    key: String,
    slot: Slot,
}

impl Drop for Leader {
    fn drop(&mut self) {
        let (done, cv) = &*self.slot;
        *crate::sync::lock(done) = true;
        cv.notify_all();
        let mut map = crate::sync::lock(inflight());
        if map
            .get(&self.key)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            map.remove(&self.key);
        }
    }
}

/// Lead the step with `key`, or wait for the build already running it.
pub(crate) fn join(key: &CacheKey) -> Turn {
    let slot = {
        let mut map = crate::sync::lock(inflight());
        match map.get(&key.0.to_string()) {
            Some(s) => s.clone(),
            None => {
                let slot: Slot = Arc::new((Mutex::new(false), Condvar::new()));
                map.insert(key.0.to_string(), slot.clone());
                return Turn::Lead(Leader {
                    key: key.0.to_string(),
                    slot,
                });
            }
        }
    };
    let (done, cv) = &*slot;
    let mut d = crate::sync::lock(done);
    while !*d {
        d = crate::sync::wait(cv, d);
    }
    Turn::Followed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_caller_waits_for_the_first_and_then_follows() {
        let key = CacheKey(crate::digest::Digest::of(b"single-flight-test"));
        let Turn::Lead(leader) = join(&key) else {
            panic!("the first caller leads")
        };
        let waiter = std::thread::spawn({
            let key = key.clone();
            move || matches!(join(&key), Turn::Followed)
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "the second caller waits while the step runs"
        );
        drop(leader);
        assert!(waiter.join().unwrap());
        assert!(
            matches!(join(&key), Turn::Lead(_)),
            "a finished key can be led again"
        );
    }
}
