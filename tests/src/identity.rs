//! Identity attacks: names a host (or a paired proxy) may report, chosen to
//! confuse the step that turns a host name into a user, run against the
//! reference portal on every host.
//!
//! Each [`Profile`] is a configuration in the shape users write; each
//! [`Attempt`] is a name as the host reports it and what must happen. A
//! host's test sends every attempt the host can express (IIS's Windows
//! authentication always reports `DOMAIN\user`; a proxy header cannot carry
//! control characters) and checks the outcome with [`check`]: whether the
//! name was refused, signed in as an ordinary user, or reached the admin API.

use std::future::Future;

/// A configuration of the portal's authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `allowed_domains = ["EXAMPLE"]`, admins `EXAMPLE\alice`, `EXAMPLE\kate`,
    /// `EXAMPLE\zoë`.
    Domains,
    /// `allowed_realms = ["EXAMPLE.TEST"]`, admin `alice@EXAMPLE.TEST`.
    Realms,
    /// No allowed lists (the README's IIS example), admin `EXAMPLE\alice`.
    Open,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 3] = [Profile::Domains, Profile::Realms, Profile::Open];

    /// The `admins` entries.
    pub fn admins(self) -> Vec<String> {
        match self {
            Profile::Domains => vec![
                "EXAMPLE\\alice".into(),
                "EXAMPLE\\kate".into(),
                "EXAMPLE\\zo\u{eb}".into(),
            ],
            Profile::Realms => vec!["alice@EXAMPLE.TEST".into()],
            Profile::Open => vec!["EXAMPLE\\alice".into()],
        }
    }

    /// The plugin's settings.
    pub fn settings(self) -> auth_container::Settings {
        let mut s = auth_container::Settings::default();
        match self {
            Profile::Domains => s.allowed_domains = vec!["EXAMPLE".into()],
            Profile::Realms => s.allowed_realms = vec!["EXAMPLE.TEST".into()],
            Profile::Open => {}
        }
        s
    }

    /// The same as TOML: `admins = …` and the `[auth_container]` table's
    /// lines (for an IIS DLL's `[app]` / `[app.auth_container]`).
    pub fn toml(self) -> (String, String) {
        let admins = self
            .admins()
            .iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let lists = match self {
            Profile::Domains => "allowed_domains = ['EXAMPLE']\n",
            Profile::Realms => "allowed_realms = ['EXAMPLE.TEST']\n",
            Profile::Open => "",
        };
        (format!("admins = [{admins}]\n"), lists.to_owned())
    }
}

/// What must happen to a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Refused (403 from the plugin: the name breaks the identity rules or
    /// comes from a domain or realm that is not allowed; or 401 from a host
    /// that cannot authenticate such a name at all).
    Refused,
    /// Signed in as this user, without admin rights.
    User(&'static str),
    /// An administrator (the legitimate controls).
    Admin,
}

/// One name as the host reports it, under one profile.
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    /// The configuration.
    pub profile: Profile,
    /// The name, exactly as the host reports it.
    pub name: &'static str,
    /// What must happen.
    pub expect: Expect,
    /// What the attempt tries.
    pub why: &'static str,
}

const fn a(profile: Profile, name: &'static str, expect: Expect, why: &'static str) -> Attempt {
    Attempt {
        profile,
        name,
        expect,
        why,
    }
}

use Expect::{Admin, Refused, User};
use Profile::{Domains, Open, Realms};

/// The attempts. The legitimate controls (`Expect::Admin`) show each profile
/// lets its administrators in, so that a refusal elsewhere means something.
#[rustfmt::skip]
pub const ATTEMPTS: &[Attempt] = &[
    a(Domains, "EXAMPLE\\alice", Admin, "control: the admin"),
    a(Domains, "example\\ALICE", Admin, "control: case of domain and name"),
    a(Domains, "EXAMPLE\\Zoe\u{308}", Admin, "control: decomposed ë is the same account as ë"),
    a(Domains, "EXAMPLE\\bob", User("bob"), "control: an ordinary user"),
    a(Domains, "EXAMPLE\\alice@EVIL.TEST", Refused, "allowed domain, foreign realm"),
    a(Domains, "PARTNER\\alice", Refused, "foreign domain"),
    a(Domains, "EXAMPLE\\PARTNER\\alice", Refused, "two domains"),
    a(Domains, "PARTNER\\EXAMPLE\\alice", Refused, "two domains, allowed one last"),
    a(Domains, "EXAMPLE.\\alice", Refused, "domain with a trailing dot"),
    a(Domains, "EXAMPLE \\alice", Refused, "domain with a trailing space"),
    a(Domains, "EXAMPLE\\ alice", Refused, "user part with a leading space"),
    a(Domains, "EXAMPLE\\alice\u{a0}", Refused, "trailing no-break space"),
    a(Domains, "EXAMPLE\\alice\u{3000}", Refused, "trailing ideographic space"),
    a(Domains, "EXAMPLE\\alice\u{2009}", Refused, "trailing thin space"),
    a(Domains, "EXAMPLE\\\u{feff}alice", Refused, "leading byte-order mark"),
    a(Domains, "EXAMPLE\\ali\u{200b}ce", Refused, "zero-width space inside"),
    a(Domains, "EXAMPLE\\ali\u{ad}ce", Refused, "soft hyphen inside"),
    a(Domains, "EXAMPLE\\alice\u{202e}", Refused, "right-to-left override"),
    a(Domains, "EXAMPLE\\\u{212a}ate", Refused, "Kelvin sign for K (kate is an admin)"),
    a(Domains, "EXAMPLE\\\u{ff41}lice", Refused, "full-width a"),
    a(Domains, "EXAMPLE\\\u{ff21}LICE", Refused, "full-width A"),
    a(Domains, "EXAMPLE\\\u{1d5ba}lice", Refused, "mathematical sans-serif a"),
    a(Domains, "EXAMPLE\\AL\u{130}CE", Refused, "dotted capital I"),
    a(Domains, "EXAMPLE\\al\u{131}ce", Refused, "dotless i"),
    a(Domains, "EXAMPLE\\ALI\u{307}CE", Refused, "I + combining dot (composes to dotted I)"),
    a(Domains, "EXAMPLE\\\u{430}lice", User("\u{430}lice"), "Cyrillic a: another account, kept apart"),
    a(Domains, "EXAMPLE\\alice/admin", Refused, "a Kerberos instance"),
    a(Domains, "EXAMPLE\\alice@EXAMPLE", Refused, "domain and a realm named like it"),
    a(Domains, "\u{212a}EXAMPLE\\alice", Refused, "Kelvin sign in the domain"),
    a(Domains, "EXAMPLE\\", Refused, "empty user part"),
    a(Domains, "EXAMPLE\\alice\r\nX-Admin: yes", Refused, "header injection"),
    a(Domains, "EXAMPLE\\alice\u{0}", Refused, "NUL"),
    a(Domains, "alice", Refused, "no domain"),
    a(Domains, "alice@EXAMPLE.TEST", Refused, "realm not in the allowed realms"),
    a(Realms, "alice@EXAMPLE.TEST", Admin, "control: the admin"),
    a(Realms, "alice@example.test", Admin, "control: case of the realm"),
    a(Realms, "PARTNER\\alice@EXAMPLE.TEST", Refused, "foreign domain, allowed realm"),
    a(Realms, "EXAMPLE\\alice@EXAMPLE.TEST", Refused, "domain and realm (not configured)"),
    a(Realms, "alice@EVIL.TEST", Refused, "foreign realm"),
    a(Realms, "alice@EVIL.TEST@EXAMPLE.TEST", Refused, "two realms, allowed one last"),
    a(Realms, "alice@EXAMPLE.TEST@EVIL.TEST", Refused, "two realms, allowed one first"),
    a(Realms, "alice@EXAMPLE.TEST.", Refused, "realm with a trailing dot"),
    a(Realms, "alice@EXAMPLE.TEST\u{a0}", Refused, "realm with a no-break space"),
    a(Realms, "alice", Refused, "no realm"),
    a(Realms, "EXAMPLE\\alice", Refused, "a domain where only realms are allowed"),
    a(Open, "EXAMPLE\\alice", Admin, "control: the admin"),
    a(Open, "PARTNER\\alice", User("alice"), "same name, other domain: not the admin"),
    a(Open, "alice@ANY.REALM", User("alice"), "same name, a realm: not the admin"),
    a(Open, "alice", User("alice"), "bare name: not the admin"),
    a(Open, "EXAMPLE\\alice@ANY.REALM", Refused, "domain and realm"),
    a(Open, "EXAMPLE\\alice\u{a0}", Refused, "trailing no-break space"),
    a(Open, "EXAMPLE\\\u{212a}ate", Refused, "Kelvin sign"),
];

/// What a host answered for one attempt: the status of `GET /api/whoami`,
/// the user it reported, and the status of `GET /api/users` (admins only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// `GET /api/whoami`'s status.
    pub whoami: u16,
    /// The `user` field of its JSON, when 200.
    pub user: Option<String>,
    /// `GET /api/users`'s status.
    pub users: u16,
}

/// Whether `answer` is what `attempt` must get; `Err` says what happened.
pub fn check(attempt: &Attempt, answer: &Answer) -> Result<(), String> {
    let ok = match attempt.expect {
        Expect::Refused => matches!(answer.whoami, 401 | 403) && matches!(answer.users, 401 | 403),
        Expect::User(u) => {
            answer.whoami == 200 && answer.user.as_deref() == Some(u) && answer.users == 403
        }
        Expect::Admin => answer.whoami == 200 && answer.users == 200,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} under {:?} ({}): expected {:?}, got {answer:?}",
            attempt.name, attempt.profile, attempt.why, attempt.expect
        ))
    }
}

/// Whether an attempt got in where it must not: reached the admin API, or
/// signed in as a user it must not be.
pub fn got_in(attempt: &Attempt, answer: &Answer) -> bool {
    match attempt.expect {
        Expect::Admin => false,
        Expect::Refused => answer.whoami == 200 || answer.users == 200,
        Expect::User(u) => {
            answer.users == 200 || answer.user.as_deref().is_some_and(|got| got != u)
        }
    }
}

/// The tally of a run.
#[derive(Debug, Default)]
pub struct Tally {
    /// Attempts sent.
    pub sent: usize,
    /// Attempts the host cannot express (skipped).
    pub inexpressible: usize,
    /// Attempts that got in (must be none).
    pub got_in: Vec<String>,
    /// Every mismatch, including wrongly refused controls.
    pub wrong: Vec<String>,
}

impl Tally {
    /// Prints the tally and fails the test on any mismatch.
    pub fn assert_clean(&self, host: &str) {
        println!(
            "{host}: {} identity attempts sent, {} not expressible by this host, {} got in",
            self.sent,
            self.inexpressible,
            self.got_in.len()
        );
        assert!(
            self.got_in.is_empty() && self.wrong.is_empty(),
            "{host}: got in: {:#?}\nwrong: {:#?}",
            self.got_in,
            self.wrong
        );
        assert!(self.sent > 0, "{host}: nothing was sent");
    }
}

/// Runs the attempts of `profile` through `send`, which asks the host under
/// test for both paths as the name, or returns `None` when the host cannot
/// express the name.
pub async fn run<F, Fut>(profile: Profile, tally: &mut Tally, mut send: F)
where
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = Option<Answer>>,
{
    for attempt in ATTEMPTS.iter().filter(|a| a.profile == profile) {
        let Some(answer) = send(attempt.name).await else {
            tally.inexpressible += 1;
            continue;
        };
        tally.sent += 1;
        if got_in(attempt, &answer) {
            tally
                .got_in
                .push(format!("{:?} ({})", attempt.name, attempt.why));
        }
        if let Err(e) = check(attempt, &answer) {
            tally.wrong.push(e);
        }
    }
}

/// Reads an [`Answer`] from the two responses' statuses and the whoami body.
pub fn answer(whoami: u16, whoami_body: &str, users: u16) -> Answer {
    let user = (whoami == 200)
        .then(|| {
            let key = "\"user\":\"";
            let at = whoami_body.find(key)? + key.len();
            let end = whoami_body[at..].find('"')?;
            Some(unescape_json(&whoami_body[at..at + end]))
        })
        .flatten();
    Answer {
        whoami,
        user,
        users,
    }
}

/// JSON string escapes the portal's user names can contain (`\uXXXX` from
/// serde_json is not produced for printable characters; `\\` and `\"` are).
fn unescape_json(s: &str) -> String {
    s.replace("\\\\", "\\").replace("\\\"", "\"")
}
