//! Numbers that no other run, replica or call repeats: backoff jitter, the
//! unique part of temporary file names, and the query id of a run.
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

/// A random (version 4) UUID, as `8-4-4-4-12` lowercase hex digits.
pub fn uuid() -> String {
    let (high, low) = (number(), number());
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        (high & 0x0fff) | 0x4000,
        ((low >> 48) & 0x3fff) | 0x8000,
        low & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_are_version_4() {
        let id = super::uuid();
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert!(
            id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()),
            "{id}"
        );
        assert_eq!(&id[14..15], "4", "{id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, super::uuid());
    }

    #[test]
    fn numbers_differ() {
        let drawn: std::collections::HashSet<u64> = (0..1000).map(|_| super::number()).collect();
        assert_eq!(drawn.len(), 1000);
    }
}
