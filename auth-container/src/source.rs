//! Where the user name and attributes come from, and when to believe them.

use http::request::Parts;
use http::HeaderName;
use kallithea_core::RequestExt;

use crate::{Attributes, Settings};

/// What the host (or a paired proxy) said about the user.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Claimed {
    /// The raw user name, if any.
    pub name: Option<String>,
    /// Attributes from the proxy's headers.
    pub attributes: Attributes,
}

/// Reads the claim. `Err` is a reason to refuse the request (400): proxy
/// headers that are ambiguous or not text.
pub(crate) fn claimed(parts: &Parts, settings: &Settings) -> Result<Claimed, String> {
    // The host's own word. The identity is the one source of truth: the
    // hosts make it from REMOTE_USER (IIS) or their own authentication
    // (host-hyper); another variable the host authenticates (LOGON_USER,
    // AUTH_USER — validated settings name no other, and hand-built ones are
    // checked here too) is read only when configured, and when present.
    let from_variable =
        if names_the_identity(&settings.header) || !crate::is_identity_variable(&settings.header) {
            None
        } else {
            parts
                .host_variables()
                .and_then(|v| v.get_str(&settings.header))
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
    let mut claim = Claimed {
        name: from_variable.or_else(|| parts.identity().map(|i| i.name().to_owned())),
        attributes: Attributes::default(),
    };

    // Proxy headers only from a paired proxy; from anyone else they are not
    // even looked at.
    let via_proxy = parts.connection_info().is_some_and(|c| c.proxy.is_some());
    if !via_proxy {
        return Ok(claim);
    }
    if claim.name.is_none() {
        if let Some(h) = &settings.fallback_header {
            claim.name = proxy_header(parts, h)?;
        }
    }
    claim.attributes = Attributes {
        email: settings
            .email_header
            .as_deref()
            .map(|h| proxy_header(parts, h))
            .transpose()?
            .flatten(),
        first_name: settings
            .firstname_header
            .as_deref()
            .map(|h| proxy_header(parts, h))
            .transpose()?
            .flatten(),
        last_name: settings
            .lastname_header
            .as_deref()
            .map(|h| proxy_header(parts, h))
            .transpose()?
            .flatten(),
    };
    Ok(claim)
}

/// Whether host variable `name` is the one the hosts already turned into the
/// request's `Identity` (`REMOTE_USER`, in either form).
fn names_the_identity(name: &str) -> bool {
    name.eq_ignore_ascii_case("REMOTE_USER") || name.eq_ignore_ascii_case("UNICODE_REMOTE_USER")
}

/// The value of header `name` as the proxy sent it. Another header whose name
/// differs only by `-` and `_` (one CGI variable for both) makes the request
/// ambiguous: a client may have smuggled it past the proxy.
fn proxy_header(parts: &Parts, name: &str) -> Result<Option<String>, String> {
    let wanted =
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name {name:?}"))?;
    let cgi = |n: &str| {
        n.bytes()
            .map(|b| {
                if b == b'-' {
                    b'_'
                } else {
                    b.to_ascii_lowercase()
                }
            })
            .collect::<Vec<_>>()
    };
    let key = cgi(wanted.as_str());
    let twins = parts
        .headers
        .keys()
        .filter(|k| *k != wanted && cgi(k.as_str()) == key)
        .count();
    if twins > 0 {
        return Err(format!("header {name} arrived in more than one spelling"));
    }
    let mut values = parts.headers.get_all(&wanted).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("header {name} arrived more than once"));
    }
    let text =
        std::str::from_utf8(value.as_bytes()).map_err(|_| format!("header {name} is not UTF-8"))?;
    // HTTP's optional whitespace around a value (space and tab), nothing
    // more: other Unicode spaces are part of the value, and the name rules
    // refuse them.
    let text = text.trim_matches([' ', '\t']);
    Ok((!text.is_empty()).then(|| text.to_owned()))
}
