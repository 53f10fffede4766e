//! The authentication plugin trait and the chain the dispatcher runs.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{header, request::Parts, HeaderValue, Response, StatusCode};

use crate::{Body, User};

/// A boxed, sendable future, as plugins return it.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What one plugin says about a request.
#[derive(Debug)]
pub enum AuthOutcome {
    /// The request is from this user; the chain stops here.
    Authenticated(User),
    /// This plugin has nothing to say; the next plugin is asked.
    NotMine,
    /// The request must not reach the app; this response goes back instead
    /// (401 with a challenge, 403 for an inactive account…).
    Reject(Rejection),
}

/// The response a plugin sends instead of running the app.
pub struct Rejection {
    response: Response<Body>,
}

impl Rejection {
    /// A plain-text response with `status` and `message` as its body.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        message.push('\n');
        let mut response = Response::new(Body::full(message));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Rejection { response }
    }

    /// A rejection with a response the plugin built itself (an HTML page, a
    /// `WWW-Authenticate` challenge…).
    pub fn from_response(response: Response<Body>) -> Self {
        Rejection { response }
    }

    /// The status this rejection answers with.
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// Adds a header to the response.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.response.headers_mut().append(name, value);
        self
    }

    /// The response to send.
    pub fn into_response(self) -> Response<Body> {
        self.response
    }
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("status", &self.response.status())
            .finish()
    }
}

/// An authentication plugin: turns what the host reported about a request
/// (its [`Identity`](crate::Identity), headers from a trusted proxy, host
/// variables) into an application [`User`], or refuses the request.
///
/// Plugins are asked in the order they were added to the [`AuthChain`]; the
/// first one that does not answer [`AuthOutcome::NotMine`] decides.
///
/// ```
/// use kallithea_core::{AuthOutcome, AuthPlugin, BoxFuture, RequestExt, User};
///
/// /// Accepts whoever the host authenticated, without any cleaning.
/// struct TrustHost;
///
/// impl AuthPlugin for TrustHost {
///     fn name(&self) -> &str { "trust-host" }
///     fn authenticate<'a>(&'a self, req: &'a http::request::Parts) -> BoxFuture<'a, AuthOutcome> {
///         Box::pin(async move {
///             match req.identity() {
///                 Some(id) => AuthOutcome::Authenticated(User::new(id.name(), self.name())),
///                 None => AuthOutcome::NotMine,
///             }
///         })
///     }
/// }
/// ```
pub trait AuthPlugin: Send + Sync + 'static {
    /// A short name for logs and for [`User::authenticated_by`].
    fn name(&self) -> &str;

    /// Decides about one request. Called for every request: plugins must not
    /// remember an earlier decision for a connection or session.
    fn authenticate<'a>(&'a self, req: &'a Parts) -> BoxFuture<'a, AuthOutcome>;
}

/// A shared plugin is a plugin: keep an `Arc` to change its settings at run
/// time while the dispatcher runs it.
impl<P: AuthPlugin> AuthPlugin for Arc<P> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn authenticate<'a>(&'a self, req: &'a Parts) -> BoxFuture<'a, AuthOutcome> {
        (**self).authenticate(req)
    }
}

/// The ordered list of enabled plugins.
#[derive(Clone, Default)]
pub struct AuthChain {
    plugins: Vec<Arc<dyn AuthPlugin>>,
}

impl AuthChain {
    /// A chain with no plugin: no request gets a [`User`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a plugin; it is asked after the ones already added.
    pub fn with(mut self, plugin: impl AuthPlugin) -> Self {
        self.plugins.push(Arc::new(plugin));
        self
    }

    /// Appends a shared plugin.
    pub fn push(&mut self, plugin: Arc<dyn AuthPlugin>) {
        self.plugins.push(plugin);
    }

    /// Whether the chain has no plugin.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// The plugins' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.plugins.iter().map(|p| p.name())
    }

    /// Runs the plugins in order. On [`AuthOutcome::Authenticated`] the user is
    /// stored in the request extensions and `Ok(())` returned; if every plugin
    /// says [`NotMine`](AuthOutcome::NotMine) the request goes on without a user;
    /// a rejection is returned as `Err`.
    pub async fn run(&self, parts: &mut Parts) -> Result<(), Rejection> {
        for plugin in &self.plugins {
            match plugin.authenticate(parts).await {
                AuthOutcome::NotMine => continue,
                AuthOutcome::Authenticated(user) => {
                    tracing::debug!(plugin = plugin.name(), user = %user.username, "authenticated");
                    parts.extensions.insert(user);
                    return Ok(());
                }
                AuthOutcome::Reject(rejection) => {
                    tracing::info!(plugin = plugin.name(), status = %rejection.status(), "request rejected by authentication");
                    return Err(rejection);
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for AuthChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}
