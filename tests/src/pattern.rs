//! Deterministic test data and its checksum, shared by the app and the client.

/// The data stream repeats a block of this many bytes: a prime, so that a lost or
/// repeated transport chunk (always a power-of-two size here) shifts the
/// pattern and changes the checksum.
const PERIOD: usize = 65_521;

fn block() -> &'static [u8] {
    static BLOCK: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BLOCK.get_or_init(|| {
        (0..PERIOD)
            .map(|i| ((i * 7 + i / 251) % 251) as u8)
            .collect()
    })
}

/// Fills `buf` with the pattern bytes starting at stream offset `offset`.
pub fn fill(buf: &mut [u8], offset: u64) {
    let b = block();
    let mut pos = (offset % PERIOD as u64) as usize;
    let mut done = 0;
    while done < buf.len() {
        let n = (PERIOD - pos).min(buf.len() - done);
        buf[done..done + n].copy_from_slice(&b[pos..pos + n]);
        done += n;
        pos = 0;
    }
}

/// An FNV-1a 64-bit checksum over a byte stream fed in pieces.
#[derive(Clone, Copy, Debug)]
pub struct Checksum(u64);

impl Default for Checksum {
    fn default() -> Self {
        Checksum(0xcbf2_9ce4_8422_2325)
    }
}

impl Checksum {
    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    /// The checksum so far, as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The checksum of the first `len` pattern bytes.
pub fn checksum_of(len: u64) -> String {
    let mut sum = Checksum::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        fill(&mut buf[..n], off);
        sum.update(&buf[..n]);
        off += n as u64;
    }
    sum.hex()
}

/// Escapes bytes for the app's line reports: printable ASCII but `%` as is,
/// everything else as `%XX` — so reports stay one line and byte-exact.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_continuous_across_pieces() {
        let mut whole = vec![0; 200_000];
        fill(&mut whole, 0);
        let mut pieces = vec![0; 200_000];
        for (i, chunk) in pieces.chunks_mut(4096).enumerate() {
            fill(chunk, (i * 4096) as u64);
        }
        assert_eq!(whole, pieces);
        let mut shifted = whole.clone();
        shifted.drain(0..65_536);
        let mut a = Checksum::default();
        a.update(&whole[65_536..]);
        let mut b = Checksum::default();
        b.update(&whole[..whole.len() - 65_536]);
        assert_ne!(a.hex(), b.hex(), "a dropped chunk must change the checksum");
    }

    #[test]
    fn escape_is_unambiguous() {
        assert_eq!(escape(b"a%C3"), "a%25C3");
        assert_eq!(escape("é".as_bytes()), "%C3%A9");
        assert_eq!(escape(b"caf\xe9 x"), "caf%E9 x");
    }
}
