//! Accounts named in configuration (an app's `admins` list), matched the way
//! identities are cleaned, with their domain or realm kept.

use crate::clean::{clean_name, split, NameRefused};
use crate::Settings;

/// Why an entry of an [`AccountList`] cannot stand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryRefused {
    /// The entry breaks the identity rules, or names a domain or realm that is
    /// not allowed (no identity could ever match it).
    #[error("{entry:?} cannot name a user: {reason}")]
    Name {
        /// The entry as written.
        entry: String,
        /// The rule it breaks.
        reason: NameRefused,
    },
    /// A bare name while user names are cleaned and no domain or realm list
    /// is set: every domain's account of that name would match it.
    #[error(
        "{entry:?} names no domain or realm, and with clean_username on and no allowed_domains \
         or allowed_realms set, the account of that name in every domain the host trusts would \
         match it; write it as the host reports it (EXAMPLE\\{entry} or {entry}@EXAMPLE.TEST) or \
         set allowed_domains / allowed_realms"
    )]
    Unqualified {
        /// The entry as written.
        entry: String,
    },
}

/// What an entry requires of the identity beyond the user name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Qualifier {
    /// Any identity that cleans to the name (the allowed lists, or the
    /// uncleaned name, already pin the namespace).
    Any,
    /// Exactly this domain and/or realm (ASCII case-insensitive).
    Exactly {
        domain: Option<String>,
        realm: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    username: String,
    qualifier: Qualifier,
}

/// Accounts named in configuration, such as the portal's `admins`.
///
/// An entry is written as the host reports names. A qualified entry
/// (`EXAMPLE\alice`, `alice@EXAMPLE.TEST`) matches only an identity from
/// that domain or realm. A bare entry (`alice`) matches the user of that name
/// only where the settings make the name unambiguous: with `allowed_domains`
/// / `allowed_realms` set (the allowed ones are one namespace), or with
/// `clean_username` off (user names keep their domain); otherwise it is
/// refused. Entries are checked by the same character rules as identities.
///
/// ```
/// use auth_container::{AccountList, Settings};
/// let s = Settings::default();
/// let admins = AccountList::new(&["EXAMPLE\\alice".to_owned()], &s).unwrap();
/// assert!(admins.matches("alice", Some("EXAMPLE\\Alice"), &s));
/// assert!(!admins.matches("alice", Some("PARTNER\\alice"), &s));
/// assert!(!admins.matches("alice", Some("alice@ANY.REALM"), &s));
/// assert!(AccountList::new(&["alice".to_owned()], &s).is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountList {
    entries: Vec<Entry>,
}

impl AccountList {
    /// Parses `entries` under `settings`; every entry that cannot stand is
    /// reported.
    pub fn new(entries: &[String], settings: &Settings) -> Result<Self, Vec<EntryRefused>> {
        let mut list = AccountList::default();
        let mut refused = Vec::new();
        for written in entries {
            match parse(written, settings) {
                Ok(e) => list.entries.push(e),
                Err(e) => refused.push(e),
            }
        }
        if refused.is_empty() {
            Ok(list)
        } else {
            Err(refused)
        }
    }

    /// Whether the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The user names the entries clean to (one per entry, in order).
    pub fn usernames(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.username.as_str())
    }

    /// Whether the user `username`, signed in as `identity` (the name the
    /// host reported; `None` when unknown), is on the list.
    pub fn matches(&self, username: &str, identity: Option<&str>, settings: &Settings) -> bool {
        let signed_in = identity.and_then(|i| clean_name(i, settings).ok());
        self.entries.iter().any(|e| {
            if e.username != username {
                return false;
            }
            match &e.qualifier {
                Qualifier::Any => true,
                Qualifier::Exactly { domain, realm } => signed_in.as_ref().is_some_and(|s| {
                    s.username == username
                        && same(domain.as_deref(), s.domain.as_deref())
                        && same(realm.as_deref(), s.realm.as_deref())
                }),
            }
        })
    }
}

fn same(want: Option<&str>, got: Option<&str>) -> bool {
    match (want, got) {
        (None, None) => true,
        (Some(w), Some(g)) => w.eq_ignore_ascii_case(g),
        _ => false,
    }
}

fn parse(written: &str, settings: &Settings) -> Result<Entry, EntryRefused> {
    let refused = |reason| EntryRefused::Name {
        entry: written.to_owned(),
        reason,
    };
    let parts = split(written).map_err(refused)?;
    let qualified = parts.domain.is_some() || parts.realm.is_some();
    let lists = !settings.allowed_domains.is_empty() || !settings.allowed_realms.is_empty();
    if !qualified && settings.clean_username && !lists {
        return Err(EntryRefused::Unqualified {
            entry: written.to_owned(),
        });
    }
    if !qualified {
        // A bare name: the character rules apply, the lists do not (they are
        // about identities, which must carry a qualifier).
        let bare = Settings {
            allowed_domains: Vec::new(),
            allowed_realms: Vec::new(),
            ..settings.clone()
        };
        let clean = clean_name(written, &bare).map_err(refused)?;
        return Ok(Entry {
            username: clean.username,
            qualifier: Qualifier::Any,
        });
    }
    let clean = clean_name(written, settings).map_err(refused)?;
    let qualifier = if settings.clean_username {
        Qualifier::Exactly {
            domain: clean.domain,
            realm: clean.realm,
        }
    } else {
        // The user name keeps the qualifiers: equality is exact already.
        Qualifier::Any
    };
    Ok(Entry {
        username: clean.username,
        qualifier,
    })
}

/// Whether `identity` (the name a user signs in with now) may use rights
/// granted to the stored account first seen as `stored` (its `extern_name`).
/// Where the settings keep domains apart (allowed lists, or uncleaned names)
/// any identity of the user qualifies; where they merge every domain's
/// account of a name into one user, only an identity with the same domain
/// and realm as the stored one does: `PARTNER\alice` becomes the user
/// `alice`, but not with the rights `EXAMPLE\alice`'s account was given.
/// Unknown names qualify for nothing.
pub fn same_account(identity: Option<&str>, stored: Option<&str>, settings: &Settings) -> bool {
    let lists = !settings.allowed_domains.is_empty() || !settings.allowed_realms.is_empty();
    if !settings.clean_username || lists {
        return true;
    }
    let (Some(now), Some(then)) = (identity, stored) else {
        return false;
    };
    match (clean_name(now, settings), clean_name(then, settings)) {
        (Ok(a), Ok(b)) => {
            a.username == b.username
                && same(a.domain.as_deref(), b.domain.as_deref())
                && same(a.realm.as_deref(), b.realm.as_deref())
        }
        _ => false,
    }
}

/// Where the settings let names from different domains or realms become one
/// user, in words for logs and `kallithea doctor`; empty when they do not.
pub fn ambiguities(settings: &Settings) -> Vec<String> {
    let mut found = Vec::new();
    if !settings.clean_username {
        return found;
    }
    if settings.allowed_domains.is_empty() && settings.allowed_realms.is_empty() {
        found.push(
            "clean_username is on and neither allowed_domains nor allowed_realms is set: \
             accounts of the same name in any domain or realm the host accepts (CORP\\jdoe, \
             PARTNER\\jdoe, jdoe@OTHER.REALM) become one user"
                .to_owned(),
        );
        return found;
    }
    if settings.allowed_domains.len() > 1 {
        found.push(format!(
            "allowed_domains lists {} domains ({}): accounts of the same name in them become one \
             user; list more than one only if they hold the same people",
            settings.allowed_domains.len(),
            settings.allowed_domains.join(", ")
        ));
    }
    if settings.allowed_realms.len() > 1 {
        found.push(format!(
            "allowed_realms lists {} realms ({}): principals of the same name in them become one \
             user; list more than one only if they hold the same people",
            settings.allowed_realms.len(),
            settings.allowed_realms.join(", ")
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_qualified_entry_matches_only_its_domain_or_realm() {
        let s = Settings::default();
        let list = AccountList::new(&names(&["EXAMPLE\\alice", "bob@EXAMPLE.TEST"]), &s).unwrap();
        assert!(list.matches("alice", Some("example\\ALICE"), &s));
        assert!(!list.matches("alice", Some("PARTNER\\alice"), &s));
        assert!(!list.matches("alice", Some("alice@EXAMPLE.TEST"), &s));
        assert!(!list.matches("alice", Some("alice"), &s));
        assert!(!list.matches("alice", None, &s));
        assert!(list.matches("bob", Some("bob@example.test"), &s));
        assert!(!list.matches("bob", Some("EXAMPLE\\bob"), &s));
        assert!(!list.matches("bob", Some("bob@ANY.REALM"), &s));
        // The identity must be the user's own.
        assert!(!list.matches("alice", Some("EXAMPLE\\mallory"), &s));
    }

    #[test]
    fn a_bare_entry_needs_the_lists_or_uncleaned_names() {
        let s = Settings::default();
        assert_eq!(
            AccountList::new(&names(&["alice"]), &s),
            Err(vec![EntryRefused::Unqualified {
                entry: "alice".into()
            }])
        );
        let lists = Settings {
            allowed_domains: vec!["EXAMPLE".into()],
            ..s.clone()
        };
        let list = AccountList::new(&names(&["Alice"]), &lists).unwrap();
        assert!(list.matches("alice", Some("EXAMPLE\\alice"), &lists));
        let whole = Settings {
            clean_username: false,
            ..s
        };
        let list = AccountList::new(&names(&["alice", "EXAMPLE\\bob"]), &whole).unwrap();
        assert!(list.matches("alice", Some("alice"), &whole));
        assert!(list.matches("example\\bob", Some("EXAMPLE\\bob"), &whole));
        assert!(!list.matches("bob", Some("bob"), &whole));
    }

    #[test]
    fn entries_outside_the_allowed_lists_or_the_rules_are_refused() {
        let s = Settings {
            allowed_realms: vec!["EXAMPLE.TEST".into()],
            ..Settings::default()
        };
        let err = AccountList::new(
            &names(&[
                "carol@ELSEWHERE.TEST",
                "",
                "EXAMPLE\\a\u{a0}",
                "ok@EXAMPLE.TEST",
            ]),
            &s,
        )
        .unwrap_err();
        assert_eq!(err.len(), 3, "{err:?}");
        assert!(matches!(
            &err[0],
            EntryRefused::Name {
                reason: NameRefused::ForeignRealm(_),
                ..
            }
        ));
    }

    #[test]
    fn rights_of_a_merged_user_stay_with_the_account_that_had_them() {
        let open = Settings::default();
        let e = Some("EXAMPLE\\carol");
        assert!(same_account(Some("example\\Carol"), e, &open));
        assert!(!same_account(Some("PARTNER\\carol"), e, &open));
        assert!(!same_account(Some("carol@ANY.REALM"), e, &open));
        assert!(!same_account(Some("carol"), e, &open));
        assert!(!same_account(None, e, &open));
        assert!(!same_account(Some("EXAMPLE\\carol"), None, &open));
        let lists = Settings {
            allowed_domains: vec!["EXAMPLE".into()],
            allowed_realms: vec!["EXAMPLE.TEST".into()],
            ..Settings::default()
        };
        assert!(same_account(Some("carol@EXAMPLE.TEST"), e, &lists));
    }

    #[test]
    fn ambiguous_settings_are_named() {
        assert_eq!(ambiguities(&Settings::default()).len(), 1);
        let one = Settings {
            allowed_domains: vec!["EXAMPLE".into()],
            allowed_realms: vec!["EXAMPLE.TEST".into()],
            ..Settings::default()
        };
        assert!(ambiguities(&one).is_empty());
        let two = Settings {
            allowed_domains: vec!["CORP".into(), "PARTNER".into()],
            ..Settings::default()
        };
        assert!(ambiguities(&two)[0].contains("CORP, PARTNER"));
        let whole = Settings {
            clean_username: false,
            ..Settings::default()
        };
        assert!(ambiguities(&whole).is_empty());
    }
}
