//! Numbers that no other run, replica or call repeats: backoff jitter and
//! the unique part of temporary file names.
//!
//! std's `RandomState` takes its keys from the operating system's random
//! source, once per thread, and every `new()` changes them, so a hash made
//! with a fresh one is such a number: no random-number crate is needed for
//! so little. Not for secrets.

use std::hash::{BuildHasher, RandomState};

/// A number drawn anew on every call.
pub fn number() -> u64 {
    RandomState::new().hash_one(std::process::id())
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_differ() {
        let drawn: std::collections::HashSet<u64> = (0..1000).map(|_| super::number()).collect();
        assert_eq!(drawn.len(), 1000);
    }
}
