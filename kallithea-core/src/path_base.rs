//! The virtual directory an app is mounted at.

use std::fmt;
use std::sync::Arc;

/// The path prefix the app is mounted at: an IIS virtual directory such as
/// `/portal`, or the empty base for an app at the site root.
///
/// The app still sees the full request path (`/portal/users/1`); the base lets it
/// build links that stay inside its mount point. Cloning is cheap (shared).
///
/// ```
/// use kallithea_core::PathBase;
/// let base = PathBase::new("/portal/").unwrap();
/// assert_eq!(base.as_str(), "/portal");
/// assert_eq!(base.strip("/portal/users"), Some("/users"));
/// assert_eq!(base.strip("/portalx"), None);
/// assert_eq!(base.link("/users"), "/portal/users");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PathBase(Option<Arc<str>>);

/// A path base that is not an absolute path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("path base {0:?} must be empty or start with '/' and contain no '?', '#' or whitespace")]
pub struct InvalidPathBase(pub String);

impl PathBase {
    /// The base of an app mounted at the site root.
    pub const fn root() -> Self {
        PathBase(None)
    }

    /// Parses a base; a trailing `/` is dropped, and `/` alone means the root.
    pub fn new(base: &str) -> Result<Self, InvalidPathBase> {
        let bad = |b: &str| {
            !(b.is_empty() || b.starts_with('/'))
                || b.bytes().any(|c| {
                    c == b'?' || c == b'#' || c.is_ascii_whitespace() || c.is_ascii_control()
                })
        };
        if bad(base) {
            return Err(InvalidPathBase(base.to_owned()));
        }
        let base = base.trim_end_matches('/');
        Ok(PathBase((!base.is_empty()).then(|| Arc::from(base))))
    }

    /// The base without a trailing slash; empty for the root.
    pub fn as_str(&self) -> &str {
        self.0.as_deref().unwrap_or("")
    }

    /// Whether the app is mounted at the root.
    pub fn is_root(&self) -> bool {
        self.0.is_none()
    }

    /// The part of `path` below the base, or `None` if `path` is outside it.
    /// Segments match whole and ASCII case-insensitively, as IIS matches virtual
    /// directories.
    pub fn strip<'p>(&self, path: &'p str) -> Option<&'p str> {
        let Some(base) = self.0.as_deref() else {
            return Some(path);
        };
        let head = path.get(..base.len())?;
        if !head.eq_ignore_ascii_case(base) {
            return None;
        }
        let rest = &path[base.len()..];
        if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
            Some(rest)
        } else {
            None
        }
    }

    /// A link to `path` (relative to the app) inside the mount point.
    pub fn link(&self, path: &str) -> String {
        let path = path.trim_start_matches('/');
        format!("{}/{}", self.as_str(), path)
    }
}

impl<'de> serde::Deserialize<'de> for PathBase {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PathBase::new(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for PathBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_accepts_every_path() {
        let root = PathBase::new("/").unwrap();
        assert!(root.is_root());
        assert_eq!(root.strip("/x"), Some("/x"));
        assert_eq!(root.link("x"), "/x");
    }

    #[test]
    fn base_matches_whole_segments_ignoring_case() {
        let base = PathBase::new("/App").unwrap();
        assert_eq!(base.strip("/app"), Some(""));
        assert_eq!(base.strip("/APP/x"), Some("/x"));
        assert_eq!(base.strip("/app?q"), Some("?q"));
        assert_eq!(base.strip("/apple"), None);
        assert_eq!(base.strip("/"), None);
    }

    #[test]
    fn relative_or_odd_bases_are_refused() {
        for bad in ["app", "/a b", "/a?b", "/a#b"] {
            assert!(PathBase::new(bad).is_err(), "{bad}");
        }
    }
}
