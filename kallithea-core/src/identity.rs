//! Who the host says the user is, and how it knows.

use std::fmt;
use std::net::IpAddr;

/// The identity a host authenticated, exactly as the host reports it.
///
/// Only host adapters create an `Identity`: from IIS's `REMOTE_USER` / `IHttpUser`,
/// from a Kerberos exchange, or from a front proxy that proved itself with the
/// pairing secret. It is never taken from a client header on the host's own
/// authority. Cleaning the name (`EXAMPLE\alice` → `alice`) is the business of
/// authentication plugins, so [`name`](Identity::name) keeps the raw form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    name: String,
    scheme: AuthScheme,
    source: IdentitySource,
}

impl Identity {
    /// An identity the host established itself (Windows authentication, Kerberos…).
    pub fn from_host(name: impl Into<String>, scheme: AuthScheme) -> Self {
        Identity {
            name: name.into(),
            scheme,
            source: IdentitySource::Host,
        }
    }

    /// The identity a host reports as a user name and the name of the scheme
    /// that authenticated it (IIS's `REMOTE_USER` and `AUTH_TYPE`,
    /// `IHttpUser`'s name and type): none when the name is empty (the host
    /// authenticated nobody); a scheme the host does not name is
    /// `Other("unknown")`. Every IIS binding reports through this one rule.
    pub fn reported_by_host(name: impl Into<String>, auth_type: &str) -> Option<Self> {
        let name = name.into();
        if name.is_empty() {
            return None;
        }
        let scheme = if auth_type.trim().is_empty() {
            AuthScheme::Other("unknown".into())
        } else {
            AuthScheme::from_host_name(auth_type)
        };
        Some(Identity::from_host(name, scheme))
    }

    /// An identity asserted by a trusted front proxy at `proxy`.
    pub fn from_trusted_proxy(name: impl Into<String>, proxy: IpAddr) -> Self {
        Identity {
            name: name.into(),
            scheme: AuthScheme::Forwarded,
            source: IdentitySource::TrustedProxy { proxy },
        }
    }

    /// The user name exactly as the host reported it (`EXAMPLE\alice`,
    /// `alice@EXAMPLE.TEST`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the user was authenticated.
    pub fn scheme(&self) -> &AuthScheme {
        &self.scheme
    }

    /// Who vouches for this identity.
    pub fn source(&self) -> &IdentitySource {
        &self.source
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.name, self.scheme, self.source)
    }
}

/// The authentication scheme behind an [`Identity`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AuthScheme {
    /// SPNEGO (`WWW-Authenticate: Negotiate`), Kerberos or NTLM inside.
    Negotiate,
    /// Plain NTLM.
    Ntlm,
    /// Kerberos without SPNEGO.
    Kerberos,
    /// HTTP Basic, checked by the host.
    Basic,
    /// Asserted by a trusted front proxy, which did the authentication itself.
    Forwarded,
    /// Any other scheme, as the host named it (`Digest`, `SSL/PCT`…).
    Other(String),
}

impl AuthScheme {
    /// Maps a scheme name as hosts report it (IIS `AUTH_TYPE`,
    /// `IHttpUser::GetAuthenticationType`) to a scheme, ignoring case.
    ///
    /// ```
    /// use kallithea_core::AuthScheme;
    /// assert_eq!(AuthScheme::from_host_name("NTLM"), AuthScheme::Ntlm);
    /// assert_eq!(AuthScheme::from_host_name("negotiate"), AuthScheme::Negotiate);
    /// assert_eq!(AuthScheme::from_host_name("Digest"), AuthScheme::Other("Digest".into()));
    /// ```
    pub fn from_host_name(name: &str) -> Self {
        let name = name.trim();
        for (known, scheme) in [
            ("Negotiate", AuthScheme::Negotiate),
            ("NTLM", AuthScheme::Ntlm),
            ("Kerberos", AuthScheme::Kerberos),
            ("Basic", AuthScheme::Basic),
        ] {
            if name.eq_ignore_ascii_case(known) {
                return scheme;
            }
        }
        AuthScheme::Other(name.to_owned())
    }

    /// The scheme's conventional name.
    pub fn as_str(&self) -> &str {
        match self {
            AuthScheme::Negotiate => "Negotiate",
            AuthScheme::Ntlm => "NTLM",
            AuthScheme::Kerberos => "Kerberos",
            AuthScheme::Basic => "Basic",
            AuthScheme::Forwarded => "Forwarded",
            AuthScheme::Other(s) => s,
        }
    }
}

impl fmt::Display for AuthScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who vouches for an [`Identity`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdentitySource {
    /// The host authenticated the user itself (IIS, or host-hyper's own Negotiate).
    Host,
    /// A front proxy whose address is trusted and which presented the pairing
    /// secret asserted the identity.
    TrustedProxy {
        /// The proxy's address as the connection showed it.
        proxy: IpAddr,
    },
}

impl fmt::Display for IdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentitySource::Host => f.write_str("host"),
            IdentitySource::TrustedProxy { proxy } => write!(f, "trusted proxy {proxy}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_report_is_an_identity_only_with_a_name() {
        assert_eq!(Identity::reported_by_host("", "Negotiate"), None);
        let id = Identity::reported_by_host("EXAMPLE\\alice", "negotiate").unwrap();
        assert_eq!(id.scheme(), &AuthScheme::Negotiate);
        assert_eq!(id.source(), &IdentitySource::Host);
        let id = Identity::reported_by_host("EXAMPLE\\alice", " ").unwrap();
        assert_eq!(id.scheme(), &AuthScheme::Other("unknown".into()));
    }
}
