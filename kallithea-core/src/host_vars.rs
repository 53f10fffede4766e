//! Trusted facts from the host, kept apart from client headers.

use std::borrow::Cow;

use bytes::Bytes;

/// Name → value facts the host supplies about a request (IIS server variables
/// such as `APPL_MD_PATH`, `HTTPS_SERVER_SUBJECT`, `LOGON_USER`).
///
/// These are the host's word, not the client's: unlike headers, a client cannot
/// add or change them. Names compare ASCII case-insensitively, as IIS's do.
/// Values are bytes because the non-`UNICODE_` IIS variables are in the system
/// code page; hosts store UTF-8 where they have it.
#[derive(Clone, Debug, Default)]
pub struct HostVariables {
    entries: Vec<(Cow<'static, str>, Bytes)>,
}

impl HostVariables {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set with room for `n` variables.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
        }
    }

    /// Adds `name`, which the caller knows is not in the set yet, without
    /// copying it.
    pub(crate) fn push_unique(&mut self, name: &'static str, value: Bytes) {
        debug_assert!(self.get(name).is_none(), "{name} twice");
        self.entries.push((Cow::Borrowed(name), value));
    }

    /// Sets `name` to `value`, replacing an earlier value of the same name.
    pub fn insert(&mut self, name: &str, value: impl Into<Bytes>) {
        let value = value.into();
        match self
            .entries
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(entry) => entry.1 = value,
            None => self.entries.push((Cow::Owned(name.into()), value)),
        }
    }

    /// The raw value of `name`.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The value of `name` if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every variable, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.entries.iter().map(|(n, v)| (&**n, v))
    }

    /// How many variables are set.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<N: AsRef<str>, V: Into<Bytes>> FromIterator<(N, V)> for HostVariables {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut vars = HostVariables::new();
        for (n, v) in iter {
            vars.insert(n.as_ref(), v);
        }
        vars
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ignore_case_and_later_values_replace_earlier_ones() {
        let mut vars: HostVariables = [("REMOTE_USER", "a")].into_iter().collect();
        vars.insert("remote_user", "b");
        assert_eq!(vars.len(), 1);
        assert_eq!(vars.get_str("Remote_User"), Some("b"));
        assert_eq!(vars.get("AUTH_TYPE"), None);
    }

    #[test]
    fn non_utf8_values_are_kept_as_bytes() {
        let mut vars = HostVariables::new();
        vars.insert("REMOTE_USER", Bytes::from_static(b"EXAMPLE\\j\xf6rg"));
        assert_eq!(vars.get_str("REMOTE_USER"), None);
        assert_eq!(
            vars.get("REMOTE_USER").unwrap().as_ref(),
            b"EXAMPLE\\j\xf6rg"
        );
    }
}
