//! Remote MCP servers that speak OAuth, end to end as a person uses them: `latchkey server add`
//! against the TypeScript SDK's OAuth MCP server and the sandbox's `oidc-provider`, the sign-in
//! page, an SDK host calling tools through `latchkey serve` with its local client token, refresh
//! on expiry, a restart without a new sign-in, a step-up on `insufficient_scope`, and removal
//! (revoked at the provider, nothing left in the keychain or the configuration).

use std::process::Stdio;
use std::time::{Duration, Instant};

use latchkey_e2e::{Home, Serve};
use latchkey_testkit::mcp_auth::{
    CimdAuthServer, McpAuthServer, OAuthMcpServer, SdkAuthServer, sign_in,
};
use serde_json::Value;

use crate::keychain_available;

/// A home with one account that is never logged in (the servers need none).
const CONFIG: &str = r#"version = 1
# Latchkey's own comment, to survive `server add` and `server remove`.
[[accounts]]
name = "work"
issuer = "https://idp.example.com"
client_id = "latchkey"
"#;

/// Runs `latchkey <args> --no-browser`, signs in to the printed URL as alice, and returns the
/// command's output once it exited.
async fn with_sign_in(home: &Home, args: &[&str]) -> latchkey_e2e::Output {
    with_sign_in_fed(home, args, None).await
}

/// [`with_sign_in`] with `stdin` (when given) written to the command's standard input.
async fn with_sign_in_fed(home: &Home, args: &[&str], stdin: Option<&str>) -> latchkey_e2e::Output {
    let mut command = home.command(args);
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("latchkey");
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        input.write_all(text.as_bytes()).expect("stdin");
        // Dropped here: the command sees the end of its input.
    }
    let stdout = child.stdout.take().expect("stdout");
    let url = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("http://"))
    })
    .await
    .expect("join");
    if let Some(url) = url {
        let url = url::Url::parse(&url).expect("a URL");
        sign_in(&url, "alice", "alice-password")
            .await
            .expect("sign-in page");
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    latchkey_e2e::Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The SDK host through the proxy: one JSON line (see `tests/mcp/client-remote.mjs`).
fn host(serve: &Serve, path: &str, token: &str) -> Value {
    let out = latchkey_e2e::node("tests/mcp/client-remote.mjs")
        .args([
            "--url",
            &format!("{}/{path}", serve.url),
            "--header",
            &format!("X-Latchkey-Client: {token}"),
            "--count",
            "3",
        ])
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client-remote.mjs crashed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let statuses: Vec<u64> = answer["statuses"]
        .as_array()
        .expect("statuses")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert!(
        !statuses.contains(&401) && !statuses.contains(&403),
        "the host never sees the server's OAuth refusals: {answer}"
    );
    assert_eq!(
        answer["challenges"], 0,
        "no WWW-Authenticate reached the host: {answer}"
    );
    answer
}

fn servers(home: &Home) -> Vec<Value> {
    let out = home.run(&["server", "list", "--json"], "").expect("list");
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str::<Value>(&out.stdout)
        .expect("json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Keychain entries of remote servers under this home's namespace.
fn server_entries(home: &Home) -> Vec<String> {
    let out = std::process::Command::new("secret-tool")
        .args(["search", "--all", "service", home.keychain_namespace()])
        .output()
        .expect("secret-tool");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter_map(|l| l.strip_prefix("attribute.username = "))
        .filter(|user| user.starts_with("server-"))
        .map(str::to_owned)
        .collect()
}

fn config_text(home: &Home) -> String {
    std::fs::read_to_string(home.config_dir().join("config.toml")).expect("config")
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn a_remote_oauth_server_is_added_used_refreshed_restarted_stepped_up_and_removed() {
    if !keychain_available() {
        return;
    }
    // Access tokens live 3 s: the second round of calls needs a refresh.
    let auth = McpAuthServer::start(3).await.expect("authorization server");
    let mcp = OAuthMcpServer::start(auth.issuer())
        .await
        .expect("MCP server");
    let home = Home::new(CONFIG).expect("home");
    let serve = home.serve().expect("serve");

    let added = with_sign_in(
        &home,
        &[
            "server",
            "add",
            mcp.url().as_str(),
            "--name",
            "tracker",
            "--no-browser",
            "--allow-insecure-loopback",
        ],
    )
    .await;
    assert_eq!(added.code, 0, "server add: {}", added.stderr);
    assert!(
        added.stderr.contains("/tracker/mcp"),
        "says where hosts reach it: {}",
        added.stderr
    );
    let config = config_text(&home);
    assert!(
        config.starts_with(CONFIG),
        "the person's file is kept: {config}"
    );
    assert!(config.contains("name = \"tracker\""), "{config}");
    assert_eq!(auth.stats().await.expect("stats").registrations, 1);
    let listed = servers(&home);
    assert_eq!(listed[0]["state"], "ready", "{listed:?}");
    assert_eq!(listed[0]["issuer"], auth.issuer(), "{listed:?}");

    // A host with its own local client token, picked up by the running instance at once.
    let client = home
        .run(&["client", "add", "host", "--service", "tracker"], "")
        .expect("client add");
    assert_eq!(client.code, 0, "{}", client.stderr);
    let token = client.stdout.trim().to_owned();
    let first = host(&serve, "tracker/mcp", &token);
    assert_eq!(first["whoami"]["subject"], "alice", "{first}");
    assert_eq!(
        first["notifications"], 3,
        "progress streamed intact: {first}"
    );

    // Past the access token's expiry: the next call refreshes first.
    let expires_at = listed[0]["expires_at"].as_i64().expect("expiry");
    let deadline = Instant::now() + Duration::from_secs(20);
    while time_now() <= expires_at && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refreshed = host(&serve, "tracker/mcp", &token);
    assert_eq!(refreshed["whoami"]["subject"], "alice", "{refreshed}");
    let stats = auth.stats().await.expect("stats");
    assert!(stats.refresh_grants >= 1, "refreshed: {stats:?}");

    // A restart restores the tokens from the keychain: no new registration, no sign-in.
    serve.stop().expect("stop");
    let serve = home.serve().expect("serve again");
    let restarted = host(&serve, "tracker/mcp", &token);
    assert_eq!(restarted["whoami"]["subject"], "alice", "{restarted}");
    assert_eq!(auth.stats().await.expect("stats").registrations, 1);

    // `/admin/mcp` wants `mcp:admin`: a step-up for the person, a JSON-RPC error for the host.
    let refused = host(&serve, "tracker/admin/mcp", &token);
    // The TypeScript SDK shows a non-2xx answer's body as the error (the JSON-RPC error inside).
    assert_eq!(refused["error"]["code"], 424, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(r#""latchkey_error":"step_up_required""#)
            && message.contains("latchkey server login tracker"),
        "{refused}"
    );
    let listed = servers(&home);
    assert_eq!(listed[0]["state"], "needs_step_up", "{listed:?}");
    let login = with_sign_in(&home, &["server", "login", "tracker", "--no-browser"]).await;
    assert_eq!(login.code, 0, "server login: {}", login.stderr);
    let admin = host(&serve, "tracker/admin/mcp", &token);
    let scopes = admin["whoami"]["scopes"].to_string();
    assert!(
        scopes.contains("mcp:admin") && scopes.contains("mcp:tools"),
        "the union: {admin}"
    );
    assert_eq!(servers(&home)[0]["state"], "ready");

    // Removal revokes at the provider and leaves nothing behind.
    assert!(!server_entries(&home).is_empty(), "tokens were kept");
    let revoked_before = auth.stats().await.expect("stats").grants_revoked;
    let removed = home
        .run(&["server", "remove", "tracker"], "")
        .expect("remove");
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert!(removed.stderr.contains("revoked"), "{}", removed.stderr);
    assert!(
        auth.stats().await.expect("stats").grants_revoked > revoked_before,
        "the grant is revoked at the provider"
    );
    assert_eq!(
        server_entries(&home),
        Vec::<String>::new(),
        "no keychain entry"
    );
    assert_eq!(
        config_text(&home),
        CONFIG,
        "the entry is gone, the rest kept"
    );
    assert!(servers(&home).is_empty());
    let logs = serve.stop().expect("stop");
    assert!(!logs.contains("alice-password"), "no password in the logs");
    // The provider's access and refresh tokens are JWTs or random strings; a JWT starts `eyJ`.
    assert!(!logs.contains("eyJ"), "no token in the logs");
    for out in [&added, &login, &removed] {
        assert!(
            !out.stdout.contains("eyJ") && !out.stderr.contains("eyJ"),
            "no token printed"
        );
    }
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn a_refused_server_add_stores_nothing_and_says_why() {
    if !keychain_available() {
        return;
    }
    let home = Home::new(CONFIG).expect("home");
    let _serve = home.serve().expect("serve");
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let out = home
        .run(
            &[
                "server",
                "add",
                &url,
                "--no-browser",
                "--allow-insecure-loopback",
            ],
            "",
        )
        .expect("server add");
    assert_eq!(out.code, 8, "a failed sign-in: {}", out.stderr);
    assert!(
        out.stderr.contains("[mcp_oauth_unreachable]"),
        "{}",
        out.stderr
    );
    // Plain http without the setting is refused before anything is asked.
    let out = home
        .run(&["server", "add", &url, "--no-browser"], "")
        .expect("server add");
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("allow_insecure_loopback"),
        "{}",
        out.stderr
    );
    assert_eq!(config_text(&home), CONFIG, "nothing written");
    assert_eq!(
        server_entries(&home),
        Vec::<String>::new(),
        "nothing stored"
    );
    assert!(servers(&home).is_empty());
}

/// A loopback port free now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A host's client token for `service`, added to the running instance.
fn client_token(home: &Home, service: &str) -> String {
    let client = home
        .run(&["client", "add", "host", "--service", service], "")
        .expect("client add");
    assert_eq!(client.code, 0, "{}", client.stderr);
    client.stdout.trim().to_owned()
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn the_sdk_authorization_server_matching_redirect_uris_exactly_works_with_a_callback_port() {
    if !keychain_available() {
        return;
    }
    // Another make of authorization server: exact redirect URIs (port included), no `iss`,
    // opaque tokens checked by introspection, no refresh token.
    let auth = SdkAuthServer::start()
        .await
        .expect("SDK authorization server");
    let mcp = OAuthMcpServer::start_introspecting(auth.issuer())
        .await
        .expect("MCP server");
    let home = Home::new(CONFIG).expect("home");
    let serve = home.serve().expect("serve");
    let port = free_port().to_string();
    let added = with_sign_in(
        &home,
        &[
            "server",
            "add",
            mcp.url().as_str(),
            "--name",
            "sdk",
            "--callback-port",
            &port,
            "--scopes",
            "mcp:tools",
            "--no-browser",
            "--allow-insecure-loopback",
        ],
    )
    .await;
    assert_eq!(added.code, 0, "server add: {}", added.stderr);
    let config = config_text(&home);
    assert!(
        config.contains(&format!("callback_port = {port}")),
        "the port is kept for later logins: {config}"
    );
    assert!(config.contains(r#"scopes = ["mcp:tools"]"#), "{config}");
    let listed = servers(&home);
    assert_eq!(listed[0]["state"], "ready", "{listed:?}");
    assert_eq!(listed[0]["issuer"], auth.issuer(), "{listed:?}");

    let token = client_token(&home, "sdk");
    let answer = host(&serve, "sdk/mcp", &token);
    assert!(
        answer["error"].is_null(),
        "tools/list through the proxy: {answer}"
    );

    // A later login listens on the same port: the SDK accepts no other.
    let again = with_sign_in(&home, &["server", "login", "sdk", "--no-browser"]).await;
    assert_eq!(again.code, 0, "server login: {}", again.stderr);
    let answer = host(&serve, "sdk/mcp", &token);
    assert!(answer["error"].is_null(), "{answer}");
    serve.stop().expect("stop");
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn a_client_metadata_document_is_used_before_dynamic_registration() {
    if !keychain_available() {
        return;
    }
    let auth = CimdAuthServer::start(600)
        .await
        .expect("CIMD authorization server");
    let mcp = OAuthMcpServer::start(auth.issuer())
        .await
        .expect("MCP server");
    let config = format!(
        "client_metadata_url = \"{}\"\n{CONFIG}",
        auth.document_url()
    );
    let home = Home::new(&config).expect("home");
    let serve = home.serve().expect("serve");
    let added = with_sign_in(
        &home,
        &[
            "server",
            "add",
            mcp.url().as_str(),
            "--name",
            "tracker",
            "--no-browser",
            "--allow-insecure-loopback",
        ],
    )
    .await;
    assert_eq!(added.code, 0, "server add: {}", added.stderr);
    let stats = auth.stats().await.expect("stats");
    assert_eq!(
        stats.registrations, 0,
        "no Dynamic Client Registration: {stats:?}"
    );
    assert!(
        stats.document_fetches >= 1,
        "the AS fetched the document over HTTPS: {stats:?}"
    );
    let token = client_token(&home, "tracker");
    let answer = host(&serve, "tracker/mcp", &token);
    assert_eq!(answer["whoami"]["subject"], "alice", "{answer}");
    serve.stop().expect("stop");
}

/// The pre-registered confidential client's secret (a canary: only the keychain may hold it).
const CLIENT_SECRET: &str = "e2e-pre-registered-secret-canary-b71e";

/// The keychain entries of this home's namespace with their secrets (`secret-tool` prints them).
fn keychain_dump(home: &Home) -> String {
    let out = std::process::Command::new("secret-tool")
        .args(["search", "--all", "service", home.keychain_namespace()])
        .output()
        .expect("secret-tool");
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn a_pre_registered_confidential_client_signs_in_with_its_secret_kept_in_the_keychain_only() {
    if !keychain_available() {
        return;
    }
    // The AS advertises one secret method at a time: Latchkey must send the secret its way.
    for method in ["client_secret_basic", "client_secret_post"] {
        let auth = McpAuthServer::start_with_client(600, "pre-registered", CLIENT_SECRET, method)
            .await
            .expect("MCP authorization server");
        let mcp = OAuthMcpServer::start(auth.issuer())
            .await
            .expect("MCP server");
        let home = Home::new(CONFIG).expect("home");
        let serve = home.serve().expect("serve");
        let add = [
            "server",
            "add",
            mcp.url().as_str(),
            "--name",
            "tracker",
            "--client-id",
            "pre-registered",
            "--client-secret-stdin",
            "--no-browser",
            "--allow-insecure-loopback",
        ];

        // A wrong secret: the AS refuses the code exchange, the add says so and keeps nothing.
        let refused = with_sign_in_fed(&home, &add, Some("not-the-secret\n")).await;
        assert_ne!(
            refused.code, 0,
            "{method}: a wrong secret: {}",
            refused.stderr
        );
        assert!(
            refused.stderr.contains("[mcp_oauth_token_request_failed]")
                && refused.stderr.contains("invalid_client"),
            "{method}: the error names the client authentication: {}",
            refused.stderr
        );
        assert_eq!(config_text(&home), CONFIG, "{method}: nothing written");
        assert_eq!(
            server_entries(&home),
            Vec::<String>::new(),
            "{method}: nothing stored"
        );
        assert!(servers(&home).is_empty(), "{method}");

        let added = with_sign_in_fed(&home, &add, Some(&format!("{CLIENT_SECRET}\n"))).await;
        assert_eq!(added.code, 0, "{method}: server add: {}", added.stderr);
        let stats = auth.stats().await.expect("stats");
        assert_eq!(
            stats.registrations, 0,
            "{method}: no Dynamic Client Registration: {stats:?}"
        );
        let (sent_this_way, sent_the_other) = match method {
            "client_secret_basic" => (stats.client_secret_basic, stats.client_secret_post),
            _ => (stats.client_secret_post, stats.client_secret_basic),
        };
        assert!(
            sent_this_way >= 1 && sent_the_other == 0,
            "{method}: the secret went the way the metadata allows: {stats:?}"
        );
        let config = config_text(&home);
        assert!(
            config.contains(r#"client_id = "pre-registered""#),
            "{method}: the id is configuration: {config}"
        );
        assert!(
            !config.contains(CLIENT_SECRET),
            "{method}: the secret is not: {config}"
        );
        assert!(
            keychain_dump(&home).contains(CLIENT_SECRET),
            "{method}: the secret is in the keychain: {:?}",
            server_entries(&home)
        );
        let listed = servers(&home);
        assert_eq!(listed[0]["state"], "ready", "{method}: {listed:?}");

        let token = client_token(&home, "tracker");
        let answer = host(&serve, "tracker/mcp", &token);
        assert!(
            answer["error"].is_null(),
            "{method}: tools/list through the proxy: {answer}"
        );
        assert_eq!(answer["whoami"]["subject"], "alice", "{method}: {answer}");

        let logs = serve.stop().expect("stop");
        for (what, text) in [
            ("serve", &logs),
            ("add stderr", &added.stderr),
            ("add stdout", &added.stdout),
            ("refused add stderr", &refused.stderr),
        ] {
            assert!(
                !text.contains(CLIENT_SECRET),
                "{method}: the secret is in the {what} logs"
            );
        }
    }
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn a_servers_only_configuration_runs_and_a_refusal_names_the_server_to_log_in_to() {
    if !keychain_available() {
        return;
    }
    // No [[accounts]] at all; the server was never signed in to.
    let config = format!(
        "version = 1\n\n[[servers]]\nname = \"tracker\"\nurl = \"http://127.0.0.1:{}/mcp\"\nallow_insecure_loopback = true\n",
        free_port()
    );
    let home = Home::new(&config).expect("home");
    let serve = home.serve().expect("a servers-only configuration starts");
    let listed = servers(&home);
    assert_eq!(listed[0]["state"], "needs_login", "{listed:?}");
    assert!(listed[0]["login_requested"].is_null(), "nobody asked yet");

    let token = client_token(&home, "tracker");
    let answer = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(format!("{}/tracker/mcp", serve.url))
        .header("X-Latchkey-Client", &token)
        .header("accept", "application/json, text/event-stream")
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .expect("proxy");
    assert_ne!(
        answer.status(),
        401,
        "never a 401 that starts OAuth in the host"
    );
    let body: Value = answer.json().await.expect("JSON-RPC error");
    assert!(
        body.to_string().contains("latchkey server login tracker"),
        "{body}"
    );

    // The refusal becomes the server's login request (announced asynchronously).
    let deadline = Instant::now() + Duration::from_secs(10);
    let requested = loop {
        let listed = servers(&home);
        if !listed[0]["login_requested"].is_null() {
            break listed[0]["login_requested"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no login request for the server: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(requested["client"], "host", "{requested}");
    assert_eq!(requested["service"], "tracker", "{requested}");
    serve.stop().expect("stop");
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
