//! A pre-flight look at the authorization URL before the browser opens. A provider that refuses
//! the `redirect_uri` or the `client_id` shows its own error page in the browser and never
//! redirects back, so the login would just wait; asking first (one `GET`, no cookies, redirects
//! not followed) turns that into an error that names the URI to register.
//!
//! What the provider answers, and what it means:
//! - a redirect to its sign-in page, or `200`: the request is acceptable — go on;
//! - a redirect to our own `redirect_uri` with `error=…`: it refused the request (e.g.
//!   `invalid_scope`) and the browser would get the same answer — report it now;
//! - `4xx` naming `invalid_redirect_uri` / `redirect_uri_mismatch` (or talking about the
//!   redirect URI): [`PreflightError::RedirectUriNotRegistered`]; `invalid_client` /
//!   `unauthorized_client`: [`PreflightError::ClientNotRegistered`]; another OAuth error code:
//!   [`LoginError::Authorization`];
//! - no connection to the authorization endpoint *and* none to the token endpoint either:
//!   [`PreflightError::IdpUnreachable`]. Latchkey itself exchanges the code at the token endpoint,
//!   so a login it cannot finish is not started;
//! - anything else (`5xx`, a timeout, a network error on the authorization endpoint alone, a
//!   `4xx` that says nothing we recognise): inconclusive. The login goes on (the browser may reach
//!   what Latchkey cannot: a browser proxy or an extension in front of the sign-in page, a slow
//!   provider), with a debug log line saying so.
//!
//! Nothing here logs the URL: it carries the `state`, the `nonce` and the PKCE challenge. Those
//! values are also scrubbed from any provider text that ends up in an error message.

use std::time::Duration;

use reqwest::StatusCode;
use tracing::{debug, instrument};
use url::Url;

use super::LoginError;
use crate::Code;

/// How long the pre-flight waits for the provider before giving up (and going on).
pub const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(5);

/// Most of an error page read to find an error code.
const MAX_BODY: usize = 64 * 1024;

/// OAuth error codes that mean "this redirect URI is not registered for this client".
const REDIRECT_CODES: &[&str] = &["invalid_redirect_uri", "redirect_uri_mismatch"];
/// OAuth error codes that mean "this client id is unknown or may not do this".
const CLIENT_CODES: &[&str] = &["invalid_client", "unauthorized_client"];
/// Other OAuth/OIDC error codes an authorization endpoint answers with.
const OTHER_CODES: &[&str] = &[
    "invalid_scope",
    "invalid_request",
    "unsupported_response_type",
    "invalid_target",
    "access_denied",
    "server_error",
    "temporarily_unavailable",
];

/// Why the provider will not run this login, known before the browser opens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PreflightError {
    /// The provider refuses the loopback redirect URI for this client.
    #[error(
        "the identity provider refuses the redirect URI `{redirect_uri}` for client id `{client_id}` ({error}){}: {}",
        describe(.description.as_deref()),
        redirect_fix(.redirect_uri, .client_id, *.fixed_port)
    )]
    RedirectUriNotRegistered {
        /// The exact redirect URI sent.
        redirect_uri: String,
        /// The client id sent.
        client_id: String,
        /// True when the port is configured (`callback_port`), false when any free port is used.
        fixed_port: bool,
        /// The provider's error code, or `http_<status>` when it gave none.
        error: String,
        /// Its description, shortened, with request values removed.
        description: Option<String>,
    },
    /// The provider does not know this client id, or does not let it use this flow.
    #[error(
        "the identity provider does not accept client id `{client_id}` ({error}){}: check `client_id` in the configuration; the provider must know it as a public native client (no secret, PKCE, authorization code) with the redirect URI `{redirect_uri}`",
        describe(.description.as_deref())
    )]
    ClientNotRegistered {
        /// The client id sent.
        client_id: String,
        /// The redirect URI sent.
        redirect_uri: String,
        /// The provider's error code.
        error: String,
        /// Its description, shortened, with request values removed.
        description: Option<String>,
    },
    /// Neither the authorization endpoint nor the token endpoint takes a connection: the
    /// provider is down (or this computer is offline), and a login could not finish.
    #[error(
        "the identity provider at `{host}` is unreachable ({reason}); check that it is up and that this computer is online, then try again"
    )]
    IdpUnreachable {
        /// The provider's host (and port).
        host: String,
        /// What failed (no URL, no query).
        reason: String,
    },
    /// The provider refused the request with another OAuth error (already what the callback
    /// would have said).
    #[error(transparent)]
    Login(#[from] LoginError),
}

impl PreflightError {
    /// A stable code for the UI, the CLI and the tests.
    pub fn code(&self) -> Code {
        match self {
            Self::RedirectUriNotRegistered { .. } => Code::RedirectUriNotRegistered,
            Self::ClientNotRegistered { .. } => Code::ClientNotRegistered,
            Self::IdpUnreachable { .. } => Code::IdpUnreachable,
            Self::Login(e) => e.code(),
        }
    }
}

fn describe(description: Option<&str>) -> String {
    description.map(|d| format!(": {d}")).unwrap_or_default()
}

fn redirect_fix(redirect_uri: &str, client_id: &str, fixed_port: bool) -> String {
    if fixed_port {
        format!(
            "register exactly `{redirect_uri}` as a redirect URI of client `{client_id}` at the provider"
        )
    } else {
        let any_port = Url::parse(redirect_uri)
            .map(|mut u| {
                let _ = u.set_port(None);
                u.to_string()
            })
            .unwrap_or_else(|_| redirect_uri.to_owned());
        format!(
            "register `{any_port}` for client `{client_id}` at the provider, allowing any port on 127.0.0.1 (RFC 8252 §7.3: Latchkey picks a free port each time), or set `callback_port` in the account and register that exact URI"
        )
    }
}

/// What the pre-flight found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The provider accepted the request (a sign-in page or a redirect to one).
    Accepted,
    /// The answer says nothing either way (timeout, network error, 5xx, an unknown 4xx); the
    /// login goes on.
    Inconclusive,
}

/// Asks the provider whether it would run the login at `authorize_url`, without cookies and
/// without following redirects (`http` must not follow them; the runtime's client does not).
/// `fixed_port` says whether the redirect URI's port is configured, for the fix in the message.
///
/// Errors only when the provider clearly refused; a flaky provider is [`Verdict::Inconclusive`].
pub async fn check(
    http: &reqwest::Client,
    authorize_url: &Url,
    fixed_port: bool,
    timeout: Duration,
) -> Result<Verdict, PreflightError> {
    run(http, authorize_url, None, fixed_port, timeout).await
}

/// [`check`] before a login that Latchkey must finish at `token_endpoint`: when neither the
/// authorization endpoint nor the token endpoint takes a connection, the login could not finish,
/// and it fails now with [`PreflightError::IdpUnreachable`].
pub async fn check_login(
    http: &reqwest::Client,
    authorize_url: &Url,
    token_endpoint: &Url,
    fixed_port: bool,
    timeout: Duration,
) -> Result<Verdict, PreflightError> {
    run(
        http,
        authorize_url,
        Some(token_endpoint),
        fixed_port,
        timeout,
    )
    .await
}

#[instrument(skip_all, fields(endpoint = %endpoint(authorize_url)))]
async fn run(
    http: &reqwest::Client,
    authorize_url: &Url,
    token_endpoint: Option<&Url>,
    fixed_port: bool,
    timeout: Duration,
) -> Result<Verdict, PreflightError> {
    let request = Request::from_url(authorize_url, fixed_port);
    let sent = http
        .get(authorize_url.clone())
        .header(
            reqwest::header::ACCEPT,
            "application/json, text/html;q=0.9, */*;q=0.1",
        )
        .timeout(timeout)
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        // Refused, reset, or a pooled connection the provider had closed: ask again, fresh.
        Err(e) if !e.is_timeout() && token_endpoint.is_some() => {
            let token_endpoint = token_endpoint.unwrap_or(authorize_url);
            return unreachable_or_inconclusive(token_endpoint, timeout).await;
        }
        Err(e) => {
            let why = if e.is_timeout() {
                "timed out"
            } else {
                "no answer"
            };
            debug!(
                why,
                "login pre-flight inconclusive; going on with the login"
            );
            return Ok(Verdict::Inconclusive);
        }
    };
    let status = response.status();
    if status.is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| authorize_url.join(l).ok());
        return request.judge_redirect(status, location.as_ref());
    }
    if status.is_success() {
        debug!(status = status.as_u16(), "login pre-flight accepted");
        return Ok(Verdict::Accepted);
    }
    if !status.is_client_error() {
        debug!(
            status = status.as_u16(),
            "login pre-flight inconclusive; going on with the login"
        );
        return Ok(Verdict::Inconclusive);
    }
    let body = read_capped(response).await;
    request.judge_refusal(status, &body)
}

/// The authorization endpoint gave no answer: the login can still finish if the token endpoint,
/// which Latchkey itself must reach, takes a connection (the browser may reach the sign-in page
/// another way); if it does not either, the provider is unreachable. The probe opens a connection
/// of its own (none from a pool that may hold one to a provider that has since gone).
async fn unreachable_or_inconclusive(
    token_endpoint: &Url,
    timeout: Duration,
) -> Result<Verdict, PreflightError> {
    let fresh = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .build();
    let Ok(fresh) = fresh else {
        return Ok(Verdict::Inconclusive);
    };
    // Any answer, even an error status, shows the token endpoint is there.
    match fresh.head(token_endpoint.clone()).send().await {
        Err(e) if e.is_connect() && !e.is_timeout() => {
            debug!("login pre-flight: the provider takes no connection");
            let host = match token_endpoint.port() {
                Some(port) => format!("{}:{port}", token_endpoint.host_str().unwrap_or_default()),
                None => token_endpoint.host_str().unwrap_or_default().to_owned(),
            };
            Err(PreflightError::IdpUnreachable {
                host,
                reason: connect_reason(&e),
            })
        }
        _ => {
            debug!(
                "login pre-flight inconclusive (no answer from the sign-in page, but the token endpoint answers); going on with the login"
            );
            Ok(Verdict::Inconclusive)
        }
    }
}

/// Why a connection failed, in words, without the URL.
fn connect_reason(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut kinds = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            kinds.push(io.kind());
        }
        source = s.source();
    }
    if kinds.contains(&std::io::ErrorKind::ConnectionRefused) {
        "connection refused".to_owned()
    } else {
        "no connection".to_owned()
    }
}

/// The parts of the authorization request the verdict needs. `secrets` are the values that must
/// never reach a message: `state`, `nonce`, the PKCE challenge.
struct Request {
    redirect_uri: String,
    client_id: String,
    fixed_port: bool,
    secrets: Vec<String>,
}

impl Request {
    fn from_url(url: &Url, fixed_port: bool) -> Self {
        let mut redirect_uri = String::new();
        let mut client_id = String::new();
        let mut secrets = Vec::new();
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "redirect_uri" => redirect_uri = v.into_owned(),
                "client_id" => client_id = v.into_owned(),
                "state" | "nonce" | "code_challenge" if !v.is_empty() => {
                    secrets.push(v.into_owned())
                }
                _ => {}
            }
        }
        Self {
            redirect_uri,
            client_id,
            fixed_port,
            secrets,
        }
    }

    /// Provider text, shortened, without any request value in it.
    fn scrub(&self, text: &str) -> String {
        let mut out: String = text.chars().take(200).collect();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "[redacted]");
        }
        out
    }

    fn judge_redirect(
        &self,
        status: StatusCode,
        location: Option<&Url>,
    ) -> Result<Verdict, PreflightError> {
        let Some(location) = location else {
            debug!(
                status = status.as_u16(),
                "login pre-flight inconclusive (a redirect without a location)"
            );
            return Ok(Verdict::Inconclusive);
        };
        let to_callback = Url::parse(&self.redirect_uri)
            .is_ok_and(|r| r.origin() == location.origin() && r.path() == location.path());
        if !to_callback {
            debug!(
                status = status.as_u16(),
                "login pre-flight accepted (redirected to the sign-in page)"
            );
            return Ok(Verdict::Accepted);
        }
        let param = |name: &str| {
            location
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        match param("error") {
            Some(error) => {
                let error = self.scrub(&error);
                debug!(error = %error, "login pre-flight: the provider refused the request");
                Err(PreflightError::Login(LoginError::Authorization {
                    error,
                    description: param("error_description").map(|d| self.scrub(&d)),
                }))
            }
            None => Ok(Verdict::Accepted),
        }
    }

    fn judge_refusal(&self, status: StatusCode, body: &str) -> Result<Verdict, PreflightError> {
        let (error, description) = match serde_json::from_str::<serde_json::Value>(body) {
            Ok(json) => (
                json.get("error")
                    .and_then(serde_json::Value::as_str)
                    .map(|e| self.scrub(e)),
                json.get("error_description")
                    .and_then(serde_json::Value::as_str)
                    .map(|d| self.scrub(d)),
            ),
            // An HTML page: only a known code is taken from it, never its text.
            Err(_) => (known_code_in(body).map(str::to_owned), None),
        };
        let lower = body.to_ascii_lowercase();
        let about_redirect = lower.contains("redirect_uri") || lower.contains("redirect uri");
        let fallback = || format!("http_{}", status.as_u16());
        let verdict = match error.as_deref() {
            Some(e) if REDIRECT_CODES.contains(&e) => {
                self.redirect_refused(e.to_owned(), description)
            }
            Some(e) if CLIENT_CODES.contains(&e) => PreflightError::ClientNotRegistered {
                client_id: self.client_id.clone(),
                redirect_uri: self.redirect_uri.clone(),
                error: e.to_owned(),
                description,
            },
            _ if about_redirect => {
                self.redirect_refused(error.unwrap_or_else(fallback), description)
            }
            Some(e) if OTHER_CODES.contains(&e) => {
                PreflightError::Login(LoginError::Authorization {
                    error: e.to_owned(),
                    description,
                })
            }
            _ => {
                debug!(
                    status = status.as_u16(),
                    "login pre-flight inconclusive (an error page without a known code); going on with the login"
                );
                return Ok(Verdict::Inconclusive);
            }
        };
        debug!(
            status = status.as_u16(),
            code = %verdict.code(),
            "login pre-flight: the provider refused the request"
        );
        Err(verdict)
    }

    fn redirect_refused(&self, error: String, description: Option<String>) -> PreflightError {
        PreflightError::RedirectUriNotRegistered {
            redirect_uri: self.redirect_uri.clone(),
            client_id: self.client_id.clone(),
            fixed_port: self.fixed_port,
            error,
            description,
        }
    }
}

/// The first OAuth error code named in an error page.
fn known_code_in(body: &str) -> Option<&'static str> {
    REDIRECT_CODES
        .iter()
        .chain(CLIENT_CODES)
        .chain(OTHER_CODES)
        .copied()
        .find(|code| body.contains(code))
}

/// Origin and path only: the query carries the login's `state`, `nonce` and PKCE challenge.
fn endpoint(url: &Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

async fn read_capped(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(MAX_BODY);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(redirect: &str) -> Url {
        let mut u = Url::parse("https://idp.example.com/authorize").expect("url");
        u.query_pairs_mut()
            .append_pair("client_id", "latchkey")
            .append_pair("redirect_uri", redirect)
            .append_pair("state", "STATE-canary-1")
            .append_pair("nonce", "NONCE-canary-2")
            .append_pair("code_challenge", "CHALLENGE-canary-3");
        u
    }

    #[test]
    fn an_oidc_provider_json_refusal_names_the_uri_to_register_for_any_port() {
        let r = Request::from_url(&url("http://127.0.0.1:41234/oauth/callback"), false);
        let e = r
            .judge_refusal(
                StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_redirect_uri","error_description":"redirect_uri did not match (state STATE-canary-1)"}"#,
            )
            .expect_err("refused");
        assert_eq!(e.code(), crate::Code::RedirectUriNotRegistered);
        let m = e.to_string();
        assert!(m.contains("`http://127.0.0.1:41234/oauth/callback`"), "{m}");
        assert!(m.contains("`http://127.0.0.1/oauth/callback`"), "{m}");
        assert!(m.contains("any port on 127.0.0.1"), "{m}");
        assert!(m.contains("`latchkey`"), "{m}");
        assert!(!m.contains("STATE-canary-1"), "the state is scrubbed: {m}");
    }

    #[test]
    fn a_fixed_port_asks_for_that_exact_uri() {
        let r = Request::from_url(&url("http://127.0.0.1:8765/oauth/callback"), true);
        let e = r
            .judge_refusal(
                StatusCode::BAD_REQUEST,
                "<html><h1>Error 400: redirect_uri_mismatch</h1></html>",
            )
            .expect_err("refused");
        assert_eq!(e.code(), crate::Code::RedirectUriNotRegistered);
        assert!(
            e.to_string()
                .contains("register exactly `http://127.0.0.1:8765/oauth/callback`"),
            "{e}"
        );
    }

    #[test]
    fn an_html_page_about_the_redirect_uri_without_a_code_still_counts() {
        let r = Request::from_url(&url("http://127.0.0.1:1/oauth/callback"), false);
        let e = r
            .judge_refusal(
                StatusCode::BAD_REQUEST,
                "<p>Invalid parameter: redirect_uri</p>",
            )
            .expect_err("refused");
        assert_eq!(e.code(), crate::Code::RedirectUriNotRegistered);
        assert!(e.to_string().contains("(http_400)"), "{e}");
    }

    #[test]
    fn an_unknown_client_is_its_own_code() {
        let r = Request::from_url(&url("http://127.0.0.1:1/oauth/callback"), false);
        let e = r
            .judge_refusal(
                StatusCode::BAD_REQUEST,
                "<h1>invalid_client</h1><p>client is invalid</p>",
            )
            .expect_err("refused");
        assert_eq!(e.code(), crate::Code::ClientNotRegistered);
        assert!(e.to_string().contains("check `client_id`"), "{e}");
    }

    #[test]
    fn an_unrecognised_refusal_or_a_server_error_does_not_block_the_login() {
        let r = Request::from_url(&url("http://127.0.0.1:1/oauth/callback"), false);
        assert_eq!(
            r.judge_refusal(StatusCode::FORBIDDEN, "<p>Access blocked by proxy</p>")
                .expect("inconclusive"),
            Verdict::Inconclusive
        );
    }

    #[test]
    fn an_error_redirect_to_the_callback_is_the_providers_own_error() {
        let r = Request::from_url(&url("http://127.0.0.1:41234/oauth/callback"), false);
        let location = Url::parse(
            "http://127.0.0.1:41234/oauth/callback?error=invalid_scope&error_description=requested+scope+is+not+allowed&state=STATE-canary-1",
        )
        .expect("url");
        let e = r
            .judge_redirect(StatusCode::SEE_OTHER, Some(&location))
            .expect_err("refused");
        assert_eq!(e.code(), crate::Code::AuthorizationFailed);
        assert!(e.to_string().contains("invalid_scope"), "{e}");
        let signin = Url::parse("https://idp.example.com/interaction/abc").expect("url");
        assert_eq!(
            r.judge_redirect(StatusCode::SEE_OTHER, Some(&signin))
                .expect("ok"),
            Verdict::Accepted
        );
    }

    #[tokio::test]
    async fn a_provider_that_does_not_answer_in_time_does_not_block_the_login() {
        // Accepts connections and never answers: the pre-flight gives up and lets the login go on.
        let stalled = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = stalled.local_addr().expect("addr").port();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = stalled.accept().await {
                held.push(socket);
            }
        });
        let mut u = url("http://127.0.0.1:1/oauth/callback");
        u.set_scheme("http").expect("scheme");
        u.set_host(Some("127.0.0.1")).expect("host");
        u.set_port(Some(port)).expect("port");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .expect("client");
        let started = std::time::Instant::now();
        let verdict = check_login(&http, &u, &u, false, Duration::from_millis(300))
            .await
            .expect("inconclusive");
        assert_eq!(verdict, Verdict::Inconclusive);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "bounded by the timeout"
        );
        holder.abort();
    }

    /// A loopback port nobody listens on.
    fn closed_port() -> u16 {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        closed.local_addr().expect("addr").port()
    }

    fn plain_client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .expect("client")
    }

    #[tokio::test]
    async fn a_provider_that_takes_no_connection_at_all_is_unreachable() {
        let port = closed_port();
        let mut u = url("http://127.0.0.1:1/oauth/callback");
        u.set_scheme("http").expect("scheme");
        u.set_host(Some("127.0.0.1")).expect("host");
        u.set_port(Some(port)).expect("port");
        let token = Url::parse(&format!("http://127.0.0.1:{port}/token")).expect("url");
        let e = check_login(&plain_client(), &u, &token, false, Duration::from_secs(2))
            .await
            .expect_err("no login that could not finish");
        assert_eq!(e.code(), crate::Code::IdpUnreachable);
        let m = e.to_string();
        assert!(
            m.contains(&format!("`127.0.0.1:{port}`")),
            "names the host: {m}"
        );
        assert!(
            m.contains("connection refused") && m.contains("try again"),
            "{m}"
        );
        assert!(!m.contains("STATE-canary-1"), "no request value: {m}");
    }

    #[tokio::test]
    async fn an_unreachable_sign_in_page_with_a_reachable_token_endpoint_is_inconclusive() {
        // The browser may reach the sign-in page another way; Latchkey reaches what it needs.
        let token_endpoint = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let token_port = token_endpoint.local_addr().expect("addr").port();
        let answering = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut socket, _)) = token_endpoint.accept().await {
                let _ = socket
                    .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        let mut u = url("http://127.0.0.1:1/oauth/callback");
        u.set_scheme("http").expect("scheme");
        u.set_host(Some("127.0.0.1")).expect("host");
        u.set_port(Some(closed_port())).expect("port");
        let token = Url::parse(&format!("http://127.0.0.1:{token_port}/token")).expect("url");
        let verdict = check_login(&plain_client(), &u, &token, false, Duration::from_secs(2))
            .await
            .expect("inconclusive");
        assert_eq!(verdict, Verdict::Inconclusive);
        answering.abort();
    }
}
