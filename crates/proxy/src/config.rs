//! What the proxy serves: one [`Route`] per service (upstream and credential injections), the
//! per-client rate limit and the size and time limits. Everything is validated on construction so
//! the request path never re-checks it.

use std::collections::HashSet;
use std::time::Duration;

use http::HeaderName;
use latchkey_core::config::rules;
use url::Url;

use latchkey_core::Code;

/// The proxy's whole configuration, built by the caller from the validated TOML.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The port the proxy listens on; the `Host` gate accepts exactly this port.
    pub port: u16,
    /// One route per service.
    pub services: Vec<Route>,
    /// Per-client token bucket.
    pub rate_limit: RateLimit,
    /// Size and time limits.
    pub limits: Limits,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            port: 47821,
            services: Vec::new(),
            rate_limit: RateLimit::default(),
            limits: Limits::default(),
        }
    }
}

impl ProxyConfig {
    /// Checks every route, that service names are unique, and that the limits make sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for route in &self.services {
            route.validate()?;
            if !seen.insert(route.service.as_str()) {
                return Err(ConfigError::DuplicateService {
                    service: route.service.clone(),
                });
            }
        }
        self.rate_limit.validate()?;
        self.limits.validate()
    }
}

/// Token bucket per local client: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Bucket size.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 50.0,
            burst: 100,
        }
    }
}

impl RateLimit {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.per_second.is_finite() && self.per_second > 0.0 && self.burst >= 1 {
            Ok(())
        } else {
            Err(ConfigError::InvalidRateLimit)
        }
    }
}

/// Size and time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers) accepted; larger gets `431`.
    pub max_header_bytes: usize,
    /// Largest request body forwarded; larger gets `413`. `None` streams any size.
    pub max_body_bytes: Option<u64>,
    /// How long connecting to an upstream and waiting for its response head may take.
    pub upstream_timeout: Duration,
    /// How long an idle keep-alive connection (client or upstream) is kept open.
    pub idle_timeout: Duration,
    /// How long a client has to send a whole request head once the proxy waits for one (the
    /// first after connecting, and each next one on a keep-alive connection): a connection that
    /// sends nothing, or a head a byte at a time, is closed after this.
    pub head_timeout: Duration,
    /// Most client connections served at once. Beyond it the connection that has held its slot
    /// longest without a request in flight is closed for the newcomer; when every slot is busy,
    /// a few more connections are accepted for the `latchkey` command's control token only.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 32 * 1024,
            max_body_bytes: Some(64 * 1024 * 1024),
            upstream_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            head_timeout: Duration::from_secs(10),
            max_connections: 2048,
        }
    }
}

impl Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_header_bytes < 1024
            || self.upstream_timeout.is_zero()
            || self.idle_timeout.is_zero()
            || self.head_timeout.is_zero()
            || self.max_connections == 0
        {
            Err(ConfigError::InvalidLimits)
        } else {
            Ok(())
        }
    }
}

/// A service: requests to `/{service}/...` go to `{upstream}/...` with its credentials injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The first path segment (1–64 of `[A-Za-z0-9._-]`, not `v1`).
    pub service: String,
    /// Base URL: `https://`, or `http://` to a loopback host.
    pub upstream: Url,
    /// How each credential is put on the forwarded request.
    pub injections: Vec<Injection>,
    /// The credential is the account's own IdP access token (`source = "access_token"`): it is
    /// injected like any other, but never served raw to a local client.
    pub identity_token: bool,
}

impl Route {
    /// A validated route.
    pub fn new(
        service: impl Into<String>,
        upstream: Url,
        injections: Vec<Injection>,
    ) -> Result<Self, ConfigError> {
        let route = Self {
            service: service.into(),
            upstream,
            injections,
            identity_token: false,
        };
        route.validate()?;
        Ok(route)
    }

    /// Marks the route's credential as the account's IdP access token (see
    /// [`Route::identity_token`]).
    #[must_use]
    pub fn with_identity_token(mut self) -> Self {
        self.identity_token = true;
        self
    }

    /// Checks the name, the upstream URL and the injections with the configuration's own rules
    /// ([`latchkey_core::config::rules`]), so that whatever the loader accepts is served.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let service = &self.service;
        if !rules::is_valid_name(service) {
            return Err(ConfigError::InvalidServiceName {
                service: service.clone(),
            });
        }
        if rules::route_name(service).is_err() {
            return Err(ConfigError::ReservedServiceName {
                service: service.clone(),
            });
        }
        validate_upstream(service, &self.upstream)?;

        let mut headers = HashSet::new();
        let mut params = HashSet::new();
        for injection in &self.injections {
            if injection.credential.is_empty() {
                return Err(ConfigError::EmptyCredentialName {
                    service: service.clone(),
                });
            }
            match &injection.target {
                InjectTarget::Header { name, prefix } => {
                    if rules::injected_header(name.as_str()).is_err() {
                        return Err(ConfigError::ReservedHeader {
                            service: service.clone(),
                            header: name.to_string(),
                        });
                    }
                    if rules::header_prefix(prefix).is_err() {
                        return Err(ConfigError::InvalidPrefix {
                            service: service.clone(),
                        });
                    }
                    if !headers.insert(name.clone()) {
                        return Err(ConfigError::DuplicateInjection {
                            service: service.clone(),
                            target: name.to_string(),
                        });
                    }
                }
                InjectTarget::Query { param } => {
                    if rules::query_param(param).is_err() {
                        return Err(ConfigError::EmptyQueryParam {
                            service: service.clone(),
                        });
                    }
                    if !params.insert(rules::query_param_key(param)) {
                        return Err(ConfigError::DuplicateInjection {
                            service: service.clone(),
                            target: param.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// The upstream rule of the configuration, which lets a loopback `http://` upstream through only
/// when the service allows it; the proxy serves any loopback `http://` upstream it is given.
fn validate_upstream(service: &str, url: &Url) -> Result<(), ConfigError> {
    if url.scheme() == "http" && !is_loopback(url) {
        return Err(ConfigError::InsecureUpstream {
            service: service.to_owned(),
        });
    }
    rules::upstream(url, true).map_err(|r| ConfigError::InvalidUpstream {
        service: service.to_owned(),
        reason: r.message,
    })
}

/// `localhost`, `127.0.0.0/8` or `::1`.
pub(crate) fn is_loopback(url: &Url) -> bool {
    rules::is_loopback_host(url)
}

/// One credential put on a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// Name of the credential in the service's credential set.
    pub credential: String,
    /// Where it goes.
    pub target: InjectTarget,
}

/// Where an injected credential goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectTarget {
    /// A header: `name: prefix + value`.
    Header {
        /// The header.
        name: HeaderName,
        /// Put before the value, e.g. `Bearer `.
        prefix: String,
    },
    /// A query parameter appended to the upstream URL (percent-encoded).
    Query {
        /// The parameter's name.
        param: String,
    },
}

impl InjectTarget {
    /// A header target from its textual name.
    pub fn header(name: &str, prefix: &str) -> Result<Self, ConfigError> {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ConfigError::InvalidHeaderName {
                header: name.to_owned(),
            }
        })?;
        Ok(Self::Header {
            name,
            prefix: prefix.to_owned(),
        })
    }
}

/// A configuration the proxy refuses to serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The service name cannot be a path segment.
    #[error(
        "The service name `{service}` is invalid; use 1 to 64 letters, digits, dots, dashes or underscores."
    )]
    InvalidServiceName {
        /// The name.
        service: String,
    },
    /// `v1` is where the proxy's own endpoints live.
    #[error(
        "The service name `{service}` is reserved for Latchkey's own endpoints; choose another name."
    )]
    ReservedServiceName {
        /// The name.
        service: String,
    },
    /// Two services share a name.
    #[error("The service `{service}` is defined twice; give each service its own name.")]
    DuplicateService {
        /// The name.
        service: String,
    },
    /// A plain `http://` upstream that is not on this machine.
    #[error(
        "The service `{service}` has a plain http:// upstream that is not on this machine; use https://."
    )]
    InsecureUpstream {
        /// The service.
        service: String,
    },
    /// The upstream URL cannot serve as a base URL.
    #[error("The upstream of `{service}` is not usable: {reason}; fix its URL.")]
    InvalidUpstream {
        /// The service.
        service: String,
        /// What is wrong.
        reason: String,
    },
    /// Not a valid HTTP header name.
    #[error("`{header}` is not a valid HTTP header name; use letters, digits and dashes.")]
    InvalidHeaderName {
        /// The name as written.
        header: String,
    },
    /// A header that describes the connection itself cannot carry a credential.
    #[error(
        "The service `{service}` injects into `{header}`, which the proxy manages itself; use another header."
    )]
    ReservedHeader {
        /// The service.
        service: String,
        /// The header.
        header: String,
    },
    /// A prefix with characters not allowed in a header value.
    #[error(
        "The header prefix of `{service}` contains characters not allowed in a header; remove control characters."
    )]
    InvalidPrefix {
        /// The service.
        service: String,
    },
    /// An injection with no credential name.
    #[error(
        "A credential mapping of `{service}` names no credential; name the credential to inject."
    )]
    EmptyCredentialName {
        /// The service.
        service: String,
    },
    /// A query injection with no parameter name.
    #[error(
        "A query-parameter mapping of `{service}` has an empty parameter name; name the parameter."
    )]
    EmptyQueryParam {
        /// The service.
        service: String,
    },
    /// Two injections write the same header or parameter.
    #[error(
        "The service `{service}` injects `{target}` twice; inject each header or parameter once."
    )]
    DuplicateInjection {
        /// The service.
        service: String,
        /// The header or parameter.
        target: String,
    },
    /// The rate limit is not a positive rate with a burst of at least one.
    #[error(
        "The rate limit must be a positive number of requests per second with a burst of at least 1; fix the proxy settings."
    )]
    InvalidRateLimit,
    /// A limit too small to serve anything.
    #[error(
        "The proxy limits are too small (headers need at least 1 KiB, timeouts and the connection cap must be positive); fix the proxy settings."
    )]
    InvalidLimits,
    /// The TLS library could not be set up.
    #[error("TLS could not be set up for upstream connections; reinstall Latchkey or report this.")]
    TlsUnavailable,
}

impl ConfigError {
    /// Stable error code.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidServiceName { .. } => Code::InvalidServiceName,
            Self::ReservedServiceName { .. } => Code::ReservedServiceName,
            Self::DuplicateService { .. } => Code::DuplicateService,
            Self::InsecureUpstream { .. } => Code::InsecureUpstream,
            Self::InvalidUpstream { .. } => Code::InvalidUpstream,
            Self::InvalidHeaderName { .. } => Code::InvalidHeaderName,
            Self::ReservedHeader { .. } => Code::ReservedHeader,
            Self::InvalidPrefix { .. } => Code::InvalidPrefix,
            Self::EmptyCredentialName { .. } => Code::EmptyCredentialName,
            Self::EmptyQueryParam { .. } => Code::EmptyQueryParam,
            Self::DuplicateInjection { .. } => Code::DuplicateInjection,
            Self::InvalidRateLimit => Code::InvalidRateLimit,
            Self::InvalidLimits => Code::InvalidLimits,
            Self::TlsUnavailable => Code::TlsUnavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
    }

    fn bearer() -> Injection {
        Injection {
            credential: "token".into(),
            target: InjectTarget::header("Authorization", "Bearer ").expect("valid header"),
        }
    }

    #[test]
    fn https_and_loopback_http_upstreams_are_accepted() {
        for ok in [
            "https://api.example.com",
            "http://127.0.0.1:9000/base",
            "http://localhost:1",
            "http://[::1]:8080/",
        ] {
            assert!(
                Route::new("svc", url(ok), vec![bearer()]).is_ok(),
                "{ok} must be accepted"
            );
        }
    }

    #[test]
    fn plain_http_to_another_host_is_refused() {
        let err = Route::new("svc", url("http://api.example.com"), vec![]).expect_err("refused");
        assert_eq!(err.code(), latchkey_core::Code::InsecureUpstream);
        let err = Route::new("svc", url("http://10.0.0.1"), vec![]).expect_err("refused");
        assert_eq!(err.code(), latchkey_core::Code::InsecureUpstream);
    }

    #[test]
    fn upstreams_with_userinfo_query_or_other_schemes_are_refused() {
        for bad in [
            "https://u:p@api.example.com",
            "https://api.example.com/?k=v",
            "ftp://example.com",
        ] {
            let err = Route::new("svc", url(bad), vec![]).expect_err("refused");
            assert_eq!(err.code(), latchkey_core::Code::InvalidUpstream, "{bad}");
        }
    }

    #[test]
    fn service_names_must_be_path_safe_and_not_reserved() {
        let up = url("https://example.com");
        assert_eq!(
            Route::new("a/b", up.clone(), vec![])
                .expect_err("bad")
                .code(),
            latchkey_core::Code::InvalidServiceName
        );
        assert_eq!(
            Route::new("", up.clone(), vec![]).expect_err("bad").code(),
            latchkey_core::Code::InvalidServiceName
        );
        assert_eq!(
            Route::new("..", up.clone(), vec![])
                .expect_err("bad")
                .code(),
            latchkey_core::Code::InvalidServiceName
        );
        assert_eq!(
            Route::new("v1", up, vec![]).expect_err("bad").code(),
            latchkey_core::Code::ReservedServiceName
        );
    }

    #[test]
    fn framing_headers_cannot_be_injected() {
        let inj = Injection {
            credential: "t".into(),
            target: InjectTarget::header("Host", "").expect("valid name"),
        };
        let err = Route::new("svc", url("https://example.com"), vec![inj]).expect_err("refused");
        assert_eq!(err.code(), latchkey_core::Code::ReservedHeader);
    }

    #[test]
    fn a_prefix_with_a_newline_is_refused() {
        let inj = Injection {
            credential: "t".into(),
            target: InjectTarget::header("X-Key", "a\r\nb").expect("valid name"),
        };
        let err = Route::new("svc", url("https://example.com"), vec![inj]).expect_err("refused");
        assert_eq!(err.code(), latchkey_core::Code::InvalidPrefix);
    }

    #[test]
    fn duplicate_services_and_bad_limits_are_refused() {
        let route = Route::new("svc", url("https://example.com"), vec![]).expect("valid");
        let config = ProxyConfig {
            services: vec![route.clone(), route],
            ..ProxyConfig::default()
        };
        assert_eq!(
            config.validate().expect_err("dup").code(),
            latchkey_core::Code::DuplicateService
        );
        let config = ProxyConfig {
            rate_limit: RateLimit {
                per_second: f64::NAN,
                burst: 1,
            },
            ..ProxyConfig::default()
        };
        assert_eq!(
            config.validate().expect_err("nan").code(),
            latchkey_core::Code::InvalidRateLimit
        );
        assert!(ProxyConfig::default().validate().is_ok());
    }
}
