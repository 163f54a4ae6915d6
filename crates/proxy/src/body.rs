//! Body wrappers that stream straight through while counting bytes (and SSE events) for the
//! audit log and the live-connection list, enforce the upload cap, and stop when the user closes
//! the exchange. Nothing here buffers: each frame is passed on as it arrives.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use latchkey_core::Code;
use pin_project_lite::pin_project;

use crate::audit::Finish;
use crate::connections::Live;
use crate::signal::Waiter;

/// Boxed error of a streamed body.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a streamed body stopped early.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum BodyError {
    /// The upload went over the configured cap.
    TooLarge,
    /// The exchange was closed from the connection list or at shutdown.
    Closed,
    /// The client's side of the body failed.
    Client(axum::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => f.write_str("request body over the configured limit"),
            Self::Closed => f.write_str("exchange closed"),
            Self::Client(_) => f.write_str("client body failed"),
        }
    }
}

impl StdError for BodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Client(e) => Some(e),
            Self::TooLarge | Self::Closed => None,
        }
    }
}

/// The client's request body on its way upstream: counted, capped, and cut off when the
/// exchange is closed (checked as each frame is asked for; closing also drops the client's
/// response, which closes its connection and so ends this body).
pub(crate) struct UploadBody {
    inner: Body,
    live: Arc<Live>,
    limit: Option<u64>,
}

impl UploadBody {
    pub(crate) fn new(inner: Body, live: Arc<Live>, limit: Option<u64>) -> Self {
        Self { inner, live, limit }
    }
}

impl HttpBody for UploadBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.live.is_cancelled() {
            return Poll::Ready(Some(Err(BodyError::Closed)));
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let total = this.live.add_in(data.len() as u64);
                    if this.limit.is_some_and(|limit| total > limit) {
                        this.live.mark_over_limit();
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(BodyError::Client(e)))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts SSE event boundaries (a blank line) across chunk borders.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EventCounter {
    after_newline: bool,
}

impl EventCounter {
    pub(crate) fn count(&mut self, data: &[u8]) -> u64 {
        let mut events = 0;
        for &b in data {
            match b {
                b'\n' if self.after_newline => {
                    events += 1;
                    self.after_newline = false;
                }
                b'\n' => self.after_newline = true,
                b'\r' => {}
                _ => self.after_newline = false,
            }
        }
        events
    }
}

pin_project! {
    /// A response body on its way to the client. Records the exchange in the audit log when it
    /// ends or is dropped (client gone), and aborts when the exchange is closed.
    pub(crate) struct ResponseBody<B>
    where
        B: HttpBody,
    {
        #[pin]
        inner: B,
        live: Option<Arc<Live>>,
        // Until the exchange's closing was reported, the body watches for it (with `live`).
        watch_close: bool,
        events: Option<EventCounter>,
        finish: Finish,
    }

    impl<B> PinnedDrop for ResponseBody<B>
    where
        B: HttpBody,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.finish.is_armed() && !this.inner.is_end_stream() {
                this.finish.set_error_if_none(Code::ClientClosed);
            }
        }
    }
}

impl<B> ResponseBody<B>
where
    B: HttpBody,
{
    /// Wraps `inner`; with `live`, the bytes go to the live counters and `close` aborts it.
    pub(crate) fn new(inner: B, live: Option<Arc<Live>>, sse: bool, finish: Finish) -> Self {
        Self {
            inner,
            watch_close: live.is_some(),
            live,
            events: sse.then(EventCounter::default),
            finish,
        }
    }
}

impl<B> HttpBody for ResponseBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.watch_close
            && let Some(live) = this.live
            && live.poll_cancelled(Waiter::Connection, cx).is_ready()
        {
            *this.watch_close = false;
            this.finish.set_error_if_none(Code::Closed);
            this.finish.commit();
            return Poll::Ready(Some(Err(Box::new(BodyError::Closed))));
        }
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    match this.live {
                        Some(live) => {
                            live.add_out(n);
                            if let Some(counter) = this.events {
                                live.add_events(counter.count(data));
                            }
                        }
                        None => this.finish.add_out(n),
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.finish.set_error_if_none(Code::UpstreamReset);
                this.finish.commit();
                Poll::Ready(Some(Err(e.into())))
            }
            None => {
                this.finish.commit();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_counted_across_chunks_and_line_endings() {
        let mut c = EventCounter::default();
        assert_eq!(c.count(b"data: a\n\ndata: b\n"), 1);
        assert_eq!(
            c.count(b"\n"),
            1,
            "the blank line arrived in the next chunk"
        );
        assert_eq!(c.count(b"data: c\r\n\r\n"), 1, "CRLF events");
        assert_eq!(
            c.count(b"data: d\ndata: e\n"),
            0,
            "one event, two lines, not finished"
        );
    }
}
