//! hyper's request → the core request, with the host's facts attached.

use std::net::SocketAddr;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use kallithea_core::{Body, ConnectionInfo, ResponseBody};

use crate::server::Shared;
use crate::trust;

/// Turns one hyper request into a core request and dispatches it, or refuses it
/// when it fails the front-proxy check or lies outside the path base.
pub(crate) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ResponseBody> {
    let (mut parts, body) = req.into_parts();

    let forwarded = match trust::evaluate(shared.trust.as_ref(), &mut parts.headers, peer.ip()) {
        Ok(forwarded) => forwarded,
        Err(reason) => {
            tracing::warn!(%peer, reason, "front-proxy check failed");
            return shared.dispatcher.refuse(
                &parts,
                StatusCode::BAD_REQUEST,
                "Bad Request: the front-proxy pairing check failed",
            );
        }
    };
    if shared.path_base.strip(parts.uri.path()).is_none() {
        return shared.dispatcher.refuse(
            &parts,
            StatusCode::NOT_FOUND,
            "Not Found: the path is outside this application's path base",
        );
    }

    parts.extensions.insert(ConnectionInfo {
        remote: forwarded.client.unwrap_or(peer),
        local: shared.local,
        secure: forwarded.secure.unwrap_or(false),
        proxy: forwarded.proxy,
    });
    if let Some(identity) = forwarded.identity {
        parts.extensions.insert(identity);
    }
    if !shared.path_base.is_root() {
        parts.extensions.insert(shared.path_base.clone());
    }
    shared
        .dispatcher
        .dispatch(Request::from_parts(parts, Body::new(body)))
        .await
}
