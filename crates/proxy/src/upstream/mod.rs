//! The client the proxy forwards with: pooled HTTP/1 connections ([`pool`]: keep-alive,
//! `TCP_NODELAY`, connect timeout) over rustls with the platform's trust store plus the Mozilla
//! roots. It never follows redirects and never touches bodies, so streams and upgrades pass
//! through as they are.

mod pool;

pub(crate) use pool::{PooledBody, UpstreamClient};

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use tracing::debug;

use crate::config::Limits;

/// Builds the client. TLS roots are loaded once per process.
pub(crate) fn client(limits: &Limits) -> Result<UpstreamClient, rustls::Error> {
    Ok(client_with(limits, tls_config()?.as_ref().clone()))
}

/// The client with `tls` (trust roots, protocol versions) in place of the platform's.
pub(crate) fn client_with(limits: &Limits, tls: rustls::ClientConfig) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(limits.upstream_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    UpstreamClient::new(https, limits.idle_timeout)
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config.clone());
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    if !native.errors.is_empty() {
        debug!(
            errors = native.errors.len(),
            "some platform certificates could not be read"
        );
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    debug!(added, ignored, "platform trust store loaded");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(CONFIG.get_or_init(|| Arc::new(config)).clone())
}
