//! Simulated Windows authentication: what IIS would report as the user.

use std::collections::HashMap;

use http::HeaderMap;

/// Which users the simulated Windows authentication accepts.
#[derive(Clone, Debug)]
pub enum Users {
    /// These users, with these passwords.
    Listed(HashMap<String, String>),
    /// Any user name with this password (for suites that invent users).
    AnyWithPassword(String),
}

/// How the simulator authenticates requests, as IIS's authentication
/// sections would.
#[derive(Clone, Debug)]
pub enum WindowsAuth {
    /// Anonymous authentication only: no user is reported.
    Anonymous,
    /// Every request is from this user (`DOMAIN\user`), authenticated with
    /// Negotiate.
    Fixed {
        /// The user as IIS reports it.
        user: String,
    },
    /// Windows authentication with Negotiate, backed by real Kerberos
    /// (host-hyper's GSSAPI acceptor): the principal `alice@EXAMPLE.TEST` is
    /// reported as IIS reports a domain user, `NETBIOS\alice`, with
    /// `AUTH_TYPE` `Negotiate`, and the response carries the
    /// mutual-authentication token.
    #[cfg(unix)]
    Negotiate {
        /// The acceptor (keytab, replay cache).
        negotiator: std::sync::Arc<host_hyper::Negotiator>,
        /// Kerberos realm (upper case) → NetBIOS domain name. A principal from
        /// a realm not listed is refused, as a domain IIS does not trust.
        netbios: HashMap<String, String>,
    },
    /// Basic authentication against `users`, reported as `DOMAIN\user`.
    Basic {
        /// The NetBIOS domain name put in front of user names.
        domain: String,
        /// The accepted users.
        users: Users,
        /// Requests without credentials are let through anonymously
        /// (anonymous authentication enabled beside Basic).
        anonymous: bool,
    },
}

/// An authenticated user, as IIS reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowsUser {
    /// `DOMAIN\user`.
    pub name: String,
    /// `AUTH_TYPE`.
    pub auth_type: String,
}

/// An accepted request: the user (none when anonymous) and a header for the
/// response (Negotiate's mutual-authentication token).
#[derive(Debug, Default)]
pub struct Authenticated {
    /// The user IIS reports.
    pub user: Option<WindowsUser>,
    /// `WWW-Authenticate` for the response.
    pub mutual: Option<http::HeaderValue>,
}

impl From<Option<WindowsUser>> for Authenticated {
    fn from(user: Option<WindowsUser>) -> Self {
        Authenticated { user, mutual: None }
    }
}

/// The request was not authenticated; answer 401 with this challenge.
#[derive(Debug)]
pub struct Challenge(pub String);

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Encodes `user:password` for a Basic `Authorization` header.
pub fn basic_credentials(user: &str, password: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{password}");
    let mut out = String::from("Basic ");
    for chunk in raw.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl WindowsAuth {
    /// Authenticates a request: the user (or `None` for an anonymous
    /// request), or the challenge to answer with.
    ///
    /// In Negotiate mode this blocks on the Kerberos library's file I/O.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Authenticated, Challenge> {
        #[cfg(unix)]
        if let WindowsAuth::Negotiate {
            negotiator,
            netbios,
        } = self
        {
            return negotiate(negotiator, netbios, headers);
        }
        self.authenticate_simple(headers).map(Authenticated::from)
    }

    /// The challenge of the authentication scheme enabled here; `None` with
    /// anonymous authentication only.
    pub fn challenge(&self) -> Option<Challenge> {
        match self {
            WindowsAuth::Anonymous => None,
            #[cfg(unix)]
            WindowsAuth::Negotiate { .. } => Some(Challenge("Negotiate".into())),
            WindowsAuth::Fixed { .. } => Some(Challenge("Negotiate".into())),
            WindowsAuth::Basic { domain, .. } => {
                Some(Challenge(format!("Basic realm=\"{domain}\"")))
            }
        }
    }

    /// What IIS's authentication modules do to every 401 response, whoever
    /// produced it (the extension, the module, or the app behind the proxy):
    /// they add the challenge of their scheme, so that a client can answer
    /// it. A response that already names the scheme keeps its own.
    pub fn challenge_401<B>(&self, response: &mut http::Response<B>) {
        if response.status() != http::StatusCode::UNAUTHORIZED {
            return;
        }
        let headers = response.headers_mut();
        let Some(Challenge(challenge)) = self.challenge() else {
            return;
        };
        let scheme = challenge.split(' ').next().unwrap_or_default();
        let named = headers
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(' ')
                    .next()
                    .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
            });
        if !named {
            if let Ok(v) = http::HeaderValue::from_str(&challenge) {
                headers.append(http::header::WWW_AUTHENTICATE, v);
            }
        }
    }

    fn authenticate_simple(&self, headers: &HeaderMap) -> Result<Option<WindowsUser>, Challenge> {
        let challenge = || self.challenge().expect("a scheme that challenges");
        match self {
            #[cfg(unix)]
            WindowsAuth::Negotiate { .. } => Err(challenge()),
            WindowsAuth::Anonymous => Ok(None),
            WindowsAuth::Fixed { user } => Ok(Some(WindowsUser {
                name: user.clone(),
                auth_type: "Negotiate".into(),
            })),
            WindowsAuth::Basic {
                domain,
                users,
                anonymous,
            } => {
                let Some(value) = headers.get(http::header::AUTHORIZATION) else {
                    return if *anonymous {
                        Ok(None)
                    } else {
                        Err(challenge())
                    };
                };
                let value = value.to_str().map_err(|_| challenge())?;
                let (scheme, token) = value.split_once(' ').ok_or_else(challenge)?;
                if !scheme.eq_ignore_ascii_case("basic") {
                    return Err(challenge());
                }
                let decoded = decode_base64(token).ok_or_else(challenge)?;
                let decoded = String::from_utf8(decoded).map_err(|_| challenge())?;
                let (user, password) = decoded.split_once(':').ok_or_else(challenge)?;
                // Windows account names hold no control characters (NUL
                // included), so no logon with one succeeds.
                if user.chars().any(char::is_control) {
                    return Err(challenge());
                }
                let accepted = match users {
                    Users::Listed(map) => map.get(user).is_some_and(|p| p == password),
                    Users::AnyWithPassword(p) => p == password && !user.is_empty(),
                };
                if !accepted {
                    return Err(challenge());
                }
                // REMOTE_USER is the name as the client sent it (IIS maps
                // it to an account only for LOGON_USER): a user typed as
                // DOMAIN\user or as a UPN (user@REALM) keeps it; a bare
                // name gets the default domain.
                let name = if user.contains('\\') || user.contains('@') {
                    user.to_owned()
                } else {
                    format!("{domain}\\{user}")
                };
                Ok(Some(WindowsUser {
                    name,
                    auth_type: "Basic".into(),
                }))
            }
        }
    }
}

/// `alice@EXAMPLE.TEST` → `EXAMPLE\alice` with the realm → NetBIOS map, as
/// IIS names a user of a trusted domain; `None` for a realm not in the map.
pub fn netbios_name(principal: &str, netbios: &HashMap<String, String>) -> Option<String> {
    let (user, realm) = principal.rsplit_once('@')?;
    let domain = netbios.get(&realm.to_ascii_uppercase())?;
    (!user.is_empty()).then(|| format!("{domain}\\{user}"))
}

#[cfg(unix)]
fn negotiate(
    negotiator: &host_hyper::Negotiator,
    netbios: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Authenticated, Challenge> {
    use host_hyper::negotiate::Negotiation;
    let challenge = || Challenge("Negotiate".into());
    match negotiator.accept(headers) {
        Negotiation::Challenge => Err(challenge()),
        Negotiation::Failed(failure) => {
            tracing::warn!(kind = %failure.kind, reason = %failure.message, "simulated IIS: Negotiate authentication failed");
            Err(challenge())
        }
        Negotiation::Authenticated { principal, mutual } => {
            let Some(name) = netbios_name(&principal, netbios) else {
                tracing::warn!(%principal, "simulated IIS: the principal's realm is not mapped to a NetBIOS domain");
                return Err(challenge());
            };
            Ok(Authenticated {
                user: Some(WindowsUser {
                    name,
                    auth_type: "Negotiate".into(),
                }),
                mutual,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_round_trip() {
        for (u, p) in [
            ("alice", "secret"),
            ("zoë", "pässwörd"),
            ("a", "bc"),
            ("ab", "c"),
        ] {
            let h = basic_credentials(u, p);
            let decoded = decode_base64(&h["Basic ".len()..]).unwrap();
            assert_eq!(String::from_utf8(decoded).unwrap(), format!("{u}:{p}"));
        }
        assert_eq!(
            basic_credentials("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn a_401_gets_the_enabled_scheme_s_challenge_once() {
        use http::header::WWW_AUTHENTICATE;
        use http::StatusCode;
        let basic = WindowsAuth::Basic {
            domain: "EXAMPLE".into(),
            users: Users::AnyWithPassword("x".into()),
            anonymous: true,
        };
        let response = |status: StatusCode, h: HeaderMap| {
            let mut r = http::Response::new(());
            *r.status_mut() = status;
            *r.headers_mut() = h;
            r
        };
        let values = |r: &http::Response<()>| {
            r.headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };

        let mut h = response(StatusCode::UNAUTHORIZED, HeaderMap::new());
        basic.challenge_401(&mut h);
        assert_eq!(values(&h), ["Basic realm=\"EXAMPLE\""]);
        // Already there (in any case): not added twice.
        let mut h = HeaderMap::new();
        h.insert(WWW_AUTHENTICATE, "basic realm=\"app\"".parse().unwrap());
        let mut h = response(StatusCode::UNAUTHORIZED, h);
        basic.challenge_401(&mut h);
        assert_eq!(values(&h), ["basic realm=\"app\""]);
        // Another scheme's challenge stays, and IIS's joins it.
        let mut h = HeaderMap::new();
        h.insert(WWW_AUTHENTICATE, "Bearer".parse().unwrap());
        let mut h = response(StatusCode::UNAUTHORIZED, h);
        basic.challenge_401(&mut h);
        assert_eq!(values(&h), ["Bearer", "Basic realm=\"EXAMPLE\""]);
        // Not a 401, or no scheme that challenges: untouched.
        let mut h = response(StatusCode::FORBIDDEN, HeaderMap::new());
        basic.challenge_401(&mut h);
        assert!(h.headers().is_empty());
        let mut h = response(StatusCode::UNAUTHORIZED, HeaderMap::new());
        WindowsAuth::Anonymous.challenge_401(&mut h);
        assert!(h.headers().is_empty());
        let fixed = WindowsAuth::Fixed {
            user: "EXAMPLE\\alice".into(),
        };
        fixed.challenge_401(&mut h);
        assert_eq!(values(&h), ["Negotiate"]);
    }

    #[test]
    fn principals_are_reported_with_the_netbios_domain() {
        let map: HashMap<String, String> =
            [("EXAMPLE.TEST".to_owned(), "EXAMPLE".to_owned())].into();
        assert_eq!(
            netbios_name("alice@EXAMPLE.TEST", &map).as_deref(),
            Some("EXAMPLE\\alice")
        );
        assert_eq!(
            netbios_name("alice@example.test", &map).as_deref(),
            Some("EXAMPLE\\alice")
        );
        assert_eq!(netbios_name("alice@OTHER.TEST", &map), None);
        assert_eq!(netbios_name("alice", &map), None);
        assert_eq!(netbios_name("@EXAMPLE.TEST", &map), None);
    }

    #[test]
    fn basic_users_are_reported_with_the_domain() {
        let auth = WindowsAuth::Basic {
            domain: "EXAMPLE".into(),
            users: Users::Listed([("alice".to_owned(), "pw".to_owned())].into()),
            anonymous: false,
        };
        let mut h = HeaderMap::new();
        assert!(auth.authenticate(&h).is_err());
        h.insert(
            "authorization",
            basic_credentials("alice", "pw").parse().unwrap(),
        );
        let user = auth.authenticate(&h).unwrap().user.unwrap();
        assert_eq!(user.name, "EXAMPLE\\alice");
        assert_eq!(user.auth_type, "Basic");
        h.insert(
            "authorization",
            basic_credentials("alice", "wrong").parse().unwrap(),
        );
        assert!(auth.authenticate(&h).is_err());
    }

    #[test]
    fn names_with_control_characters_never_log_on() {
        let auth = WindowsAuth::Basic {
            domain: "EXAMPLE".into(),
            users: Users::AnyWithPassword("pw".into()),
            anonymous: false,
        };
        for name in ["EXAMPLE\\alice\0", "EXAMPLE\\al\nice", "alice\u{7f}"] {
            let mut h = HeaderMap::new();
            h.insert(
                "authorization",
                basic_credentials(name, "pw").parse().unwrap(),
            );
            assert!(auth.authenticate(&h).is_err(), "{name:?}");
        }
    }
}
