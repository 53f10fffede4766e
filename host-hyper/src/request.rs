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

    #[cfg_attr(not(all(feature = "negotiate", unix)), allow(unused_mut))]
    let mut identity = forwarded.identity;
    #[cfg(all(feature = "negotiate", unix))]
    let mut mutual = None;
    #[cfg(all(feature = "negotiate", unix))]
    if let Some(negotiator) = &shared.negotiate {
        match negotiate(shared, negotiator, &mut parts, peer).await {
            Ok((id, token)) => {
                identity = Some(id);
                mutual = token;
            }
            Err(refusal) => return refusal,
        }
    }

    parts.extensions.insert(ConnectionInfo {
        remote: forwarded.client.unwrap_or(peer),
        local: shared.local,
        secure: forwarded.secure.unwrap_or(false),
        proxy: forwarded.proxy,
    });
    if let Some(identity) = identity {
        parts.extensions.insert(identity);
    }
    if !shared.path_base.is_root() {
        parts.extensions.insert(shared.path_base.clone());
    }
    #[cfg_attr(not(all(feature = "negotiate", unix)), allow(unused_mut))]
    let mut response = shared
        .dispatcher
        .dispatch(Request::from_parts(parts, Body::new(body)))
        .await;
    #[cfg(all(feature = "negotiate", unix))]
    if let Some(token) = mutual {
        response
            .headers_mut()
            .append(http::header::WWW_AUTHENTICATE, token);
    }
    response
}

/// Authenticates a request with Negotiate: the host identity and the
/// mutual-authentication token, or the 401 to answer with. The request's
/// `Authorization` headers are consumed.
#[cfg(all(feature = "negotiate", unix))]
async fn negotiate(
    shared: &Shared,
    negotiator: &std::sync::Arc<crate::Negotiator>,
    parts: &mut http::request::Parts,
    peer: SocketAddr,
) -> Result<(kallithea_core::Identity, Option<http::HeaderValue>), Response<ResponseBody>> {
    use crate::negotiate::Negotiation;
    use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};

    let outcome = if parts.headers.contains_key(AUTHORIZATION) {
        let mut credentials = http::HeaderMap::new();
        for value in parts.headers.get_all(AUTHORIZATION) {
            credentials.append(AUTHORIZATION, value.clone());
        }
        parts.headers.remove(AUTHORIZATION);
        // Accepting reads the keytab and writes the replay cache: blocking I/O.
        let negotiator = std::sync::Arc::clone(negotiator);
        match tokio::task::spawn_blocking(move || negotiator.accept(&credentials)).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(%peer, error = %e, "Negotiate acceptance did not finish");
                return Err(shared.dispatcher.refuse(
                    parts,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error: authentication failed unexpectedly",
                ));
            }
        }
    } else {
        Negotiation::Challenge
    };
    match outcome {
        Negotiation::Authenticated { principal, mutual } => {
            tracing::debug!(%peer, %principal, "Negotiate authentication succeeded");
            Ok((
                kallithea_core::Identity::from_host(
                    principal,
                    kallithea_core::AuthScheme::Negotiate,
                ),
                mutual,
            ))
        }
        other => {
            if let Negotiation::Failed(failure) = &other {
                tracing::warn!(%peer, kind = %failure.kind, reason = %failure.message, "Negotiate authentication failed");
            }
            let mut refusal = shared.dispatcher.refuse(
                parts,
                StatusCode::UNAUTHORIZED,
                "Unauthorized: sign in with Windows authentication (Kerberos)",
            );
            refusal
                .headers_mut()
                .insert(WWW_AUTHENTICATE, crate::negotiate::challenge());
            Err(refusal)
        }
    }
}
