//! A keychain that is not there at start (Secret Service not running, collection locked) does not
//! stop Latchkey: the instance serves, the overview says what is wrong, and once the keychain
//! answers the instance notices by itself, without a restart.

use std::sync::Arc;
use std::time::Duration;

use latchkey_core::paths::Paths;
use latchkey_core::vault::{MemoryStore, SecretStore, StoreFault, Vault};
use latchkey_runtime::{KEYCHAIN_RETRY, Latchkey, StartOptions};

#[tokio::test]
async fn an_unavailable_keychain_is_reported_then_picked_up_when_it_appears() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = Paths::new(dir.path().join("config"), dir.path().join("data"));
    std::fs::create_dir_all(paths.config_dir()).expect("config dir");
    std::fs::write(
        paths.config_file(),
        "version = 1\n[[accounts]]\nname = \"work\"\nissuer = \"https://idp.example.com\"\nclient_id = \"latchkey\"\n",
    )
    .expect("config");
    let store = Arc::new(MemoryStore::new());
    store.fail_with(Some(StoreFault::Unavailable {
        message: "org.freedesktop.secrets was not provided by any .service files".into(),
    }));
    let lk = Latchkey::start(StartOptions {
        paths,
        proxy_port: Some(0),
        vault: Some(
            Vault::new(store.clone() as Arc<dyn SecretStore>)
                .with_timeout(Duration::from_millis(500)),
        ),
        serve_proxy: true,
    })
    .await
    .expect("a broken keychain does not stop the instance");
    let keychain = lk.overview().keychain;
    assert!(
        !keychain.ok,
        "the overview says the keychain is unavailable"
    );
    assert!(keychain.message.is_some(), "with the reason");

    let mut changes = lk.subscribe();
    store.fail_with(None);
    let recovered = tokio::time::timeout(KEYCHAIN_RETRY * 3, async {
        while !lk.overview().keychain.ok {
            changes.changed().await.expect("instance alive");
        }
    })
    .await;
    assert!(
        recovered.is_ok(),
        "the keychain is picked up again without a restart"
    );
    lk.shutdown().await;
}
