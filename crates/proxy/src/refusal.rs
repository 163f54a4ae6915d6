//! The answer to a request for a service whose credential Latchkey cannot supply: nobody is
//! logged in, the gateway refused or is down, the keychain is locked. MCP clients must show it to
//! the person instead of starting OAuth, so the status is never `401` (see
//! [`ProxyError::status`]) and a JSON-RPC request gets a JSON-RPC error that carries Latchkey's
//! sentence. A refused login is also announced to whoever listens (the tray) as a
//! [`LoginNeeded`].

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::request::Parts;
use http::{Method, header};
use http_body_util::{BodyExt, Limited};
use latchkey_core::Code;
use tracing::debug;

use crate::audit::Finish;
use crate::credentials::CredentialError;
use crate::error::{ProxyError, error_body, json_response};
use crate::state::ProxyState;

/// The JSON-RPC `error.code` of every such refusal, in the range JSON-RPC 2.0 leaves to the
/// implementation (-32000 to -32099) and clear of the codes the MCP SDKs define (-32000 connection
/// closed, -32001 request timeout, -32002 resource not found, -32020 to -32022, -32042). What went
/// wrong is in `error.data.latchkey_error`, the PROTOCOL §3 code.
pub const JSONRPC_CREDENTIALS_UNAVAILABLE: i64 = -32050;

/// Largest request body read to find a JSON-RPC request's `id` (an `initialize` is a few hundred
/// bytes); a larger one is answered with the PROTOCOL §3 body.
const MAX_JSONRPC_BODY: usize = 1024 * 1024;

/// How long reading that body may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A request was refused because nobody is logged in to the account that unlocks its service:
/// what the tray needs to say "Log in needed: `client` asked for `service`". No secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginNeeded {
    /// The account to log in to, when the credential source names it.
    pub account: Option<String>,
    /// The service the request was for.
    pub service: String,
    /// The local client that asked (`latchkey` for the instance's own CLI).
    pub client: String,
}

/// The sentence that tells a person to log in to `account`.
pub(crate) fn login_message(account: &str) -> String {
    format!(
        "Log in to Latchkey (account `{account}`): click Log in in the tray or run `latchkey login --account {account}`."
    )
}

/// Answers a request from `client` for `service` refused with `error` (a credential failure):
/// records the code, announces a needed login, and builds the body the request's kind calls for.
pub(crate) async fn refuse(
    state: &ProxyState,
    service: &str,
    client: &str,
    error: &ProxyError,
    parts: &Parts,
    body: Body,
    finish: &mut Finish,
) -> Response {
    let inner = &state.inner;
    finish.set_error(error.code());
    let account = inner.credentials.account(service);
    let login = matches!(
        error,
        ProxyError::Credentials(
            CredentialError::LoginRequired
                | CredentialError::ServerLoginRequired { .. }
                | CredentialError::ServerStepUpRequired { .. }
        )
    );
    let message = match &account {
        Some(account) if login => login_message(account),
        _ => error.to_string(),
    };
    if login {
        // No receiver (nothing wired yet) is not an error.
        let _ = inner.login_needed.send(LoginNeeded {
            account: account.clone(),
            service: service.to_owned(),
            client: client.to_owned(),
        });
    }
    let code = match error {
        // A remote MCP server's refusal carries its own code (`step_up_required`, ...).
        ProxyError::Credentials(e) if e.server().is_some() => e.code(),
        _ => error.code(),
    };
    let body = match jsonrpc_request_id(parts, body).await {
        Some(id) => jsonrpc_error(id, code, &message, service, account.as_deref()),
        None => error_body(code, &message),
    };
    let mut response = json_response(error.status(), body);
    if let Some(retry_after) = error.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, http::HeaderValue::from(retry_after));
    }
    response
}

/// `{"jsonrpc": "2.0", "id": id, "error": {"code", "message", "data": {"latchkey_error", ...}}}`.
fn jsonrpc_error(
    id: serde_json::Value,
    code: Code,
    message: &str,
    service: &str,
    account: Option<&str>,
) -> Vec<u8> {
    let mut data = serde_json::json!({ "latchkey_error": code, "service": service });
    if let (Some(account), Some(map)) = (account, data.as_object_mut()) {
        map.insert("account".to_owned(), account.into());
    }
    let answer = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": JSONRPC_CREDENTIALS_UNAVAILABLE,
            "message": message,
            "data": data,
        },
    });
    // Serialising a `Value` cannot fail: its map keys are strings.
    serde_json::to_vec(&answer).unwrap_or_else(|_| error_body(code, message))
}

/// The `id` of a JSON-RPC request (a POST whose JSON body is an object with `jsonrpc: "2.0"`, a
/// string `method` and an `id` that is a string, a number or null). `None` for anything else:
/// a notification or a response has no answer to carry an error, and a batch is not taken apart.
async fn jsonrpc_request_id(parts: &Parts, body: Body) -> Option<serde_json::Value> {
    if parts.method != Method::POST {
        return None;
    }
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return None;
    }
    let read = tokio::time::timeout(READ_TIMEOUT, Limited::new(body, MAX_JSONRPC_BODY).collect());
    let bytes = match read.await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) | Err(_) => {
            debug!("request body not read for a JSON-RPC error");
            return None;
        }
    };
    let serde_json::Value::Object(mut message) = serde_json::from_slice(&bytes).ok()? else {
        return None;
    };
    let is_request = message.get("jsonrpc").and_then(|v| v.as_str()) == Some("2.0")
        && message
            .get("method")
            .is_some_and(serde_json::Value::is_string);
    let id = message.remove("id")?;
    (is_request && (id.is_string() || id.is_number() || id.is_null())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, content_type: Option<&str>) -> Parts {
        let mut builder = http::Request::builder().method(method).uri("/mcp/mcp");
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        builder.body(()).expect("request").into_parts().0
    }

    async fn id_of(
        method: Method,
        content_type: Option<&str>,
        body: &str,
    ) -> Option<serde_json::Value> {
        jsonrpc_request_id(&parts(method, content_type), Body::from(body.to_owned())).await
    }

    #[tokio::test]
    async fn the_id_of_a_json_rpc_request_is_found() {
        let request = r#"{"jsonrpc":"2.0","id":7,"method":"initialize","params":{}}"#;
        assert_eq!(
            id_of(Method::POST, Some("application/json"), request).await,
            Some(serde_json::json!(7))
        );
        let request = r#"{"jsonrpc":"2.0","id":"a-1","method":"tools/list"}"#;
        assert_eq!(
            id_of(
                Method::POST,
                Some("Application/JSON; charset=utf-8"),
                request
            )
            .await,
            Some(serde_json::json!("a-1"))
        );
    }

    #[tokio::test]
    async fn notifications_responses_batches_and_other_bodies_have_no_id() {
        let json = Some("application/json");
        for body in [
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{}}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            r#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#,
            r#"{"id":1,"method":"ping"}"#,
            "not json",
        ] {
            assert_eq!(id_of(Method::POST, json, body).await, None, "{body}");
        }
        let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        assert_eq!(id_of(Method::GET, json, ping).await, None, "not a POST");
        assert_eq!(
            id_of(Method::POST, Some("text/plain"), ping).await,
            None,
            "not JSON"
        );
        assert_eq!(id_of(Method::POST, None, ping).await, None, "no type");
    }

    #[tokio::test]
    async fn an_oversized_body_is_not_read_for_an_id() {
        let big = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
            "x".repeat(MAX_JSONRPC_BODY)
        );
        assert_eq!(
            id_of(Method::POST, Some("application/json"), &big).await,
            None
        );
    }

    #[test]
    fn the_json_rpc_error_carries_the_sentence_and_the_protocol_code() {
        let body = jsonrpc_error(
            serde_json::json!(4),
            Code::LoginRequired,
            &login_message("work"),
            "github",
            Some("work"),
        );
        let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(value["jsonrpc"], "2.0");
        assert_eq!(value["id"], 4);
        assert_eq!(value["error"]["code"], JSONRPC_CREDENTIALS_UNAVAILABLE);
        assert_eq!(
            value["error"]["message"],
            "Log in to Latchkey (account `work`): click Log in in the tray or run `latchkey login --account work`."
        );
        assert_eq!(
            value["error"]["data"],
            serde_json::json!({"latchkey_error": "login_required", "service": "github", "account": "work"})
        );
    }
}
