//! A minimal way to write an app without a router framework.

use std::future::{poll_fn, Future};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower_service::Service;

use crate::{Body, BoxError, BoxFuture};

/// An app the [`Dispatcher`](crate::Dispatcher) can run: implemented for every
/// [`tower_service::Service`] over `http::Request<Body>` that is
/// `Clone + Send + Sync + 'static`, whose future is `Send`, whose error converts
/// into [`BoxError`], and whose response body is any [`http_body::Body`] of
/// [`Bytes`] — an axum `Router`, a [`service_fn`], a `tower` stack.
///
/// There is nothing to implement by hand; the trait exists so that the bounds
/// are written once and the app can be stored behind a pointer.
pub trait App: Send + Sync + 'static {
    /// Waits for the app to be ready, then calls it with `req` (on a clone, as
    /// `tower` services are called concurrently), with the response body boxed.
    #[doc(hidden)]
    fn call_boxed(
        &self,
        req: Request<Body>,
    ) -> BoxFuture<'static, Result<Response<Body>, BoxError>>;
}

impl<S, B> App for S
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn call_boxed(
        &self,
        req: Request<Body>,
    ) -> BoxFuture<'static, Result<Response<Body>, BoxError>> {
        let mut svc = self.clone();
        Box::pin(async move {
            poll_fn(|cx| svc.poll_ready(cx)).await.map_err(Into::into)?;
            let resp = svc.call(req).await.map_err(Into::into)?;
            Ok(resp.map(Body::new))
        })
    }
}

/// Turns an async function into an app (a [`tower_service::Service`]).
///
/// ```
/// use kallithea_core::{service_fn, Body, RequestExt};
/// let app = service_fn(|req: http::Request<Body>| async move {
///     let who = req.identity().map_or("nobody".to_owned(), |i| i.name().to_owned());
///     Ok::<_, std::convert::Infallible>(http::Response::new(Body::from(who)))
/// });
/// let _dispatcher = kallithea_core::Dispatcher::new(app);
/// ```
pub fn service_fn<F>(f: F) -> ServiceFn<F> {
    ServiceFn(f)
}

/// The app [`service_fn`] returns.
#[derive(Clone, Copy, Debug)]
pub struct ServiceFn<F>(F);

impl<F, Fut, B, E> Service<Request<Body>> for ServiceFn<F>
where
    F: Fn(Request<Body>) -> Fut,
    Fut: Future<Output = Result<Response<B>, E>>,
{
    type Response = Response<B>;
    type Error = E;
    type Future = Fut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Fut {
        (self.0)(req)
    }
}
