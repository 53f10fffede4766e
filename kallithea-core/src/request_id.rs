//! Per-request identifiers for logs and error pages.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// An identifier unique to one request within the process and, with high
/// probability, across worker processes: a per-process prefix and a counter.
/// It appears in the request's tracing span, in the `x-request-id` response
/// header and in the body of the 500 page a panic produces.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId {
    prefix: u32,
    seq: u64,
}

impl RequestId {
    /// The next identifier of this process.
    pub fn next() -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(1);
        RequestId {
            prefix: process_prefix(),
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
        }
    }
}

fn process_prefix() -> u32 {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    *PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS; mix in the pid and the time so that
        // two workers started together still differ.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        h.finish() as u32
    })
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-{:x}", self.prefix, self.seq)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_share_the_process_prefix() {
        let a = RequestId::next().to_string();
        let b = RequestId::next().to_string();
        assert_ne!(a, b);
        assert_eq!(a.split('-').next(), b.split('-').next());
    }
}
