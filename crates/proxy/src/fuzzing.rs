//! The proxy's hostile-input parsers and rewriters, opened to the fuzz crate (`fuzz/`) behind the
//! `fuzzing` feature, which nothing but that crate turns on. Thin wrappers only: each calls the
//! same function the request path calls, so a finding here is a finding in the proxy.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method, Uri};

use crate::config::Route;
use crate::credentials::CredentialValues;
use crate::state::{Prepared, PreparedRoute};

/// Gate 1: whether a request with this target and head passes the `Host` allowlist of `port`.
pub fn host_allowed(port: u16, uri: &Uri, headers: &HeaderMap) -> bool {
    crate::gate::HostAllowlist::new(port)
        .check(uri, headers)
        .is_ok()
}

/// Gate 2: whether a request with this method and head passes the browser-origin check.
pub fn origin_allowed(method: &Method, headers: &HeaderMap) -> bool {
    crate::gate::check_origin(method, headers).is_ok()
}

/// The client token the proxy would read from this head.
pub fn presented_token(headers: &HeaderMap) -> Option<&str> {
    crate::gate::presented_token(headers)
}

/// The canonical form of the path after `/{service}`, or `None` when it is refused.
pub fn normalise_path(rest: &str) -> Option<String> {
    crate::path::normalise(rest).ok()
}

/// One route with its credentials prepared, as the forwarder holds it.
pub struct HeaderPolicy {
    route: PreparedRoute,
    prepared: Arc<Prepared>,
}

impl HeaderPolicy {
    /// Prepares `route` with `values`; `None` when the route is invalid or a value is missing.
    pub fn new(route: &Route, values: CredentialValues) -> Option<Self> {
        route.validate().ok()?;
        let route = PreparedRoute::new(route);
        let prepared = route.prepare(Arc::new(values)).ok()?;
        Some(Self { route, prepared })
    }

    /// The header names the mapping injects.
    pub fn injected_headers(&self) -> Vec<HeaderName> {
        self.route
            .route
            .injections
            .iter()
            .filter_map(|injection| match &injection.target {
                crate::config::InjectTarget::Header { name, .. } => Some(name.clone()),
                crate::config::InjectTarget::Query { .. } => None,
            })
            .collect()
    }

    /// Rewrites a client's request head as the forwarder does before sending it upstream.
    pub fn rewrite_request(&self, headers: &mut HeaderMap, websocket: bool) {
        crate::headers::rewrite_request(headers, &self.route, &self.prepared, websocket);
    }

    /// Rewrites an upstream's answer head as the forwarder does before passing it back.
    pub fn rewrite_response(&self, headers: &mut HeaderMap, upgrade: bool) {
        crate::headers::rewrite_response(headers, &self.route, upgrade);
    }
}
