//! [`Control`] over HTTP: the running instance (the tray app or `latchkey serve`) asked on its
//! loopback control API with its control token, which never appears in argv, the environment, a
//! file or a log.
//!
//! Finding the instance works with the minimal environment MCP hosts give the commands they start
//! (`HOME`, `PATH`, `USER`, `SHELL`, `TERM`, `LOGNAME`, plus what the host entry's `env` adds):
//! on Unix the instance's socket in the data directory hands over the port and the token to a
//! process of the same user (see [`crate::socket`]); only when that fails does the command ask
//! the keychain, which needs a desktop session (D-Bus on Linux) and is the only way on Windows.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use latchkey_core::Code;
use latchkey_core::paths::Paths;
use latchkey_core::secret::Secret;
use latchkey_core::vault::{Vault, VaultKey};
use latchkey_store::{ActivityBuckets, AuditPage, AuditRow, TokenInfo};

use super::wire;
use super::{
    ActivityEvent, ActivityStream, AddedServerView, Control, EphemeralToken, EventStream,
    HostEntry, InstanceEvent, NewClient, NewServer, PREFIX, Route, StatusReport, WindowRequest,
};
use crate::RuntimeError;
use crate::instance::{self, InstanceError};
use crate::view::{
    ActivityFilter, ClientView, ConnectionView, CreatedClient, HostApplied, HostPreview, HostView,
    Overview, ServerView,
};

/// The header that carries the control token (and a local client's token on the proxy).
const TOKEN_HEADER: &str = "x-latchkey-client";

/// A connection to the running instance's control API.
pub struct ControlClient {
    base: String,
    token: Secret,
    http: reqwest::Client,
    paths: Paths,
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ControlClient {
    /// Finds the running instance: its socket first, then the instance file and the keychain.
    /// `None` when Latchkey is not running; a coded error (`keychain_unavailable`, …) when it runs
    /// but cannot be reached, saying what to do.
    pub async fn find(paths: &Paths) -> Result<Option<Self>, RuntimeError> {
        #[cfg(unix)]
        let socket_error = {
            let path = instance::socket_path(paths);
            match crate::socket::fetch(&path).await {
                Ok(handoff) => {
                    tracing::debug!(
                        pid = handoff.pid,
                        port = handoff.port,
                        "found Latchkey on its socket"
                    );
                    return Self::new(handoff.port, handoff.control_token, paths).map(Some);
                }
                Err(e) => {
                    tracing::debug!(code = %e.code(), error = %e, "control socket gave no hand-off");
                    Some(e)
                }
            }
        };
        #[cfg(not(unix))]
        let socket_error: Option<std::convert::Infallible> = None;

        let info = match instance::running(paths) {
            Ok(info) => info,
            Err(InstanceError::NotRunning) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // Running, but the socket did not answer (an older instance, or the socket could not be
        // bound): the keychain is the way left.
        let unreachable = |mut e: RuntimeError| -> RuntimeError {
            if let Some(socket) = &socket_error {
                e.message = format!(
                    "Latchkey is running (pid {}) but cannot be reached: {socket}, and {}. Restart Latchkey (it recreates its socket), or run this where the keychain is available",
                    info.pid, e.message
                );
            }
            e
        };
        let vault = Vault::platform().map_err(|e| unreachable(e.into()))?;
        let token = vault
            .get(&VaultKey::ControlToken)
            .await
            .map_err(|e| unreachable(e.into()))?
            .ok_or_else(|| {
                RuntimeError::new(
                    Code::NotRunning,
                    "Latchkey is running but has not published its control key; restart it",
                )
            })?;
        Self::new(info.port, token, paths).map(Some)
    }

    /// A client of the instance serving on loopback `port`, with its control token.
    pub fn new(port: u16, token: Secret, paths: &Paths) -> Result<Self, RuntimeError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| RuntimeError::internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            base: format!("http://127.0.0.1:{port}"),
            token,
            http,
            paths: paths.clone(),
        })
    }

    /// The directories this instance was found through.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The instance's proxy base URL.
    pub fn proxy_url(&self) -> &str {
        &self.base
    }

    /// A service's credentials from the proxy's `GET /v1/credentials/{service}` (for `latchkey
    /// exec`, which puts them in a command's environment).
    pub async fn credentials(
        &self,
        service: &str,
    ) -> Result<BTreeMap<String, Secret>, RuntimeError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            data: BTreeMap<String, String>,
        }
        let url = format!("{}/v1/credentials/{}", self.base, segment(service));
        let request = self
            .authorised(self.http.get(url))
            .timeout(Duration::from_secs(30));
        let answer: Answer = self.answer(request).await?;
        Ok(answer
            .data
            .into_iter()
            .map(|(name, value)| (name, Secret::new(value)))
            .collect())
    }

    fn authorised(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match HeaderValue::from_str(self.token.expose()) {
            Ok(mut value) => {
                value.set_sensitive(true);
                request.header(TOKEN_HEADER, value)
            }
            // A token with bytes a header cannot hold: sent without it, refused as unauthorised.
            Err(_) => request,
        }
    }

    /// The request for `route` with its path parameters `args`, in order.
    fn request(&self, route: Route, args: &[&str]) -> reqwest::RequestBuilder {
        let (verb, template) = route.endpoint();
        let url = format!("{}{PREFIX}{}", self.base, fill(template, args));
        let mut request = self.authorised(self.http.request(verb.method(), url));
        if let Some(timeout) = route.timeout() {
            request = request.timeout(timeout);
        }
        request
    }

    /// Sends a request and decodes its answer.
    async fn answer<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, RuntimeError> {
        let response = request.send().await.map_err(|_| self.not_answering())?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            RuntimeError::new(
                Code::UnexpectedAnswer,
                format!("reading Latchkey's answer: {e}"),
            )
        })?;
        decode(status, &bytes)
    }

    /// `route` without a body.
    async fn call<T: DeserializeOwned>(
        &self,
        route: Route,
        args: &[&str],
    ) -> Result<T, RuntimeError> {
        self.answer(self.request(route, args)).await
    }

    /// `route` with a JSON body.
    async fn send<T: DeserializeOwned>(
        &self,
        route: Route,
        args: &[&str],
        body: &(impl Serialize + ?Sized),
    ) -> Result<T, RuntimeError> {
        self.answer(self.request(route, args).json(body)).await
    }

    fn not_answering(&self) -> RuntimeError {
        RuntimeError::new(
            Code::NotRunning,
            format!(
                "Latchkey does not answer on {}: is it still running?",
                self.base
            ),
        )
    }
}

/// An answer of the control API: the JSON of `T` on success, the runtime's error from a
/// `{error, message}` body, else an error that says what came back.
fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T, RuntimeError> {
    if status.is_success() {
        let bytes = if bytes.is_empty() { b"null" } else { bytes };
        return serde_json::from_slice(bytes).map_err(|e| {
            RuntimeError::new(
                Code::UnexpectedAnswer,
                format!("Latchkey's answer is not the expected JSON: {e}"),
            )
        });
    }
    Err(error_body(bytes).unwrap_or_else(|| {
        RuntimeError::new(
            Code::UnexpectedAnswer,
            format!(
                "Latchkey answered {status} without its error body (is another program listening on its port?)"
            ),
        )
    }))
}

/// The runtime's error from a `{error, message}` body (a code this build does not know, from a
/// newer instance, is [`Code::Unknown`] with its message kept).
fn error_body(bytes: &[u8]) -> Option<RuntimeError> {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: Code,
        message: String,
    }
    let e = serde_json::from_slice::<ErrorBody>(bytes).ok()?;
    Some(RuntimeError::new(e.error, e.message))
}

/// `template` (axum's `/a/{x}/b`) with each `{…}` replaced by the next of `args`, percent-encoded
/// as one path segment.
fn fill(template: &str, args: &[&str]) -> String {
    let mut args = args.iter();
    template
        .split('/')
        .map(|part| {
            if part.starts_with('{') && part.ends_with('}') {
                segment(args.next().copied().unwrap_or_default())
            } else {
                part.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `text` percent-encoded as one URL path segment (a label may hold spaces or slashes).
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Server-sent events as `(event, data)` pairs; keep-alive comments are skipped.
#[derive(Default)]
struct EventParser {
    buffer: String,
}

impl EventParser {
    /// Adds `chunk` and returns the events it completed.
    fn push(&mut self, chunk: &[u8]) -> Vec<(String, String)> {
        self.buffer.push_str(&String::from_utf8_lossy(chunk));
        let mut events = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let mut kind = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(k) = line.strip_prefix("event:") {
                    kind = k.trim();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim());
                }
            }
            if !data.is_empty() {
                events.push((kind.to_owned(), data));
            }
        }
        events
    }
}

/// An `error` event's `{error, message}` body as the runtime's error.
fn stream_error(data: &str) -> RuntimeError {
    error_body(data.as_bytes())
        .unwrap_or_else(|| RuntimeError::new(Code::UnexpectedAnswer, "the event stream failed"))
}

/// The audit stream: default events are audit rows, `lagged` says how many were missed.
fn activity_event(kind: &str, data: &str) -> Option<Result<ActivityEvent, RuntimeError>> {
    match kind {
        "lagged" => data.parse().ok().map(|n| Ok(ActivityEvent::Lagged(n))),
        "error" => Some(Err(stream_error(data))),
        _ => serde_json::from_str::<AuditRow>(data)
            .ok()
            .map(|row| Ok(ActivityEvent::Row(Box::new(row)))),
    }
}

/// The instance's events: `changed`, `activity` (an audit row), `lagged`; an event of a kind this
/// build does not know (from a newer instance) is skipped.
fn instance_event(kind: &str, data: &str) -> Option<Result<InstanceEvent, RuntimeError>> {
    match kind {
        "changed" => Some(Ok(InstanceEvent::Changed)),
        "activity" => serde_json::from_str::<AuditRow>(data)
            .ok()
            .map(|row| Ok(InstanceEvent::Activity(Box::new(row)))),
        "lagged" => data.parse().ok().map(|n| Ok(InstanceEvent::Lagged(n))),
        "show-window" => serde_json::from_str::<WindowRequest>(data)
            .ok()
            .map(|r| Ok(InstanceEvent::ShowWindow { at: r.at })),
        "error" => Some(Err(stream_error(data))),
        _ => None,
    }
}

impl ControlClient {
    /// The server-sent events of `route`, each read by `read`; the stream ends with an error when
    /// the connection does (the instance stopped).
    async fn events<E: Send + 'static>(
        &self,
        request: reqwest::RequestBuilder,
        read: fn(&str, &str) -> Option<Result<E, RuntimeError>>,
    ) -> Result<BoxStream<'static, Result<E, RuntimeError>>, RuntimeError> {
        let response = request.send().await.map_err(|_| self.not_answering())?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(decode::<()>(status, &bytes)
                .err()
                .unwrap_or_else(|| RuntimeError::new(Code::UnexpectedAnswer, "no stream")));
        }
        let stream = response
            .bytes_stream()
            .scan(EventParser::default(), move |parser, chunk| {
                let events: Vec<_> = match chunk {
                    Ok(chunk) => parser
                        .push(&chunk)
                        .iter()
                        .filter_map(|(kind, data)| read(kind, data))
                        .collect(),
                    Err(e) => vec![Err(RuntimeError::new(
                        Code::NotRunning,
                        format!("the event stream ended: {e}"),
                    ))],
                };
                std::future::ready(Some(futures_util::stream::iter(events)))
            })
            .flatten();
        Ok(Box::pin(stream))
    }
}

impl Control for ControlClient {
    async fn status(&self) -> Result<StatusReport, RuntimeError> {
        self.call(Route::Status, &[]).await
    }

    async fn overview(&self) -> Result<Overview, RuntimeError> {
        self.call(Route::Overview, &[]).await
    }

    async fn follow_events(&self, as_window: bool) -> Result<EventStream, RuntimeError> {
        let query = wire::EventsQuery { window: as_window };
        let request = self.request(Route::Events, &[]).query(&query);
        self.events(request, instance_event).await
    }

    async fn begin_login(&self, account: &str) -> Result<Url, RuntimeError> {
        let answer: wire::AuthorizeUrl = self.send(Route::BeginLogin, &[account], &()).await?;
        Ok(answer.authorize_url)
    }

    async fn wait_login(&self, account: &str) -> Result<Overview, RuntimeError> {
        self.send(Route::WaitLogin, &[account], &()).await
    }

    async fn cancel_login(&self, account: &str) -> Result<(), RuntimeError> {
        let _: wire::Done = self.send(Route::CancelLogin, &[account], &()).await?;
        Ok(())
    }

    async fn refresh_now(&self, account: &str) -> Result<(), RuntimeError> {
        let _: wire::Done = self.send(Route::RefreshNow, &[account], &()).await?;
        Ok(())
    }

    async fn logout(&self, account: &str) -> Result<(), RuntimeError> {
        let _: wire::Done = self.send(Route::Logout, &[account], &()).await?;
        Ok(())
    }

    async fn access_token(&self, account: &str) -> Result<Secret, RuntimeError> {
        let answer: wire::AccessToken = self.call(Route::AccessToken, &[account]).await?;
        Ok(Secret::new(answer.access_token))
    }

    async fn set_gateway_api_key(&self, key: Secret) -> Result<(), RuntimeError> {
        let body = wire::Key {
            key: key.expose().to_owned(),
        };
        let _: wire::Done = self.send(Route::GatewayKey, &[], &body).await?;
        Ok(())
    }

    async fn set_manual_secret(
        &self,
        service: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let body = wire::ManualSecret {
            values: values.clone(),
        };
        let _: wire::Done = self.send(Route::ManualSecret, &[service], &body).await?;
        Ok(())
    }

    async fn list_clients(&self) -> Result<Vec<ClientView>, RuntimeError> {
        self.call(Route::ListClients, &[]).await
    }

    async fn create_client(&self, client: &NewClient) -> Result<CreatedClient, RuntimeError> {
        self.send(Route::CreateClient, &[], client).await
    }

    async fn revoke_client(&self, name: &str) -> Result<(), RuntimeError> {
        let _: wire::Done = self.call(Route::RevokeClient, &[name]).await?;
        Ok(())
    }

    async fn client_tokens(&self, name: &str) -> Result<Vec<TokenInfo>, RuntimeError> {
        self.call(Route::ClientTokens, &[name]).await
    }

    async fn issue_client_token(
        &self,
        name: &str,
        label: &str,
        expires_in: Option<Duration>,
    ) -> Result<Secret, RuntimeError> {
        let body = wire::TokenLabel {
            label: label.to_owned(),
            expires_in_seconds: expires_in.map(|d| d.as_secs()),
        };
        let issued: wire::Issued = self.send(Route::IssueClientToken, &[name], &body).await?;
        Ok(Secret::new(issued.token))
    }

    async fn revoke_client_token(&self, name: &str, label: &str) -> Result<(), RuntimeError> {
        let _: wire::Done = self.call(Route::RevokeClientToken, &[name, label]).await?;
        Ok(())
    }

    async fn issue_ephemeral_token(
        &self,
        client: &str,
        ttl: Option<Duration>,
    ) -> Result<EphemeralToken, RuntimeError> {
        let body = wire::EphemeralRequest {
            client: client.to_owned(),
            ttl_seconds: ttl.map(|d| d.as_secs()),
        };
        let issued: wire::Issued = self.send(Route::Ephemeral, &[], &body).await?;
        Ok(EphemeralToken {
            token: Secret::new(issued.token),
            expires_in: Duration::from_secs(issued.expires_in.unwrap_or_default()),
        })
    }

    async fn query_activity(&self, filter: ActivityFilter) -> Result<AuditPage, RuntimeError> {
        let query = wire::ActivityQuery::from(filter);
        self.answer(self.request(Route::Activity, &[]).query(&query))
            .await
    }

    async fn activity_chart(&self, span: &str) -> Result<ActivityBuckets, RuntimeError> {
        let query = wire::ChartQuery {
            span: span.to_owned(),
        };
        self.answer(self.request(Route::ActivityChart, &[]).query(&query))
            .await
    }

    async fn follow_activity(&self) -> Result<ActivityStream, RuntimeError> {
        self.events(self.request(Route::ActivityStream, &[]), activity_event)
            .await
    }

    async fn list_connections(&self) -> Result<Vec<ConnectionView>, RuntimeError> {
        self.call(Route::Connections, &[]).await
    }

    async fn close_connection(&self, id: &str) -> Result<(), RuntimeError> {
        let _: wire::Done = self.call(Route::CloseConnection, &[id]).await?;
        Ok(())
    }

    async fn detect_hosts(&self) -> Result<Vec<HostView>, RuntimeError> {
        self.call(Route::DetectHosts, &[]).await
    }

    async fn preview_host_entry(&self, entry: &HostEntry) -> Result<HostPreview, RuntimeError> {
        let body = wire::EntryBody {
            client: entry.client.clone(),
            service: entry.service.clone(),
        };
        self.send(Route::PreviewHostEntry, &[&entry.host], &body)
            .await
    }

    async fn apply_host_entry(&self, entry: &HostEntry) -> Result<HostApplied, RuntimeError> {
        let body = wire::EntryBody {
            client: entry.client.clone(),
            service: entry.service.clone(),
        };
        self.send(Route::ApplyHostEntry, &[&entry.host], &body)
            .await
    }

    async fn undo_host_entry(&self, host: &str) -> Result<(), RuntimeError> {
        let _: wire::Done = self.send(Route::UndoHostEntry, &[host], &()).await?;
        Ok(())
    }

    async fn list_servers(&self) -> Result<Vec<ServerView>, RuntimeError> {
        self.call(Route::ListServers, &[]).await
    }

    async fn add_server(&self, server: &NewServer) -> Result<AddedServerView, RuntimeError> {
        let body = wire::AddServer {
            url: server.url.clone(),
            name: server.name.clone(),
            client_id: server.client_id.clone(),
            client_secret: server.client_secret.as_ref().map(|s| s.expose().to_owned()),
            scopes: server.scopes.clone(),
            callback_port: server.callback_port,
            allow_insecure_loopback: server.allow_insecure_loopback,
        };
        self.send(Route::AddServer, &[], &body).await
    }

    async fn remove_server(&self, name: &str) -> Result<Option<String>, RuntimeError> {
        let removed: wire::RemovedServer = self.call(Route::RemoveServer, &[name]).await?;
        Ok(removed.note)
    }

    async fn server_login(&self, name: &str) -> Result<Url, RuntimeError> {
        let answer: wire::AuthorizeUrl = self.send(Route::ServerLogin, &[name], &()).await?;
        Ok(answer.authorize_url)
    }

    async fn wait_server_login(&self, name: &str) -> Result<Vec<ServerView>, RuntimeError> {
        self.send(Route::WaitServerLogin, &[name], &()).await
    }

    async fn cancel_server_login(&self, name: &str) -> Result<(), RuntimeError> {
        let _: wire::Done = self.send(Route::CancelServerLogin, &[name], &()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    use axum::Json;
    use axum::routing::on;

    use super::*;
    use crate::view::ActivityFilter;

    #[test]
    fn a_coded_error_body_comes_back_as_the_same_runtime_error() {
        let body = br#"{"error":"login_required","message":"log in to `work` first: run `latchkey login`"}"#;
        let e = decode::<()>(StatusCode::UNAUTHORIZED, body).expect_err("an error");
        assert_eq!(
            e,
            RuntimeError::new(
                Code::LoginRequired,
                "log in to `work` first: run `latchkey login`"
            ),
            "the code and message the in-process call would have returned"
        );
    }

    #[test]
    fn a_code_from_a_newer_instance_is_unknown_and_keeps_its_message() {
        let body = br#"{"error":"quota_exceeded","message":"you used up this month's requests"}"#;
        let e = decode::<()>(StatusCode::TOO_MANY_REQUESTS, body).expect_err("an error");
        assert_eq!(
            e,
            RuntimeError::new(Code::Unknown, "you used up this month's requests"),
            "read, not refused as an unexpected answer"
        );
    }

    #[test]
    fn a_non_json_502_is_a_clear_error_not_a_decoding_failure() {
        let e = decode::<()>(StatusCode::BAD_GATEWAY, b"<html>Bad Gateway</html>")
            .expect_err("an error");
        assert_eq!(e.code, Code::UnexpectedAnswer);
        assert!(
            e.message.contains("502 Bad Gateway") && e.message.contains("without its error body"),
            "says what came back: {}",
            e.message
        );
        let e = decode::<Vec<ClientView>>(StatusCode::OK, b"{}").expect_err("wrong shape");
        assert_eq!(e.code, Code::UnexpectedAnswer, "{}", e.message);
        assert_ne!(
            e.code.class(),
            latchkey_core::Class::Internal,
            "not Latchkey's own failure (exit 70)"
        );
    }

    #[test]
    fn path_parameters_are_filled_in_order_and_encoded_as_one_segment() {
        assert_eq!(
            fill(
                "/clients/{name}/tokens/{label}",
                &["cursor", "mcp-config:a b/c"]
            ),
            "/clients/cursor/tokens/mcp-config:a%20b%2Fc"
        );
        assert_eq!(fill("/status", &[]), "/status");
    }

    #[test]
    fn server_sent_rows_lag_notices_and_errors_are_read_across_chunks() {
        let mut parser = EventParser::default();
        let row = r#"{"id":7,"kind":"client","time":1000,"client":"c","service":"s","method":"GET","path":"/","status":200,"bytes_in":0,"bytes_out":3,"duration_ms":1,"error_code":null}"#;
        let text = format!(
            ":keep-alive\n\ndata: {row}\n\nevent: lagged\ndata: 4\n\nevent: error\ndata: {{\"error\":\"keychain_locked\",\"message\":\"m\"}}\n\n"
        );
        let (first, second) = text.split_at(20);
        let mut blocks = parser.push(first.as_bytes());
        blocks.extend(parser.push(second.as_bytes()));
        let events: Vec<_> = blocks
            .iter()
            .filter_map(|(kind, data)| activity_event(kind, data))
            .collect();
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(matches!(&events[0], Ok(ActivityEvent::Row(r)) if r.id == 7));
        assert_eq!(events[1], Ok(ActivityEvent::Lagged(4)));
        assert_eq!(events[2], Err(RuntimeError::new(Code::KeychainLocked, "m")));
    }

    #[test]
    fn instance_events_are_read_and_an_unknown_kind_is_skipped() {
        let row = r#"{"id":9,"kind":"control","time":1000,"client":null,"service":null,"method":"GET","path":"/v1/control/status","status":200,"bytes_in":0,"bytes_out":3,"duration_ms":1,"error_code":null}"#;
        let text = format!(
            "event: changed\ndata: 1\n\nevent: activity\ndata: {row}\n\nevent: from-a-newer-instance\ndata: x\n\nevent: show-window\ndata: {{\"at\":\"services/demo\"}}\n\nevent: lagged\ndata: 2\n\nevent: error\ndata: {{\"error\":\"internal\",\"message\":\"m\"}}\n\n"
        );
        let events: Vec<_> = EventParser::default()
            .push(text.as_bytes())
            .iter()
            .filter_map(|(kind, data)| instance_event(kind, data))
            .collect();
        assert_eq!(events.len(), 5, "the unknown kind is skipped: {events:?}");
        assert_eq!(events[0], Ok(InstanceEvent::Changed));
        assert!(matches!(&events[1], Ok(InstanceEvent::Activity(r)) if r.id == 9));
        assert_eq!(
            events[2],
            Ok(InstanceEvent::ShowWindow {
                at: Some("services/demo".into())
            })
        );
        assert_eq!(events[3], Ok(InstanceEvent::Lagged(2)));
        assert_eq!(events[4], Err(RuntimeError::new(Code::Internal, "m")));
    }

    /// Every route of the table, served by a probe that answers with a coded error naming it.
    async fn probe() -> (u16, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let routes = Route::ALL
            .into_iter()
            .fold(axum::Router::new(), |router, route| {
                let (verb, path) = route.endpoint();
                let seen = seen.clone();
                router.route(
                    path,
                    on(verb.filter(), move || async move {
                        let name = format!("{route:?}");
                        seen.lock().expect("lock").push(name.clone());
                        (
                            StatusCode::IM_A_TEAPOT,
                            Json(serde_json::json!({ "error": "probe", "message": name })),
                        )
                    }),
                )
            });
        let app = axum::Router::new().nest(PREFIX, routes);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, seen)
    }

    #[tokio::test]
    async fn every_route_of_the_table_is_called_by_the_client_on_its_method_and_path() {
        let (port, seen) = probe().await;
        let dir = std::env::temp_dir();
        let client = ControlClient::new(port, Secret::new("lk_control"), &Paths::new(&dir, &dir))
            .expect("client");
        let values = BTreeMap::new();
        let new_client = NewClient {
            name: "c".into(),
            services: vec![],
            allow_raw_credentials: false,
        };
        let entry = HostEntry {
            host: "cursor".into(),
            client: "c".into(),
            service: "s".into(),
        };
        let errors = vec![
            client.status().await.err(),
            client.overview().await.err(),
            client.follow_events(true).await.err(),
            client.begin_login("a").await.err(),
            client.wait_login("a").await.err(),
            client.cancel_login("a").await.err(),
            client.refresh_now("a").await.err(),
            client.logout("a").await.err(),
            client.access_token("a").await.err(),
            client.set_gateway_api_key(Secret::new("k")).await.err(),
            client.set_manual_secret("s", &values).await.err(),
            client.list_clients().await.err(),
            client.create_client(&new_client).await.err(),
            client.revoke_client("c").await.err(),
            client.client_tokens("c").await.err(),
            client.issue_client_token("c", "l", None).await.err(),
            client.revoke_client_token("c", "l").await.err(),
            client.issue_ephemeral_token("c", None).await.err(),
            client.query_activity(ActivityFilter::default()).await.err(),
            client.activity_chart("hour").await.err(),
            client.follow_activity().await.err(),
            client.list_connections().await.err(),
            client.close_connection("1").await.err(),
            client.detect_hosts().await.err(),
            client.preview_host_entry(&entry).await.err(),
            client.apply_host_entry(&entry).await.err(),
            client.undo_host_entry("cursor").await.err(),
            client.list_servers().await.err(),
            client.add_server(&NewServer::default()).await.err(),
            client.remove_server("s").await.err(),
            client.server_login("s").await.err(),
            client.wait_server_login("s").await.err(),
            client.cancel_server_login("s").await.err(),
        ];
        let answered: BTreeSet<String> = errors
            .into_iter()
            .map(|e| {
                let e = e.expect("the probe answers every call with an error");
                assert_eq!(
                    e.code,
                    Code::Unknown,
                    "reached a route of the table (whose code `probe` this build does not know): {e:?}"
                );
                e.message
            })
            .collect();
        let table: BTreeSet<String> = Route::ALL.iter().map(|r| format!("{r:?}")).collect();
        assert_eq!(answered, table, "the client calls every route, each once");
        assert_eq!(seen.lock().expect("lock").len(), Route::ALL.len());
    }
}
