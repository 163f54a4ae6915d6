//! Unit tests of a remote server's state without the network: tokens restored from the
//! keychain, the refresh threshold, step-up scopes, and removal wiping the keychain.

use std::sync::Arc;

use super::*;
use crate::config::Name;
use crate::secret::Secret;
use crate::vault::MemoryStore;

fn settings() -> ServerSettings {
    ServerSettings {
        name: Name::parse("linear").expect("name"),
        url: Url::parse("https://mcp.example.com/mcp").expect("url"),
        client_id: None,
        scopes: None,
        allow_insecure_loopback: false,
        callback_port: None,
    }
}

fn client() -> StoredClient {
    StoredClient {
        issuer: "https://as.example.com".into(),
        authorization_endpoint: Url::parse("https://as.example.com/auth").expect("url"),
        token_endpoint: Url::parse("https://as.example.com/token").expect("url"),
        revocation_endpoint: None,
        metadata_url: Url::parse("https://as.example.com/.well-known/x").expect("url"),
        iss_supported: true,
        client_id: "c1".into(),
        client_secret: Some(Secret::new("client-secret-canary")),
        auth_method: "client_secret_basic".into(),
        method: "dynamic".into(),
        resource: "https://mcp.example.com/mcp".into(),
    }
}

fn tokens(issued_at: i64, expires_at: i64) -> StoredServerTokens {
    StoredServerTokens {
        access_token: Secret::new("access-canary"),
        refresh_token: None,
        expires_at,
        issued_at,
        scopes: vec!["read".into()],
        resource: "https://mcp.example.com/mcp".into(),
    }
}

async fn restored(vault: &Vault, t: Option<StoredServerTokens>) -> RemoteServer {
    stored::save_client(vault, "linear", &client())
        .await
        .expect("client");
    if let Some(t) = t {
        stored::save_tokens(vault, "linear", &t)
            .await
            .expect("tokens");
    }
    let server = RemoteServer::new(settings(), vault.clone()).expect("server");
    server.restore().await.expect("restore");
    server
}

#[tokio::test]
async fn tokens_kept_in_the_keychain_serve_after_a_restart_without_the_network() {
    let vault = Vault::new(Arc::new(MemoryStore::new()));
    let server = restored(&vault, Some(tokens(unix_seconds(), unix_seconds() + 3600))).await;
    let status = server.status();
    assert_eq!(status.state, ServerState::Ready);
    assert_eq!(status.issuer.as_deref(), Some("https://as.example.com"));
    let values = server.credentials().await.expect("token");
    assert_eq!(values[ACCESS_TOKEN].expose(), "access-canary");
    let again = server.credentials().await.expect("token");
    assert!(
        Arc::ptr_eq(&values, &again),
        "the same values while unchanged"
    );
    let debug = format!("{server:?} {:?} {:?}", client(), tokens(0, 1));
    assert!(!debug.contains("canary"), "no secret in Debug: {debug}");
}

#[tokio::test]
async fn a_server_without_tokens_or_with_expired_unrenewable_ones_needs_a_login() {
    let vault = Vault::new(Arc::new(MemoryStore::new()));
    let server = restored(&vault, None).await;
    assert_eq!(server.status().state, ServerState::NeedsLogin);
    let e = server.credentials().await.expect_err("no tokens");
    assert_eq!(e.code(), crate::Code::ServerLoginRequired);
    assert!(
        e.to_string().contains("latchkey server login linear"),
        "{e}"
    );

    let server = restored(
        &vault,
        Some(tokens(unix_seconds() - 7200, unix_seconds() - 3600)),
    )
    .await;
    assert_eq!(server.status().state, ServerState::NeedsLogin);
    assert_eq!(
        server.credentials().await.expect_err("expired").code(),
        crate::Code::ServerLoginRequired
    );
}

#[test]
fn a_refresh_is_due_at_about_eighty_percent_of_the_lifetime() {
    let t = tokens(1000, 2000);
    assert!(!t.refresh_due(1799));
    assert!(t.refresh_due(1800));
}

#[tokio::test]
async fn insufficient_scope_asks_the_next_login_for_the_union() {
    let vault = Vault::new(Arc::new(MemoryStore::new()));
    let server = restored(&vault, Some(tokens(unix_seconds(), unix_seconds() + 3600))).await;
    let union = server.step_up(&["mcp:admin".into(), "read".into()]);
    assert_eq!(union, ["read", "mcp:admin"]);
    assert_eq!(server.status().state, ServerState::NeedsStepUp);
    assert_eq!(
        server.credentials().await.expect_err("step-up").code(),
        crate::Code::ServerStepUpRequired
    );
    assert_eq!(
        server.login_scopes(vec!["read".into(), "write".into()]),
        ["read", "write", "mcp:admin"]
    );
}

#[tokio::test]
async fn removing_a_server_wipes_its_keychain_entries() {
    let vault = Vault::new(Arc::new(MemoryStore::new()));
    let server = restored(&vault, Some(tokens(unix_seconds(), unix_seconds() + 3600))).await;
    let note = server.remove().await.expect("removed");
    assert!(note.is_some(), "no revocation endpoint is said");
    for key in [
        VaultKey::ServerTokens {
            server: "linear".into(),
        },
        VaultKey::ServerClient {
            server: "linear".into(),
        },
    ] {
        assert!(
            vault.get(&key).await.expect("get").is_none(),
            "{key:?} gone"
        );
    }
    assert_eq!(server.status().state, ServerState::NeedsLogin);
}
