//! A minimal way to write an app without a router framework.

use std::future::Future;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::Body;

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
