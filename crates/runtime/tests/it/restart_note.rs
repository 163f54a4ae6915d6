//! Settings read once at start (the connection cap, `[::1]`, the activity log's retention) are
//! not applied by a live reload: an edit of them says, in the overview the tray and `latchkey
//! status` show, that Latchkey must be restarted for it, and the note goes when the file agrees
//! with the running instance again.

use crate::serving::{CONFIG, paths, start};

#[tokio::test]
async fn an_edit_only_a_restart_applies_says_so_until_the_file_agrees_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = paths(&dir);
    let lk = start(&paths).await.expect("start");
    assert_eq!(
        lk.overview().config.restart_needed,
        None,
        "nothing at start"
    );

    let edited = CONFIG.replacen(
        "version = 1\n",
        "version = 1\n\n[proxy]\nmax_connections = 64\nipv6 = false\n\n[audit]\nretention_days = 7\n\n",
        1,
    );
    assert_ne!(edited, CONFIG);
    std::fs::write(paths.config_file(), edited).expect("edit");
    lk.reload_config().await;
    let note = lk
        .overview()
        .config
        .restart_needed
        .expect("the edit needs a restart");
    assert!(note.starts_with("restart Latchkey to "), "{note}");
    assert!(
        note.contains("serve up to 64 connections (it still serves up to 2048)"),
        "{note}"
    );
    assert!(note.contains("stop listening on [::1]"), "{note}");
    assert!(note.contains("keep the activity log for 7 days"), "{note}");

    std::fs::write(paths.config_file(), CONFIG).expect("revert");
    lk.reload_config().await;
    assert_eq!(
        lk.overview().config.restart_needed,
        None,
        "the file agrees with the running instance again"
    );
    lk.shutdown().await;
}
