//! WebSocket tunnels: once the upstream accepted the handshake (101), the client's and the
//! upstream's upgraded connections are spliced byte for byte until either side closes or the
//! user closes the exchange. Frames are not parsed; bytes are counted as they pass. The 101's
//! head goes through the same header policy as every answer ([`crate::headers`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use latchkey_core::Code;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use crate::admission::TunnelEnded;
use crate::audit::Finish;
use crate::connections::{ConnectionKind, Live};
use crate::headers;
use crate::signal::Waiter;
use crate::state::PreparedRoute;
use crate::upstream::PooledBody;

/// Answers the client with the upstream's 101 and splices both sides in a task of its own,
/// which records the exchange when the tunnel ends.
pub(crate) fn splice(
    client_upgrade: OnUpgrade,
    mut upstream: hyper::Response<PooledBody>,
    route: &PreparedRoute,
    live: Arc<Live>,
    mut finish: Finish,
) -> Response {
    let upstream_upgrade = hyper::upgrade::on(&mut upstream);
    let (mut parts, _) = upstream.into_parts();
    headers::rewrite_response(&mut parts.headers, route, true);
    live.set_kind(ConnectionKind::WebSocket);
    finish.set_status(parts.status.as_u16());
    // The connection's slot stays taken until the tunnel ends (see [`crate::admission`]).
    let ended = tokio_util::sync::CancellationToken::new();
    parts.extensions.insert(TunnelEnded(ended.clone()));
    tokio::spawn(async move {
        let _ended = ended.drop_guard();
        let upgraded = tokio::select! {
            () = live.cancelled(Waiter::Tunnel) => {
                finish.set_error(Code::Closed);
                return;
            }
            both = async { tokio::join!(client_upgrade, upstream_upgrade) } => both,
        };
        let (client, upstream) = match upgraded {
            (Ok(client), Ok(upstream)) => (client, upstream),
            _ => {
                finish.set_error(Code::UpgradeFailed);
                return;
            }
        };
        let mut client = Counted {
            inner: TokioIo::new(client),
            live: live.clone(),
        };
        let mut upstream = TokioIo::new(upstream);
        tokio::select! {
            () = live.cancelled(Waiter::Tunnel) => finish.set_error(Code::Closed),
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = copied {
                    debug!(kind = ?e.kind(), "tunnel ended with an error");
                    finish.set_error(Code::TunnelReset);
                }
            }
        }
        drop(finish);
    });
    Response::from_parts(parts, Body::empty())
}

/// The client's side of a tunnel, counting bytes each way into the exchange's live counters.
struct Counted<T> {
    inner: T,
    live: Arc<Live>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.live.add_in(read as u64);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.live.add_out(n as u64);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
