//! Shared set-up for the core's integration tests.

use std::sync::Arc;
use std::time::Duration;

use latchkey_core::config::Config;
use latchkey_core::login::ProviderSettings;
use latchkey_core::vault::{KeyringStore, MemoryStore, Vault};

/// The real keychain when the test script provides one, else memory.
pub fn test_vault() -> Vault {
    if std::env::var_os("LATCHKEY_TEST_KEYCHAIN").is_some() {
        Vault::new(Arc::new(
            KeyringStore::platform().expect("the test keychain is unlocked"),
        ))
    } else {
        Vault::new(Arc::new(MemoryStore::default()))
    }
}

/// An HTTP client like the app's: no redirects, timeouts.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// A unique account name, so tests sharing one keychain never collide.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Provider settings for the config's first account.
pub fn provider_settings(cfg: &Config) -> ProviderSettings {
    let a = &cfg.accounts[0];
    ProviderSettings {
        issuer: a.issuer.clone(),
        client_id: a.client_id.clone(),
        scopes: a.scopes.clone(),
        audience: a.audience.clone(),
        validate_access_token: a.validate_access_token,
        auth_method: a.token_endpoint_auth_method,
        audience_parameter: a.audience_parameter,
        allow_insecure_http: a.allow_insecure_http,
        timeout: Duration::from_secs(10),
    }
}
