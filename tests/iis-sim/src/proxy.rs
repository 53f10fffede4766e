//! Out-of-process hosting, for comparison: IIS as a reverse proxy (as with
//! ARR or the ASP.NET Core Module's out-of-process mode) in front of an app
//! served by host-hyper, passing the authenticated user with the pairing
//! secret.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::WindowsAuth;

/// Where the proxy forwards, and how it vouches for the user.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The app's address.
    pub backend: SocketAddr,
    /// The pairing secret the app expects.
    pub secret: String,
    /// The header carrying the secret.
    pub secret_header: HeaderName,
    /// The header carrying the user.
    pub user_header: HeaderName,
    /// Windows authentication, as in the in-process mode.
    pub auth: WindowsAuth,
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

fn error(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

async fn forward(
    cfg: Arc<ProxyConfig>,
    client: Client<HttpConnector, Incoming>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let user = match cfg.auth.authenticate(req.headers()) {
        Ok(u) => u,
        Err(c) => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "HTTP Error 401.2 - Unauthorized\n",
            );
            if let Ok(v) = HeaderValue::from_str(&c.0) {
                r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
            }
            return Ok(r);
        }
    };
    let (mut parts, body) = req.into_parts();
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = Uri::try_from(format!("http://{}{pq}", cfg.backend)) else {
        return Ok(error(StatusCode::BAD_REQUEST, "bad request target\n"));
    };
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    // Whatever the client sent in the proxy's own headers is not passed on.
    parts.headers.remove(&cfg.secret_header);
    parts.headers.remove(&cfg.user_header);
    if let Ok(v) = HeaderValue::from_str(&cfg.secret) {
        parts.headers.insert(cfg.secret_header.clone(), v);
    }
    if let Some(user) = &user.user {
        if let Ok(v) = HeaderValue::from_bytes(user.name.as_bytes()) {
            parts.headers.insert(cfg.user_header.clone(), v);
        }
    }
    match client.request(Request::from_parts(parts, body)).await {
        Ok(mut resp) => {
            cfg.auth.challenge_401(&mut resp);
            if let Some(token) = user.mutual {
                resp.headers_mut()
                    .append(http::header::WWW_AUTHENTICATE, token);
            }
            Ok(resp.map(|b| b.boxed()))
        }
        Err(_) => Ok(error(
            StatusCode::BAD_GATEWAY,
            "HTTP Error 502 - the app is unreachable\n",
        )),
    }
}

/// Serves the proxy on `listener` until the task is aborted.
pub fn start(cfg: ProxyConfig, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    let cfg = Arc::new(cfg);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    tokio::spawn(async move {
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (cfg, client) = (Arc::clone(&cfg), client.clone());
            let service = hyper::service::service_fn(move |req| {
                forward(Arc::clone(&cfg), client.clone(), req)
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    })
}
