//! Secrets: random values from the operating system, and files only their
//! owner can read.
//!
//! Every secret the framework makes (a pairing secret, a form-token key, a
//! session id) comes from [`random_hex`], which reads the operating system's
//! cryptographic random source (`getrandom(2)` on Linux, `BCryptGenRandom`
//! on Windows) and fails rather than fall back to anything weaker.

use std::io;
use std::path::Path;

/// `bytes` random bytes from the operating system's CSPRNG, as lower-case hex
/// (`2 * bytes` characters).
///
/// ```
/// let s = kallithea_core::secret::random_hex(16).unwrap();
/// assert_eq!(s.len(), 32);
/// ```
pub fn random_hex(bytes: usize) -> io::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| io::Error::other(format!("the system's random source failed: {e}")))?;
    Ok(hex(&buf))
}

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Creates `path` (which must not exist) readable and writable by its owner
/// only (mode 0600 on Unix; on Windows the folder's permissions apply), and
/// writes `contents`.
pub fn create_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Whether accounts other than the owner may read or write `path` (Unix
/// permission bits for group or others); `Ok(false)` where the platform has
/// no such bits.
pub fn readable_by_others(path: &Path) -> io::Result<bool> {
    let meta = std::fs::metadata(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Ok(meta.permissions().mode() & 0o077 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values_differ_and_are_hex() {
        let a = random_hex(32).unwrap();
        let b = random_hex(32).unwrap();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        assert_eq!(hex(&[0, 0xab, 0x0f]), "00ab0f");
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_the_owner_s_only_and_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("kallithea-secret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s");
        create_private(&file, b"x").unwrap();
        assert!(!readable_by_others(&file).unwrap());
        assert_eq!(
            create_private(&file, b"y").unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(readable_by_others(&file).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
