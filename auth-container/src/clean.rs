//! Turning the host's user name into the application's.
//!
//! The rules, and why each is there, are written out in the crate's
//! `IDENTITY.md`; this module is their one implementation. In short: a name
//! is taken apart into at most one NetBIOS domain (`EXAMPLE\alice`) and at
//! most one Kerberos realm or UPN suffix (`alice@EXAMPLE.TEST`); every
//! qualifier it carries must be allowed; every character must be one whose
//! meaning cannot shift (no controls, format characters, non-ASCII spaces,
//! compatibility characters or characters whose case does not round-trip);
//! the result is in Unicode NFC and, by default, lower case. Whatever does not
//! fit is refused, never repaired.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

use crate::Settings;

/// Why a user name from the host was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameRefused {
    /// Nothing there, or an empty domain, realm or user part.
    #[error("the user name is empty")]
    Empty,
    /// Control characters (line breaks, NUL…) never belong in a user name.
    #[error("the user name contains control characters")]
    ControlCharacters,
    /// A character a user name may not contain (format characters, non-ASCII
    /// spaces, symbols, private-use or unassigned code points).
    #[error("the user name contains {0}, which user names may not contain")]
    Disallowed(CodePoint),
    /// A compatibility character (full-width letters, ligatures, the Kelvin
    /// sign…): it stands for another character, so two spellings would name
    /// one account.
    #[error("the user name contains {0}, a compatibility variant of another character")]
    Compatibility(CodePoint),
    /// A character whose lower and upper case do not map to each other one to
    /// one (dotted and dotless i, final sigma, ß), while names are
    /// case-insensitive.
    #[error("the user name contains {0}, whose case cannot be folded without merging names")]
    CaseUnstable(CodePoint),
    /// Space at the start or end of the name or of one of its parts.
    #[error("the user name or one of its parts starts or ends with a space")]
    Whitespace,
    /// More than one `\` or `@`, a `/` (a Kerberos instance), or a realm
    /// before the domain.
    #[error("the user name is not of the form DOMAIN\\user or user@REALM: {0}")]
    Malformed(&'static str),
    /// Both a domain and a realm (`EXAMPLE\alice@EXAMPLE.TEST`), while
    /// [`Settings::allow_domain_and_realm`] is off.
    #[error("the user name carries both a domain and a realm")]
    DomainAndRealm,
    /// Longer than `max_username_length`.
    #[error("the user name is longer than {0} characters")]
    TooLong(usize),
    /// From a domain that is not allowed.
    #[error("identities from the domain {0:?} are not accepted here")]
    ForeignDomain(String),
    /// From a realm that is not allowed.
    #[error("identities from the realm {0:?} are not accepted here")]
    ForeignRealm(String),
    /// Domain or realm lists are set but the name carries neither.
    #[error("the user name carries no domain or realm to check against the allowed ones")]
    NoDomain,
}

/// A code point named in a refusal: `U+00A0`, with the character itself when
/// it is visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodePoint(pub char);

impl std::fmt::Display for CodePoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "U+{:04X}", u32::from(self.0))
    }
}

/// A host name taken apart and cleaned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanName {
    /// The application user name.
    pub username: String,
    /// The NetBIOS domain the name carried (`EXAMPLE`), as the host wrote it.
    pub domain: Option<String>,
    /// The realm or UPN suffix the name carried (`EXAMPLE.TEST`), as the host
    /// wrote it.
    pub realm: Option<String>,
}

/// A name split into its parts: `DOMAIN\user`, `user@REALM`, or with
/// [`Settings::allow_domain_and_realm`], `DOMAIN\user@REALM`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Parts<'a> {
    pub domain: Option<&'a str>,
    pub realm: Option<&'a str>,
    pub user: &'a str,
}

/// Takes `name` apart. Structure only: characters are checked separately.
pub(crate) fn split(name: &str) -> Result<Parts<'_>, NameRefused> {
    if name.matches('\\').count() > 1 {
        return Err(NameRefused::Malformed("more than one backslash"));
    }
    if name.matches('@').count() > 1 {
        return Err(NameRefused::Malformed("more than one @"));
    }
    let (domain, rest) = match name.split_once('\\') {
        Some((d, r)) => (Some(d), r),
        None => (None, name),
    };
    if domain.is_some_and(|d| d.contains('@')) {
        return Err(NameRefused::Malformed("the realm comes before the domain"));
    }
    let (user, realm) = match rest.split_once('@') {
        Some((u, r)) => (u, Some(r)),
        None => (rest, None),
    };
    if user.contains('/') {
        return Err(NameRefused::Malformed(
            "a / names a Kerberos instance or service, not a user",
        ));
    }
    let parts = Parts {
        domain,
        realm,
        user,
    };
    for part in [Some(user), domain, realm].into_iter().flatten() {
        if part.is_empty() {
            return Err(NameRefused::Empty);
        }
        if part.starts_with(' ') || part.ends_with(' ') {
            return Err(NameRefused::Whitespace);
        }
    }
    Ok(parts)
}

/// Checks one character against the character rules (see `IDENTITY.md`).
fn check_char(c: char, fold_case: bool) -> Result<(), NameRefused> {
    if c.is_ascii() {
        return if c.is_ascii_control() {
            Err(NameRefused::ControlCharacters)
        } else {
            Ok(())
        };
    }
    match c.general_category_group() {
        GeneralCategoryGroup::Letter | GeneralCategoryGroup::Mark => {}
        GeneralCategoryGroup::Number if c.general_category() == GeneralCategory::DecimalNumber => {}
        GeneralCategoryGroup::Other if c.general_category() == GeneralCategory::Control => {
            return Err(NameRefused::ControlCharacters)
        }
        _ => return Err(NameRefused::Disallowed(CodePoint(c))),
    }
    // A compatibility character stands for another one (NFKC maps it away).
    let mut nfkc = std::iter::once(c).nfkc();
    if nfkc.next() != Some(c) || nfkc.next().is_some() {
        return Err(NameRefused::Compatibility(CodePoint(c)));
    }
    if fold_case && !case_round_trips(c) {
        return Err(NameRefused::CaseUnstable(CodePoint(c)));
    }
    Ok(())
}

/// The one character `c` maps to under `map`, if it maps to exactly one.
fn single(mut mapped: impl Iterator<Item = char>) -> Option<char> {
    let c = mapped.next()?;
    mapped.next().is_none().then_some(c)
}

/// Whether `c`'s case mappings are one to one: its lower case `l` is one
/// character, `l`'s upper case `u` is one character, and `u`'s lower case is
/// `l` again. Characters for which this holds fall into case pairs (or stand
/// alone), so lower-casing them merges exactly the names that differ in case.
pub(crate) fn case_round_trips(c: char) -> bool {
    let Some(l) = single(c.to_lowercase()) else {
        return false;
    };
    let Some(u) = single(l.to_uppercase()) else {
        return false;
    };
    single(u.to_lowercase()) == Some(l)
}

/// Whether `qualifier` is in `allowed` (ASCII letters in either case).
fn allowed(qualifier: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| a.eq_ignore_ascii_case(qualifier))
}

/// Cleans `raw` as the settings say and returns the application user name
/// with the qualifiers the name carried. See [`clean_username`].
pub fn clean_name(raw: &str, settings: &Settings) -> Result<CleanName, NameRefused> {
    if raw.is_empty() {
        return Err(NameRefused::Empty);
    }
    if raw.starts_with(' ') || raw.ends_with(' ') {
        return Err(NameRefused::Whitespace);
    }
    // The characters as written (a compatibility character such as the
    // Kelvin sign would vanish into its canonical twin under NFC), and as
    // composed (`I` + U+0307 composes to `İ`, whose case does not round-trip).
    // ASCII is its own NFC form: the common name is checked once.
    let ascii = raw.is_ascii();
    if ascii {
        if raw.bytes().any(|b| b.is_ascii_control()) {
            return Err(NameRefused::ControlCharacters);
        }
    } else {
        for c in raw.chars().chain(raw.nfc()) {
            check_char(c, settings.case_insensitive)?;
        }
    }
    let parts = split(raw)?;
    if parts.domain.is_some() && parts.realm.is_some() && !settings.allow_domain_and_realm {
        return Err(NameRefused::DomainAndRealm);
    }
    if !settings.allowed_domains.is_empty() || !settings.allowed_realms.is_empty() {
        if parts.domain.is_none() && parts.realm.is_none() {
            return Err(NameRefused::NoDomain);
        }
        if let Some(d) = parts
            .domain
            .filter(|d| !allowed(d, &settings.allowed_domains))
        {
            return Err(NameRefused::ForeignDomain(d.to_owned()));
        }
        if let Some(r) = parts
            .realm
            .filter(|r| !allowed(r, &settings.allowed_realms))
        {
            return Err(NameRefused::ForeignRealm(r.to_owned()));
        }
    }
    let kept = if settings.clean_username {
        parts.user
    } else {
        raw
    };
    let username: String = if ascii {
        if settings.case_insensitive {
            kept.to_ascii_lowercase()
        } else {
            kept.to_owned()
        }
    } else if settings.case_insensitive {
        // NFC first so that a decomposed capital folds like the composed one,
        // then NFC again: lower-casing may leave marks to recompose.
        kept.nfc()
            .flat_map(char::to_lowercase)
            .collect::<String>()
            .nfc()
            .collect()
    } else {
        kept.nfc().collect()
    };
    let length = if ascii {
        username.len()
    } else {
        username.chars().count()
    };
    if length > settings.max_username_length {
        return Err(NameRefused::TooLong(settings.max_username_length));
    }
    Ok(CleanName {
        username,
        domain: parts.domain.map(str::to_owned),
        realm: parts.realm.map(str::to_owned),
    })
}

/// Cleans `raw` as the settings say: checks the domain and realm against the
/// allowed lists, strips them (`clean_username`), normalises to NFC, folds
/// case (`case_insensitive`), and refuses what does not fit the identity
/// rules (`IDENTITY.md`) instead of repairing it.
///
/// ```
/// use auth_container::{clean_username, NameRefused, Settings};
/// let s = Settings::default();
/// assert_eq!(clean_username("EXAMPLE\\Alice", &s).unwrap(), "alice");
/// assert_eq!(clean_username("alice@EXAMPLE.TEST", &s).unwrap(), "alice");
/// // Refused, not repaired: a trailing no-break space, the Kelvin sign.
/// assert!(clean_username("EXAMPLE\\alice\u{a0}", &s).is_err());
/// assert!(matches!(clean_username("\u{212a}ate", &s), Err(NameRefused::Compatibility(_))));
/// ```
pub fn clean_username(raw: &str, settings: &Settings) -> Result<String, NameRefused> {
    clean_name(raw, settings).map(|c| c.username)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Settings {
        Settings::default()
    }

    fn lists() -> Settings {
        Settings {
            allowed_domains: vec!["CORP".into()],
            allowed_realms: vec!["CORP.EXAMPLE".into()],
            ..s()
        }
    }

    #[test]
    fn domains_and_realms_are_stripped_and_case_folded() {
        assert_eq!(clean_username("EXAMPLE\\Alice", &s()).unwrap(), "alice");
        assert_eq!(clean_username("Alice@EXAMPLE.TEST", &s()).unwrap(), "alice");
        assert_eq!(clean_username("EXAMPLE\\JÖRG", &s()).unwrap(), "jörg");
        assert_eq!(clean_username("john smith", &s()).unwrap(), "john smith");
        assert_eq!(clean_username("WEB01$", &s()).unwrap(), "web01$");
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
        // Without folding, characters whose case does not round-trip are fine.
        assert_eq!(clean_username("Strauß", &settings).unwrap(), "Strauß");
    }

    #[test]
    fn other_domains_are_refused_not_cleaned_into_a_collision() {
        let settings = lists();
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
            Err(NameRefused::ForeignRealm("PARTNER.EXAMPLE".into()))
        );
        assert_eq!(
            clean_username("jdoe", &settings),
            Err(NameRefused::NoDomain)
        );
    }

    #[test]
    fn a_name_with_domain_and_realm_needs_both_allowed_and_the_setting() {
        let only_domain = Settings {
            allowed_domains: vec!["EXAMPLE".into()],
            ..s()
        };
        // The outside test's first reproduction.
        assert_eq!(
            clean_username("EXAMPLE\\alice@EVIL.TEST", &only_domain),
            Err(NameRefused::DomainAndRealm)
        );
        let only_realm = Settings {
            allowed_realms: vec!["EXAMPLE.TEST".into()],
            ..s()
        };
        assert_eq!(
            clean_username("PARTNER\\alice@EXAMPLE.TEST", &only_realm),
            Err(NameRefused::DomainAndRealm)
        );
        let both = Settings {
            allow_domain_and_realm: true,
            ..lists()
        };
        assert_eq!(
            clean_username("CORP\\alice@CORP.EXAMPLE", &both).unwrap(),
            "alice"
        );
        assert_eq!(
            clean_username("CORP\\alice@EVIL.TEST", &both),
            Err(NameRefused::ForeignRealm("EVIL.TEST".into()))
        );
        assert_eq!(
            clean_username("EVIL\\alice@CORP.EXAMPLE", &both),
            Err(NameRefused::ForeignDomain("EVIL".into()))
        );
        // Without lists, the setting still has to be on.
        assert_eq!(
            clean_username("A\\alice@B", &s()),
            Err(NameRefused::DomainAndRealm)
        );
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in [
            "A\\B\\alice",
            "alice@B@C",
            "alice@REALM\\x",
            "alice/admin@EXAMPLE.TEST",
            "HTTP/web.example.test",
        ] {
            assert!(
                matches!(clean_username(bad, &s()), Err(NameRefused::Malformed(_))),
                "{bad:?}: {:?}",
                clean_username(bad, &s())
            );
        }
    }

    #[test]
    fn empty_parts_and_spaces_at_the_edges_are_refused() {
        for bad in ["", "EXAMPLE\\", "\\alice", "@EXAMPLE.TEST", "alice@"] {
            assert_eq!(
                clean_username(bad, &s()),
                Err(NameRefused::Empty),
                "{bad:?}"
            );
        }
        for bad in ["   ", " bob", "bob ", "EXAMPLE\\ alice", "EXAMPLE \\alice"] {
            assert_eq!(
                clean_username(bad, &s()),
                Err(NameRefused::Whitespace),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn controls_format_characters_and_unicode_spaces_are_refused() {
        assert_eq!(
            clean_username("al\nice", &s()),
            Err(NameRefused::ControlCharacters)
        );
        assert_eq!(
            clean_username("al\u{0}ice", &s()),
            Err(NameRefused::ControlCharacters)
        );
        assert_eq!(
            clean_username("al\u{85}ice", &s()),
            Err(NameRefused::ControlCharacters)
        );
        assert_eq!(
            clean_username("al\tice", &s()),
            Err(NameRefused::ControlCharacters)
        );
        for c in [
            '\u{a0}',
            '\u{3000}',
            '\u{2002}',
            '\u{200b}',
            '\u{200d}',
            '\u{feff}',
            '\u{202e}',
            '\u{2028}',
            '\u{e000}',
            '\u{10ffff}',
            '\u{2019}',
        ] {
            let name = format!("EXAMPLE\\alice{c}");
            let got = clean_username(&name, &s());
            assert!(
                matches!(
                    got,
                    Err(NameRefused::Disallowed(_) | NameRefused::Compatibility(_))
                ),
                "U+{:04X}: {got:?}",
                u32::from(c)
            );
        }
    }

    #[test]
    fn compatibility_characters_are_refused() {
        // Kelvin sign, full-width a, the fi ligature, Angstrom sign, Roman numeral one.
        for c in ['\u{212a}', '\u{ff41}', '\u{fb01}', '\u{212b}', '\u{2160}'] {
            let name = format!("EXAMPLE\\{c}ate");
            assert!(
                matches!(
                    clean_username(&name, &s()),
                    Err(NameRefused::Compatibility(_) | NameRefused::Disallowed(_))
                ),
                "U+{:04X}",
                u32::from(c)
            );
        }
    }

    #[test]
    fn characters_whose_case_does_not_round_trip_are_refused_when_folding() {
        for name in ["İsmail", "ıvan", "Νίκος", "Strauß", "ǅemal"] {
            assert!(clean_username(name, &s()).is_err(), "{name}");
        }
        assert_eq!(clean_username("ΝΙΚΟΣ", &s()).unwrap(), "νικοσ");
    }

    #[test]
    fn canonical_spellings_become_one_name() {
        let composed = "EXAMPLE\\Zo\u{eb}";
        let decomposed = "EXAMPLE\\Zoe\u{308}";
        assert_eq!(clean_username(composed, &s()).unwrap(), "zo\u{eb}");
        assert_eq!(clean_username(decomposed, &s()).unwrap(), "zo\u{eb}");
        let exact = Settings {
            case_insensitive: false,
            ..s()
        };
        assert_eq!(clean_username(decomposed, &exact).unwrap(), "Zo\u{eb}");
    }

    #[test]
    fn look_alikes_stay_apart() {
        let latin = clean_username("alice", &s()).unwrap();
        let cyrillic = clean_username("\u{430}lice", &s()).unwrap();
        assert_ne!(latin, cyrillic);
    }

    #[test]
    fn overlong_names_are_refused() {
        let long = "a".repeat(129);
        assert_eq!(clean_username(&long, &s()), Err(NameRefused::TooLong(128)));
        assert!(clean_username(&"a".repeat(128), &s()).is_ok());
    }

    #[test]
    fn the_qualifiers_are_reported() {
        let both = Settings {
            allow_domain_and_realm: true,
            ..s()
        };
        assert_eq!(
            clean_name("Corp\\Bob@Corp.Example", &both).unwrap(),
            CleanName {
                username: "bob".into(),
                domain: Some("Corp".into()),
                realm: Some("Corp.Example".into()),
            }
        );
    }

    /// Every accepted character's case class is a pair at most: the only
    /// characters that lower-case to the same one are it and its one upper
    /// case. Checked over all of Unicode, so no third spelling can hide.
    #[test]
    fn accepted_characters_fold_in_pairs_only() {
        let mut classes: std::collections::HashMap<char, Vec<char>> = Default::default();
        for c in (0..=0x10ffffu32).filter_map(char::from_u32) {
            if check_char(c, true).is_ok() && !c.is_ascii_control() {
                let l = single(c.to_lowercase()).expect("round-trips");
                classes.entry(l).or_default().push(c);
            }
        }
        for (l, members) in classes {
            assert!(members.len() <= 2, "{l:?} has {members:?}");
            for m in &members {
                assert!(
                    *m == l || single(l.to_uppercase()) == Some(*m),
                    "{m:?} folds to {l:?} but is not its upper case"
                );
            }
        }
    }
}
