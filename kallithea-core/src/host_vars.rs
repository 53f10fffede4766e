//! Trusted facts from the host, kept apart from client headers.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use crate::cgi::LiveVariables;

/// Name → value facts the host supplies about a request (IIS server variables
/// such as `APPL_MD_PATH`, `HTTPS_SERVER_SUBJECT`, `LOGON_USER`).
///
/// These are the host's word, not the client's: unlike headers, a client cannot
/// add or change them. Names compare ASCII case-insensitively, as IIS's do.
/// Values are bytes because the non-`UNICODE_` IIS variables are in the system
/// code page; hosts store UTF-8 where they have it.
///
/// An in-process IIS host may leave some variables to be read from IIS on
/// first use (see [`cgi::request_from_live_variables`](crate::cgi::request_from_live_variables)):
/// those are there only while the request runs — until its response has
/// been sent; read after that, a variable nobody read before is missing.
/// Clones share what was read.
#[derive(Clone, Default)]
pub struct HostVariables {
    entries: Vec<(Cow<'static, str>, Bytes)>,
    on_demand: Option<Arc<LiveVariables>>,
}

impl std::fmt::Debug for HostVariables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // What was read so far: formatting asks the host for nothing.
        let mut map = f.debug_map();
        map.entries(self.entries.iter().map(|(n, v)| (n, v)));
        if let Some(od) = &self.on_demand {
            map.entries(od.read_so_far().filter(|(n, _)| !self.has_entry(n)));
            map.entry(&"(on demand)", &od.unread().collect::<Vec<_>>());
        }
        map.finish()
    }
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
            on_demand: None,
        }
    }

    /// Leaves the variables `on_demand` knows to be read when asked for.
    pub(crate) fn set_on_demand(&mut self, on_demand: Arc<LiveVariables>) {
        self.on_demand = Some(on_demand);
    }

    fn has_entry(&self, name: &str) -> bool {
        self.entries
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
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

    /// The raw value of `name` (asking the host, the first time, for a
    /// variable left to be read on demand).
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        match self
            .entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, v)) => Some(v),
            None => self.on_demand.as_ref()?.get(name),
        }
    }

    /// The value of `name` if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every variable, in insertion order, then those read on demand (which
    /// this reads, if the request still runs).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        let on_demand = self
            .on_demand
            .iter()
            .flat_map(|od| od.read_all())
            .filter(|(n, _)| !self.has_entry(n));
        self.entries.iter().map(|(n, v)| (&**n, v)).chain(on_demand)
    }

    /// How many variables are set (reading those left on demand).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether none is set (reading those left on demand).
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
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
