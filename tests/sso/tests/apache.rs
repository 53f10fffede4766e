//! Apache httpd with mod_auth_gssapi as the front proxy: it authenticates the
//! browser with Kerberos and forwards to the portal on host-hyper in trust
//! mode (pairing secret + identity header), the deployment Kallithea itself
//! documents with Apache.
#![cfg(unix)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use kallithea_sso_tests::{as_alice, build_bin, curl, temp_dir, write, Realm, Server};

const SECRET: &str = "apache-and-portal-share-this-secret";
const MODULES: &str = "/usr/lib/apache2/modules";

/// A free loopback port, asked of the kernel.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").port()
}

/// Apache in the foreground with its own configuration; stopped on drop.
struct Apache {
    child: Child,
    dir: PathBuf,
}

impl Apache {
    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        // SIGTERM lets the parent stop its worker processes.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_apache(realm: &Realm, dir: &Path, backend: &str) -> (Apache, u16) {
    let port = free_port();
    // Apache's workers run as www-data when started as root: give them the
    // keytab (a test copy) and a replay cache folder they can write.
    let keytab = dir.join("apache.keytab");
    std::fs::copy(realm.keytab(), &keytab).expect("copy the keytab");
    let rcache = dir.join("apache-rcache");
    std::fs::create_dir_all(&rcache).expect("rcache folder");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keytab, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::set_permissions(&rcache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let d = dir.display();
    let config = format!(
        r#"ServerRoot "{d}"
ServerName localhost
Listen 127.0.0.1:{port}
PidFile "{d}/httpd.pid"
DefaultRuntimeDir "{d}"
ErrorLog "{d}/error.log"
LogLevel warn auth_gssapi:debug
User www-data
Group www-data
LoadModule mpm_event_module {MODULES}/mod_mpm_event.so
LoadModule authn_core_module {MODULES}/mod_authn_core.so
LoadModule authz_core_module {MODULES}/mod_authz_core.so
LoadModule authz_user_module {MODULES}/mod_authz_user.so
LoadModule auth_gssapi_module {MODULES}/mod_auth_gssapi.so
LoadModule headers_module {MODULES}/mod_headers.so
LoadModule proxy_module {MODULES}/mod_proxy.so
LoadModule proxy_http_module {MODULES}/mod_proxy_http.so

<Location "/">
    AuthType GSSAPI
    AuthName "Kallithea"
    GssapiCredStore keytab:{keytab}
    GssapiCredStore rcache:file2:{rcache}/apache.rcache2
    GssapiAllowedMech krb5
    GssapiSSLonly Off
    GssapiBasicAuth Off
    Require valid-user

    # The authenticated user replaces whatever the client sent; the
    # %{{REMOTE_USER}}s / e forms would send "(null)".
    RequestHeader set x-kallithea-user expr=%{{REMOTE_USER}}
    RequestHeader set x-kallithea-pairing "{SECRET}"
    RequestHeader unset Authorization
    ProxyPass "http://{backend}/"
    ProxyPassReverse "http://{backend}/"
</Location>
"#,
        keytab = keytab.display(),
        rcache = rcache.display(),
    );
    let conf = dir.join("httpd.conf");
    write(&conf, &config);
    let mut cmd = Command::new("/usr/sbin/apache2");
    cmd.arg("-f").arg(&conf).arg("-DFOREGROUND");
    realm.server(&mut cmd);
    let child = cmd.spawn().expect("start apache2");
    let apache = Apache {
        child,
        dir: dir.to_owned(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "Apache did not start:\n{}",
            apache.error_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (apache, port)
}

#[test]
fn apache_with_mod_auth_gssapi_fronts_the_portal_in_trust_mode() {
    let realm = Realm::start("apache");
    let dir = temp_dir("apache");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let portal_bin = build_bin("kallithea-portal", "portal", &[]);
    let config = dir.join("portal.toml");
    write(
        &config,
        &format!(
            "data_dir = {data:?}\nadmins = [\"alice@EXAMPLE.TEST\"]\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n\
             [server.trust]\nproxies = [\"127.0.0.1/32\"]\nsecret = \"{SECRET}\"\n\n\
             [auth_container]\nallowed_realms = [\"EXAMPLE.TEST\"]\n",
            data = dir.join("data"),
        ),
    );
    let mut cmd = Command::new(portal_bin);
    cmd.arg("--config").arg(&config);
    realm.server(&mut cmd);
    let portal = Server::start(cmd, dir.join("portal.log"), "portal: serving on");
    let backend = portal.base.replace("localhost", "127.0.0.1");
    let backend = backend.trim_start_matches("http://");
    let (apache, port) = start_apache(&realm, &dir, backend);
    let url = format!("http://localhost:{port}/api/whoami");

    let reply = as_alice(&realm, &[&url]);
    assert_eq!(
        reply.status,
        200,
        "{reply:?}\n{}\n{}",
        apache.error_log(),
        portal.log()
    );
    let who = reply.json();
    assert_eq!(who["user"], "alice", "{who}");
    assert_eq!(who["identity"], "alice@EXAMPLE.TEST", "{who}");
    assert_eq!(who["scheme"], "Forwarded", "{who}");
    assert_eq!(who["source"], "trusted proxy 127.0.0.1", "{who}");

    // A client-sent identity (and secret) is overwritten by Apache.
    let reply = as_alice(
        &realm,
        &[
            "-H",
            "x-kallithea-user: EXAMPLE\\mallory",
            "-H",
            "x-kallithea-pairing: guessed",
            &url,
        ],
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["user"], "alice", "{reply:?}");

    // No ticket: Apache challenges; the portal is never reached.
    let reply = curl(
        |c| realm.nobody(c),
        &["-H", "x-kallithea-user: alice", &url],
    );
    assert_eq!(reply.status, 401, "{reply:?}");
    assert!(
        reply.header("www-authenticate").contains(&"Negotiate"),
        "{reply:?}"
    );
    // Straight to the portal, the same header is no identity either.
    let direct = format!("{}/api/whoami", portal.base);
    let reply = curl(
        |c| realm.nobody(c),
        &["-H", "x-kallithea-user: alice", &direct],
    );
    assert_eq!(reply.status, 401, "{reply:?}");
    let log = portal.log();
    assert!(!log.contains("mallory"), "{log}");
}
