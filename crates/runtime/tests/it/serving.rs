//! A serving instance for the tests: one account (`work`, its provider never reached), one
//! gateway service (`demo`), private directories and an in-memory keychain, the proxy on a free
//! port.

use std::sync::Arc;

use latchkey_core::paths::Paths;
use latchkey_core::vault::{MemoryStore, Vault};
use latchkey_runtime::{Latchkey, RuntimeError, StartOptions};

/// The configuration every serving test starts from.
pub const CONFIG: &str = r#"version = 1
[[accounts]]
name = "work"
issuer = "https://idp.invalid"
client_id = "latchkey"

[gateway]
url = "https://gateway.invalid"

[[services]]
name = "demo"
account = "work"
gateway_endpoint = "/api/v1/credentials/demo"
upstream = "http://127.0.0.1:9"
allow_loopback_http = true
credentials = [{ name = "api_key", header = "X-API-Key" }]
"#;

/// Fresh directories under `dir` holding [`CONFIG`].
pub fn paths(dir: &tempfile::TempDir) -> Paths {
    let paths = Paths::new(dir.path().join("config"), dir.path().join("data"));
    std::fs::create_dir_all(paths.config_dir()).expect("config dir");
    std::fs::write(paths.config_file(), CONFIG).expect("config");
    paths
}

/// Starts an instance that serves the proxy on a free port.
pub async fn start(paths: &Paths) -> Result<Latchkey, RuntimeError> {
    Latchkey::start(StartOptions {
        paths: paths.clone(),
        proxy_port: Some(0),
        vault: Some(Vault::new(Arc::new(MemoryStore::new()))),
        serve_proxy: true,
    })
    .await
}

/// A serving instance ([`start`] on fresh [`paths`]) and the control client the `latchkey`
/// command finds for it; the directories live as long as the returned `TempDir`.
pub async fn start_with_client() -> (
    tempfile::TempDir,
    Paths,
    Latchkey,
    latchkey_runtime::control::ControlClient,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = paths(&dir);
    let lk = start(&paths).await.expect("start");
    let remote = latchkey_runtime::control::ControlClient::find(&paths)
        .await
        .expect("found")
        .expect("running");
    (dir, paths, lk, remote)
}
