//! The plugin's settings, in the shape of Kallithea's `auth_container`.

use std::time::Duration;

use kallithea_core::config::{duration, Issues, Validate};
use serde::Deserialize;

/// How new users start out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Created active: the first visit logs the user in.
    #[default]
    Automatic,
    /// Created inactive: an administrator activates the account first.
    Manual,
}

/// Settings of the container authentication plugin.
///
/// ```toml
/// header = "REMOTE_USER"
/// fallback_header = "X-Forwarded-User"   # only believed through a paired proxy
/// clean_username = true
/// allowed_domains = ["CORP"]
/// activation = "automatic"
/// anonymous = false
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Whether the plugin authenticates at all; when off it says nothing about
    /// any request (the next plugin, or no user).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where the user name comes from: `REMOTE_USER` (the default) means the
    /// identity the host authenticated, which the hosts make from it; another
    /// variable means that variable when the host supplies it, otherwise the
    /// identity. Only variables the host itself authenticates are accepted
    /// ([`IDENTITY_VARIABLES`]: `REMOTE_USER`, `LOGON_USER`, `AUTH_USER` and
    /// their `UNICODE_` forms), never one a client can write (`HTTP_*`,
    /// `SERVER_NAME`…).
    #[serde(default = "default_header")]
    pub header: String,
    /// An HTTP header carrying the user name, believed only on requests from a
    /// paired front proxy; ignored otherwise.
    #[serde(default)]
    pub fallback_header: Option<String>,
    /// Strip the domain and realm: `EXAMPLE\alice` and `alice@EXAMPLE.TEST`
    /// become `alice`.
    #[serde(default = "yes")]
    pub clean_username: bool,
    /// When set, only identities from these NetBIOS domains (`EXAMPLE\…`) are
    /// accepted; others are refused rather than cleaned into a name that may
    /// collide with a local user's.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// When set, only identities from these Kerberos realms (`…@EXAMPLE.TEST`)
    /// are accepted.
    #[serde(default)]
    pub allowed_realms: Vec<String>,
    /// Whether a name carrying both a domain and a realm
    /// (`EXAMPLE\alice@EXAMPLE.TEST`) is accepted; each must then be allowed.
    /// Off by default: no Windows host reports such a name, so one is more
    /// likely a forgery than an account.
    #[serde(default)]
    pub allow_domain_and_realm: bool,
    /// Fold user names to lower case, as Windows accounts are case-insensitive.
    #[serde(default = "yes")]
    pub case_insensitive: bool,
    /// The longest user name accepted, in characters.
    #[serde(default = "default_max_len")]
    pub max_username_length: usize,
    /// Proxy header with the user's e-mail address (same trust rule as
    /// `fallback_header`).
    #[serde(default)]
    pub email_header: Option<String>,
    /// Proxy header with the user's first name.
    #[serde(default)]
    pub firstname_header: Option<String>,
    /// Proxy header with the user's last name.
    #[serde(default)]
    pub lastname_header: Option<String>,
    /// Whether new users start active.
    #[serde(default)]
    pub activation: Activation,
    /// Whether requests without an identity proceed as the anonymous user
    /// (otherwise they get 401).
    #[serde(default)]
    pub anonymous: bool,
    /// How long a user record may be served from memory before it is read
    /// again (changes made through this process invalidate it at once; the
    /// bound covers changes made by other worker processes).
    #[serde(default = "default_cache_ttl", with = "duration")]
    pub cache_ttl: Duration,
}

/// The host variables that carry the name the host authenticated, and so
/// the only values [`Settings::header`] accepts. Every other variable is either
/// written by the client (`HTTP_*`, `SERVER_NAME` from the `Host` header,
/// `QUERY_STRING`…) or says nothing about the user.
pub const IDENTITY_VARIABLES: &[&str] = &[
    "REMOTE_USER",
    "LOGON_USER",
    "AUTH_USER",
    "UNICODE_REMOTE_USER",
    "UNICODE_LOGON_USER",
    "UNICODE_AUTH_USER",
];

/// Whether `name` is one of [`IDENTITY_VARIABLES`] (server variable names are
/// case-insensitive).
pub fn is_identity_variable(name: &str) -> bool {
    IDENTITY_VARIABLES
        .iter()
        .any(|v| v.eq_ignore_ascii_case(name))
}

fn default_header() -> String {
    "REMOTE_USER".into()
}

fn yes() -> bool {
    true
}

fn default_max_len() -> usize {
    128
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(10)
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            header: default_header(),
            fallback_header: None,
            clean_username: true,
            allowed_domains: Vec::new(),
            allowed_realms: Vec::new(),
            allow_domain_and_realm: false,
            case_insensitive: true,
            max_username_length: default_max_len(),
            email_header: None,
            firstname_header: None,
            lastname_header: None,
            activation: Activation::Automatic,
            anonymous: false,
            cache_ttl: default_cache_ttl(),
        }
    }
}

impl Validate for Settings {
    fn validate(&self, issues: &mut Issues) {
        if !is_identity_variable(&self.header) {
            issues.push(
                "header",
                format!(
                    "{:?} is not a variable the host authenticates; use one of {}",
                    self.header,
                    IDENTITY_VARIABLES.join(", ")
                ),
            );
        }
        let headers = [
            ("fallback_header", &self.fallback_header),
            ("email_header", &self.email_header),
            ("firstname_header", &self.firstname_header),
            ("lastname_header", &self.lastname_header),
        ];
        for (key, value) in headers {
            if let Some(v) = value {
                if http::HeaderName::from_bytes(v.as_bytes()).is_err() {
                    issues.push(key, format!("{v:?} is not a valid HTTP header name"));
                }
            }
        }
        for (key, list) in [
            ("allowed_domains", &self.allowed_domains),
            ("allowed_realms", &self.allowed_realms),
        ] {
            if list.iter().any(|d| d.trim().is_empty()) {
                issues.push(key, "contains an empty entry");
            }
        }
        if self.max_username_length == 0 || self.max_username_length > 1024 {
            issues.push("max_username_length", "must be between 1 and 1024");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kallithea_core::config;

    #[test]
    fn every_setting_parses_from_toml() {
        let text = r#"
            header = "LOGON_USER"
            fallback_header = "X-Forwarded-User"
            clean_username = false
            allowed_domains = ["CORP"]
            allowed_realms = ["CORP.EXAMPLE"]
            allow_domain_and_realm = true
            case_insensitive = false
            max_username_length = 64
            email_header = "X-Forwarded-Email"
            firstname_header = "X-Forwarded-First"
            lastname_header = "X-Forwarded-Last"
            activation = "manual"
            anonymous = true
            cache_ttl = "2s"
        "#;
        let s: Settings = config::from_str(text, None, "T", []).unwrap();
        assert_eq!(s.header, "LOGON_USER");
        assert_eq!(s.fallback_header.as_deref(), Some("X-Forwarded-User"));
        assert!(!s.clean_username && !s.case_insensitive && s.anonymous);
        assert!(s.allow_domain_and_realm);
        assert_eq!((s.allowed_domains.len(), s.allowed_realms.len()), (1, 1));
        assert_eq!(s.max_username_length, 64);
        assert_eq!(s.lastname_header.as_deref(), Some("X-Forwarded-Last"));
        assert_eq!(s.activation, Activation::Manual);
        assert_eq!(s.cache_ttl, Duration::from_secs(2));
        let d: Settings = config::from_str("", None, "T", []).unwrap();
        assert_eq!(
            (d.header.as_str(), d.activation, d.anonymous),
            ("REMOTE_USER", Activation::Automatic, false)
        );
    }

    #[test]
    fn bad_settings_are_reported_by_key() {
        let text = "header = ' '\nfallback_header = 'bad header'\nallowed_domains = ['']\nmax_username_length = 0\n";
        let err = config::from_str::<Settings>(text, None, "T", []).unwrap_err();
        let config::ConfigError::Invalid(issues) = err else {
            panic!("{err}")
        };
        let keys: Vec<_> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "header",
                "fallback_header",
                "allowed_domains",
                "max_username_length"
            ]
        );
        let err =
            config::from_str::<Settings>("activation = 'sometimes'", None, "T", []).unwrap_err();
        assert!(err.to_string().contains("activation"), "{err}");
    }

    #[test]
    fn only_variables_the_host_authenticates_name_the_user() {
        for ok in [
            "REMOTE_USER",
            "logon_user",
            "Auth_User",
            "UNICODE_REMOTE_USER",
        ] {
            let text = format!("header = '{ok}'");
            assert!(
                config::from_str::<Settings>(&text, None, "T", []).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "SERVER_NAME",
            "HTTP_HOST",
            "HTTP_X_KALLITHEA_USER",
            "HTTP_REMOTE_USER",
            "QUERY_STRING",
            "REMOTE_USER ",
            "X-Remote-User",
            "",
        ] {
            let text = format!("header = '{bad}'");
            let err = config::from_str::<Settings>(&text, None, "T", []).unwrap_err();
            assert!(
                err.to_string().contains("REMOTE_USER, LOGON_USER"),
                "{bad}: {err}"
            );
        }
        // The same through an environment override.
        let env = [("T_HEADER".to_owned(), "SERVER_NAME".to_owned())];
        let err = config::from_str::<Settings>("", None, "T", env).unwrap_err();
        assert!(err.to_string().contains("REMOTE_USER, LOGON_USER"), "{err}");
    }
}
