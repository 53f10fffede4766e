//! What keeps the browser side honest: response headers that keep the pages
//! out of other sites' frames and out of caches, and the form session (a
//! cookie the form tokens are bound to).

use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::Response;
use kallithea_core::PathBase;

/// The cookie naming the browser's form session.
pub(crate) const SESSION_COOKIE: &str = "kallithea-form";

/// Hex digits in a session id (128 bits from the CSPRNG).
const SESSION_HEX: usize = 32;

/// Adds the protective headers to every response of the portal:
/// no framing by any page (`frame-ancestors 'none'`, and `X-Frame-Options`
/// for browsers without CSP level 2), nothing loaded or posted elsewhere,
/// no MIME sniffing, no referrer, no caching (pages carry form tokens).
pub(crate) async fn protect(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The form session the browser presented, if it is well formed.
pub(crate) fn session(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
        .filter(|v| v.len() == SESSION_HEX && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// A new form session id.
pub(crate) fn new_session() -> std::io::Result<String> {
    kallithea_core::secret::random_hex(SESSION_HEX / 2)
}

/// The `Set-Cookie` value giving the browser `session`: for this app's path
/// only, not readable by scripts, never sent with another site's requests,
/// and over HTTPS only when the page came over HTTPS.
pub(crate) fn set_cookie(session: &str, base: &PathBase, secure: bool) -> HeaderValue {
    let path = match base.as_str() {
        "" => "/",
        p if p.bytes().all(|b| b.is_ascii_graphic() && b != b';') => p,
        _ => "/",
    };
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={session}; Path={path}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("hex, a checked path and fixed attributes are valid header text")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_session_cookie_is_read() {
        let mut h = HeaderMap::new();
        let id = "0123456789abcdef0123456789abcdef";
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {SESSION_COOKIE}={id}")).unwrap(),
        );
        assert_eq!(session(&h).as_deref(), Some(id));
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{SESSION_COOKIE}=short")).unwrap(),
        );
        assert_eq!(session(&h), None);
    }

    #[test]
    fn the_cookie_is_scoped_to_the_app() {
        let base = PathBase::new("/portal").unwrap();
        let v = set_cookie("ab", &base, true);
        assert_eq!(
            v,
            "kallithea-form=ab; Path=/portal; HttpOnly; SameSite=Strict; Secure"
        );
        let v = set_cookie("ab", &PathBase::root(), false);
        assert_eq!(v, "kallithea-form=ab; Path=/; HttpOnly; SameSite=Strict");
    }
}
