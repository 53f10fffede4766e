//! The dispatcher every host calls for every request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::Limited;
use tracing::Instrument;

use crate::auth::{AuthChain, AuthPlugin, Rejection};
use crate::guard::{panic_message, CatchUnwind};
use crate::{App, Body, BoxError, Limits, RequestExt, RequestId};

/// Runs one app behind any host: every host adapter turns its native request
/// into an `http::Request<Body>`, calls [`Dispatcher::dispatch`], and writes the
/// [`Response<ResponseBody>`] back.
///
/// For each request the dispatcher, in this order:
/// 1. assigns a [`RequestId`] and opens a tracing span `request` with the method,
///    path, request id and identity;
/// 2. applies the [`Limits`] (431 for headers, 413 for a body that is too large);
/// 3. runs the [`AuthChain`], which may store a [`User`](crate::User) or reject;
/// 4. calls the app, isolating panics: a panic in the app's `call`, its future or
///    its response body is logged (target `kallithea::panic`) with the request id,
///    and the client gets a 500 carrying that id (or, if the response had
///    started, an aborted body); the process carries on.
///
/// The app is any [`tower_service::Service`] over `http::Request<Body>` that is
/// `Clone + Send + Sync`, with any response body of [`Bytes`] — an axum `Router`
/// as it is.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use http_body_util::BodyExt;
/// use kallithea_core::{service_fn, Body, Dispatcher};
///
/// let app = service_fn(|_req| async { Ok::<_, std::convert::Infallible>(http::Response::new(Body::full("hi"))) });
/// let dispatcher = Dispatcher::builder(app).build();
/// let resp = dispatcher.dispatch(http::Request::new(Body::empty())).await;
/// assert_eq!(resp.status(), 200);
/// assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "hi");
/// # });
/// ```
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    app: Box<dyn App>,
    auth: AuthChain,
    limits: Limits,
    request_id_header: bool,
}

/// Builds a [`Dispatcher`]; see [`Dispatcher::builder`].
pub struct DispatcherBuilder {
    app: Box<dyn App>,
    auth: AuthChain,
    limits: Limits,
    request_id_header: bool,
}

impl Dispatcher {
    /// Starts building a dispatcher for `app`, with default [`Limits`] and no
    /// authentication plugin.
    pub fn builder(app: impl App) -> DispatcherBuilder {
        DispatcherBuilder {
            app: Box::new(app),
            auth: AuthChain::new(),
            limits: Limits::default(),
            request_id_header: false,
        }
    }

    /// A dispatcher for `app` with the defaults.
    pub fn new(app: impl App) -> Self {
        Self::builder(app).build()
    }

    /// The limits this dispatcher enforces; hosts use them to configure their
    /// own parsers so that both agree.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Handles one request. The returned future owns everything it needs, never
    /// panics, and always yields a response.
    pub fn dispatch(
        &self,
        req: Request<Body>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        let id = RequestId::next();
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = req.uri().path(),
            request_id = %id,
            identity = tracing::field::Empty,
            user = tracing::field::Empty,
        );
        if let Some(identity) = req.identity() {
            span.record("identity", identity.name());
        }
        let fut = async move {
            let start = tracing::enabled!(target: "kallithea::access", tracing::Level::INFO)
                .then(std::time::Instant::now);
            let response = inner.handle(req, id).await;
            if let Some(start) = start {
                tracing::info!(
                    target: "kallithea::access",
                    status = response.status().as_u16(),
                    elapsed_us = start.elapsed().as_micros() as u64,
                    "response"
                );
            }
            response
        };
        fut.instrument(span)
    }
}

impl Dispatcher {
    /// Answers a request the host refuses before dispatching it (a wrong pairing
    /// secret, a path outside the mount point), with a request id in the
    /// `x-request-id` header and a log line. The app is not called; `message`
    /// becomes the plain-text body.
    pub fn refuse(
        &self,
        req: &http::request::Parts,
        status: StatusCode,
        message: &str,
    ) -> Response<ResponseBody> {
        let id = RequestId::next();
        tracing::info!(
            method = %req.method,
            path = req.uri.path(),
            request_id = %id,
            status = status.as_u16(),
            reason = message,
            "request refused by the host"
        );
        finish(plain(status, message), id, req.method == Method::HEAD, true)
    }
}

impl DispatcherBuilder {
    /// Sets the request limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Appends an authentication plugin to the chain; plugins run in the order
    /// they are added.
    pub fn auth(mut self, plugin: impl AuthPlugin) -> Self {
        self.auth = self.auth.with(plugin);
        self
    }

    /// Adds the `x-request-id` header to every response. By default only
    /// responses where a user needs the id to report a problem carry it: 5xx
    /// responses (the app failed or panicked) and requests the host or the
    /// limits refused. The id is always in the request's tracing span and in
    /// [`RequestExt::request_id`].
    pub fn request_id_on_every_response(mut self, yes: bool) -> Self {
        self.request_id_header = yes;
        self
    }

    /// Replaces the whole authentication chain.
    pub fn auth_chain(mut self, chain: AuthChain) -> Self {
        self.auth = chain;
        self
    }

    /// Finishes the dispatcher.
    pub fn build(self) -> Dispatcher {
        Dispatcher {
            inner: Arc::new(Inner {
                app: self.app,
                auth: self.auth,
                limits: self.limits,
                request_id_header: self.request_id_header,
            }),
        }
    }
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("auth", &self.inner.auth)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl Inner {
    async fn handle(&self, req: Request<Body>, id: RequestId) -> Response<ResponseBody> {
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(id);
        let bodiless_request = parts.method == Method::HEAD;

        if let Err(message) = check_headers(&parts.headers, &self.limits) {
            tracing::info!(%message, "request headers over the limit");
            let resp = plain(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, &message);
            return finish(resp, id, false, true);
        }
        let body = match self.limits.max_body_bytes.get() {
            None => body,
            Some(max) => {
                let announced = declared_length(&parts.headers)
                    .unwrap_or(0)
                    .max(http_body::Body::size_hint(&body).lower());
                if announced > max {
                    tracing::info!(announced, max, "request body larger than the limit");
                    let resp = plain(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!(
                            "request body of {announced} bytes exceeds the limit of {max} bytes"
                        ),
                    );
                    return finish(resp, id, false, true);
                }
                match http_body::Body::size_hint(&body).exact() {
                    // A body of known length within the limit cannot grow past
                    // it (hosts enforce the announced length), so it needs no
                    // counting wrapper.
                    Some(_) => body,
                    None => Body::new(Limited::new(
                        body,
                        usize::try_from(max).unwrap_or(usize::MAX),
                    )),
                }
            }
        };

        let outcome = CatchUnwind::new(async {
            if let Err(rejection) = self.auth.run(&mut parts).await {
                return Ok(rejection.into_response());
            }
            if let Some(user) = parts.user() {
                tracing::Span::current().record("user", user.username.as_str());
            }
            self.app.call_boxed(Request::from_parts(parts, body)).await
        })
        .await;

        match outcome {
            Ok(Ok(resp)) => {
                let tag = self.request_id_header || resp.status().is_server_error();
                finish(resp, id, bodiless_request, tag)
            }
            Ok(Err(error)) => {
                tracing::error!(request_id = %id, error = %error, "app returned an error");
                finish(internal_error(id), id, false, true)
            }
            Err(message) => {
                tracing::error!(target: "kallithea::panic", request_id = %id, panic = %message, "app panicked");
                finish(internal_error(id), id, false, true)
            }
        }
    }
}

/// The response header carrying the request id.
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

fn check_headers(headers: &HeaderMap, limits: &Limits) -> Result<(), String> {
    if headers.len() > limits.max_header_count {
        return Err(format!(
            "more than {} header fields",
            limits.max_header_count
        ));
    }
    let bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    if bytes > limits.max_header_bytes {
        return Err(format!(
            "header fields exceed {} bytes",
            limits.max_header_bytes
        ));
    }
    Ok(())
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn plain(status: StatusCode, message: &str) -> Response<Body> {
    Rejection::new(status, message).into_response()
}

fn internal_error(id: RequestId) -> Response<Body> {
    plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("Internal Server Error\nrequest id: {id}"),
    )
}

/// Turns a response into what hosts write: adds `x-request-id` when `tag_id`,
/// and drops the body where HTTP forbids one.
fn finish(
    resp: Response<Body>,
    id: RequestId,
    bodiless_request: bool,
    tag_id: bool,
) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    if tag_id {
        parts.headers.insert(X_REQUEST_ID, id.header_value());
    }
    let status = parts.status;
    let bodiless = bodiless_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let body = if bodiless {
        ResponseBody { inner: None, id }
    } else {
        ResponseBody {
            inner: Some(body),
            id,
        }
    };
    Response::from_parts(parts, body)
}

/// The response body the dispatcher hands to hosts: the app's body with panic
/// isolation. A panic while the app produces the body ends the body with an
/// error (the host aborts the response) and a `kallithea::panic` trace event.
///
/// For `HEAD` requests and for 1xx, 204 and 304 responses the app's body is
/// dropped unread, so hosts can write whatever this body yields.
pub struct ResponseBody {
    inner: Option<Body>,
    id: RequestId,
}

impl ResponseBody {
    /// The request id of the response this body belongs to.
    pub fn request_id(&self) -> RequestId {
        self.id
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("request_id", &self.id)
            .field("done", &self.inner.is_none())
            .finish()
    }
}

/// The app panicked while producing the response body.
#[derive(Debug, thiserror::Error)]
#[error("the app panicked while producing the response body (request id {0})")]
pub struct BodyPanicked(pub RequestId);

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Pin::new(inner).poll_frame(cx)
        }));
        match polled {
            Ok(Poll::Ready(None)) => {
                this.inner = None;
                Poll::Ready(None)
            }
            Ok(other) => other,
            Err(payload) => {
                this.inner = None;
                let message = panic_message(payload.as_ref());
                tracing::error!(target: "kallithea::panic", request_id = %this.id, panic = %message, "app panicked while producing the response body");
                Poll::Ready(Some(Err(BodyPanicked(this.id).into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{service_fn, AuthOutcome, AuthScheme, BoxFuture, ByteLimit, Identity, User};
    use http::HeaderValue;
    use http_body_util::BodyExt;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn req(path: &str) -> Request<Body> {
        Request::builder().uri(path).body(Body::empty()).unwrap()
    }

    async fn text(resp: Response<ResponseBody>) -> String {
        String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap()
    }

    fn echo_user() -> Dispatcher {
        Dispatcher::new(service_fn(|req: Request<Body>| async move {
            let who = req.user().map_or("-".to_owned(), |u| {
                format!("{}/{}", u.username, u.authenticated_by)
            });
            Ok::<_, Infallible>(Response::new(Body::from(who)))
        }))
    }

    #[tokio::test]
    async fn panicking_app_gives_500_with_the_request_id_and_the_next_request_works() {
        let d = Dispatcher::new(service_fn(|req: Request<Body>| async move {
            if req.uri().path() == "/panic" {
                panic!("app bug");
            }
            Ok::<_, Infallible>(Response::new(Body::from("fine")))
        }));
        let resp = d.dispatch(req("/panic")).await;
        assert_eq!(resp.status(), 500);
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(text(resp).await.contains(&id));
        assert_eq!(text(d.dispatch(req("/ok")).await).await, "fine");
    }

    #[tokio::test]
    async fn panic_in_the_response_body_ends_the_body_with_an_error() {
        struct Exploding;
        impl http_body::Body for Exploding {
            type Data = Bytes;
            type Error = Infallible;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
                panic!("body bug")
            }
        }
        let d = Dispatcher::new(service_fn(|_| async {
            Ok::<_, Infallible>(Response::new(Exploding))
        }));
        let resp = d.dispatch(req("/")).await;
        assert_eq!(resp.status(), 200);
        let err = resp.into_body().collect().await.unwrap_err();
        assert!(err.is::<BodyPanicked>(), "{err}");
    }

    #[tokio::test]
    async fn request_id_header_is_on_errors_by_default_and_everywhere_on_request() {
        let app = service_fn(|_| async { Ok::<_, Infallible>(Response::new(Body::from("ok"))) });
        let quiet = Dispatcher::new(app);
        assert!(!quiet
            .dispatch(req("/"))
            .await
            .headers()
            .contains_key(X_REQUEST_ID));
        let loud = Dispatcher::builder(app)
            .request_id_on_every_response(true)
            .build();
        assert!(loud
            .dispatch(req("/"))
            .await
            .headers()
            .contains_key(X_REQUEST_ID));
        let (parts, _) = req("/").into_parts();
        let refused = quiet.refuse(&parts, StatusCode::BAD_REQUEST, "no");
        assert!(refused.headers().contains_key(X_REQUEST_ID));
    }

    #[tokio::test]
    async fn app_error_gives_500() {
        let d = Dispatcher::new(service_fn(|_| async {
            Err::<Response<Body>, _>(std::io::Error::other("db down"))
        }));
        assert_eq!(d.dispatch(req("/")).await.status(), 500);
    }

    struct Fixed(
        &'static str,
        fn(&http::request::Parts) -> AuthOutcome,
        Arc<AtomicUsize>,
    );
    impl AuthPlugin for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn authenticate<'a>(&'a self, req: &'a http::request::Parts) -> BoxFuture<'a, AuthOutcome> {
            self.2.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { (self.1)(req) })
        }
    }

    #[tokio::test]
    async fn plugins_run_in_order_and_the_first_decision_wins() {
        let calls = Arc::new(AtomicUsize::new(0));
        let d = Dispatcher::builder(service_fn(|req: Request<Body>| async move {
            let who = req.user().map_or("-".to_owned(), |u| {
                format!("{}/{}", u.username, u.authenticated_by)
            });
            Ok::<_, Infallible>(Response::new(Body::from(who)))
        }))
        .auth(Fixed("skip", |_| AuthOutcome::NotMine, calls.clone()))
        .auth(Fixed(
            "host",
            |p| match p.identity() {
                Some(i) => AuthOutcome::Authenticated(User::new(i.name(), "host")),
                None => {
                    AuthOutcome::Reject(Rejection::new(StatusCode::UNAUTHORIZED, "who are you"))
                }
            },
            calls.clone(),
        ))
        .auth(Fixed(
            "never",
            |_| AuthOutcome::Authenticated(User::new("mallory", "never")),
            calls.clone(),
        ))
        .build();

        let mut r = req("/");
        r.extensions_mut()
            .insert(Identity::from_host("alice", AuthScheme::Negotiate));
        assert_eq!(text(d.dispatch(r).await).await, "alice/host");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the third plugin must not be asked"
        );

        let resp = d.dispatch(req("/")).await;
        assert_eq!(resp.status(), 401);
        assert!(text(resp).await.contains("who are you"));
    }

    #[tokio::test]
    async fn without_plugins_no_user_is_set() {
        assert_eq!(text(echo_user().dispatch(req("/")).await).await, "-");
    }

    #[tokio::test]
    async fn header_limits_give_431() {
        let d = Dispatcher::builder(service_fn(|_| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }))
        .limits(Limits {
            max_header_count: 2,
            max_header_bytes: 1024,
            ..Limits::default()
        })
        .build();
        let mut r = req("/");
        for i in 0..3 {
            r.headers_mut().insert(
                http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        assert_eq!(d.dispatch(r).await.status(), 431);
        let mut r = req("/");
        r.headers_mut()
            .insert("x-big", HeaderValue::from_str(&"a".repeat(2000)).unwrap());
        assert_eq!(d.dispatch(r).await.status(), 431);
    }

    #[tokio::test]
    async fn declared_body_over_the_limit_gives_413_without_running_the_app() {
        let ran = Arc::new(AtomicUsize::new(0));
        let ran2 = ran.clone();
        let d = Dispatcher::builder(service_fn(move |_| {
            ran2.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Body::empty())) }
        }))
        .limits(Limits {
            max_body_bytes: ByteLimit::Bytes(10),
            ..Limits::default()
        })
        .build();
        let r = Request::builder()
            .method("POST")
            .header("content-length", "11")
            .body(Body::full("x".repeat(11)))
            .unwrap();
        assert_eq!(d.dispatch(r).await.status(), 413);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn streamed_body_over_the_limit_fails_while_reading() {
        let d = Dispatcher::builder(service_fn(|req: Request<Body>| async move {
            let err = req.into_body().collect().await.unwrap_err();
            let limit = err.is::<http_body_util::LengthLimitError>();
            Ok::<_, Infallible>(Response::new(Body::from(format!("limit={limit}"))))
        }))
        .limits(Limits {
            max_body_bytes: ByteLimit::Bytes(10),
            ..Limits::default()
        })
        .build();
        let (mut tx, body) = Body::channel(4);
        tokio::spawn(async move {
            for _ in 0..4 {
                if tx.send("abcd").await.is_err() {
                    break;
                }
            }
        });
        let r = Request::builder().method("POST").body(body).unwrap();
        assert_eq!(text(d.dispatch(r).await).await, "limit=true");
    }

    #[tokio::test]
    async fn head_and_bodiless_statuses_carry_no_body() {
        let d = Dispatcher::new(service_fn(|req: Request<Body>| async move {
            let status = if req.uri().path() == "/204" { 204 } else { 200 };
            let mut resp = Response::new(Body::from("payload"));
            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(resp)
        }));
        let head = Request::builder()
            .method("HEAD")
            .uri("/")
            .body(Body::empty())
            .unwrap();
        assert_eq!(text(d.dispatch(head).await).await, "");
        assert_eq!(text(d.dispatch(req("/204")).await).await, "");
        assert_eq!(text(d.dispatch(req("/")).await).await, "payload");
    }
}
