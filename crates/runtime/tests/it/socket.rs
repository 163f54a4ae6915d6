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

/// A script polling `latchkey status` in a tight loop while the tray app starts (and a killed
/// instance's file still there): each poll runs a local instance (no proxy) that holds the lock
/// for a moment. The serving instance claims the
/// directory first, so the polls stand back ("already running", which the command answers by
/// waiting for the instance) and the serving instance starts — before, it could miss every gap
/// between two polls and give up after 5 s, with nothing else running.
#[tokio::test]
async fn a_serving_instance_starts_while_commands_keep_opening_local_instances() {
    use latchkey_core::vault::{MemoryStore, Vault};
    use latchkey_runtime::{Latchkey, StartOptions};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let dir = tempfile::tempdir().expect("tempdir");
    let paths = serving_paths(&dir);
    // The tray app killed the last time (SIGTERM, no clean-up) left its instance file.
    paths.ensure_data_dir().expect("data dir");
    std::fs::write(
        paths.instance_file(),
        r#"{"pid":4194303,"port":9,"started_at":1}"#,
    )
    .expect("stale instance file");
    let stop = Arc::new(AtomicBool::new(false));
    let (local_runs, stood_back) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut pollers = Vec::new();
    for _ in 0..2 {
        let (paths, stop) = (paths.clone(), stop.clone());
        let (local_runs, stood_back) = (local_runs.clone(), stood_back.clone());
        pollers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let local = Latchkey::start(StartOptions {
                    paths: paths.clone(),
                    proxy_port: None,
                    vault: Some(Vault::new(Arc::new(MemoryStore::new()))),
                    serve_proxy: false,
                })
                .await;
                match local {
                    Ok(lk) => {
                        local_runs.fetch_add(1, Ordering::SeqCst);
                        let _ = lk.overview();
                        lk.shutdown().await;
                    }
                    Err(e) if e.code == latchkey_core::Code::AlreadyRunning => {
                        stood_back.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("a local instance failed: {e}"),
                }
            }
        }));
    }
    // The polls are under way before the instance starts.
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while local_runs.load(Ordering::SeqCst) < 5 {
        assert!(tokio::time::Instant::now() < until, "the polls did not run");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    let began = std::time::Instant::now();
    let lk = start(&paths)
        .await
        .expect("the serving instance starts despite the polls");
    let took = began.elapsed();
    let before = stood_back.load(Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for poller in pollers {
        poller.await.expect("poller");
    }
    assert!(
        took < std::time::Duration::from_secs(2),
        "the serving instance waited {took:?} for the polls"
    );
    assert!(
        stood_back.load(Ordering::SeqCst) > before,
        "polls made while it runs stand back rather than take the lock"
    );
    lk.shutdown().await;
}
