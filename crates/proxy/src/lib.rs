//! Latchkey's loopback credential proxy (PROTOCOL §3).
//!
//! Local MCP clients call `http://127.0.0.1:{port}/{service}/...` with a Latchkey client token;
//! the proxy checks the request (in order: Host, Origin, token, scope, rate limit), takes the
//! service's credentials from a [`CredentialSource`], injects them per the service's [`Route`],
//! and streams the exchange to and from the upstream (SSE, MCP Streamable HTTP, chunked uploads,
//! WebSocket tunnels). Every request leaves one audit event, but for the control token's
//! answered reads of the instance's state; live exchanges are listed in a
//! [`ConnectionRegistry`] and can be closed.
//!
//! ```no_run
//! # async fn run(state: latchkey_proxy::ProxyState) -> std::io::Result<()> {
//! let listeners = latchkey_proxy::bind_loopback(47821)?;
//! latchkey_proxy::serve(listeners, state, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod admission;
mod audit;
mod body;
pub mod config;
pub mod connections;
pub mod credentials;
pub mod error;
mod forward;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod gate;
mod handler;
mod headers;
mod managed;
mod native;
mod path;
mod probe;
#[cfg(test)]
mod props;
mod query;
mod rate;
mod refusal;
mod server;
mod signal;
mod state;
mod tunnel;
mod upstream;

use axum::Router;

pub use config::{ConfigError, InjectTarget, Injection, Limits, ProxyConfig, RateLimit, Route};
pub use connections::{ConnectionId, ConnectionInfo, ConnectionKind, ConnectionRegistry};
pub use credentials::{CredentialError, CredentialSource, CredentialValues, UpstreamRefusal};
pub use error::ProxyError;
pub use refusal::{JSONRPC_CREDENTIALS_UNAVAILABLE, LoginNeeded};
pub use server::{bind_loopback, bind_loopback_ipv4, raise_open_file_limit, serve, serve_router};
pub use state::ProxyState;

/// The proxy as an axum router (every path goes through the same gates, and secret headers are
/// marked sensitive by the handler itself), for callers that wrap it in layers of their own
/// ([`serve_router`]). [`serve`] calls the same handler without a router in between.
pub fn router(state: ProxyState) -> Router {
    Router::new().fallback(handler::handle).with_state(state)
}
