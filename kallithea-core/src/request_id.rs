//! Per-request identifiers for logs and error pages.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// An identifier unique to one request within the process and, with high
/// probability, across worker processes: a per-process prefix and a counter.
/// It appears in the request's tracing span, in the request extensions, in the
/// `x-request-id` header of error responses and in the body of the 500 page a
/// panic produces.
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

impl RequestId {
    /// The id as a header value, formatted without the `fmt` machinery (it is
    /// written on every response).
    pub fn header_value(&self) -> http::HeaderValue {
        let mut buf = [0u8; 25];
        let n = self.write_hex(&mut buf);
        http::HeaderValue::from_bytes(&buf[..n]).expect("hex digits and '-' are valid header bytes")
    }

    /// Writes `{prefix:08x}-{seq:x}` into `buf`, returning the length.
    fn write_hex(&self, buf: &mut [u8; 25]) -> usize {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in buf[..8].iter_mut().enumerate() {
            *b = HEX[((self.prefix >> (28 - 4 * i)) & 0xf) as usize];
        }
        buf[8] = b'-';
        let digits = (16 - self.seq.leading_zeros() / 4).max(1) as usize;
        for i in 0..digits {
            buf[9 + i] = HEX[((self.seq >> (4 * (digits - 1 - i))) & 0xf) as usize];
        }
        9 + digits
    }
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
    fn header_value_matches_display() {
        for seq in [0, 1, 0xf, 0x10, 0xdead_beef, u64::MAX] {
            let id = RequestId {
                prefix: 0x0012_abcd,
                seq,
            };
            assert_eq!(id.header_value().to_str().unwrap(), id.to_string());
        }
    }

    #[test]
    fn ids_are_distinct_and_share_the_process_prefix() {
        let a = RequestId::next().to_string();
        let b = RequestId::next().to_string();
        assert_ne!(a, b);
        assert_eq!(a.split('-').next(), b.split('-').next());
    }
}
