//! Trusted facts from the host, kept apart from client headers.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

/// Name → value facts the host supplies about a request (IIS server variables
/// such as `APPL_MD_PATH`, `HTTPS_SERVER_SUBJECT`, `LOGON_USER`).
///
/// These are the host's word, not the client's: unlike headers, a client cannot
/// add or change them. Names compare ASCII case-insensitively, as IIS's do.
/// Values are bytes because the non-`UNICODE_` IIS variables are in the system
/// code page; hosts store UTF-8 where they have it.
///
/// A host may leave some variables to be read on first use
/// ([`DeferredVariables`], as the in-process IIS hosts do): those are there
/// only while the request runs — until its response has been sent; read
/// after that, a variable nobody read before is missing. Clones share what
/// was read.
#[derive(Clone, Default)]
pub struct HostVariables {
    entries: Vec<(Cow<'static, str>, Bytes)>,
    on_demand: Option<Arc<dyn DeferredVariables>>,
}

/// Variables a host reads only when first asked for (each read is a call
/// into the server, and few requests need them), by index into
/// [`names`](Self::names). Implementations read each at most once and keep
/// the answer.
pub trait DeferredVariables: Send + Sync {
    /// The names this source supplies.
    fn names(&self) -> &[&'static str];
    /// The value of the `i`-th name, read from the host the first time;
    /// `None` if the host has none.
    fn value(&self, i: usize) -> Option<&Bytes>;
    /// The value of the `i`-th name if it was read already (`Some(None)`:
    /// read, and the host had none); `None` if not read yet. Asks the host
    /// nothing.
    fn read_already(&self, i: usize) -> Option<Option<&Bytes>>;
}

/// A deferred source's values, for [`HostVariables`].
fn deferred_get<'a>(od: &'a dyn DeferredVariables, name: &str) -> Option<&'a Bytes> {
    let i = od
        .names()
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))?;
    od.value(i)
}

impl std::fmt::Debug for HostVariables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // What was read so far: formatting asks the host for nothing.
        let mut map = f.debug_map();
        map.entries(self.entries.iter().map(|(n, v)| (n, v)));
        if let Some(od) = &self.on_demand {
            let names = od.names();
            let read = (0..names.len())
                .filter_map(|i| Some((names[i], od.read_already(i)??)))
                .filter(|(n, _)| !self.has_entry(n));
            map.entries(read);
            let unread: Vec<&str> = (0..names.len())
                .filter(|&i| od.read_already(i).is_none())
                .map(|i| names[i])
                .collect();
            map.entry(&"(on demand)", &unread);
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

    /// Leaves the variables `on_demand` supplies to be read when asked for
    /// (a variable set here already wins over one of the same name there).
    pub fn set_deferred(&mut self, on_demand: Arc<dyn DeferredVariables>) {
        self.on_demand = Some(on_demand);
    }

    fn has_entry(&self, name: &str) -> bool {
        self.entries
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Adds `name`, which the caller knows is not in the set yet, without
    /// copying it (a host filling the set from a fixed list of names).
    pub fn push_unique(&mut self, name: &'static str, value: Bytes) {
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
            None => deferred_get(self.on_demand.as_deref()?, name),
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
            .flat_map(|od| {
                let names = od.names();
                (0..names.len()).filter_map(move |i| Some((names[i], od.value(i)?)))
            })
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
