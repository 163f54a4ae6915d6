//! The configuration file exactly as written: serde structs with `deny_unknown_fields` and spans,
//! so that validation can point at the line that needs fixing.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub version: Option<Spanned<u32>>,
    #[serde(default)]
    pub proxy: Option<RawProxy>,
    #[serde(default)]
    pub accounts: Vec<RawAccount>,
    pub gateway: Option<RawGateway>,
    #[serde(default)]
    pub services: Vec<RawService>,
    #[serde(default)]
    pub audit: Option<RawAudit>,
    #[serde(default)]
    pub servers: Vec<RawServer>,
    pub client_metadata_url: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub name: Spanned<String>,
    pub url: Spanned<String>,
    pub client_id: Option<Spanned<String>>,
    pub scopes: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub allow_insecure_loopback: bool,
    pub callback_port: Option<Spanned<u16>>,
    /// Accepted only to refuse it: secrets never go in this file.
    pub client_secret: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    pub listen: Option<Spanned<String>>,
    pub rate_limit_per_second: Option<Spanned<f64>>,
    pub rate_limit_burst: Option<Spanned<u32>>,
    pub max_connections: Option<Spanned<u32>>,
    pub ipv6: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub retention_days: Option<Spanned<u32>>,
    pub max_rows: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    pub name: Spanned<String>,
    pub issuer: Spanned<String>,
    pub client_id: Spanned<String>,
    pub scopes: Option<Vec<String>>,
    pub audience: Option<String>,
    #[serde(default)]
    pub allow_insecure_http: bool,
    pub callback_port: Option<Spanned<u16>>,
    pub validate_access_token: Option<Spanned<bool>>,
    pub token_endpoint_auth_method: Option<Spanned<String>>,
    pub audience_parameter: Option<Spanned<String>>,
    /// Accepted only to refuse it with a pointer to `latchkey account set-secret`.
    pub client_secret: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    pub url: Spanned<String>,
    #[serde(default)]
    pub allow_insecure_http: bool,
    pub timeout_seconds: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub name: Spanned<String>,
    pub account: Spanned<String>,
    pub source: Option<Spanned<String>>,
    pub gateway_endpoint: Option<Spanned<String>>,
    pub upstream: Spanned<String>,
    #[serde(default)]
    pub allow_loopback_http: bool,
    pub credentials: Option<Spanned<Vec<RawMapping>>>,
    pub env: Option<Spanned<BTreeMap<String, String>>>,
    pub ttl_seconds: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMapping {
    pub name: Spanned<String>,
    pub header: Option<Spanned<String>>,
    pub prefix: Option<String>,
    pub query_param: Option<Spanned<String>>,
}
