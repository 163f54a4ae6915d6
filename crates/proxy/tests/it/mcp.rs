//! Real MCP over the proxy: the official TypeScript SDK's Streamable HTTP server (which demands an
//! `X-API-Key`) behind a route that injects that key, reached by the TypeScript SDK client and by
//! the Rust SDK (`rmcp`) holding only a Latchkey client token. The server's `whoami` tool reports
//! the fingerprint of the key it received and whether any client credential header reached it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use latchkey_proxy::Route;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use url::Url;

use crate::support::{MapSource, Options, Proxy, Upstream, header_injection};

/// The API key the MCP server expects (a canary: it must never reach a log line).
pub(crate) const MCP_CANARY: &str = "canary-mcp-bearer-6d0f3b";

/// First 12 hex digits of SHA-256, as `tools.mjs` computes it.
pub(crate) fn fingerprint(value: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(value.as_bytes())[..6])
}

/// What `whoami` answered: the key reached the server, no client credential did.
fn assert_whoami(answer: &serde_json::Value) {
    assert_eq!(
        answer["fingerprint"],
        fingerprint(MCP_CANARY),
        "the injected key reached the server: {answer}"
    );
    assert_eq!(
        answer["authorization"], false,
        "no Authorization reached the server: {answer}"
    );
    assert_eq!(
        answer["latchkeyClient"], false,
        "no X-Latchkey-Client reached the server: {answer}"
    );
}

pub(crate) fn mcp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/mcp")
}

/// `server-http.mjs` on port 0, and the URL from its first stdout line.
pub(crate) async fn start_server() -> (Child, Url) {
    let dir = mcp_dir();
    assert!(
        dir.join("server-http.mjs").is_file() && dir.join("node_modules").is_dir(),
        "tests/mcp/node_modules is missing: run scripts/setup (npm ci in tests/mcp)"
    );
    let mut child = Command::new("node")
        .arg(dir.join("server-http.mjs"))
        .args(["--port", "0", "--expect-key", MCP_CANARY])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(url) = v["url"].as_str()
            {
                return Some(url.to_owned());
            }
        }
        None
    })
    .await
    .expect("the MCP server is ready in time")
    .expect("a ready line with a URL");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, Url::parse(&ready).expect("server URL"))
}

/// A JSON-RPC POST to an MCP Streamable HTTP endpoint, with the headers the transport requires.
fn mcp_post(client: &reqwest::Client, url: &str, body: &'static str) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)
}

/// A proxy whose `mcp` route points at the server and injects its API key.
async fn proxy_for(server: &Url) -> Proxy {
    let mut base = server.clone();
    base.set_path("/");
    let route = Route::new(
        "mcp",
        base,
        vec![header_injection("token", "X-API-Key", "")],
    )
    .expect("route");
    let source = std::sync::Arc::new(MapSource::with_canaries());
    source.set("mcp", &[("token", MCP_CANARY)]);
    Proxy::start_in_front_of(
        Upstream::start().await,
        Options {
            extra_routes: vec![route],
            source,
            ..Options::default()
        },
    )
    .await
}

#[tokio::test]
async fn the_typescript_sdk_client_talks_to_a_protected_server_through_the_proxy() {
    let (mut server, server_url) = start_server().await;
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let direct = mcp_post(&reqwest::Client::new(), server_url.as_str(), ping)
        .send()
        .await
        .expect("direct request");
    assert_eq!(
        direct.status(),
        401,
        "the server itself refuses a caller without the key"
    );

    let proxy = proxy_for(&server_url).await;
    let url = format!("{}/mcp{}", proxy.url, server_url.path());
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("node")
            .arg(mcp_dir().join("client.mjs"))
            .args([
                "--url",
                &url,
                "--header",
                &format!("Authorization: Bearer {}", proxy.token),
                "--header",
                "X-API-Key: the-clients-own-guess",
                "--count",
                "3",
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the client finishes in time")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client.mjs: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON lines from client.mjs"));
    let whoami = lines.next().expect("whoami's answer");
    assert_whoami(&whoami);
    let answer = lines.next().expect("count's answer");
    assert!(
        answer["notifications"].as_u64().is_some_and(|n| n >= 1),
        "a streamed notification: {answer}"
    );
    assert_eq!(answer["result"], "counted 3", "{answer}");
    assert!(
        !stdout.contains(MCP_CANARY),
        "the client never saw the server's token"
    );

    proxy.stop().await;
    let _ = server.kill().await;
}

#[tokio::test]
async fn the_rust_sdk_lists_and_calls_tools_through_the_proxy() {
    use rmcp::ServiceExt;
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let (mut server, server_url) = start_server().await;
    let proxy = proxy_for(&server_url).await;
    let url = format!("{}/mcp{}", proxy.url, server_url.path());
    let mut headers = std::collections::HashMap::new();
    headers.insert(
        http::HeaderName::from_static("x-latchkey-client"),
        http::HeaderValue::from_str(&proxy.token).expect("header value"),
    );
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url).custom_headers(headers),
    );
    let client = tokio::time::timeout(Duration::from_secs(30), ().serve(transport))
        .await
        .expect("initialised in time")
        .expect("initialise through the proxy");
    let tools = client.list_tools(None).await.expect("tools/list");
    assert!(
        tools.tools.iter().any(|t| t.name == "echo"),
        "the server's tools: {:?}",
        tools.tools
    );
    let mut arguments = serde_json::Map::new();
    arguments.insert(
        "text".to_owned(),
        serde_json::Value::from("through latchkey"),
    );
    let result = client
        .call_tool(CallToolRequestParams::new("echo").with_arguments(arguments))
        .await
        .expect("tools/call");
    let text = serde_json::to_string(&result.content).expect("content");
    assert!(
        text.contains("through latchkey"),
        "the echo came back: {text}"
    );
    let who = client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .expect("whoami");
    let text = who
        .content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.clone()))
        .expect("whoami text");
    assert_whoami(&serde_json::from_str(&text).expect("whoami JSON"));
    client.cancel().await.expect("close the session");

    proxy.stop().await;
    let _ = server.kill().await;
}

/// Node's HTTP server (under the official TypeScript SDK) answers with `Connection: keep-alive`
/// (and a refusal also with `Keep-Alive: timeout=…`), unlike the hyper and axum upstreams of the
/// other tests. Both describe the proxy's own upstream connection, so the client never sees
/// them, and the answer itself passes.
#[tokio::test]
async fn a_node_upstreams_hop_by_hop_headers_stay_behind() {
    let (mut server, server_url) = start_server().await;
    let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"hop-by-hop","version":"1"}}}"#;
    let direct = mcp_post(&reqwest::Client::new(), server_url.as_str(), initialize)
        .header("x-api-key", MCP_CANARY)
        .send()
        .await
        .expect("direct request");
    assert_eq!(direct.status(), 200);
    let sent = direct.headers().clone();
    assert_eq!(
        sent.get("connection").map(|v| v.as_bytes()),
        Some(&b"keep-alive"[..]),
        "the peer sends what this test is about: {sent:?}"
    );

    let proxy = proxy_for(&server_url).await;
    let url = format!("{}/mcp{}", proxy.url, server_url.path());
    let through = mcp_post(&proxy.client(), &url, initialize)
        .header("x-latchkey-client", &proxy.token)
        .send()
        .await
        .expect("request through the proxy");
    assert_eq!(through.status(), 200, "the injected key opened the server");
    let answered = through.headers().clone();
    assert!(!answered.contains_key("keep-alive"), "{answered:?}");
    assert!(
        answered
            .get_all("connection")
            .iter()
            .all(|v| !v.as_bytes().eq_ignore_ascii_case(b"keep-alive")),
        "the upstream's Connection stays behind: {answered:?}"
    );
    let body = through.text().await.expect("body");
    assert!(
        body.contains(r#""id":1"#),
        "the answer itself passes: {body}"
    );
    proxy.stop().await;
    let _ = server.kill().await;
}
