//! Everything a request needs, built once: the validated configuration with each route's
//! upstream pre-split into the parts a forwarded request uses, the credential source, the client
//! registry, the audit log, the live connections, the rate limiter and the pooled upstream client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue};
use latchkey_core::secret::Secret;
use latchkey_store::{AuditLog, ClientRegistry};
use tokio::sync::broadcast;

use crate::config::{ConfigError, InjectTarget, ProxyConfig, RateLimit, Route};
use crate::connections::ConnectionRegistry;
use crate::credentials::{CredentialError, CredentialSource, CredentialValues};
use crate::error::ProxyError;
use crate::gate::HostAllowlist;
use crate::rate::RateLimiter;
use crate::refusal::LoginNeeded;
use crate::upstream::{self, UpstreamClient};

/// The proxy's shared state. Cheap to clone.
#[derive(Clone)]
pub struct ProxyState {
    pub(crate) inner: Arc<Inner>,
    pub(crate) control: Option<Router>,
}

pub(crate) struct Inner {
    pub(crate) config: ProxyConfig,
    /// The configured services, plus the remote MCP servers added while running.
    pub(crate) routes: RouteTable,
    pub(crate) credentials: Arc<dyn CredentialSource>,
    pub(crate) clients: ClientRegistry,
    pub(crate) audit: AuditLog,
    pub(crate) connections: ConnectionRegistry,
    pub(crate) control_token: Option<Secret>,
    pub(crate) hosts: HostAllowlist,
    pub(crate) limiter: RateLimiter,
    pub(crate) upstream: UpstreamClient,
    /// Announces requests refused because nobody is logged in (see [`ProxyState::login_needed`]).
    pub(crate) login_needed: broadcast::Sender<LoginNeeded>,
}

/// How many [`LoginNeeded`] events a slow listener may fall behind by before it skips some.
const LOGIN_NEEDED_BACKLOG: usize = 16;

impl ProxyState {
    /// Validates `config` and builds the state. `control_token`, when set, is accepted as a client
    /// token with every scope (the `latchkey` CLI of the same user).
    pub fn new(
        config: ProxyConfig,
        credentials: Arc<dyn CredentialSource>,
        clients: ClientRegistry,
        audit: AuditLog,
        connections: ConnectionRegistry,
        control_token: Option<Secret>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let routes = RouteTable::new(
            config
                .services
                .iter()
                .map(|r| (r.service.clone(), Arc::new(PreparedRoute::new(r))))
                .collect(),
        );
        let inner = Inner {
            hosts: HostAllowlist::new(config.port),
            limiter: RateLimiter::new(config.rate_limit),
            upstream: upstream::client(&config.limits).map_err(|_| ConfigError::TlsUnavailable)?,
            config,
            routes,
            credentials,
            clients,
            audit,
            connections,
            control_token,
            login_needed: broadcast::channel(LOGIN_NEEDED_BACKLOG).0,
        };
        Ok(Self {
            inner: Arc::new(inner),
            control: None,
        })
    }

    /// Serves `control` under `/v1/control/` behind the `Host` and `Origin` gates and the
    /// client-token gate (the router checks for the control token itself).
    #[must_use]
    pub fn with_control(mut self, control: Router) -> Self {
        self.control = Some(Router::new().nest("/v1/control", control));
        self
    }

    /// Serves a remote MCP server at `/{route.service}/...` from now on, its token managed by the
    /// credential source: the upstream's `401` and `403 insufficient_scope` answers are never
    /// passed to the client ([`crate::managed`]). Refused when the name is taken.
    pub fn add_server_route(&self, route: Route) -> Result<(), ConfigError> {
        route.validate()?;
        let mut prepared = PreparedRoute::new(&route);
        prepared.managed = true;
        self.inner.routes.insert(Arc::new(prepared))
    }

    /// Stops serving a remote MCP server added with [`ProxyState::add_server_route`]; returns
    /// whether there was one. Configured services are never removed.
    pub fn remove_server_route(&self, service: &str) -> bool {
        self.inner.routes.remove_managed(service)
    }

    /// Serves `services` and `rate_limit` from the next request on (a configuration reload):
    /// the configured routes are swapped as a whole, remote MCP servers added while running stay,
    /// a route whose definition did not change keeps its prepared credentials, and exchanges
    /// already under way keep the route they started with. A removed service's next request gets
    /// `unknown_service`. Refused, changing nothing, when a route is invalid or takes a name twice.
    pub fn reconfigure(
        &self,
        services: Vec<Route>,
        rate_limit: RateLimit,
    ) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for route in &services {
            route.validate()?;
            if !seen.insert(route.service.as_str()) {
                return Err(ConfigError::DuplicateService {
                    service: route.service.clone(),
                });
            }
        }
        rate_limit.validate()?;
        self.inner.routes.replace_configured(services)?;
        self.inner.limiter.set_limit(rate_limit);
        Ok(())
    }

    /// The configuration the proxy started with (its port and limits; the routes in force are
    /// those of the latest [`ProxyState::reconfigure`]).
    pub fn config(&self) -> &ProxyConfig {
        &self.inner.config
    }

    /// The live exchanges.
    pub fn connections(&self) -> &ConnectionRegistry {
        &self.inner.connections
    }

    /// Subscribes to requests refused with `login_required`: one [`LoginNeeded`] (account, service,
    /// client; no secrets) per refusal, for the tray to say "Log in needed: <client> asked for
    /// <service>". A listener that falls more than a few events behind gets
    /// `RecvError::Lagged` and then the newest ones; with no listener the events are dropped.
    pub fn login_needed(&self) -> broadcast::Receiver<LoginNeeded> {
        self.inner.login_needed.subscribe()
    }
}

/// Routes by service name. Hashed with foldhash rather than SipHash (a request looks its service
/// up once or twice): the keys come from the configuration and the user's remote servers, and a
/// request's name is only ever looked up, never inserted, so it cannot crowd a bucket.
pub(crate) type Routes = HashMap<String, Arc<PreparedRoute>, foldhash::fast::RandomState>;

/// The routes by service name, replaced as a whole when a remote server is added or removed, so
/// a request holds a consistent snapshot and never a lock.
pub(crate) struct RouteTable {
    map: RwLock<Arc<Routes>>,
}

impl RouteTable {
    fn new(map: Routes) -> Self {
        Self {
            map: RwLock::new(Arc::new(map)),
        }
    }

    /// Every route now.
    pub(crate) fn snapshot(&self) -> Arc<Routes> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The route of `service`.
    pub(crate) fn get(&self, service: &str) -> Option<Arc<PreparedRoute>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)
            .cloned()
    }

    fn insert(&self, route: Arc<PreparedRoute>) -> Result<(), ConfigError> {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(&*route.service) {
            return Err(ConfigError::DuplicateService {
                service: route.service.to_string(),
            });
        }
        let mut next = Routes::clone(&map);
        next.insert(route.service.to_string(), route);
        *map = Arc::new(next);
        Ok(())
    }

    /// Replaces every configured route with `routes`, keeping the managed ones (and the prepared
    /// state of a configured route that did not change).
    fn replace_configured(&self, routes: Vec<Route>) -> Result<(), ConfigError> {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Routes = map
            .iter()
            .filter(|(_, r)| r.managed)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        for route in routes {
            if next.contains_key(&route.service) {
                return Err(ConfigError::DuplicateService {
                    service: route.service,
                });
            }
            let prepared = match map.get(&route.service) {
                Some(old) if !old.managed && old.route == route => old.clone(),
                _ => Arc::new(PreparedRoute::new(&route)),
            };
            next.insert(route.service.clone(), prepared);
        }
        *map = Arc::new(next);
        Ok(())
    }

    fn remove_managed(&self, service: &str) -> bool {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if !map.get(service).is_some_and(|r| r.managed) {
            return false;
        }
        let mut next = Routes::clone(&map);
        next.remove(service);
        *map = Arc::new(next);
        true
    }
}

/// A route with its upstream split into the parts every forwarded request reuses.
pub(crate) struct PreparedRoute {
    /// The route's name, shared with the audit records and live exchanges of its requests.
    pub(crate) service: Arc<str>,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    pub(crate) host: HeaderValue,
    /// The upstream's path without its trailing slash (`""` for the root).
    pub(crate) base_path: String,
    pub(crate) route: Route,
    /// Header names the mapping injects (removed from the client's request first), as a server
    /// that folds `_` into `-` sees them: the header policy compares every request header with
    /// these.
    pub(crate) injected_folded: Vec<String>,
    /// Query parameters the mapping injects (removed from the client's query first).
    pub(crate) injected_params: Vec<String>,
    /// A remote MCP server whose token Latchkey manages ([`crate::managed`]).
    pub(crate) managed: bool,
    cache: Mutex<Option<Arc<Prepared>>>,
}

/// Header values and the query suffix built from one version of a service's credentials.
pub(crate) struct Prepared {
    source: Arc<CredentialValues>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// `name=value&name=value`, percent-encoded; empty when nothing goes in the query.
    pub(crate) query: Secret,
}

impl PreparedRoute {
    pub(crate) fn new(route: &Route) -> Self {
        let url = &route.upstream;
        let scheme = if url.scheme() == "https" {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let host = url.host_str().unwrap_or_default();
        let authority_text = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        // `validate` guaranteed a host; a URL host is always a valid authority.
        let authority = Authority::try_from(authority_text.as_str())
            .unwrap_or_else(|_| Authority::from_static("invalid.invalid"));
        let host = HeaderValue::from_str(&authority_text)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid.invalid"));
        let base_path = url.path().trim_end_matches('/').to_owned();
        let mut injected_folded = Vec::new();
        let mut injected_params = Vec::new();
        for injection in &route.injections {
            match &injection.target {
                InjectTarget::Header { name, .. } => {
                    injected_folded.push(name.as_str().replace('_', "-"));
                }
                InjectTarget::Query { param } => injected_params.push(param.clone()),
            }
        }
        Self {
            service: Arc::from(route.service.as_str()),
            scheme,
            authority,
            host,
            base_path,
            route: route.clone(),
            injected_folded,
            injected_params,
            managed: false,
            cache: Mutex::new(None),
        }
    }

    /// The injections built from `values`, reused while the source hands out the same `Arc`.
    pub(crate) fn prepare(
        &self,
        values: Arc<CredentialValues>,
    ) -> Result<Arc<Prepared>, ProxyError> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(prepared) = cache.as_ref().filter(|p| Arc::ptr_eq(&p.source, &values)) {
                return Ok(prepared.clone());
            }
        }
        let prepared = Arc::new(self.build(values)?);
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(prepared.clone());
        Ok(prepared)
    }

    fn build(&self, values: Arc<CredentialValues>) -> Result<Prepared, ProxyError> {
        let missing: Vec<String> = self
            .route
            .injections
            .iter()
            .filter(|i| !values.contains_key(&i.credential))
            .map(|i| i.credential.clone())
            .collect();
        if !missing.is_empty() {
            return Err(CredentialError::Missing { names: missing }.into());
        }
        let mut headers = Vec::new();
        let mut query = String::new();
        for injection in &self.route.injections {
            let Some(secret) = values.get(&injection.credential) else {
                continue;
            };
            match &injection.target {
                InjectTarget::Header { name, prefix } => {
                    let mut bytes = Vec::with_capacity(prefix.len() + secret.len());
                    bytes.extend_from_slice(prefix.as_bytes());
                    bytes.extend_from_slice(secret.expose().as_bytes());
                    // Refuses CR, LF, NUL and other control characters: never sent, never echoed.
                    let mut value = HeaderValue::from_bytes(&bytes)
                        .map_err(|_| ProxyError::CredentialsInvalid)?;
                    value.set_sensitive(true);
                    headers.push((name.clone(), value));
                }
                InjectTarget::Query { param } => {
                    if !query.is_empty() {
                        query.push('&');
                    }
                    query.extend(url::form_urlencoded::byte_serialize(param.as_bytes()));
                    query.push('=');
                    query.extend(url::form_urlencoded::byte_serialize(
                        secret.expose().as_bytes(),
                    ));
                }
            }
        }
        Ok(Prepared {
            source: values,
            headers,
            query: Secret::new(query),
        })
    }
}
