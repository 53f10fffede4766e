//! Panic containment for futures and bodies.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// A future that turns a panic while polling the inner future into
    /// `Err(message)`.
    pub(crate) struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

impl<F> CatchUnwind<F> {
    pub(crate) fn new(inner: F) -> Self {
        CatchUnwind { inner }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

/// Runs `fut`, turning a panic while polling it into `Err(message)`. Hosts use
/// it for work outside the dispatcher (the dispatcher already isolates the
/// app).
pub fn catch_unwind_future<F: Future>(fut: F) -> impl Future<Output = Result<F::Output, String>> {
    CatchUnwind::new(fut)
}

/// The message of a panic payload (`panic!("…")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn panics_become_errors_with_their_message() {
        let r = CatchUnwind::new(async {
            if std::hint::black_box(true) {
                panic!("kaboom {}", 7);
            }
        })
        .await;
        assert_eq!(r.unwrap_err(), "kaboom 7");
        assert_eq!(CatchUnwind::new(async { 5 }).await, Ok(5));
    }
}
