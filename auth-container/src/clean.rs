//! Turning the host's user name into the application's.

use crate::Settings;

/// Why a user name from the host was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameRefused {
    /// Nothing left after cleaning.
    #[error("the user name is empty")]
    Empty,
    /// Control characters (line breaks, NUL…) never belong in a user name.
    #[error("the user name contains control characters")]
    ControlCharacters,
    /// Longer than `max_username_length`.
    #[error("the user name is longer than {0} characters")]
    TooLong(usize),
    /// From a domain or realm that is not allowed.
    #[error("identities from {0:?} are not accepted here")]
    ForeignDomain(String),
    /// Domain or realm lists are set but the name carries neither.
    #[error("the user name carries no domain or realm to check against the allowed ones")]
    NoDomain,
}

/// A name split into its parts: `DOMAIN\user`, `user@REALM`.
#[derive(Debug, PartialEq, Eq)]
struct Parts<'a> {
    domain: Option<&'a str>,
    realm: Option<&'a str>,
    user: &'a str,
}

fn split(name: &str) -> Parts<'_> {
    let (domain, rest) = match name.rsplit_once('\\') {
        Some((d, r)) => (Some(d), r),
        None => (None, name),
    };
    let (user, realm) = match rest.split_once('@') {
        Some((u, r)) => (u, Some(r)),
        None => (rest, None),
    };
    Parts {
        domain,
        realm,
        user,
    }
}

/// Cleans `raw` as the settings say: checks the domain or realm against the
/// allowed lists, strips them (`clean_username`), folds case
/// (`case_insensitive`), and refuses empty, over-long and control-character
/// names.
///
/// ```
/// use auth_container::{clean_username, Settings};
/// let s = Settings::default();
/// assert_eq!(clean_username("EXAMPLE\\Alice", &s).unwrap(), "alice");
/// assert_eq!(clean_username("alice@EXAMPLE.TEST", &s).unwrap(), "alice");
/// ```
pub fn clean_username(raw: &str, settings: &Settings) -> Result<String, NameRefused> {
    let raw = raw.trim();
    if raw.chars().any(char::is_control) {
        return Err(NameRefused::ControlCharacters);
    }
    let parts = split(raw);
    if !settings.allowed_domains.is_empty() || !settings.allowed_realms.is_empty() {
        let domain_ok = parts.domain.is_some_and(|d| {
            settings
                .allowed_domains
                .iter()
                .any(|a| a.eq_ignore_ascii_case(d))
        });
        let realm_ok = parts.realm.is_some_and(|r| {
            settings
                .allowed_realms
                .iter()
                .any(|a| a.eq_ignore_ascii_case(r))
        });
        if !(domain_ok || realm_ok) {
            return Err(match parts.domain.or(parts.realm) {
                Some(foreign) => NameRefused::ForeignDomain(foreign.to_owned()),
                None => NameRefused::NoDomain,
            });
        }
    }
    let name = if settings.clean_username {
        parts.user.trim()
    } else {
        raw
    };
    if name.is_empty() {
        return Err(NameRefused::Empty);
    }
    if name.chars().count() > settings.max_username_length {
        return Err(NameRefused::TooLong(settings.max_username_length));
    }
    Ok(if settings.case_insensitive {
        name.to_lowercase()
    } else {
        name.to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Settings {
        Settings::default()
    }

    #[test]
    fn domains_and_realms_are_stripped_and_case_folded() {
        assert_eq!(clean_username("EXAMPLE\\Alice", &s()).unwrap(), "alice");
        assert_eq!(clean_username("Alice@EXAMPLE.TEST", &s()).unwrap(), "alice");
        assert_eq!(clean_username("  bob ", &s()).unwrap(), "bob");
        assert_eq!(clean_username("EXAMPLE\\JÖRG", &s()).unwrap(), "jörg");
    }

    #[test]
    fn cleaning_and_folding_can_be_turned_off() {
        let settings = Settings {
            clean_username: false,
            case_insensitive: false,
            ..s()
        };
        assert_eq!(
            clean_username("EXAMPLE\\Alice", &settings).unwrap(),
            "EXAMPLE\\Alice"
        );
    }

    #[test]
    fn other_domains_are_refused_not_cleaned_into_a_collision() {
        let settings = Settings {
            allowed_domains: vec!["CORP".into()],
            allowed_realms: vec!["CORP.EXAMPLE".into()],
            ..s()
        };
        assert_eq!(clean_username("corp\\jdoe", &settings).unwrap(), "jdoe");
        assert_eq!(
            clean_username("jdoe@corp.example", &settings).unwrap(),
            "jdoe"
        );
        assert_eq!(
            clean_username("PARTNER\\jdoe", &settings),
            Err(NameRefused::ForeignDomain("PARTNER".into()))
        );
        assert_eq!(
            clean_username("jdoe@PARTNER.EXAMPLE", &settings),
            Err(NameRefused::ForeignDomain("PARTNER.EXAMPLE".into()))
        );
        assert_eq!(
            clean_username("jdoe", &settings),
            Err(NameRefused::NoDomain)
        );
    }

    #[test]
    fn empty_control_and_overlong_names_are_refused() {
        for bad in ["", "   ", "EXAMPLE\\", "@EXAMPLE.TEST", "EXAMPLE\\ @X"] {
            assert_eq!(
                clean_username(bad, &s()),
                Err(NameRefused::Empty),
                "{bad:?}"
            );
        }
        assert_eq!(
            clean_username("al\nice", &s()),
            Err(NameRefused::ControlCharacters)
        );
        assert_eq!(
            clean_username("al\u{0}ice", &s()),
            Err(NameRefused::ControlCharacters)
        );
        let long = "a".repeat(129);
        assert_eq!(clean_username(&long, &s()), Err(NameRefused::TooLong(128)));
        assert!(clean_username(&"a".repeat(128), &s()).is_ok());
    }
}
