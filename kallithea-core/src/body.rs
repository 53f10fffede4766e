//! The streaming body used for requests and responses by every host.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::BoxError;

/// The body type of every request and response that crosses a host boundary.
///
/// Data frames are [`Bytes`]; errors are boxed. A `Body` is one of:
///
/// * [`Body::empty`] — no data at all (204, 304, `HEAD`, bodiless requests);
/// * [`Body::full`] — one buffer known up front;
/// * [`Body::new`] — any other [`http_body::Body`] (hyper's `Incoming`, an axum body…);
/// * [`Body::from_stream`] — a [`Stream`] of chunks;
/// * [`Body::channel`] — fed chunk by chunk from a [`BodySender`], with backpressure:
///   the sender waits while the bounded channel is full, so a slow reader slows the
///   writer down instead of letting memory grow.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use http_body_util::BodyExt;
/// use kallithea_core::Body;
///
/// let (mut tx, body) = Body::channel(4);
/// tokio::spawn(async move {
///     tx.send("hello ").await.unwrap();
///     tx.send("world").await.unwrap();
/// });
/// let bytes = body.collect().await.unwrap().to_bytes();
/// assert_eq!(bytes, "hello world");
/// # });
/// ```
pub struct Body {
    kind: Kind,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Channel {
        rx: mpsc::Receiver<Result<Bytes, BoxError>>,
        remaining: Option<u64>,
    },
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// A body with no data.
    pub const fn empty() -> Self {
        Body { kind: Kind::Empty }
    }

    /// A body made of one buffer.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        if data.is_empty() {
            return Body::empty();
        }
        Body {
            kind: Kind::Full(Some(data)),
        }
    }

    /// Wraps any [`http_body::Body`] whose data is [`Bytes`].
    ///
    /// Wrapping a `Body` again returns it unchanged.
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        try_downcast::<Body, B>(body).unwrap_or_else(|body| Body {
            kind: Kind::Boxed(body.map_err(Into::into).boxed_unsync()),
        })
    }

    /// A body fed by a stream of chunks; an `Err` item ends the body with that error.
    pub fn from_stream<S, D, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<D, E>> + Send + 'static,
        D: Into<Bytes> + 'static,
        E: Into<BoxError> + 'static,
    {
        Body::new(StreamBody { stream })
    }

    /// A body fed from a [`BodySender`] through a channel of `capacity` chunks.
    ///
    /// The sender waits (asynchronously) whenever `capacity` chunks are queued and
    /// not yet read. The body ends when the sender is dropped or
    /// [`finished`](BodySender::finish).
    ///
    /// # Panics
    /// If `capacity` is zero.
    pub fn channel(capacity: usize) -> (BodySender, Body) {
        Body::channel_with_length(capacity, None)
    }

    /// Like [`Body::channel`], announcing the exact total length in the size hint
    /// (hosts use it for `Content-Length`). If the sender then delivers fewer bytes
    /// the body ends with an error, never silently short.
    pub fn channel_with_length(capacity: usize, length: Option<u64>) -> (BodySender, Body) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            BodySender { tx },
            Body {
                kind: Kind::Channel {
                    rx,
                    remaining: length,
                },
            },
        )
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Full(_) => "full",
            Kind::Channel { .. } => "channel",
            Kind::Boxed(_) => "boxed",
        };
        f.debug_struct("Body").field("kind", &kind).finish()
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::full(b)
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::full(s)
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body::full(s)
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body::full(v)
    }
}

impl From<()> for Body {
    fn from(_: ()) -> Self {
        Body::empty()
    }
}

/// Error ending a channel body whose sender delivered a different number of bytes
/// than announced with [`Body::channel_with_length`].
#[derive(Debug, thiserror::Error)]
#[error("body ended after the wrong number of bytes: {missing} bytes announced but never sent")]
pub struct IncompleteBody {
    missing: u64,
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Channel { rx, remaining } => match rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Some(left) = remaining {
                        let len = chunk.len() as u64;
                        if len > *left {
                            return Poll::Ready(Some(Err(
                                "body sender exceeded its announced length".into(),
                            )));
                        }
                        *left -= len;
                    }
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => match remaining {
                    Some(missing) if *missing > 0 => {
                        let missing = *missing;
                        *remaining = Some(0);
                        Poll::Ready(Some(Err(IncompleteBody { missing }.into())))
                    }
                    _ => Poll::Ready(None),
                },
            },
            Kind::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(data) => data.is_none(),
            Kind::Channel { remaining, .. } => *remaining == Some(0),
            Kind::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Channel { remaining, .. } => match remaining {
                Some(n) => SizeHint::with_exact(*n),
                None => SizeHint::default(),
            },
            Kind::Boxed(b) => b.size_hint(),
        }
    }
}

/// The sending half of [`Body::channel`].
#[derive(Debug)]
pub struct BodySender {
    tx: mpsc::Sender<Result<Bytes, BoxError>>,
}

/// The body a [`BodySender`] fed was dropped: nobody reads any more (for a request
/// body, the app is done with it; for a response body, the client is gone).
#[derive(Debug, thiserror::Error)]
#[error("the receiving side of the body was dropped")]
pub struct BodyClosed;

impl BodySender {
    /// Queues one chunk, waiting while the channel is full.
    pub async fn send(&mut self, chunk: impl Into<Bytes>) -> Result<(), BodyClosed> {
        let chunk = chunk.into();
        if chunk.is_empty() {
            return Ok(());
        }
        self.tx.send(Ok(chunk)).await.map_err(|_| BodyClosed)
    }

    /// Ends the body with an error the reader will see (for example, the client
    /// disconnected in the middle of an upload).
    pub async fn abort(self, error: impl Into<BoxError>) {
        let _ = self.tx.send(Err(error.into())).await;
    }

    /// Waits until there is room for one more chunk, without sending one. Hosts
    /// use it to read from the network only as fast as the app consumes.
    pub async fn ready(&self) -> Result<(), BodyClosed> {
        self.tx.reserve().await.map(drop).map_err(|_| BodyClosed)
    }

    /// Resolves once the reading side is gone (the app dropped the body).
    /// Hosts race it against a read from the network, to stop waiting for
    /// data nobody will read.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// Whether the reading side is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Ends the body normally (the same as dropping the sender).
    pub fn finish(self) {}
}

pin_project_lite::pin_project! {
    struct StreamBody<S> {
        #[pin]
        stream: S,
    }
}

impl<S, D, E> http_body::Body for StreamBody<S>
where
    S: Stream<Item = Result<D, E>>,
    D: Into<Bytes>,
    E: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().stream.poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Ok(d))) => Poll::Ready(Some(Ok(Frame::data(d.into())))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
        }
    }
}

fn try_downcast<T: 'static, K: 'static>(k: K) -> Result<T, K> {
    let mut k = Some(k);
    if let Some(k) = <dyn std::any::Any>::downcast_mut::<Option<T>>(&mut k) {
        Ok(k.take().expect("value is present"))
    } else {
        Err(k.expect("value is present"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    #[tokio::test]
    async fn channel_sender_waits_while_the_channel_is_full() {
        let (mut tx, mut body) = Body::channel(1);
        tx.send("a").await.unwrap();
        // The second send cannot complete until the reader takes the first chunk.
        let second = tokio::time::timeout(std::time::Duration::from_millis(50), tx.send("b")).await;
        assert!(second.is_err(), "send must wait while the channel is full");
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "a");
        tx.send("b").await.unwrap();
        drop(tx);
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "b"
        );
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn announced_length_that_is_not_delivered_is_an_error() {
        let (mut tx, mut body) = Body::channel_with_length(4, Some(10));
        assert_eq!(body.size_hint().exact(), Some(10));
        tx.send("12345").await.unwrap();
        drop(tx);
        assert!(body.frame().await.unwrap().is_ok());
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<IncompleteBody>(), "{err}");
    }

    #[tokio::test]
    async fn sending_to_a_dropped_body_reports_closed() {
        let (mut tx, body) = Body::channel(1);
        drop(body);
        assert!(tx.send("x").await.is_err());
        assert!(tx.is_closed());
    }

    #[test]
    fn wrapping_a_body_does_not_box_it_twice() {
        let body = Body::new(Body::full("abc"));
        assert!(matches!(body.kind, Kind::Full(_)));
        assert_eq!(body.size_hint().exact(), Some(3));
    }

    #[tokio::test]
    async fn stream_body_forwards_chunks_and_errors() {
        struct Items(Vec<Result<&'static str, std::io::Error>>);
        impl Stream for Items {
            type Item = Result<&'static str, std::io::Error>;
            fn poll_next(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Self::Item>> {
                Poll::Ready(if self.0.is_empty() {
                    None
                } else {
                    Some(self.0.remove(0))
                })
            }
        }
        let mut body = Body::from_stream(Items(vec![Ok("a"), Err(std::io::Error::other("boom"))]));
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "a"
        );
        assert_eq!(body.frame().await.unwrap().unwrap_err().to_string(), "boom");
    }
}
