//! Fuzzes the config loader with arbitrary text: whatever `Config::parse` accepts, the proxy must
//! accept too when built from it the way the runtime builds it (`runtime::source::proxy_config`).
//! Seed it with `fuzz/seeds/config` (valid configs), so mutations stay near the accepted set.

use std::path::Path;

use latchkey_core::config::{Config, CredentialSource, InjectTarget};
use latchkey_proxy::{Injection, Limits, ProxyConfig, RateLimit, Route};

fn proxy_config(config: &Config) -> Result<ProxyConfig, latchkey_proxy::ConfigError> {
    let mut services = Vec::new();
    for s in &config.services {
        let mut injections = Vec::new();
        for m in &s.credentials {
            injections.push(Injection {
                credential: m.name.clone(),
                target: match &m.target {
                    InjectTarget::Header { name, prefix } => {
                        // `as_ref`: the name is a `String` or an `http::HeaderName`, depending on the core version.
                        latchkey_proxy::InjectTarget::header(AsRef::<str>::as_ref(name), prefix)?
                    }
                    InjectTarget::Query { param } => latchkey_proxy::InjectTarget::Query {
                        param: param.clone(),
                    },
                },
            });
        }
        services.push(Route {
            service: s.name.to_string(),
            upstream: s.upstream.clone(),
            injections,
            identity_token: matches!(s.source, CredentialSource::AccessToken),
        });
    }
    Ok(ProxyConfig {
        port: config.proxy.listen.port(),
        services,
        rate_limit: RateLimit {
            per_second: config.proxy.rate_limit_per_second,
            burst: config.proxy.rate_limit_burst,
        },
        limits: Limits {
            max_connections: config.proxy.max_connections,
            ..Limits::default()
        },
    })
}

/// One run of the target on `data`: returns, or panics on a broken invariant.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text, Path::new("/fuzz/latchkey.toml")) else {
        return;
    };
    let built = proxy_config(&config).and_then(|p| p.validate().map(|()| p));
    if let Err(e) = built {
        panic!("core accepts a config the proxy refuses ({e}):\n{text}");
    }
}
