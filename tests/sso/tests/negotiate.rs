//! Kerberos single sign-on end to end against a throw-away realm: the portal
//! on host-hyper with Negotiate, and the portal as an ISAPI extension and as a
//! native module behind the IIS simulator's Negotiate mode; curl and the
//! Rust client `sso-client` (which checks mutual authentication).
#![cfg(unix)]

use std::path::Path;
use std::process::Command;

use kallithea_sso_tests::{
    as_alice, build_bin, build_cdylib, curl, faketime, temp_dir, write, Realm, Server,
};

fn sso_client() -> &'static str {
    env!("CARGO_BIN_EXE_sso-client")
}

/// The portal on host-hyper with `[server.negotiate]`.
fn start_portal(realm: &Realm, dir: &Path) -> Server {
    start_portal_with(realm, dir, &realm.keytab(), None, &[])
}

/// The same with another keytab, optionally a service principal, run
/// through `wrapper` (e.g. `faketime`).
fn start_portal_with(
    realm: &Realm,
    dir: &Path,
    keytab: &Path,
    principal: Option<&str>,
    env: &[(&str, String)],
) -> Server {
    let portal = build_bin("kallithea-portal", "portal", &["negotiate"]);
    let config = dir.join("portal.toml");
    write(
        &config,
        &format!(
            "data_dir = {data:?}\nadmins = [\"alice\"]\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n\
             [server.negotiate]\nkeytab = {keytab:?}\nreplay_cache_dir = {rcache:?}\n{principal}\n\
             [auth_container]\nallowed_realms = [\"EXAMPLE.TEST\"]\n",
            data = dir.join("data"),
            rcache = dir.join("rcache"),
            principal = principal.map_or(String::new(), |p| format!("principal = {p:?}\n")),
        ),
    );
    let mut cmd = Command::new(portal);
    cmd.arg("--config").arg(&config).env("RUST_LOG", "info");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    realm.server(&mut cmd);
    Server::start(cmd, dir.join("portal.log"), "portal: serving on")
}

/// The simulator in Negotiate mode with `package`'s DLL.
fn start_simulator(realm: &Realm, dir: &Path, package: &str) -> Server {
    let sim = build_bin("iis-sim", "iis-sim", &[]);
    let dll = build_cdylib(package);
    let stem = package.replace('-', "_");
    let copy = dir.join(format!("{stem}.so"));
    std::fs::copy(&dll, &copy).expect("copy the DLL");
    write(
        &dir.join(format!("{stem}.toml")),
        "[app]\ndata_dir = \"data\"\nadmins = ['EXAMPLE\\alice']\n\n\
         [app.auth_container]\nallowed_domains = [\"EXAMPLE\"]\n",
    );
    let mut cmd = Command::new(sim);
    cmd.arg("--dll")
        .arg(&copy)
        .args(["--listen", "127.0.0.1:0", "--stdin-stop"])
        .arg("--negotiate-keytab")
        .arg(realm.keytab())
        .arg("--replay-cache")
        .arg(dir.join("rcache"))
        .args(["--netbios", "EXAMPLE.TEST=EXAMPLE"])
        .env("RUST_LOG", "info");
    realm.server(&mut cmd);
    Server::start(cmd, dir.join("iis-sim.log"), "iis-sim: serving on")
}

/// Runs `sso-client` as alice; one JSON value per request it sent.
fn sso_client_run(realm: &Realm, args: &[&str]) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(sso_client());
    realm.alice(&mut cmd);
    let out = cmd.args(args).output().expect("run sso-client");
    assert!(
        out.status.success(),
        "sso-client {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("sso-client prints JSON"))
        .collect()
}

fn whoami(reply_body: &serde_json::Value) -> serde_json::Value {
    serde_json::from_str(reply_body["body"].as_str().expect("a body")).expect("JSON body")
}

#[test]
fn curl_reaches_the_portal_on_hyper_as_alice() {
    let realm = Realm::start("hyper-curl");
    let dir = temp_dir("hyper-curl");
    let portal = start_portal(&realm, &dir);
    let url = format!("{}/api/whoami", portal.base);

    let reply = as_alice(&realm, &[&url]);
    assert_eq!(reply.status, 200, "{reply:?}\n{}", portal.log());
    let who = reply.json();
    assert_eq!(who["user"], "alice", "{who}");
    assert_eq!(who["identity"], "alice@EXAMPLE.TEST", "{who}");
    assert_eq!(who["scheme"], "Negotiate", "{who}");
    assert_eq!(who["source"], "host", "{who}");
    assert!(
        reply
            .header("www-authenticate")
            .iter()
            .any(|v| v.starts_with("Negotiate ")),
        "no mutual-authentication token: {reply:?}"
    );

    // Created on that first visit, in the real SQLite store.
    let users = as_alice(&realm, &[&format!("{}/api/users", portal.base)]);
    assert_eq!(users.status, 200, "{users:?}");
    assert!(users.body.contains("\"alice\""), "{}", users.body);
    assert!(dir.join("data/kallithea.sqlite3").is_file());

    // No ticket: the challenge, and the app is not reached.
    let reply = curl(|c| realm.nobody(c), &["--negotiate", "-u", ":", &url]);
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.header("www-authenticate"), ["Negotiate"], "{reply:?}");
    let reply = curl(|c| realm.nobody(c), &[url.as_str()]);
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.header("www-authenticate"), ["Negotiate"], "{reply:?}");

    // A spoofed identity header is ignored: with a ticket the user stays
    // alice, without one the request is refused.
    let spoof = "x-kallithea-user: EXAMPLE\\mallory";
    let reply = as_alice(&realm, &["-H", spoof, "-H", "remote-user: mallory", &url]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["user"], "alice");
    let reply = curl(|c| realm.nobody(c), &["-H", spoof, &url]);
    assert_eq!(reply.status, 401, "{reply:?}");

    // A token that is not one: 401 and a log line, no crash.
    let reply = curl(
        |c| realm.nobody(c),
        &["-H", "Authorization: Negotiate AAAAAAAA", &url],
    );
    assert_eq!(reply.status, 401, "{reply:?}");
    let reply = curl(
        |c| realm.nobody(c),
        &["-H", "Authorization: Negotiate %%%", &url],
    );
    assert_eq!(reply.status, 401, "{reply:?}");
    let log = portal.log();
    assert!(log.contains("kind=malformed"), "{log}");
    let reply = as_alice(&realm, &[&url]);
    assert_eq!(reply.status, 200, "the server survived: {reply:?}");
}

#[test]
fn the_rust_client_verifies_mutual_authentication_and_replays_are_refused() {
    let realm = Realm::start("hyper-mutual");
    let dir = temp_dir("hyper-mutual");
    let portal = start_portal(&realm, &dir);
    let url = format!("{}/api/whoami", portal.base);

    let replies = sso_client_run(&realm, &[&url]);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["status"], 200, "{replies:?}");
    assert_eq!(replies[0]["mutual"], "verified", "{replies:?}");
    assert_eq!(whoami(&replies[0])["user"], "alice");

    // The check is real: a tampered server token is rejected.
    let replies = sso_client_run(&realm, &["--corrupt-mutual", &url]);
    assert_eq!(replies[0]["status"], 200, "{replies:?}");
    let verdict = replies[0]["mutual"].as_str().unwrap_or_default();
    assert!(verdict.starts_with("rejected"), "{replies:?}");

    // The same token twice: the second is a replay.
    let replies = sso_client_run(&realm, &["--replay", &url]);
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0]["status"], 200, "{replies:?}");
    assert_eq!(replies[1]["status"], 401, "{replies:?}");
    let log = portal.log();
    assert!(log.contains("kind=replay"), "{log}");
    assert!(log.contains("Request is a replay"), "{log}");
    // The replay cache lives where it was configured.
    assert!(dir.join("rcache/kallithea-http.rcache2").is_file());
}

#[test]
fn a_keytab_rekeyed_under_the_server_is_refused_with_a_clear_log_line() {
    let realm = Realm::start("hyper-rekey");
    let dir = temp_dir("hyper-rekey");
    let portal = start_portal(&realm, &dir);
    let url = format!("{}/api/whoami", portal.base);
    let reply = as_alice(&realm, &[&url]);
    assert_eq!(reply.status, 200, "{reply:?}");

    realm.rekey();
    let reply = as_alice(&realm, &[&url]);
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.header("www-authenticate"), ["Negotiate"]);
    let line = failure_line(&portal);
    assert!(line.contains("kind=key-version"), "{line}");
    assert!(line.contains("keytab is likely out of date"), "{line}");
}

/// Runs the portal with this Negotiate setup, expecting it to refuse to
/// start (exit status 1); returns what it printed.
fn portal_fails_to_start(
    realm: &Realm,
    dir: &Path,
    keytab: &Path,
    principal: Option<&str>,
) -> String {
    let portal = build_bin("kallithea-portal", "portal", &["negotiate"]);
    let config = dir.join("refused.toml");
    write(
        &config,
        &format!(
            "data_dir = {data:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[server.negotiate]\n\
             keytab = {keytab:?}\nreplay_cache_dir = {rcache:?}\n{principal}",
            data = dir.join("data"),
            rcache = dir.join("rcache"),
            principal = principal.map_or(String::new(), |p| format!("principal = {p:?}\n")),
        ),
    );
    let mut cmd = Command::new(portal);
    cmd.arg("--config").arg(&config);
    realm.server(&mut cmd);
    let out = cmd.output().expect("run the portal");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

/// The one failure line the server logged.
fn failure_line(server: &Server) -> String {
    let log = server.log();
    log.lines()
        .find(|l| l.contains("Negotiate authentication failed"))
        .unwrap_or_else(|| panic!("no failure line:\n{log}"))
        .to_owned()
}

#[test]
fn a_keytab_without_the_service_and_a_skewed_clock_are_refused_with_their_reasons() {
    let realm = Realm::start("hyper-nokey");
    let dir = temp_dir("hyper-nokey");
    // A keytab holding some other service's keys only.
    let other = dir.join("other.keytab");
    realm.kadmin("addprinc -randkey HTTP/elsewhere");
    realm.kadmin(&format!("ktadd -k {} HTTP/elsewhere", other.display()));
    let portal = start_portal_with(&realm, &dir, &other, None, &[]);
    let url = format!("{}/api/whoami", portal.base);
    let reply = as_alice(&realm, &[&url]);
    assert_eq!(reply.status, 401, "{reply:?}");
    let line = failure_line(&portal);
    assert!(line.contains("kind=no-key"), "{line}");
    assert!(line.contains("HTTP/localhost@EXAMPLE.TEST"), "{line}");
    // kadmin writes keytabs for the owner only: no warning about that.
    assert!(!portal.log().contains("can be read by other users"));
    // The replay cache folder is the server's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("rcache"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    drop(portal);

    // A keytab others can read starts, with a warning saying so.
    let open = dir.join("open.keytab");
    std::fs::copy(&other, &open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let readable = temp_dir("hyper-readable");
    let portal = start_portal_with(&realm, &readable, &open, None, &[]);
    let log = portal.log();
    assert!(
        log.contains("the keytab can be read by other users"),
        "{log}"
    );
    assert!(log.contains("mode=644"), "{log}");
    drop(portal);

    // The server's clock ten minutes ahead (Kerberos allows five).
    let skewed = temp_dir("hyper-skew");
    let portal = start_portal_with(&realm, &skewed, &realm.keytab(), None, &faketime("+10m"));
    let url = format!("{}/api/whoami", portal.base);
    let reply = as_alice(&realm, &[&url]);
    assert_eq!(reply.status, 401, "{reply:?}");
    let line = failure_line(&portal);
    assert!(line.contains("kind=clock-skew"), "{line}");
    assert!(line.contains("Clock skew too great"), "{line}");
}

#[test]
fn a_server_without_a_usable_keytab_refuses_to_start() {
    let realm = Realm::start("hyper-nokeytab");
    let dir = temp_dir("hyper-nokeytab");
    for (keytab, expected) in [
        (dir.join("missing.keytab"), "cannot read the keytab"),
        (dir.join("empty.keytab"), "no acceptor credentials"),
    ] {
        if keytab.ends_with("empty.keytab") {
            write(&keytab, "");
        }
        let stderr = portal_fails_to_start(&realm, &dir, &keytab, None);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(stderr.contains(&keytab.display().to_string()), "{stderr}");
    }
}

fn through_the_simulator(package: &str) {
    let realm = Realm::start(package);
    let dir = temp_dir(package);
    let mut sim = start_simulator(&realm, &dir, package);
    let url = format!("{}/api/whoami", sim.base);

    let reply = as_alice(&realm, &[&url]);
    assert_eq!(reply.status, 200, "{reply:?}\n{}", sim.log());
    let who = reply.json();
    assert_eq!(who["user"], "alice", "{who}");
    assert_eq!(who["identity"], "EXAMPLE\\alice", "{who}");
    // AUTH_TYPE (ISAPI) / IHttpUser::GetAuthenticationType (native module).
    assert_eq!(who["scheme"], "Negotiate", "{who}");
    let users = as_alice(&realm, &[&format!("{}/api/users", sim.base)]);
    assert_eq!(users.status, 200, "{users:?}");
    assert!(users.body.contains("\"alice\""), "{}", users.body);
    assert!(dir.join("data/kallithea.sqlite3").is_file());

    // Mutual authentication through IIS's Windows authentication.
    let replies = sso_client_run(&realm, &[&url]);
    assert_eq!(replies[0]["status"], 200, "{replies:?}");
    assert_eq!(replies[0]["mutual"], "verified", "{replies:?}");

    // No ticket, a replay, a spoofed header.
    let reply = curl(|c| realm.nobody(c), &["--negotiate", "-u", ":", &url]);
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.header("www-authenticate"), ["Negotiate"]);
    let replies = sso_client_run(&realm, &["--replay", &url]);
    assert_eq!(
        (replies[0]["status"].as_u64(), replies[1]["status"].as_u64()),
        (Some(200), Some(401)),
        "{replies:?}"
    );
    let reply = as_alice(&realm, &["-H", "x-kallithea-user: EXAMPLE\\mallory", &url]);
    assert_eq!(reply.json()["user"], "alice", "{reply:?}");

    assert!(
        sim.stop(),
        "the simulator reported violations:\n{}",
        sim.log()
    );
    let log = sim.log();
    assert!(log.contains("kind=replay"), "{log}");
}

#[test]
fn curl_reaches_the_portal_isapi_through_the_simulators_negotiate() {
    through_the_simulator("portal-isapi");
}

#[test]
fn curl_reaches_the_portal_native_module_through_the_simulators_negotiate() {
    through_the_simulator("portal-iis");
}

#[test]
fn every_request_authenticates_by_itself_even_on_one_connection() {
    let realm = Realm::start("hyper-perrequest");
    let dir = temp_dir("hyper-perrequest");
    let portal = start_portal(&realm, &dir);
    let url = format!("{}/api/whoami", portal.base);
    // A request with a token, then one without on the same connection
    // (sso-client sends both over one hyper connection): the second must not
    // inherit the first's identity (a pooling front proxy
    // would hand it to another user). HTTP/1.1 keep-alive and HTTP/2 streams.
    for version in [&[][..], &["--http2"][..]] {
        let mut args = version.to_vec();
        args.extend(["--then-anonymous", url.as_str()]);
        let replies = sso_client_run(&realm, &args);
        assert_eq!(replies.len(), 2, "{replies:?}");
        assert_eq!(replies[0]["status"], 200, "{version:?}: {replies:?}");
        assert_eq!(replies[0]["mutual"], "verified", "{version:?}: {replies:?}");
        assert_eq!(whoami(&replies[0])["user"], "alice");
        assert_eq!(replies[1]["status"], 401, "{version:?}: {replies:?}");
    }
}

#[test]
fn a_configured_principal_limits_which_tickets_are_accepted() {
    let realm = Realm::start("hyper-principal");
    let dir = temp_dir("hyper-principal");
    // One keytab with two services' keys, as a shared keytab would have.
    realm.kadmin("addprinc -randkey HTTP/elsewhere");
    let both = dir.join("both.keytab");
    realm.kadmin(&format!(
        "ktadd -k {} -norandkey HTTP/localhost HTTP/elsewhere",
        both.display()
    ));
    for (i, (principal, status)) in [
        (None, 200),
        (Some("HTTP@localhost"), 200),
        (Some("HTTP/localhost@EXAMPLE.TEST"), 200),
        (Some("HTTP@elsewhere"), 401),
    ]
    .into_iter()
    .enumerate()
    {
        let run = temp_dir(&format!("hyper-principal-{i}"));
        let portal = start_portal_with(&realm, &run, &both, principal, &[]);
        let url = format!("{}/api/whoami", portal.base);
        let reply = as_alice(&realm, &[&url]);
        assert_eq!(
            reply.status,
            status,
            "{principal:?}: {reply:?}\n{}",
            portal.log()
        );
        if status == 401 {
            let line = failure_line(&portal);
            assert!(line.contains("HTTP/localhost"), "{line}");
        }
    }
    // A principal the keytab has no key for stops the server at start.
    let stderr = portal_fails_to_start(&realm, &dir, &realm.keytab(), Some("HTTP@nowhere"));
    assert!(stderr.contains("HTTP@nowhere"), "{stderr}");
}
