//! Properties of name cleaning over generated names: random domains, realms
//! and separators, Unicode spaces, case variants, compatibility characters,
//! canonical (de)compositions and look-alikes.
//!
//! 1. No name outside the allowed domains and realms is ever accepted.
//! 2. Two names that clean to the same user were equal in the directory's own
//!    comparison: the same qualifier namespace, and user parts equal after
//!    canonical normalisation under *both* upper-casing (Windows compares
//!    that way) and lower-casing (others do), or exactly when names are
//!    case-sensitive. The comparison is written here independently of the
//!    cleaning code.
//! 3. What comes out is in NFC and holds no control, format or space
//!    character other than the ASCII space.

use auth_container::{clean_name, Settings};
use proptest::prelude::*;
use unicode_normalization::UnicodeNormalization;

/// Characters names are built from: ordinary ones, and every kind that has
/// merged or split names somewhere.
const POOL: &[char] = &[
    'a',
    'A',
    'b',
    'B',
    'e',
    'E',
    'i',
    'I',
    'k',
    'K',
    's',
    'S',
    'z',
    'Z',
    '0',
    '7',
    '.',
    '-',
    '_',
    '$',
    ' ',
    '\'', // ASCII
    '\u{a0}',
    '\u{3000}',
    '\u{2009}',
    '\u{200b}',
    '\u{200d}',
    '\u{feff}',
    '\u{202e}',
    '\t',
    '\n',
    '\u{85}', // spaces, format and control characters
    '\u{212a}',
    '\u{212b}',
    '\u{ff41}',
    '\u{ff21}',
    '\u{fb01}',
    '\u{2160}',
    '\u{1d5ba}',
    '\u{1c5}', // compatibility characters
    '\u{130}',
    '\u{131}',
    '\u{df}',
    '\u{1e9e}',
    '\u{3a3}',
    '\u{3c3}',
    '\u{3c2}',
    '\u{3f4}',
    '\u{398}',
    '\u{3b8}', // case oddities
    '\u{eb}',
    '\u{cb}',
    '\u{308}',
    '\u{301}',
    '\u{e9}',
    '\u{c5}',
    '\u{e5}', // composition
    '\u{430}',
    '\u{410}',
    '\u{3bf}',
    '\u{51c}', // look-alikes (Cyrillic, Greek)
    '\u{4e2d}',
    '\u{e000}',
    '\u{378}', // CJK, private use, unassigned
    '\\',
    '@',
    '/', // separators inside a part
];

const QUALIFIERS: &[&str] = &[
    "EXAMPLE",
    "example",
    "ExAmPlE",
    "PARTNER",
    "EXAMPLE.TEST",
    "example.test",
    "EVIL.TEST",
    "EXAMPLE\u{a0}",
    "\u{212a}EXAMPLE",
    "EXAMPLE.TEST ",
    "",
];

fn user_part() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(POOL), 1..7)
        .prop_map(|cs| cs.into_iter().collect())
}

fn qualifier() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(proptest::sample::select(QUALIFIERS).prop_map(str::to_owned))
}

/// A spelling variant of `base` that a directory may or may not treat as the
/// same name: case flips, decomposition, look-alike substitution.
fn variant(base: &str, choices: &[u8]) -> String {
    let mut out = String::new();
    for (c, pick) in base.chars().zip(choices.iter().cycle()) {
        match pick % 8 {
            0 => out.extend(c.to_uppercase()),
            1 => out.extend(c.to_lowercase()),
            2 => out.extend(std::iter::once(c).nfd()),
            3 => out.push(match c {
                'k' | 'K' => '\u{212a}',
                'a' => '\u{430}',
                'A' => '\u{ff21}',
                'i' => '\u{131}',
                'I' => '\u{130}',
                's' => '\u{3c2}',
                'S' => '\u{1e9e}',
                'e' => '\u{435}',
                other => other,
            }),
            4 => {
                out.push(c);
                out.push('\u{a0}');
            }
            _ => out.push(c),
        }
    }
    out
}

fn compose(domain: &Option<String>, user: &str, realm: &Option<String>) -> String {
    let mut s = String::new();
    if let Some(d) = domain {
        s.push_str(d);
        s.push('\\');
    }
    s.push_str(user);
    if let Some(r) = realm {
        s.push('@');
        s.push_str(r);
    }
    s
}

/// The directory's comparison of two user parts (see the file's doc).
fn directory_equal(a: &str, b: &str, case_insensitive: bool) -> bool {
    let a: String = a.nfc().collect();
    let b: String = b.nfc().collect();
    if !case_insensitive {
        return a == b;
    }
    let lower = |s: &str| s.chars().flat_map(char::to_lowercase).collect::<String>();
    a.to_uppercase() == b.to_uppercase() && lower(&a) == lower(&b)
}

/// The qualifiers of a raw name as written (the test's own reading): text
/// before the first backslash, text after the last `@`.
fn written_qualifiers(raw: &str) -> (Option<&str>, Option<&str>) {
    let domain = raw.split_once('\\').map(|(d, _)| d);
    let realm = raw.rsplit_once('@').map(|(_, r)| r);
    (domain, realm)
}

fn user_of(raw: &str) -> &str {
    let rest = raw.split_once('\\').map_or(raw, |(_, r)| r);
    rest.rsplit_once('@').map_or(rest, |(u, _)| u)
}

fn settings_under_test(lists: bool, both: bool, fold: bool, clean: bool) -> Settings {
    Settings {
        allowed_domains: if lists {
            vec!["EXAMPLE".into()]
        } else {
            Vec::new()
        },
        allowed_realms: if lists {
            vec!["EXAMPLE.TEST".into()]
        } else {
            Vec::new()
        },
        allow_domain_and_realm: both,
        case_insensitive: fold,
        clean_username: clean,
        ..Settings::default()
    }
}

fn output_is_clean(name: &str) {
    assert!(name.nfc().eq(name.chars()), "{name:?} is not NFC");
    for c in name.chars() {
        assert!(!c.is_control(), "{name:?} holds a control");
        assert!(c == ' ' || !c.is_whitespace(), "{name:?} holds a space");
        let mut k = std::iter::once(c).nfkc();
        assert!(
            k.next() == Some(c) && k.next().is_none(),
            "{name:?} holds a compatibility character"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, .. ProptestConfig::default() })]

    #[test]
    fn no_name_outside_the_allowed_sets_is_accepted(
        domain in qualifier(),
        user in user_part(),
        realm in qualifier(),
        both in any::<bool>(),
        fold in any::<bool>(),
        clean in any::<bool>(),
    ) {
        let settings = settings_under_test(true, both, fold, clean);
        let raw = compose(&domain, &user, &realm);
        if let Ok(cleaned) = clean_name(&raw, &settings) {
            let (d, r) = written_qualifiers(&raw);
            prop_assert!(d.is_some() || r.is_some(), "{raw:?} has no qualifier");
            if let Some(d) = d {
                prop_assert!(d.eq_ignore_ascii_case("EXAMPLE"), "{raw:?}: domain {d:?}");
            }
            if let Some(r) = r {
                prop_assert!(r.eq_ignore_ascii_case("EXAMPLE.TEST"), "{raw:?}: realm {r:?}");
            }
            prop_assert!(both || d.is_none() || r.is_none(), "{raw:?}: both qualifiers");
            output_is_clean(&cleaned.username);
        }
    }

    #[test]
    fn names_that_become_one_user_were_one_account(
        base in user_part(),
        picks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..7), 2..6),
        quals in proptest::collection::vec((qualifier(), qualifier()), 2..6),
        lists in any::<bool>(),
        fold in any::<bool>(),
    ) {
        let settings = settings_under_test(lists, true, fold, true);
        let mut accepted: Vec<(String, String)> = Vec::new();
        for (pick, (domain, realm)) in picks.iter().zip(quals.iter().cycle()) {
            let raw = compose(domain, &variant(&base, pick), realm);
            if let Ok(c) = clean_name(&raw, &settings) {
                output_is_clean(&c.username);
                accepted.push((raw, c.username));
            }
        }
        for (i, (raw_a, a)) in accepted.iter().enumerate() {
            for (raw_b, b) in &accepted[i + 1..] {
                if a == b {
                    prop_assert!(
                        directory_equal(user_of(raw_a), user_of(raw_b), fold),
                        "{raw_a:?} and {raw_b:?} both became {a:?}"
                    );
                } else {
                    prop_assert!(
                        !directory_equal(user_of(raw_a), user_of(raw_b), fold),
                        "{raw_a:?} and {raw_b:?} are one account but became {a:?} and {b:?}"
                    );
                }
            }
        }
    }
}

/// The outside test's name reproductions, each refused or kept apart.
#[test]
fn the_reported_name_confusions_are_closed() {
    let domains = Settings {
        allowed_domains: vec!["EXAMPLE".into()],
        ..Settings::default()
    };
    let realms = Settings {
        allowed_realms: vec!["EXAMPLE.TEST".into()],
        ..Settings::default()
    };
    assert!(clean_name("EXAMPLE\\alice@EVIL.TEST", &domains).is_err());
    assert!(clean_name("PARTNER\\alice@EXAMPLE.TEST", &realms).is_err());
    let d = Settings::default();
    assert!(clean_name("EXAMPLE\\alice\u{a0}", &d).is_err());
    assert!(clean_name("EXAMPLE\\alice\u{3000}", &d).is_err());
    assert!(clean_name("EXAMPLE\\\u{212a}ate", &d).is_err());
    assert_eq!(
        clean_name("Zo\u{eb}", &d).unwrap(),
        clean_name("Zoe\u{308}", &d).unwrap()
    );
    assert!(clean_name("\u{ff41}lice", &d).is_err());
    assert_ne!(
        clean_name("alice", &d).unwrap().username,
        clean_name("\u{430}lice", &d).unwrap().username
    );
}
