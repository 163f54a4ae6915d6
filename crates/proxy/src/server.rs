//! Binding the loopback listeners and serving HTTP/1 on them until shutdown: keep-alive with an
//! idle timeout, `TCP_NODELAY`, upgrades enabled for WebSocket tunnels, and a graceful stop that
//! closes live streams rather than waiting on them forever.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::state::ProxyState;

/// How long connections get to finish after shutdown is asked for.
const GRACE: Duration = Duration::from_secs(5);

/// hyper's own default read-buffer cap; raised when the configured head limit needs more, so
/// an oversized head reaches our JSON `431` rather than hyper's bare one.
const DEFAULT_MAX_BUF: usize = 400 * 1024;

/// Binds `127.0.0.1:port` and, when the machine has IPv6 loopback, `[::1]` on the same port.
/// Port 0 picks a free port (the IPv6 listener then takes the same one). Never binds anything
/// but loopback.
pub async fn bind_loopback(port: u16) -> io::Result<Vec<TcpListener>> {
    let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let port = v4.local_addr()?.port();
    let mut listeners = vec![v4];
    match TcpListener::bind((Ipv6Addr::LOCALHOST, port)).await {
        Ok(v6) => listeners.push(v6),
        Err(e) => debug!(kind = ?e.kind(), "no IPv6 loopback listener"),
    }
    Ok(listeners)
}

/// Serves the proxy on `listeners` until `shutdown` completes, then stops accepting, closes live
/// exchanges and gives open connections a few seconds to finish.
pub async fn serve(
    listeners: Vec<TcpListener>,
    state: ProxyState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    if listeners.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no listener to serve on",
        ));
    }
    let limits = state.config().limits;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(DEFAULT_MAX_BUF.max(limits.max_header_bytes.saturating_add(16 * 1024)));

    let (stop, stopped) = watch::channel(false);
    let connections = state.connections().clone();
    let app = crate::router(state);
    let mut loops = JoinSet::new();
    for listener in listeners {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "proxy listening");
        }
        loops.spawn(accept_loop(
            listener,
            app.clone(),
            builder.clone(),
            stopped.clone(),
        ));
    }
    shutdown.await;
    info!("proxy stopping");
    let _ = stop.send(true);
    connections.close_all();
    while loops.join_next().await.is_some() {}
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    builder: http1::Builder,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!(kind = ?e.kind(), "TCP_NODELAY not set");
                    }
                    let service = TowerToHyperService::new(app.clone());
                    let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
                    connections.spawn(serve_connection(connection, stopped.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(kind = ?e.kind(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stop_requested(&mut stopped) => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            open = connections.len(),
            "connections still open after the grace period"
        );
        connections.abort_all();
    }
}

/// Serves one client connection; on shutdown, finishes the request in flight and closes.
async fn serve_connection(connection: Connection, mut stopped: watch::Receiver<bool>) {
    let mut connection = std::pin::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = stop_requested(&mut stopped) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        debug!(error = %e, "client connection ended with an error");
    }
}

/// Resolves once shutdown was asked for (or the sender is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

type Connection =
    http1::UpgradeableConnection<TokioIo<tokio::net::TcpStream>, TowerToHyperService<Router>>;
