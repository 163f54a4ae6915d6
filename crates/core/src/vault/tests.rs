//! Vault unit tests: an in-memory store with fault injection, plus a child process without D-Bus.
//! The real Secret Service is tried by `tests/it/keychain.rs` (ignored outside
//! `scripts/with-keychain`).

use std::sync::Arc;
use std::time::Duration;

use super::*;

const CANARY: &str = "canary-vault-51d0c";

fn tokens(access: &str) -> StoredTokens {
    StoredTokens {
        access_token: Secret::new(access),
        refresh_token: Some(Secret::new(format!("{CANARY}-refresh"))),
        id_token: None,
        expires_at: 2_000_000_000,
        issued_at: 1_999_996_400,
        user: StoredUser {
            subject: "user-1".to_owned(),
            name: Some("Ada".to_owned()),
            email: None,
        },
        issuer: Some("https://idp.example.com".to_owned()),
    }
}

fn credentials(value: &str) -> StoredCredentials {
    let mut values = BTreeMap::new();
    values.insert("token".to_owned(), Secret::new(value));
    values.insert("user".to_owned(), Secret::new("bot"));
    StoredCredentials {
        values,
        fetched_at: 1_700_000_000,
        ttl_seconds: 3600,
    }
}

fn memory() -> (Arc<MemoryStore>, Vault) {
    let store = Arc::new(MemoryStore::new().with_value_limit(CHUNK_LIMIT));
    let vault = Vault::with_namespace(store.clone(), "test.latchkey");
    (store, vault)
}

fn big_value(len: usize) -> String {
    (0..len)
        .map(|i| char::from(b'a' + u8::try_from(i % 26).expect("below 26")))
        .collect()
}

/// Exercises every operation against `vault`; shared by the memory and Secret Service tests.
async fn round_trips(vault: &Vault, account: &str) {
    let key = VaultKey::ManualSecret {
        service: format!("{account}-svc"),
    };
    vault.put(&key, &Secret::new(CANARY)).await.expect("put");
    let read = vault.get(&key).await.expect("get").expect("present");
    assert_eq!(read.expose(), CANARY, "a secret reads back as written");
    vault.delete(&key).await.expect("delete");
    assert!(
        vault.get(&key).await.expect("get").is_none(),
        "deleted entry is gone"
    );

    // A 10 kB access token is split into chunks and joined again.
    let long = big_value(10_000);
    vault
        .save_tokens(account, &tokens(&long))
        .await
        .expect("save long tokens");
    let loaded = vault
        .load_tokens(account)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(
        loaded.access_token.expose(),
        long,
        "10 kB token round-trips"
    );
    assert_eq!(
        loaded.refresh_token.as_ref().map(Secret::expose),
        Some(format!("{CANARY}-refresh").as_str())
    );
    assert_eq!(loaded.user.name.as_deref(), Some("Ada"));
    assert_eq!(loaded.expires_at, 2_000_000_000);

    // A shorter value replaces it cleanly.
    vault
        .save_tokens(account, &tokens("short"))
        .await
        .expect("save short tokens");
    let loaded = vault
        .load_tokens(account)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(loaded.access_token.expose(), "short");

    vault
        .save_credentials(account, "github", &credentials(CANARY))
        .await
        .expect("save credentials");
    vault
        .save_credentials(account, "jira", &credentials(&big_value(6000)))
        .await
        .expect("save long credentials");
    let c = vault
        .load_credentials(account, "github")
        .await
        .expect("load credentials")
        .expect("present");
    assert_eq!(c.values.get("token").map(Secret::expose), Some(CANARY));
    assert_eq!(c.ttl_seconds, 3600);
    assert_eq!(c.fetched_at, 1_700_000_000);

    vault.wipe_account(account).await.expect("wipe");
    assert!(vault.load_tokens(account).await.expect("load").is_none());
    for service in ["github", "jira"] {
        assert!(
            vault
                .load_credentials(account, service)
                .await
                .expect("load")
                .is_none(),
            "wipe removes {service}"
        );
    }
}

#[tokio::test]
async fn memory_store_round_trips_chunks_and_wipes() {
    let (store, vault) = memory();
    round_trips(&vault, "work").await;
    assert!(
        store.is_empty(),
        "wipe and delete leave nothing behind: {:?}",
        store.entry_names()
    );
}

#[tokio::test]
async fn long_values_are_split_below_the_entry_limit() {
    let (store, vault) = memory();
    let key = VaultKey::GatewayApiKey;
    let value = big_value(10_000);
    vault
        .put(&key, &Secret::new(value.clone()))
        .await
        .expect("put 10 kB");
    let names = store.entry_names();
    assert_eq!(
        names.len(),
        4,
        "10,000 bytes need 4 entries of at most 2,560: {names:?}"
    );
    for (_, entry) in &names {
        let bytes = store
            .get("test.latchkey", entry)
            .expect("read")
            .expect("present");
        assert!(bytes.len() <= CHUNK_LIMIT, "{entry} fits the limit");
    }
    assert_eq!(
        vault
            .get(&key)
            .await
            .expect("get")
            .expect("present")
            .expose(),
        value
    );
    vault
        .put(&key, &Secret::new("small"))
        .await
        .expect("shrink");
    assert_eq!(
        store.len(),
        1,
        "stale chunks are deleted: {:?}",
        store.entry_names()
    );
    vault.delete(&key).await.expect("delete");
    assert!(store.is_empty());
}

#[tokio::test]
async fn wipe_leaves_other_accounts_alone() {
    let (store, vault) = memory();
    vault.save_tokens("work", &tokens("a")).await.expect("save");
    vault
        .save_credentials("work", "github", &credentials("x"))
        .await
        .expect("save");
    vault.save_tokens("home", &tokens("b")).await.expect("save");
    vault
        .save_credentials("home", "github", &credentials("y"))
        .await
        .expect("save");
    vault
        .put(&VaultKey::ControlToken, &Secret::new("ctl"))
        .await
        .expect("put");
    vault.wipe_account("work").await.expect("wipe");
    assert!(vault.load_tokens("home").await.expect("load").is_some());
    assert!(
        vault
            .load_credentials("home", "github")
            .await
            .expect("load")
            .is_some()
    );
    assert!(
        vault
            .get(&VaultKey::ControlToken)
            .await
            .expect("get")
            .is_some()
    );
    let left: Vec<String> = store.entry_names().into_iter().map(|(_, e)| e).collect();
    assert!(
        left.iter().all(|e| !e.contains("work")),
        "nothing of `work` remains: {left:?}"
    );
}

#[tokio::test]
async fn the_client_secret_survives_logout_and_goes_only_when_deleted() {
    let (store, vault) = memory();
    let secret = Secret::new(format!("{CANARY}-client-secret"));
    vault.save_tokens("work", &tokens("a")).await.expect("save");
    vault
        .save_client_secret("work", &secret)
        .await
        .expect("save secret");
    vault.wipe_account("work").await.expect("wipe");
    assert!(vault.load_tokens("work").await.expect("load").is_none());
    let kept = vault.load_client_secret("work").await.expect("load");
    assert_eq!(
        kept.as_ref().map(Secret::expose),
        Some(secret.expose()),
        "the client secret is configuration, not session"
    );
    assert!(
        vault
            .load_client_secret("home")
            .await
            .expect("load")
            .is_none(),
        "secrets are per account"
    );
    vault.delete_client_secret("work").await.expect("delete");
    assert!(
        vault
            .load_client_secret("work")
            .await
            .expect("load")
            .is_none()
    );
    assert!(store.is_empty(), "{:?}", store.entry_names());
}

#[tokio::test]
async fn tokens_written_before_the_issuer_was_kept_still_load() {
    let (store, vault) = memory();
    let old = serde_json::json!({
        "access_token": "a", "refresh_token": null, "id_token": null,
        "expires_at": 2, "issued_at": 1,
        "user": {"subject": "s", "name": null, "email": null},
    });
    store
        .set(
            "test.latchkey",
            "tokens:work",
            format!("lk1:1:{old}").as_bytes(),
        )
        .expect("seed");
    let loaded = vault
        .load_tokens("work")
        .await
        .expect("load")
        .expect("some");
    assert_eq!(loaded.issuer, None);
    assert_eq!(loaded.user.subject, "s");
}

#[tokio::test]
async fn unavailable_store_gives_an_actionable_error() {
    let (store, vault) = memory();
    store.fail_with(Some(StoreFault::Unavailable {
        message: "no D-Bus session".to_owned(),
    }));
    let err = vault
        .put(&VaultKey::ControlToken, &Secret::new(CANARY))
        .await
        .expect_err("a failing store fails");
    assert_eq!(err.code(), crate::Code::KeychainUnavailable);
    let text = err.to_string();
    assert!(
        text.contains("no D-Bus session"),
        "says what happened: {text}"
    );
    if cfg!(target_os = "linux") {
        assert!(
            text.contains("gnome-keyring-daemon --unlock"),
            "says what to do: {text}"
        );
    }
    assert!(!text.contains(CANARY));
    let health = vault.self_test().await;
    assert!(!health.ok);
    assert_eq!(health.code, Some(crate::Code::KeychainUnavailable));
    assert_eq!(health.backend, "memory");
    store.fail_with(None);
    assert!(
        vault.self_test().await.ok,
        "healed store passes the self-test"
    );
    assert!(store.is_empty(), "the probe is deleted");
}

#[tokio::test]
async fn slow_store_times_out() {
    let (store, vault) = memory();
    let vault = vault.with_timeout(Duration::from_millis(50));
    store.delay_each_call(Some(Duration::from_millis(400)));
    let err = vault
        .get(&VaultKey::ControlToken)
        .await
        .expect_err("a slow store times out");
    assert_eq!(err.code(), crate::Code::KeychainTimeout);
    assert!(matches!(err, VaultError::Timeout { .. }));
}

#[tokio::test]
async fn damaged_entries_are_reported_as_corrupt() {
    let (store, vault) = memory();
    store
        .set("test.latchkey", "tokens:work", b"not a header")
        .expect("seed");
    let err = vault.load_tokens("work").await.expect_err("corrupt");
    assert_eq!(err.code(), crate::Code::KeychainCorrupt);
    store
        .set("test.latchkey", "tokens:work", b"lk1:3:{\"a")
        .expect("seed");
    let err = vault.load_tokens("work").await.expect_err("missing chunk");
    assert!(matches!(err, VaultError::Corrupt { ref entry } if entry == "tokens:work"));
    store
        .set("test.latchkey", "tokens:work", b"lk1:1:{}")
        .expect("seed");
    let err = vault.load_tokens("work").await.expect_err("bad json");
    assert_eq!(err.code(), crate::Code::KeychainCorrupt);
}

#[test]
fn debug_output_is_redacted() {
    let t = format!("{:?}", tokens(CANARY));
    assert!(!t.contains("canary"), "StoredTokens Debug: {t}");
    let c = format!("{:?}", credentials(CANARY));
    assert!(!c.contains("canary"), "StoredCredentials Debug: {c}");
    assert!(c.contains("token"), "names are shown");
}

#[test]
fn entry_names_are_distinct() {
    let keys = [
        VaultKey::Tokens {
            account: "a".into(),
        },
        VaultKey::Credentials {
            account: "a".into(),
            service: "s".into(),
        },
        VaultKey::GatewayApiKey,
        VaultKey::ManualSecret {
            service: "s".into(),
        },
        VaultKey::ControlToken,
        VaultKey::AccountIndex {
            account: "a".into(),
        },
        VaultKey::Probe,
    ];
    let names: std::collections::BTreeSet<String> = keys.iter().map(VaultKey::entry).collect();
    assert_eq!(names.len(), keys.len());
}

const NO_DBUS_CHILD: &str = "LATCHKEY_TEST_NO_DBUS_CHILD";

/// Runs `no_dbus_child` in a child process with no D-Bus session at all, so the result does not
/// depend on how this process was started.
#[test]
fn platform_vault_without_dbus_reports_keychain_unavailable() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let runtime = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "vault::tests::no_dbus_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("LATCHKEY_TEST_KEYCHAIN")
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env(NO_DBUS_CHILD, "1")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
#[ignore = "run by platform_vault_without_dbus_reports_keychain_unavailable in a child process"]
async fn no_dbus_child() {
    assert!(
        std::env::var_os(NO_DBUS_CHILD).is_some()
            && std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none(),
        "only meaningful in the child process without D-Bus"
    );
    let result = async {
        let vault = Vault::platform()?;
        vault.put(&VaultKey::Probe, &Secret::new(CANARY)).await
    }
    .await;
    let err = result.expect_err("no D-Bus means no keychain");
    assert_eq!(err.code(), crate::Code::KeychainUnavailable, "{err}");
    let text = err.to_string();
    eprintln!("no-D-Bus error shown to the person: {text}");
    assert!(
        text.contains("gnome-keyring-daemon --unlock"),
        "actionable: {text}"
    );
    assert!(!text.contains(CANARY));
    let health = Vault::platform().expect("platform").self_test().await;
    assert!(!health.ok);
    assert_eq!(health.code, Some(crate::Code::KeychainUnavailable));
}
