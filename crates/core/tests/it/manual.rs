//! Credentials of a `source = "manual"` service: stored in the keychain by `set_manual`, read
//! from it by the first request after a start, then served from memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use latchkey_core::config::Config;
use latchkey_core::credentials::Credentials;
use latchkey_core::secret::Secret;
use latchkey_core::session::system_clock;
use latchkey_core::vault::VaultKey;

use crate::support::{test_vault, unique};

#[tokio::test]
async fn a_manual_services_values_come_from_the_keychain_once_then_from_memory() {
    let vault = test_vault();
    let service = unique("manual");
    let text = format!(
        "version = 1\n\n[[accounts]]\nname = \"work\"\nissuer = \"https://idp.example.com\"\nclient_id = \"latchkey\"\n\n[[services]]\nname = \"{service}\"\naccount = \"work\"\nsource = \"manual\"\nupstream = \"http://127.0.0.1:9\"\nallow_loopback_http = true\ncredentials = [{{ name = \"key\", header = \"X-Api-Key\" }}]\n"
    );
    let config = Arc::new(Config::parse(&text, Path::new("test.toml")).expect("valid config"));
    let instance = || {
        Credentials::new(
            config.clone(),
            BTreeMap::new(),
            None,
            vault.clone(),
            system_clock(),
        )
    };
    let stored = BTreeMap::from([("key".to_owned(), "manual-value-1".to_owned())]);
    instance()
        .set_manual(&service, &stored)
        .await
        .expect("stored in the keychain");

    // After a restart: a new instance has nothing in memory and reads the keychain.
    let credentials = instance();
    let values = credentials.get(&service).await.expect("read");
    assert_eq!(
        values.get("key").map(Secret::expose),
        Some("manual-value-1")
    );

    // Then from memory: the keychain entry gone behind its back changes nothing, and the same
    // values (the same `Arc`, which lets the proxy reuse what it prepared) come back.
    vault
        .delete(&VaultKey::ManualSecret {
            service: service.clone(),
        })
        .await
        .expect("deleted");
    let again = credentials.get(&service).await.expect("from memory");
    assert!(Arc::ptr_eq(&values, &again));

    // A new instance now finds nothing: the values were not kept anywhere but the keychain.
    assert!(instance().get(&service).await.is_err());
}
