//! Real MCP hosts against a logged-out Latchkey: the official Python SDK (`tests/mcp-py`) and the
//! official TypeScript SDK (`tests/mcp/client-auth.mjs`), each set up as a real host is, with an
//! OAuth client provider. Connecting through the proxy to an MCP service while nobody is logged
//! in must show Latchkey's sentence, must not start OAuth (no redirect, no registration, no
//! discovery request at the proxy) and must not loop; once logged in, the same host works.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use latchkey_proxy::{CredentialError, Route};
use tokio::process::Command;
use url::Url;

use crate::mcp::{MCP_CANARY, fingerprint, mcp_dir, start_server};
use crate::support::{MapSource, Options, Proxy, Upstream, header_injection};

const LOGIN_SENTENCE: &str = "Log in to Latchkey (account `work`): click Log in in the tray or run `latchkey login --account work`.";

fn python() -> PathBuf {
    let python =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/mcp-py/.venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup (it installs tests/mcp-py/requirements.txt into tests/mcp-py/.venv)",
        python.display()
    );
    python
}

/// A proxy whose `mcp` route points at the server, with nobody logged in, recording every request.
async fn logged_out_proxy(server: &Url) -> Proxy {
    let mut base = server.clone();
    base.set_path("/");
    let route = Route::new(
        "mcp",
        base,
        vec![header_injection("token", "X-API-Key", "")],
    )
    .expect("route");
    let source = Arc::new(MapSource::with_canaries());
    source.fail("mcp", CredentialError::LoginRequired);
    Proxy::start_in_front_of(
        Upstream::start().await,
        Options {
            extra_routes: vec![route],
            source,
            record_requests: true,
            ..Options::default()
        },
    )
    .await
}

/// Runs a peer to completion (it prints one JSON line) and returns that line.
async fn outcome(mut command: Command) -> serde_json::Value {
    let output = tokio::time::timeout(Duration::from_secs(90), command.kill_on_drop(true).output())
        .await
        .expect("the host finishes in time: it does not loop")
        .expect("the peer runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "peer failed: {stdout}\n{stderr}");
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("a JSON outcome ({e}): {stdout}\n{stderr}"))
}

fn python_host(url: &str, token: &str) -> Command {
    let mut command = Command::new(python());
    command
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/mcp-py/client.py"))
        .args(["--url", url, "--token", token, "--timeout", "30"]);
    command
}

fn typescript_host(url: &str, token: &str) -> Command {
    let mut command = Command::new("node");
    command.arg(mcp_dir().join("client-auth.mjs")).args([
        "--url",
        url,
        "--token",
        token,
        "--timeout-ms",
        "30000",
    ]);
    command
}

/// The proxy saw exactly `expected`: no discovery, no registration, no token request, no retry.
fn assert_only(proxy: &Proxy, expected: &[(&str, &str)]) {
    let seen = proxy.requests();
    assert!(
        seen.iter().all(|(_, path)| !path.contains("/.well-known/")
            && !["/register", "/authorize", "/token"].contains(&path.as_str())),
        "no OAuth request reached the proxy: {seen:?}"
    );
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(seen, expected, "what reached the proxy");
}

async fn assert_login_announced(
    login_needed: &mut tokio::sync::broadcast::Receiver<latchkey_proxy::LoginNeeded>,
) {
    let event = tokio::time::timeout(Duration::from_secs(5), login_needed.recv())
        .await
        .expect("announced in time")
        .expect("an event");
    assert_eq!(
        (
            event.account.as_deref(),
            event.service.as_str(),
            event.client.as_str()
        ),
        (Some("work"), "mcp", "tester")
    );
}

#[tokio::test]
async fn the_python_sdk_host_shows_the_login_message_and_never_starts_oauth() {
    let python = python();
    assert!(python.is_file());
    let (mut server, server_url) = start_server().await;
    let proxy = logged_out_proxy(&server_url).await;
    let url = format!("{}/mcp{}", proxy.url, server_url.path());
    let mut login_needed = proxy.state.login_needed();

    let out = outcome(python_host(&url, &proxy.token)).await;
    assert_eq!(out["initialized"], false, "{out}");
    let errors = out["errors"].as_array().cloned().unwrap_or_default();
    let refusal = errors
        .iter()
        .find(|e| e["type"] == "MCPError")
        .unwrap_or_else(|| panic!("the refusal reached the host as an MCP error: {out}"));
    assert_eq!(refusal["message"], LOGIN_SENTENCE, "{out}");
    assert_eq!(
        refusal["code"],
        latchkey_proxy::JSONRPC_CREDENTIALS_UNAVAILABLE
    );
    assert_eq!(refusal["data"]["latchkey_error"], "login_required");
    assert_eq!(out["redirect_called"], 0, "no OAuth redirect: {out}");
    assert_eq!(out["callback_called"], 0, "no OAuth callback: {out}");
    let endpoint = format!("/mcp{}", server_url.path());
    assert_only(&proxy, &[("POST", endpoint.as_str())]);
    assert_login_announced(&mut login_needed).await;

    // Logged in: the same host reaches the server, with the key injected.
    proxy.source.set("mcp", &[("token", MCP_CANARY)]);
    let out = outcome(python_host(&url, &proxy.token)).await;
    assert_eq!(out["initialized"], true, "{out}");
    assert_eq!(
        out["whoami"]["fingerprint"],
        fingerprint(MCP_CANARY),
        "{out}"
    );
    assert_eq!(out["redirect_called"], 0);

    proxy.stop().await;
    let _ = server.kill().await;
}

#[tokio::test]
async fn the_typescript_sdk_host_shows_the_login_message_and_never_starts_oauth() {
    let (mut server, server_url) = start_server().await;
    let proxy = logged_out_proxy(&server_url).await;
    let url = format!("{}/mcp{}", proxy.url, server_url.path());
    let mut login_needed = proxy.state.login_needed();

    let out = outcome(typescript_host(&url, &proxy.token)).await;
    assert_eq!(out["initialized"], false, "{out}");
    let message = out["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(LOGIN_SENTENCE),
        "Latchkey's sentence reached the host: {out}"
    );
    assert!(
        message.contains("\"latchkey_error\":\"login_required\""),
        "{out}"
    );
    assert_eq!(
        out["errors"][0]["code"], 424,
        "the SDK's StreamableHTTPError carries the status: {out}"
    );
    assert_eq!(out["redirectCalled"], 0, "no OAuth redirect: {out}");
    assert_eq!(out["registered"], 0, "no client registration: {out}");
    assert_eq!(out["tokensSaved"], 0, "{out}");
    let endpoint = format!("/mcp{}", server_url.path());
    assert_only(&proxy, &[("POST", endpoint.as_str())]);
    assert_login_announced(&mut login_needed).await;

    proxy.source.set("mcp", &[("token", MCP_CANARY)]);
    let out = outcome(typescript_host(&url, &proxy.token)).await;
    assert_eq!(out["initialized"], true, "{out}");
    assert_eq!(
        out["whoami"]["fingerprint"],
        fingerprint(MCP_CANARY),
        "{out}"
    );
    assert_eq!(out["redirectCalled"], 0);

    proxy.stop().await;
    let _ = server.kill().await;
}

/// A host whose local token is stale gets `401 client_unauthorized` and starts OAuth: every
/// discovery and registration request it sends gets the quick `404` that tells the person not to
/// configure OAuth, no browser is opened, nothing loops, and only the `401`s are audited.
#[tokio::test]
async fn a_host_with_a_stale_token_is_told_not_to_configure_oauth_against_latchkey() {
    let (mut server, server_url) = start_server().await;
    let proxy = logged_out_proxy(&server_url).await;
    let url = format!("{}/mcp{}", proxy.url, server_url.path());
    let endpoint = format!("/mcp{}", server_url.path());
    let stale = "lk_revoked-or-expired-token";

    let python = outcome(python_host(&url, stale)).await;
    let from_python = proxy.requests();
    let typescript = outcome(typescript_host(&url, stale)).await;
    let from_typescript = proxy.requests()[from_python.len()..].to_vec();

    for (host, out, message, redirects, seen) in [
        (
            "python",
            &python,
            python["errors"][0]["message"].as_str(),
            &python["redirect_called"],
            &from_python,
        ),
        (
            "typescript",
            &typescript,
            typescript["errors"][0]["message"].as_str(),
            &typescript["redirectCalled"],
            &from_typescript,
        ),
    ] {
        assert_eq!(out["initialized"], false, "{host}: {out}");
        assert!(
            message.is_some_and(|m| m.contains(
                "Latchkey handles sign-in itself; log in to Latchkey, do not configure OAuth for this server."
            )),
            "{host}: the person is told not to set up OAuth: {out}"
        );
        assert_eq!(*redirects, 0, "{host}: no browser opened: {out}");
        assert_eq!(
            seen.first(),
            Some(&("POST".to_owned(), endpoint.clone())),
            "{host}: {seen:?}"
        );
        assert_eq!(
            seen.last(),
            Some(&("POST".to_owned(), "/register".to_owned())),
            "{host}: registration was its last try: {seen:?}"
        );
        assert!(
            seen[1..]
                .iter()
                .all(|(_, path)| path.contains("/.well-known/") || path == "/register"),
            "{host}: only discovery and registration after the 401: {seen:?}"
        );
        assert!(seen.len() <= 8, "{host}: no loop: {seen:?}");
    }
    let rows = crate::audit::rows(&proxy).await;
    assert!(
        rows.iter()
            .all(|r| r.path == endpoint && r.error_code.as_deref() == Some("client_unauthorized")),
        "only the 401s are audited, not the probes: {rows:?}"
    );
    assert_eq!(rows.len(), 2, "one 401 per host: {rows:?}");

    proxy.stop().await;
    let _ = server.kill().await;
}
