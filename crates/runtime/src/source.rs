//! The bridge from sessions and credentials to the proxy: the proxy's configuration built from
//! the validated TOML, and its `CredentialSource` served from memory by [`Credentials`].

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::RuntimeError;
use latchkey_core::config::{Config, CredentialSource as SourceKind, InjectTarget};
use latchkey_core::credentials::{CredentialValues, CredentialsError};
use latchkey_core::gateway::GatewayError;
use latchkey_core::login::LoginError;
use latchkey_core::session::SessionError;
use latchkey_proxy::{CredentialError, CredentialSource, Injection, ProxyConfig, Route};

use crate::Latchkey;

/// Builds the proxy's routes from the configuration.
pub(crate) fn proxy_config(config: &Config, port: u16) -> Result<ProxyConfig, RuntimeError> {
    let services = config
        .services
        .iter()
        .map(|s| {
            let injections = s
                .credentials
                .iter()
                .map(|m| {
                    Ok(Injection {
                        credential: m.name.clone(),
                        target: match &m.target {
                            InjectTarget::Header { name, prefix } => {
                                latchkey_proxy::InjectTarget::header(name.as_str(), prefix)?
                            }
                            InjectTarget::Query { param } => latchkey_proxy::InjectTarget::Query {
                                param: param.clone(),
                            },
                        },
                    })
                })
                .collect::<Result<Vec<_>, latchkey_proxy::ConfigError>>()?;
            Ok(Route {
                service: s.name.to_string(),
                upstream: s.upstream.clone(),
                injections,
                identity_token: matches!(s.source, SourceKind::AccessToken),
            })
        })
        .collect::<Result<Vec<_>, latchkey_proxy::ConfigError>>()?;
    Ok(ProxyConfig {
        port,
        services,
        rate_limit: latchkey_proxy::RateLimit {
            per_second: config.proxy.rate_limit_per_second,
            burst: config.proxy.rate_limit_burst,
        },
        limits: latchkey_proxy::Limits {
            max_connections: config.proxy.max_connections,
            ..latchkey_proxy::Limits::default()
        },
    })
}

/// Credentials for the proxy, from the running instance's memory.
pub(crate) struct SessionCredentials {
    lk: Latchkey,
}

impl SessionCredentials {
    pub(crate) fn new(lk: Latchkey) -> Self {
        Self { lk }
    }
}

impl SessionCredentials {
    /// `idp_unavailable` for `service`: its account and the host of that account's provider.
    fn idp_unavailable(&self, service: &str) -> CredentialError {
        let config = self.lk.config();
        let account = config.service(service).map(|s| s.account.to_string());
        let host = account
            .as_deref()
            .and_then(|name| config.accounts.iter().find(|a| a.name.as_str() == name))
            .and_then(|a| a.issuer.host_str().map(str::to_owned))
            .unwrap_or_else(|| "the identity provider".to_owned());
        CredentialError::IdpUnavailable {
            account: account.unwrap_or_default(),
            host,
            retry_after: IDP_RETRY_AFTER_SECONDS,
        }
    }
}

/// `Retry-After` of an `idp_unavailable` answer: the refresher retries on its own meanwhile
/// (backing off up to a minute), and the next request refreshes on demand.
const IDP_RETRY_AFTER_SECONDS: u64 = 30;

impl CredentialSource for SessionCredentials {
    fn account(&self, service: &str) -> Option<String> {
        self.lk
            .config()
            .service(service)
            .map(|s| s.account.to_string())
    }

    fn credentials<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<Arc<CredentialValues>, CredentialError>> {
        Box::pin(async move {
            if let Some(server) = self.lk.servers().get(service) {
                // Boxed apart, so the common path's future (copied into this box on every
                // request) does not carry the remote server's refresh.
                return Box::pin(self.lk.server_credentials(&server)).await;
            }
            let result = self.lk.inner.credentials.get(service).await;
            if result.is_err() {
                self.lk.changed();
            }
            result.map_err(|e| to_proxy_error(&e, || self.idp_unavailable(service)))
        })
    }

    fn upstream_refused(
        &self,
        service: &str,
        used: &Arc<CredentialValues>,
        refusal: latchkey_proxy::UpstreamRefusal,
    ) -> BoxFuture<'_, Result<(), CredentialError>> {
        let server = self.lk.servers().get(service);
        let used = used.clone();
        Box::pin(async move {
            match server {
                Some(server) => self.lk.server_refused(&server, &used, refusal).await,
                None => Err(CredentialError::LoginRequired),
            }
        })
    }

    fn status(&self) -> serde_json::Value {
        let overview = self.lk.overview();
        serde_json::json!({
            "accounts": overview.accounts,
            "services": overview.services,
            "servers": overview.servers,
            "keychain": overview.keychain,
            "now": overview.now,
        })
    }

    fn client_status(&self, services: &[String]) -> serde_json::Value {
        let overview = self.lk.overview();
        let in_scope = |name: &str| services.iter().any(|s| s == name);
        let visible: Vec<_> = overview
            .services
            .into_iter()
            .filter(|s| in_scope(&s.name))
            .collect();
        // The account's name and session state, never who is logged in, why a login failed or
        // which other client asked for one.
        let accounts: Vec<serde_json::Value> = overview
            .accounts
            .iter()
            .filter(|a| visible.iter().any(|s| s.account == a.name))
            .map(|a| {
                let state = serde_json::to_value(&a.state).unwrap_or_default();
                let summary: serde_json::Map<String, serde_json::Value> =
                    ["kind", "expires_at", "renewable"]
                        .iter()
                        .filter_map(|k| state.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                        .collect();
                serde_json::json!({ "name": a.name, "state": summary })
            })
            .collect();
        let servers: Vec<serde_json::Value> = overview
            .servers
            .iter()
            .filter(|s| in_scope(&s.name))
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "state": s.state,
                    "expires_at": s.expires_at,
                })
            })
            .collect();
        serde_json::json!({
            "accounts": accounts,
            "services": visible,
            "servers": servers,
            "now": overview.now,
        })
    }
}

/// Maps a credential failure to the proxy's error classes (PROTOCOL §3 codes); an unreachable
/// identity provider is described by `idp_unavailable`.
fn to_proxy_error(
    e: &CredentialsError,
    idp_unavailable: impl FnOnce() -> CredentialError,
) -> CredentialError {
    match e {
        CredentialsError::Session(SessionError::Vault(_)) | CredentialsError::Vault(_) => {
            CredentialError::KeychainUnavailable
        }
        // The session needs its provider and the provider cannot answer: the session is kept,
        // and logging in again would need the same provider. Not a login.
        CredentialsError::Session(SessionError::Login(
            LoginError::Unreachable { .. } | LoginError::Timeout(_),
        )) => idp_unavailable(),
        // Logging in again would not help: the secret must be stored (`account set-secret`).
        CredentialsError::Session(SessionError::ClientSecretMissing { account, .. }) => {
            CredentialError::ClientSecretMissing {
                account: account.clone(),
            }
        }
        CredentialsError::Session(_) | CredentialsError::Gateway(GatewayError::Unauthorized) => {
            CredentialError::LoginRequired
        }
        CredentialsError::Gateway(GatewayError::Forbidden { .. }) => CredentialError::Forbidden,
        CredentialsError::Gateway(GatewayError::NotConfigured { .. }) => {
            CredentialError::NotConfigured
        }
        CredentialsError::Missing { names, .. } => CredentialError::Missing {
            names: names.clone(),
        },
        CredentialsError::ManualMissing { .. } | CredentialsError::ApiKeyMissing => {
            CredentialError::NotConfigured
        }
        _ => CredentialError::GatewayUnavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never_idp() -> CredentialError {
        panic!("not an outage of the identity provider")
    }

    #[test]
    fn a_missing_client_secret_asks_for_the_secret_not_for_a_login() {
        let e = CredentialsError::Session(SessionError::ClientSecretMissing {
            account: "work".into(),
            method: "client_secret_basic",
        });
        let mapped = to_proxy_error(&e, never_idp);
        assert_eq!(
            mapped,
            CredentialError::ClientSecretMissing {
                account: "work".into()
            }
        );
        assert_eq!(mapped.code(), latchkey_core::Code::CredentialsMissing);
        assert!(
            mapped
                .to_string()
                .contains("latchkey account set-secret --account work"),
            "{mapped}"
        );
    }

    #[test]
    fn an_ended_session_asks_for_a_login() {
        let e = CredentialsError::Session(SessionError::LoginRequired {
            account: "work".into(),
        });
        assert_eq!(
            to_proxy_error(&e, never_idp),
            CredentialError::LoginRequired
        );
    }
}
