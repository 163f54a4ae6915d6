//! A real browser (Debian's Chromium, driven by `tests/browser/cross-origin.test.mjs`) on a page
//! of another origin tries to use the proxy with a valid client token: nothing reaches the
//! upstream and the page reads nothing.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{Options, Proxy};

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[tokio::test]
async fn a_page_from_another_origin_cannot_use_the_proxy() {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in {} (scripts/setup does)",
        dir.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Debian's chromium is needed at {chromium}"
    );

    let proxy = Proxy::start_with(Options {
        record_requests: true,
        ..Options::default()
    })
    .await;
    let run = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "cross-origin.test.mjs"])
        .current_dir(&dir)
        .env("LATCHKEY_PROXY_URL", &proxy.url)
        .env("LATCHKEY_CLIENT_TOKEN", &proxy.token)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser tests finish in time")
        .expect("node runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "every browser attempt failed as it should:\n{report}"
    );
    assert!(
        report.contains("pass 7"),
        "all seven browser checks ran:\n{report}"
    );
    assert_eq!(
        proxy.upstream.hits(),
        0,
        "the upstream received nothing from the page"
    );
    let reached = proxy.requests().len();
    assert!(
        reached >= 5,
        "the browser's requests reached the proxy and were refused there ({reached})"
    );
    assert_eq!(
        crate::audit::rows(&proxy).await.len(),
        0,
        "refusals at the Origin gate are never audited: a page cannot fill the log"
    );
    proxy.stop().await;
}
