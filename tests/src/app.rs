//! The conformance app: what every host serves while the suite runs.
//!
//! It lives in the library (not in a test) so that hosts which load the app
//! from a DLL can build it in: `kallithea_conformance::app()`. State shared
//! between requests (acknowledgements, barriers, cancellation flags) is kept in
//! process globals, keyed by ids the client chooses.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kallithea_core::{service_fn, Body, HostVariables, IdentitySource, RequestExt};
use tokio::sync::{watch, Barrier};

use crate::pattern::{escape, fill, Checksum};

/// The header prefix whose values the app reflects back unchanged: a request
/// header `x-reflect-foo` comes back as response header `x-reflected-foo`.
pub const REFLECT_PREFIX: &str = "x-reflect-";

/// The conformance app, as a `tower` service.
///
/// Routes (below the path base):
/// * `/echo…` — reads the body and reports the request, one `key: value` line
///   each (values escaped with [`escape`](crate::pattern::escape));
/// * `/status/{code}` — answers with that status (and a body the host must drop
///   for 204 and 304);
/// * `/download?bytes=N` — streams N pattern bytes in 64 KiB chunks, with a
///   `Content-Length` header (with `&length=body`, the body's size hint is
///   the only word on its length, for the host to announce);
/// * `/sse?id=I&n=N` — N events, each produced only after the previous one was
///   acknowledged with `/ack?id=I&i=K`;
/// * `/hang?id=I` — never answers; `/hang-status?id=I` says `running` or
///   `cancelled` (the future was dropped);
/// * `/barrier?id=I&n=N` — answers once N requests with that id are in flight;
/// * `/host-variables?names=A,B&keep=I` — the host variables named (all of
///   them without `names`), one `NAME: value` line each (`none` if missing);
///   with `keep`, the request's set is kept under id `I`, and
///   `/kept-host-variables?id=I` lists what it holds then (after that request
///   ended);
/// * `/early` — answers without reading the request body, with the body's
///   length as the app sees it (`body_length: N`, or `unknown`);
/// * `/panic` — panics.
pub fn app() -> impl tower_service::Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
       + Send
       + Sync
       + 'static {
    service_fn(|req: Request<Body>| async move { Ok::<_, Infallible>(route(req).await) })
}

async fn route(req: Request<Body>) -> Response<Body> {
    let full_path = req.uri().path().to_owned();
    let Some(path) = req.path_base().strip(&full_path).map(str::to_owned) else {
        return text(StatusCode::NOT_FOUND, "outside the path base".into());
    };
    let query = req.uri().query().unwrap_or("").to_owned();
    let param = |name: &str| -> Option<String> {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
    };
    match path.as_str() {
        p if p.starts_with("/echo") => echo(req).await,
        p if p.starts_with("/status/") => status(&p["/status/".len()..]),
        "/download" => download(
            param("bytes").and_then(|b| b.parse().ok()).unwrap_or(0),
            param("length").as_deref() != Some("body"),
        ),
        "/sse" => sse(
            param("id").unwrap_or_default(),
            param("n").and_then(|n| n.parse().ok()).unwrap_or(3),
        ),
        "/ack" => ack(
            &param("id").unwrap_or_default(),
            param("i").and_then(|n| n.parse().ok()).unwrap_or(0),
        ),
        "/hang" => hang(param("id").unwrap_or_default()).await,
        "/hang-status" => hang_status(&param("id").unwrap_or_default()),
        "/barrier" => {
            barrier(
                param("id").unwrap_or_default(),
                param("n").and_then(|n| n.parse().ok()).unwrap_or(1),
            )
            .await
        }
        "/host-variables" => {
            let vars = req.host_variables().cloned().unwrap_or_default();
            if let Some(id) = param("keep") {
                KEPT_SETS
                    .get_or_init(Default::default)
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, vars.clone());
            }
            text(StatusCode::OK, list_variables(&vars, param("names")))
        }
        "/kept-host-variables" => {
            let kept = KEPT_SETS
                .get_or_init(Default::default)
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&param("id").unwrap_or_default())
                .cloned();
            match kept {
                Some(vars) => text(StatusCode::OK, list_variables(&vars, None)),
                None => text(StatusCode::NOT_FOUND, "nothing kept under that id\n".into()),
            }
        }
        // What the app knows of the body's length before reading any of it.
        "/early" => {
            let length = http_body::Body::size_hint(req.body())
                .exact()
                .map_or("unknown".to_owned(), |n| n.to_string());
            text(StatusCode::OK, format!("early\nbody_length: {length}\n"))
        }
        // Where the app runs: the name of the thread that handled this.
        "/thread" => text(
            StatusCode::OK,
            format!("{}\n", std::thread::current().name().unwrap_or("unnamed")),
        ),
        "/panic" => panic!("conformance app panics on purpose"),
        _ => text(
            StatusCode::NOT_FOUND,
            format!("no route {}", escape(path.as_bytes())),
        ),
    }
}

/// Host variables kept by `/host-variables?keep=I`.
static KEPT_SETS: OnceLock<Mutex<HashMap<String, HostVariables>>> = OnceLock::new();

/// `NAME: value` lines: those in `names` (comma-separated), else all.
fn list_variables(vars: &HostVariables, names: Option<String>) -> String {
    let mut out = String::new();
    let mut line = |name: &str, value: Option<&[u8]>| {
        let value = value.map_or("none".to_owned(), escape);
        out.push_str(&format!("{name}: {value}\n"));
    };
    match names {
        Some(names) => {
            for name in names.split(',') {
                line(name, vars.get(name).map(|v| &v[..]));
            }
        }
        None => {
            for (name, value) in vars.iter() {
                line(name, Some(value));
            }
        }
    }
    out
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn echo(req: Request<Body>) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let mut out = String::new();
    let mut line = |k: &str, v: &str| {
        out.push_str(k);
        out.push_str(": ");
        out.push_str(v);
        out.push('\n');
    };
    line("method", parts.method.as_str());
    line("path", &escape(parts.uri.path().as_bytes()));
    line("query", &escape(parts.uri.query().unwrap_or("").as_bytes()));
    line("version", &format!("{:?}", parts.version));
    line("path_base", parts.path_base().as_str());
    match parts.identity() {
        Some(id) => {
            line("identity", &escape(id.name().as_bytes()));
            line("identity_scheme", id.scheme().as_str());
            let source = match id.source() {
                IdentitySource::Host => "host".to_owned(),
                IdentitySource::TrustedProxy { proxy } => format!("proxy {proxy}"),
            };
            line("identity_source", &source);
        }
        None => line("identity", "none"),
    }
    line(
        "user",
        &parts
            .user()
            .map_or("none".to_owned(), |u| escape(u.username.as_bytes())),
    );
    if let Some(c) = parts.connection_info() {
        line("remote", &c.remote.to_string());
        line("secure", &c.secure.to_string());
    }
    line(
        "request_id",
        &parts
            .request_id()
            .map(|i| i.to_string())
            .unwrap_or_default(),
    );
    for (name, value) in &parts.headers {
        line("header", &format!("{}: {}", name, escape(value.as_bytes())));
    }

    let (mut bytes, mut chunks, mut largest, mut sum) = (0u64, 0u64, 0usize, Checksum::default());
    let mut error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                    chunks += 1;
                    largest = largest.max(data.len());
                    sum.update(data);
                }
            }
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    line("body_bytes", &bytes.to_string());
    line("body_chunks", &chunks.to_string());
    line("body_largest_chunk", &largest.to_string());
    line("body_checksum", &sum.hex());
    if let Some(e) = error {
        line("body_error", &escape(e.as_bytes()));
    }

    let mut resp = text(StatusCode::OK, out);
    for (name, value) in &parts.headers {
        if let Some(rest) = name.as_str().strip_prefix(REFLECT_PREFIX) {
            if let Ok(n) = HeaderName::from_bytes(format!("x-reflected-{rest}").as_bytes()) {
                resp.headers_mut().append(n, value.clone());
            }
        }
    }
    resp
}

fn status(code: &str) -> Response<Body> {
    match code
        .parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
    {
        // A body on purpose: hosts must not send it for 204 / 304.
        Some(code) => text(code, "this body must not be sent for 204 or 304\n".into()),
        None => text(StatusCode::BAD_REQUEST, "bad status".into()),
    }
}

fn download(total: u64, header: bool) -> Response<Body> {
    let (mut tx, body) = Body::channel_with_length(2, Some(total));
    tokio::spawn(async move {
        let mut off = 0u64;
        while off < total {
            let n = (total - off).min(64 * 1024) as usize;
            let mut chunk = vec![0u8; n];
            fill(&mut chunk, off);
            if tx.send(chunk).await.is_err() {
                return;
            }
            off += n as u64;
        }
    });
    let mut resp = Response::new(body);
    if header {
        resp.headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(total));
    }
    resp
}

fn registry<T: Default + Clone>(map: &'static OnceLock<Mutex<HashMap<String, T>>>, id: &str) -> T {
    let mut map = map
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.entry(id.to_owned()).or_default().clone()
}

type Acks = Arc<watch::Sender<u32>>;
static ACKS: OnceLock<Mutex<HashMap<String, Acks>>> = OnceLock::new();

fn sse(id: String, n: u32) -> Response<Body> {
    let acks = registry(&ACKS, &id);
    let (mut tx, body) = Body::channel(1);
    tokio::spawn(async move {
        let mut seen = acks.subscribe();
        for i in 0..n {
            if tx.send(format!("data: {i}\n\n")).await.is_err() {
                return;
            }
            if i + 1 == n {
                break;
            }
            // The next event only after the client confirmed it saw this one.
            let acked = tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|&k| k > i))
                .await
                .is_ok_and(|r| r.is_ok());
            if !acked {
                let _ = tx.send("data: no acknowledgement within 10 s\n\n").await;
                return;
            }
        }
    });
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    resp
}

fn ack(id: &str, i: u32) -> Response<Body> {
    registry(&ACKS, id).send_modify(|k| *k = (*k).max(i + 1));
    text(StatusCode::OK, "ok\n".into())
}

#[derive(Clone, Default)]
struct HangState(Arc<Mutex<&'static str>>);
static HANGS: OnceLock<Mutex<HashMap<String, HangState>>> = OnceLock::new();

struct MarkOnDrop(HangState);
impl Drop for MarkOnDrop {
    fn drop(&mut self) {
        *self.0 .0.lock().unwrap_or_else(|e| e.into_inner()) = "cancelled";
    }
}

async fn hang(id: String) -> Response<Body> {
    let state = registry(&HANGS, &id);
    *state.0.lock().unwrap_or_else(|e| e.into_inner()) = "running";
    let _guard = MarkOnDrop(state);
    std::future::pending::<()>().await;
    unreachable!("pending never resolves")
}

fn hang_status(id: &str) -> Response<Body> {
    let state = registry(&HANGS, id);
    let s = *state.0.lock().unwrap_or_else(|e| e.into_inner());
    text(
        StatusCode::OK,
        if s.is_empty() {
            "unknown".into()
        } else {
            s.to_owned()
        },
    )
}

static BARRIERS: OnceLock<Mutex<HashMap<String, Arc<Barrier>>>> = OnceLock::new();

async fn barrier(id: String, n: usize) -> Response<Body> {
    let b = {
        let mut map = BARRIERS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry(id)
            .or_insert_with(|| Arc::new(Barrier::new(n.max(1))))
            .clone()
    };
    match tokio::time::timeout(Duration::from_secs(20), b.wait()).await {
        Ok(_) => text(StatusCode::OK, "together\n".into()),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the others never came\n".into(),
        ),
    }
}
