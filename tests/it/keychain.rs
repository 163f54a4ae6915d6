//! The vault against the real Secret Service (moved here from `latchkey-core`'s unit tests: a
//! `keychain_session` cfg there would rebuild the core and everything above it whenever
//! `LATCHKEY_TEST_KEYCHAIN` flips; this crate is a leaf).

use std::collections::BTreeMap;
use std::sync::Arc;

use latchkey_core::secret::Secret;
use latchkey_core::vault::{
    KeyringStore, StoredCredentials, StoredTokens, StoredUser, Vault, VaultKey,
};

use crate::keychain_available;

const CANARY: &str = "canary-vault-e2e-3a7d";

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

fn long(len: usize) -> String {
    "abcdefghijklmnopqrstuvwxyz"
        .chars()
        .cycle()
        .take(len)
        .collect()
}

/// Every vault operation on the real Secret Service, with values long enough to be split into
/// chunks; the account is wiped at the end and nothing of it is left.
#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn the_vault_round_trips_chunks_and_wipes_on_the_secret_service() {
    keychain_available();
    let namespace = format!("dev.latchkey.test.{}", std::process::id());
    let store = KeyringStore::platform().expect("the Secret Service of the keychain session");
    let vault = Vault::with_namespace(Arc::new(store), &namespace);
    let health = vault.self_test().await;
    assert!(health.ok, "the test keychain works: {:?}", health.message);

    let key = VaultKey::ManualSecret {
        service: "svc".to_owned(),
    };
    vault.put(&key, &Secret::new(CANARY)).await.expect("put");
    let read = vault.get(&key).await.expect("get").expect("present");
    assert_eq!(read.expose(), CANARY, "a secret reads back as written");
    vault.delete(&key).await.expect("delete");
    assert!(vault.get(&key).await.expect("get").is_none(), "deleted");

    let account = "it-account";
    let access = long(10_000);
    vault
        .save_tokens(account, &tokens(&access))
        .await
        .expect("save 10 kB tokens");
    let loaded = vault
        .load_tokens(account)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(
        loaded.access_token.expose(),
        access,
        "10 kB token round-trips"
    );
    assert_eq!(loaded.user.name.as_deref(), Some("Ada"));
    vault
        .save_tokens(account, &tokens("short"))
        .await
        .expect("save short tokens");
    let loaded = vault
        .load_tokens(account)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(
        loaded.access_token.expose(),
        "short",
        "a shorter value replaces it"
    );

    let mut values = BTreeMap::new();
    values.insert("token".to_owned(), Secret::new(long(6_000)));
    let credentials = StoredCredentials {
        values,
        fetched_at: 1_700_000_000,
        ttl_seconds: 3600,
    };
    vault
        .save_credentials(account, "jira", &credentials)
        .await
        .expect("save credentials");
    let read = vault
        .load_credentials(account, "jira")
        .await
        .expect("load credentials")
        .expect("present");
    assert_eq!(
        read.values.get("token").map(Secret::expose),
        Some(long(6_000).as_str())
    );

    vault.wipe_account(account).await.expect("wipe");
    assert!(vault.load_tokens(account).await.expect("load").is_none());
    assert!(
        vault
            .load_credentials(account, "jira")
            .await
            .expect("load")
            .is_none()
    );
}
