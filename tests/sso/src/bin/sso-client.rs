//! A Negotiate (Kerberos) HTTP client that, unlike curl, checks the server's
//! mutual-authentication token.
//!
//! ```text
//! sso-client [--replay] [--corrupt-mutual] [--header 'Name: value'] http://localhost:PORT/path
//! ```
//!
//! Uses the ticket cache in `KRB5CCNAME` and `KRB5_CONFIG`; the service is
//! `HTTP@<host of the URL>`. Prints one JSON object per request sent:
//! `{"status":200,"mutual":"verified","body":"…"}`; `mutual` is `verified`,
//! `absent` or `rejected: <why>`. `--replay` sends the same token on a second
//! connection (a replay the server must refuse); `--corrupt-mutual` flips a
//! byte of the server's token before checking it (which must then fail).
//! Exits 2 on usage errors, 1 when no token could be made or sent.

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    client::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("sso-client needs GSSAPI (Unix)");
    std::process::exit(1);
}

#[cfg(unix)]
mod client {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::process::ExitCode;
    use std::time::Duration;

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use libgssapi::context::{ClientCtx, CtxFlags, SecurityContext};
    use libgssapi::name::Name;
    use libgssapi::oid::{GSS_MECH_SPNEGO, GSS_NT_HOSTBASED_SERVICE};

    struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    fn fail(code: u8, msg: &str) -> ExitCode {
        eprintln!("sso-client: {msg}");
        ExitCode::from(code)
    }

    pub fn main() -> ExitCode {
        let (mut replay, mut corrupt, mut url, mut extra) = (false, false, None, Vec::new());
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--replay" => replay = true,
                "--corrupt-mutual" => corrupt = true,
                "--header" => match args.next() {
                    Some(h) => extra.push(h),
                    None => return fail(2, "--header needs 'Name: value'"),
                },
                _ if a.starts_with("http://") => url = Some(a),
                other => return fail(2, &format!("unknown argument {other:?}")),
            }
        }
        let Some(url) = url else {
            return fail(2, "usage: sso-client [--replay] [--corrupt-mutual] [--header 'N: v'] http://host:port/path");
        };
        let Some((authority, path)) = url["http://".len()..]
            .split_once('/')
            .map(|(a, p)| (a.to_owned(), format!("/{p}")))
        else {
            return fail(2, "the URL needs a path");
        };
        let host = authority.split(':').next().unwrap_or_default().to_owned();

        let target = match Name::new(
            format!("HTTP@{host}").as_bytes(),
            Some(GSS_NT_HOSTBASED_SERVICE),
        ) {
            Ok(n) => n,
            Err(e) => return fail(1, &format!("bad service name: {e}")),
        };
        let mut ctx = ClientCtx::new(
            None,
            target,
            CtxFlags::GSS_C_MUTUAL_FLAG,
            Some(GSS_MECH_SPNEGO),
        );
        let token = match ctx.step(None, None) {
            Ok(Some(t)) => STANDARD.encode(&*t),
            Ok(None) => return fail(1, "GSSAPI made no token"),
            Err(e) => return fail(1, &format!("no Kerberos token (is there a ticket?): {e}")),
        };
        let sends = if replay { 2 } else { 1 };
        for _ in 0..sends {
            let resp = match send(&authority, &host, &path, &token, &extra) {
                Ok(r) => r,
                Err(e) => return fail(1, &format!("request to {authority} failed: {e}")),
            };
            let mutual = resp
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("www-authenticate"))
                .find_map(|(_, v)| {
                    let (scheme, tok) = v.split_once(' ')?;
                    scheme
                        .eq_ignore_ascii_case("negotiate")
                        .then(|| tok.trim().to_owned())
                });
            let verdict = match mutual {
                None => "absent".to_owned(),
                Some(tok) => match STANDARD.decode(tok) {
                    Err(e) => format!("rejected: not base64: {e}"),
                    Ok(mut bytes) => {
                        if corrupt {
                            let mid = bytes.len() / 2;
                            bytes[mid] ^= 0x55;
                        }
                        match ctx.step(Some(&bytes), None) {
                            Ok(None) if ctx.open().unwrap_or(false) => "verified".to_owned(),
                            Ok(_) => "rejected: the context is not complete".to_owned(),
                            Err(e) => format!("rejected: {e}"),
                        }
                    }
                },
            };
            println!(
                "{}",
                serde_json::json!({"status": resp.status, "mutual": verdict, "body": resp.body})
            );
        }
        ExitCode::SUCCESS
    }

    fn send(
        authority: &str,
        host: &str,
        path: &str,
        token: &str,
        extra: &[String],
    ) -> std::io::Result<Response> {
        let mut stream = TcpStream::connect(authority)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Negotiate {token}\r\nConnection: close\r\n"
        );
        for h in extra {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status line"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let chunked = headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    fn dechunk(mut s: &str) -> String {
        let mut out = String::new();
        while let Some((size, rest)) = s.split_once("\r\n") {
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if n == 0 || rest.len() < n {
                break;
            }
            out.push_str(&rest[..n]);
            s = rest[n..].trim_start_matches("\r\n");
        }
        out
    }
}
