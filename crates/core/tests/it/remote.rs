//! A remote MCP server's state against the real peers (the sandbox's `oidc-provider` as its
//! authorization server, the TypeScript SDK's OAuth MCP server): a login stores the registration
//! and tokens in the keychain, concurrent callers past 80 % of the lifetime share one refresh
//! whose rotated refresh token is stored, and a refused refresh token means "sign in again".

use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_core::config::{Name, ServerSettings};
use latchkey_core::remote::{ACCESS_TOKEN, RemoteServer, ServerState};
use latchkey_core::vault::{MemoryStore, Vault, VaultKey};
use latchkey_testkit::mcp_auth::{McpAuthServer, OAuthMcpServer, sign_in};

fn settings(url: &url::Url) -> ServerSettings {
    ServerSettings {
        name: Name::parse("tracker").expect("name"),
        url: url.clone(),
        client_id: None,
        scopes: None,
        allow_insecure_loopback: true,
        callback_port: None,
    }
}

async fn logged_in(vault: &Vault, mcp: &OAuthMcpServer) -> RemoteServer {
    let server = RemoteServer::new(settings(mcp.url()), vault.clone()).expect("server");
    let pending = server
        .begin_login()
        .await
        .expect("discovery and registration");
    assert_eq!(server.status().state, ServerState::LoggingIn);
    let url = pending.authorize_url().clone();
    let (signed, done) = tokio::join!(
        sign_in(&url, "alice", "alice-password"),
        server.complete_login(pending)
    );
    signed.expect("sign-in page");
    done.expect("login");
    server
}

async fn stored(vault: &Vault, key: VaultKey) -> String {
    vault
        .get(&key)
        .await
        .expect("keychain")
        .map(|s| s.expose().to_owned())
        .unwrap_or_default()
}

fn tokens_key() -> VaultKey {
    VaultKey::ServerTokens {
        server: "tracker".into(),
    }
}

#[tokio::test]
async fn concurrent_callers_past_eighty_percent_share_one_refresh_stored_before_use() {
    let auth = McpAuthServer::start(2).await.expect("authorization server");
    let mcp = OAuthMcpServer::start(auth.issuer())
        .await
        .expect("MCP server");
    let vault = Vault::new(Arc::new(MemoryStore::new()));
    let server = Arc::new(logged_in(&vault, &mcp).await);
    let status = server.status();
    assert_eq!(status.state, ServerState::Ready);
    assert_eq!(status.issuer.as_deref(), Some(auth.issuer()));
    assert!(
        stored(
            &vault,
            VaultKey::ServerClient {
                server: "tracker".into()
            }
        )
        .await
        .contains("\"client_id\""),
        "the registration is in the keychain"
    );
    let before = stored(&vault, tokens_key()).await;
    let first = server.credentials().await.expect("token");

    // Past 80 % of the 2 s lifetime.
    let due = Instant::now() + Duration::from_millis(1700);
    while Instant::now() < due {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move { server.credentials().await })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.expect("join").expect("refreshed token"));
    }
    assert_eq!(
        auth.stats().await.expect("stats").refresh_grants,
        1,
        "one refresh in flight"
    );
    assert!(
        results.iter().all(|r| Arc::ptr_eq(r, &results[0])),
        "all share its result"
    );
    assert_ne!(
        results[0][ACCESS_TOKEN].expose(),
        first[ACCESS_TOKEN].expose(),
        "a new access token"
    );
    let after = stored(&vault, tokens_key()).await;
    assert_ne!(before, after, "the rotated tokens are in the keychain");
    assert!(after.contains(results[0][ACCESS_TOKEN].expose()));
}

#[tokio::test]
async fn a_refused_refresh_token_means_sign_in_again_naming_the_server() {
    let auth = McpAuthServer::start(60)
        .await
        .expect("authorization server");
    let mcp = OAuthMcpServer::start(auth.issuer())
        .await
        .expect("MCP server");
    let vault = Vault::new(Arc::new(MemoryStore::new()));
    let server = logged_in(&vault, &mcp).await;
    let used = server.credentials().await.expect("token");
    // A refresh rotates the refresh token; the keychain keeps the old one to replay below.
    let old = stored(&vault, tokens_key()).await;
    server.rejected(&used).await.expect("refreshed");
    assert_eq!(auth.stats().await.expect("stats").refresh_grants, 1);

    // A restart from a keychain holding the spent refresh token: the provider refuses it.
    vault
        .put(&tokens_key(), &latchkey_core::secret::Secret::new(old))
        .await
        .expect("put");
    let restarted = RemoteServer::new(settings(mcp.url()), vault.clone()).expect("server");
    restarted.restore().await.expect("restore");
    let stale = restarted.credentials().await.expect("still unexpired");
    let e = restarted.rejected(&stale).await.expect_err("invalid_grant");
    assert_eq!(e.code(), latchkey_core::Code::ServerLoginRequired);
    let status = restarted.status();
    assert_eq!(status.state, ServerState::NeedsLogin);
    assert!(
        status
            .message
            .is_some_and(|m| m.contains("latchkey server login tracker")),
        "says what to do"
    );
}

#[tokio::test]
async fn an_idle_server_is_refreshed_in_the_background_before_its_token_expires() {
    // Access tokens live 3 s; nobody asks for one for longer than that.
    let auth = McpAuthServer::start(3).await.expect("authorization server");
    let mcp = OAuthMcpServer::start(auth.issuer())
        .await
        .expect("MCP server");
    let vault = Vault::new(Arc::new(MemoryStore::new()));
    let server = Arc::new(logged_in(&vault, &mcp).await);
    let first_expiry = server.status().expires_at.expect("expiry");
    let before = stored(&vault, tokens_key()).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let refresher = tokio::spawn(server.clone().run_refresher(async {
        let _ = stopped.await;
    }));

    // The condition, with a deadline: two refreshes at the AS, with no request.
    let deadline = Instant::now() + Duration::from_secs(20);
    while auth.stats().await.expect("stats").refresh_grants < 2 {
        assert!(Instant::now() < deadline, "no background refresh");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = server.status();
    assert_eq!(status.state, ServerState::Ready);
    assert!(
        status.expires_at.expect("expiry") > first_expiry,
        "a later expiry"
    );
    assert!(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            > u64::try_from(first_expiry).expect("positive"),
        "the first token's lifetime is over"
    );
    let after = stored(&vault, tokens_key()).await;
    assert_ne!(before, after, "the rotated tokens are in the keychain");

    // A request now needs no refresh of its own: the token in hand is accepted at once.
    let token_requests = auth.stats().await.expect("stats").token_requests;
    let values = server.credentials().await.expect("token");
    assert!(
        after.contains(values[ACCESS_TOKEN].expose()),
        "the stored token is served"
    );
    let answer = reqwest::Client::new()
        .post(mcp.url().clone())
        .bearer_auth(values[ACCESS_TOKEN].expose())
        .header("accept", "application/json, text/event-stream")
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .expect("MCP server");
    assert_eq!(answer.status(), 200, "no 401 round trip");
    let grown = auth.stats().await.expect("stats").token_requests - token_requests;
    assert!(
        grown <= 1,
        "at most the refresher's own next refresh: {grown}"
    );

    let _ = stop.send(());
    refresher.await.expect("the refresher ends on shutdown");
}
