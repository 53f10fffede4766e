//! The response body that flows from the DLL's writes to the HTTP client.

use super::*;

/// The response body: what the extension writes.
pub struct SimBody {
    pub(crate) rx: Option<mpsc::UnboundedReceiver<BodyChunk>>,
    pub(crate) fixed: Option<Bytes>,
    /// Told of every chunk taken from `rx`.
    pub(crate) backlog: Option<Arc<Backlog>>,
}

impl SimBody {
    pub(crate) fn text(s: impl Into<Bytes>) -> Self {
        SimBody {
            rx: None,
            fixed: Some(s.into()),
            backlog: None,
        }
    }

    /// The body of a response whose writer is gone: what it wrote, in one
    /// piece, unless a write carried an error (then it streams as it is).
    pub(crate) fn settle(mut self) -> Self {
        let SimBody { rx, backlog, .. } = &mut self;
        let Some(rx) = rx.as_mut() else {
            return self;
        };
        if !rx.is_closed() {
            // A write is still being delivered.
            return self;
        }
        // Mostly a single write: no list for that.
        let mut first: Option<Bytes> = None;
        let mut chunks = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(Ok(chunk)) if first.is_none() => {
                    if let Some(b) = backlog.as_ref() {
                        b.took();
                    }
                    first = Some(chunk);
                }
                Ok(Ok(chunk)) => {
                    if let Some(b) = backlog.as_ref() {
                        b.took();
                    }
                    chunks.push(chunk);
                }
                Ok(Err(e)) => {
                    // Keep the failure for the client to see: put it back
                    // behind what came before, in a fresh channel.
                    let (tx, rx) = mpsc::unbounded_channel();
                    for c in first.into_iter().chain(chunks) {
                        let _ = tx.send(Ok(c));
                    }
                    let _ = tx.send(Err(e));
                    return SimBody {
                        rx: Some(rx),
                        fixed: None,
                        backlog: None,
                    };
                }
                // No sender is left, so nothing more can come.
                Err(_) => break,
            }
        }
        let fixed = match first {
            Some(first) if !chunks.is_empty() => {
                chunks.insert(0, first);
                Some(chunks.concat().into())
            }
            first => first,
        };
        SimBody {
            rx: None,
            fixed,
            backlog: None,
        }
    }

    fn took(&self) {
        if let Some(b) = &self.backlog {
            b.took();
        }
    }
}

impl SimBody {
    /// A settled body that is not `declared` bytes long streams what it
    /// has and then fails, so that the connection closes instead of the
    /// client taking a short body for the whole.
    pub(crate) fn cut_unless_length(self, declared: u64) -> Self {
        let len = match (&self.fixed, &self.rx) {
            (Some(b), None) => b.len() as u64,
            (None, None) => 0,
            _ => return self,
        };
        if len == declared {
            return self;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(b) = self.fixed {
            let _ = tx.send(Ok(b));
        }
        let _ = tx.send(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the response ended before its declared length",
        )));
        SimBody {
            rx: Some(rx),
            fixed: None,
            backlog: None,
        }
    }
}

impl http_body::Body for SimBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(b) = self.fixed.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        let polled = match self.rx.as_mut() {
            None => return Poll::Ready(None),
            Some(rx) => rx.poll_recv(cx),
        };
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.took();
        }
        polled.map(|c| c.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.fixed.is_none() && self.rx.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match (&self.fixed, &self.rx) {
            (Some(b), None) => http_body::SizeHint::with_exact(b.len() as u64),
            (None, None) => http_body::SizeHint::with_exact(0),
            _ => http_body::SizeHint::default(),
        }
    }
}

pub(crate) fn plain(status: StatusCode, text: &str) -> Response<SimBody> {
    let mut r = Response::new(SimBody::text(format!("{text}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Marks the request's client gone if the service future is dropped before
/// the response head (hyper drops it when the connection closes).
pub(crate) struct DisconnectGuard(pub(crate) Option<Arc<SimRequest>>);

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if let Some(req) = self.0.take() {
            req.disconnected.store(true, Ordering::Release);
            req.abort_read();
        }
    }
}
