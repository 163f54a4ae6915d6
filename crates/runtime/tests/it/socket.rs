//! A serving instance with non-default directories, as `scripts/run` and the tests start it: its
//! Unix socket hands a same-user process the port and the control token that open the control
//! API; a second instance neither starts nor takes the socket over; after shutdown the socket is
//! gone; and the entries the window adds to hosts name the directories.

use latchkey_runtime::instance::socket_path;
use latchkey_runtime::socket;

use crate::serving::{paths as serving_paths, start};

#[tokio::test]
async fn the_socket_opens_the_control_api_to_the_same_user_and_to_nobody_after_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = serving_paths(&dir);
    let lk = start(&paths).await.expect("start");
    let port = lk.proxy_addr().expect("serving").port();

    let handoff = socket::fetch(&socket_path(&paths)).await.expect("hand-off");
    assert_eq!(handoff.port, port);
    assert_eq!(handoff.pid, std::process::id());
    let status = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/control/status"))
        .header("x-latchkey-client", handoff.control_token.expose())
        .send()
        .await
        .expect("control call");
    assert_eq!(status.status(), 200, "the handed-over token opens the API");
    let refused = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/control/status"))
        .header("x-latchkey-client", "lkc_guessed")
        .send()
        .await
        .expect("control call");
    assert_eq!(refused.status(), 401, "the router still checks the token");

    let second = start(&paths).await;
    assert_eq!(
        second.err().map(|e| e.code),
        Some(latchkey_core::Code::AlreadyRunning)
    );
    let again = socket::fetch(&socket_path(&paths))
        .await
        .expect("still the first instance's");
    assert_eq!(again.port, port);

    // The window's Add to host: the directories travel with the entry.
    lk.create_client("desk", &["demo".to_owned()])
        .expect("client");
    let desktop = lk
        .preview_host_entry("claude-desktop", "desk", "demo")
        .expect("preview");
    let entry: serde_json::Value = serde_json::from_str(&desktop.entry_json).expect("json");
    assert_eq!(
        entry["env"]["LATCHKEY_DATA_DIR"],
        paths.data_dir().to_string_lossy().as_ref(),
        "{}",
        desktop.entry_json
    );
    assert_eq!(
        entry["env"]["LATCHKEY_CONFIG_DIR"],
        paths.config_dir().to_string_lossy().as_ref()
    );
    let code = lk
        .preview_host_entry("claude-code", "desk", "demo")
        .expect("preview");
    assert!(
        code.entry_json.contains("LATCHKEY_DATA_DIR="),
        "{}",
        code.entry_json
    );

    lk.shutdown().await;
    drop(lk);
    let gone = socket::fetch(&socket_path(&paths))
        .await
        .expect_err("nobody answers after shutdown");
    assert_eq!(gone.code(), latchkey_core::Code::NotRunning, "{gone}");
}
