//! A Negotiate (Kerberos) HTTP client that, unlike curl, checks the server's
//! mutual-authentication token.
//!
//! ```text
//! sso-client [--http2] [--replay] [--then-anonymous] [--corrupt-mutual]
//!            [--header 'Name: value'] http://localhost:PORT/path
//! ```
//!
//! Uses the ticket cache in `KRB5CCNAME` and `KRB5_CONFIG`; the service is
//! `HTTP@<host of the URL>`. Prints one JSON object per request sent:
//! `{"status":200,"mutual":"verified","body":"…"}`; `mutual` is `verified`,
//! `absent` or `rejected: <why>`.
//!
//! - `--http2`: HTTP/2 with prior knowledge instead of HTTP/1.1.
//! - `--replay`: sends the same token again on a new connection (a replay the
//!   server must refuse).
//! - `--then-anonymous`: sends a second request without any token on the
//!   same connection (which must not be taken for the first one's user).
//! - `--corrupt-mutual`: flips a byte of the server's token before checking
//!   it (which must then fail).
//!
//! Exits 2 on usage errors, 1 when no token could be made or sent.

#![forbid(unsafe_code)]

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
    use std::process::ExitCode;
    use std::time::Duration;

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use libgssapi::context::{ClientCtx, CtxFlags, SecurityContext};
    use libgssapi::name::Name;
    use libgssapi::oid::{GSS_MECH_SPNEGO, GSS_NT_HOSTBASED_SERVICE};

    #[derive(Default)]
    struct Options {
        http2: bool,
        replay: bool,
        then_anonymous: bool,
        corrupt: bool,
        headers: Vec<(String, String)>,
        url: Option<http::Uri>,
    }

    fn fail(code: u8, msg: &str) -> ExitCode {
        eprintln!("sso-client: {msg}");
        ExitCode::from(code)
    }

    fn parse() -> Result<Options, String> {
        let mut o = Options::default();
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--http2" => o.http2 = true,
                "--replay" => o.replay = true,
                "--then-anonymous" => o.then_anonymous = true,
                "--corrupt-mutual" => o.corrupt = true,
                "--header" => {
                    let h = args.next().ok_or("--header needs 'Name: value'")?;
                    let (n, v) = h.split_once(':').ok_or("--header needs 'Name: value'")?;
                    o.headers.push((n.trim().to_owned(), v.trim().to_owned()));
                }
                _ if a.starts_with("http://") => {
                    o.url = Some(a.parse().map_err(|e| format!("bad URL {a}: {e}"))?)
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(o)
    }

    pub fn main() -> ExitCode {
        let o = match parse() {
            Ok(o) if o.url.is_some() => o,
            Ok(_) => return fail(2, "usage: sso-client [--http2] [--replay] [--then-anonymous] [--corrupt-mutual] [--header 'N: v'] http://host:port/path"),
            Err(e) => return fail(2, &e),
        };
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return fail(1, &format!("no runtime: {e}")),
        };
        match rt.block_on(run(o)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, &e),
        }
    }

    /// One connection, HTTP/1.1 or HTTP/2.
    enum Conn {
        H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
        H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
    }

    async fn connect(authority: &str, http2: bool) -> Result<Conn, String> {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let io = TokioIo::new(stream);
        if http2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Conn::H2(send))
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Conn::H1(send))
        }
    }

    async fn send(
        conn: &mut Conn,
        o: &Options,
        token: Option<&str>,
    ) -> Result<http::Response<Bytes>, String> {
        let url = o.url.as_ref().expect("checked");
        let mut req = http::Request::get(url.path_and_query().map_or("/", |p| p.as_str()));
        req = match conn {
            Conn::H1(_) => req.header("host", url.authority().map_or("", |a| a.as_str())),
            Conn::H2(_) => req.uri(url.clone()).version(http::Version::HTTP_2),
        };
        if let Some(t) = token {
            req = req.header("authorization", format!("Negotiate {t}"));
        }
        for (n, v) in &o.headers {
            req = req.header(n.as_str(), v.as_str());
        }
        let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
        let resp = match conn {
            Conn::H1(s) => s.send_request(req).await,
            Conn::H2(s) => s.send_request(req).await,
        }
        .map_err(|e| format!("request failed: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(http::Response::from_parts(parts, body))
    }

    fn report(ctx: &mut ClientCtx, resp: &http::Response<Bytes>, corrupt: bool) {
        let mutual = resp
            .headers()
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
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
                    if corrupt && !bytes.is_empty() {
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
            serde_json::json!({
                "status": resp.status().as_u16(),
                "mutual": verdict,
                "body": String::from_utf8_lossy(resp.body()),
            })
        );
    }

    async fn run(o: Options) -> Result<(), String> {
        let url = o.url.as_ref().expect("checked");
        let host = url.host().unwrap_or("localhost").to_owned();
        let authority = format!("{host}:{}", url.port_u16().unwrap_or(80));
        let target = Name::new(
            format!("HTTP@{host}").as_bytes(),
            Some(GSS_NT_HOSTBASED_SERVICE),
        )
        .map_err(|e| format!("bad service name: {e}"))?;
        let mut ctx = ClientCtx::new(
            None,
            target,
            CtxFlags::GSS_C_MUTUAL_FLAG,
            Some(GSS_MECH_SPNEGO),
        );
        let token = match ctx.step(None, None) {
            Ok(Some(t)) => STANDARD.encode(&*t),
            Ok(None) => return Err("GSSAPI made no token".into()),
            Err(e) => return Err(format!("no Kerberos token (is there a ticket?): {e}")),
        };
        let deadline = Duration::from_secs(20);
        tokio::time::timeout(deadline, async {
            let mut conn = connect(&authority, o.http2).await?;
            let resp = send(&mut conn, &o, Some(&token)).await?;
            report(&mut ctx, &resp, o.corrupt);
            if o.then_anonymous {
                let resp = send(&mut conn, &o, None).await?;
                report(&mut ctx, &resp, false);
            }
            if o.replay {
                let mut again = connect(&authority, o.http2).await?;
                let resp = send(&mut again, &o, Some(&token)).await?;
                report(&mut ctx, &resp, false);
            }
            Ok::<_, String>(())
        })
        .await
        .map_err(|_| format!("no answer within {deadline:?}"))?
    }
}
