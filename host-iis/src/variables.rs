//! Server variables: how an IIS binding reads them ([`ServerVariables`]),
//! which ones a request keeps for the app ([`KEPT_VARIABLES`]), the user
//! names read from their `UNICODE_` forms, and the ones left to be read from
//! IIS only when the app first asks.

use bytes::Bytes;
use kallithea_core::DeferredVariables;

/// Where a host reads server variables from.
///
/// The mapping reads variables through [`append`](Self::append) and
/// [`append_unicode`](Self::append_unicode) into a few buffers it reuses
/// for the whole request, so a host that can copy a value straight from its
/// own buffer should override those two; their defaults go through
/// [`get`](Self::get) and [`get_unicode`](Self::get_unicode).
pub trait ServerVariables {
    /// The value of a plain variable, in the bytes the host gives (IIS: the
    /// system code page), or `None` if the host does not know it.
    fn get(&self, name: &str) -> Option<Vec<u8>>;

    /// The value of a `UNICODE_` variable, decoded from the host's UTF-16, or
    /// `None` if the host does not know it.
    fn get_unicode(&self, name: &str) -> Option<String>;

    /// Appends the value of a plain variable to `out` and returns `true`, or
    /// returns `false` with `out` unchanged if the host does not know it.
    fn append(&self, name: &str, out: &mut Vec<u8>) -> bool {
        match self.get(name) {
            Some(value) => {
                out.extend_from_slice(&value);
                true
            }
            None => false,
        }
    }

    /// Appends the decoded value of a `UNICODE_` variable to `out` and
    /// returns `true`, or returns `false` with `out` unchanged if the host
    /// does not know it.
    fn append_unicode(&self, name: &str, out: &mut String) -> bool {
        match self.get_unicode(name) {
            Some(value) => {
                out.push_str(&value);
                true
            }
            None => false,
        }
    }
}

/// Runs `f` with `name` NUL-terminated, as the IIS interfaces take variable
/// names — on the stack when it is short, as names are; `None` (and `f` not
/// run) when `name` itself holds a NUL.
pub fn with_nul_terminated<R>(name: &str, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
    if name.bytes().any(|b| b == 0) {
        return None;
    }
    let mut short = [0u8; 64];
    if name.len() < short.len() {
        short[..name.len()].copy_from_slice(name.as_bytes());
        return Some(f(&mut short[..=name.len()]));
    }
    let mut long = Vec::with_capacity(name.len() + 1);
    long.extend_from_slice(name.as_bytes());
    long.push(0);
    Some(f(&mut long))
}

/// Appends UTF-16 `units` (a `UNICODE_` variable as IIS returns it) to
/// `out`, replacing invalid sequences with U+FFFD as
/// [`String::from_utf16_lossy`] does.
pub fn push_utf16_lossy(out: &mut String, units: &[u16]) {
    out.extend(
        char::decode_utf16(units.iter().copied()).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)),
    );
}

/// The variables kept as [`HostVariables`](kallithea_core::HostVariables) for plugins and apps.
/// ([`request_from_live_variables`](crate::mapping::request_from_live_variables) reads the ones the mapping does not
/// need only when they are asked for.)
pub const KEPT_VARIABLES: &[&str] = &[
    "AUTH_TYPE",
    "REMOTE_USER",
    "LOGON_USER",
    "AUTH_USER",
    "APPL_MD_PATH",
    "APPL_PHYSICAL_PATH",
    "HTTPS",
    "SERVER_NAME",
    "INSTANCE_ID",
];

/// The [`KEPT_VARIABLES`] the mapping itself does not use: a host whose
/// variables stay readable while the request runs leaves them to be read on
/// first use (every read is a call into IIS, and few requests need them).
pub(crate) const ON_DEMAND: [&str; 5] = [
    "LOGON_USER",
    "AUTH_USER",
    "APPL_PHYSICAL_PATH",
    "SERVER_NAME",
    "INSTANCE_ID",
];

/// The unicode form of a kept variable that has one (the user names).
fn unicode_form(name: &str) -> Option<&'static str> {
    match name {
        "REMOTE_USER" => Some("UNICODE_REMOTE_USER"),
        "LOGON_USER" => Some("UNICODE_LOGON_USER"),
        "AUTH_USER" => Some("UNICODE_AUTH_USER"),
        _ => None,
    }
}

/// Appends kept variable `name` to `out` as [`HostVariables`] holds it (the
/// user names as UTF-8, from their `UNICODE_` form when there is one);
/// `Ok(false)` and `out` unchanged when the host reports none; `Err` with
/// the reason for a user name the host reports only in a form that may not
/// be the user's name ([`user_name`]).
pub(crate) fn read_kept(
    vars: &dyn ServerVariables,
    name: &str,
    out: &mut Vec<u8>,
    text: &mut String,
) -> Result<bool, String> {
    match unicode_form(name) {
        Some(unicode_name) => user_name(vars, name, unicode_name, out, text),
        None => Ok(vars.append(name, out)),
    }
}

/// The variables of one request left to be read when first asked for,
/// with the host's view of the request they are read from (`V`, a host's
/// own type; one allocation for both).
pub(crate) struct OnDemand<V> {
    values: [std::sync::OnceLock<Option<Bytes>>; ON_DEMAND.len()],
    source: V,
}

impl<V: ServerVariables + Send + Sync + 'static> OnDemand<V> {
    /// The on-demand variables of the request `source` reads from, as the
    /// core's [`HostVariables`](kallithea_core::HostVariables) takes them.
    pub(crate) fn shared(source: V) -> std::sync::Arc<dyn DeferredVariables> {
        std::sync::Arc::new(OnDemand {
            values: Default::default(),
            source,
        })
    }
}

impl<V: ServerVariables + Send + Sync> DeferredVariables for OnDemand<V> {
    fn names(&self) -> &[&'static str] {
        &ON_DEMAND
    }

    fn value(&self, i: usize) -> Option<&Bytes> {
        self.values
            .get(i)?
            .get_or_init(|| {
                let mut out = Vec::new();
                match read_kept(&self.source, ON_DEMAND[i], &mut out, &mut String::new()) {
                    Ok(true) => Some(Bytes::from(out)),
                    Ok(false) => None,
                    Err(why) => {
                        tracing::warn!(variable = ON_DEMAND[i], "{why}: left out");
                        None
                    }
                }
            })
            .as_ref()
    }

    fn read_already(&self, i: usize) -> Option<Option<&Bytes>> {
        self.values.get(i)?.get().map(Option::as_ref)
    }
}

/// Appends user name variable `name` to `out` as UTF-8: from its
/// `UNICODE_` form (`unicode_name`) when the host has it, as IIS does.
/// Without it, the plain form is the host's own bytes — IIS converts names
/// to the system code page there, best-fit (`Łukasz` → `Lukasz`, another
/// account's name) or with `?` for what the code page lacks. So a plain
/// name is believed only when it cannot be such a conversion's product:
/// valid UTF-8 (a host whose native form is UTF-8, as Apache's is) without
/// `?` (no Windows account name holds one). Anything else is refused with
/// the reason (`Err`), never guessed. `Ok(false)` when there is no name.
/// The residual case, a host that converts best-fit to ASCII and reports no
/// `UNICODE_` form, cannot be told apart; `auth-container/IDENTITY.md`
/// says so.
pub(crate) fn user_name(
    vars: &dyn ServerVariables,
    name: &str,
    unicode_name: &str,
    out: &mut Vec<u8>,
    text: &mut String,
) -> Result<bool, String> {
    text.clear();
    if vars.append_unicode(unicode_name, text) && !text.is_empty() {
        out.extend_from_slice(text.as_bytes());
        return Ok(true);
    }
    let start = out.len();
    if !vars.append(name, out) || out.len() == start {
        out.truncate(start);
        return Ok(false);
    }
    let plain = &out[start..];
    let why = if std::str::from_utf8(plain).is_err() {
        Some("is not UTF-8: it is in the host's code page, which may have replaced or approximated characters")
    } else if plain.contains(&b'?') {
        Some("holds '?', which a code page puts where it lacks a character")
    } else {
        None
    };
    match why {
        None => Ok(true),
        Some(why) => {
            out.truncate(start);
            Err(format!(
                "the host reports {name} without {unicode_name}, and its value {why}; \
                 the name is not believed"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_nul_terminated_short_or_long() {
        for name in ["", "HTTP_URL", &"X".repeat(63), &"Y".repeat(200)] {
            let got = with_nul_terminated(name, |z| z.to_vec()).unwrap();
            assert_eq!(got, [name.as_bytes(), b"\0"].concat());
        }
        assert_eq!(with_nul_terminated("A\0B", |_| unreachable!()), None::<()>);
    }

    #[test]
    fn utf16_is_appended_with_bad_units_replaced() {
        let mut out = String::from("EXAMPLE\\");
        let units: Vec<u16> = "jörg 張".encode_utf16().chain([0xD800, 0x41]).collect();
        push_utf16_lossy(&mut out, &units);
        assert_eq!(out, "EXAMPLE\\jörg 張\u{FFFD}A");
        assert_eq!(out[8..], String::from_utf16_lossy(&units));
    }
}
