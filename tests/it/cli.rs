//! The CLI as a new user tries it: login, status, token, logout — against the real IdP and the
//! real keychain, across separate processes.

use latchkey_testkit::IdpOptions;

use crate::{Stack, keychain_available};

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn login_status_token_logout_work_as_a_new_user_tries_them() {
    if !keychain_available() {
        return;
    }
    let stack = Stack::start(IdpOptions::default()).await;
    let before = stack.home.run(&["status"], "").expect("status");
    assert_eq!(before.code, 0, "{}", before.stderr);
    assert!(before.stdout.contains("Not signed in"), "{}", before.stdout);
    assert!(before.stdout.contains("Keychain: ok"), "{}", before.stdout);

    stack.login().await;
    assert!(stack.keychain_entries() >= 1, "tokens are in the keychain");

    // A new process restores the session from the keychain, with the IdP unreachable.
    let stats = stack.idp.stats().await.expect("stats");
    let status = stack.home.run(&["status", "--json"], "").expect("status");
    assert_eq!(status.code, 0, "{}", status.stderr);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    assert_eq!(json["accounts"][0]["state"]["kind"], "active", "{json:#}");
    assert_eq!(
        json["accounts"][0]["state"]["user"]["email"],
        "alice@example.test"
    );
    assert_eq!(
        stack.idp.stats().await.expect("stats"),
        stats,
        "status made no IdP call"
    );

    let token = stack.home.run(&["token"], "").expect("token");
    assert_eq!(token.code, 0, "{}", token.stderr);
    assert_eq!(
        token.stdout.trim().split('.').count(),
        3,
        "a JWT access token on stdout"
    );
    assert!(
        !token.stderr.contains(token.stdout.trim()),
        "the token is not in the logs"
    );

    let logout = stack.home.run(&["logout"], "").expect("logout");
    assert_eq!(logout.code, 0, "{}", logout.stderr);
    assert_eq!(
        stack.keychain_entries(),
        0,
        "logout leaves no keychain entry for the account"
    );
    let after = stack.home.run(&["token"], "").expect("token");
    assert_eq!(
        after.code, 3,
        "token after logout asks for a login: {}",
        after.stderr
    );
    assert!(after.stderr.contains("latchkey login"), "{}", after.stderr);
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn commands_that_need_latchkey_running_say_so_before_starting_anything() {
    if !keychain_available() {
        return;
    }
    let stack = Stack::start(IdpOptions::default()).await;
    let marker = stack.home.data_dir().join("should-not-exist");
    let exec = stack
        .home
        .run(
            &[
                "exec",
                "--service",
                "demo",
                "--",
                "touch",
                &marker.display().to_string(),
            ],
            "",
        )
        .expect("exec");
    assert_eq!(exec.code, 4, "not running → exit 4: {}", exec.stderr);
    assert!(exec.stderr.contains("not running"), "{}", exec.stderr);
    assert!(!marker.exists(), "the command was not started");
}

#[tokio::test]
async fn invalid_configuration_is_refused_with_line_and_fix() {
    let home = latchkey_e2e::Home::new("version = 1\n[[accounts]]\nname = \"x\"\nissuer = \"http://idp.example.com\"\nclient_id = \"c\"\n")
        .expect("home");
    let out = home.run(&["config", "check"], "").expect("config check");
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(
        out.stderr.contains("config.toml:4:"),
        "names the line: {}",
        out.stderr
    );
    assert!(out.stderr.contains("fix:"), "{}", out.stderr);
}

#[tokio::test]
async fn no_keychain_means_a_clear_error_and_nothing_written_in_plaintext() {
    let stack_config = "version = 1\n[[accounts]]\nname = \"x\"\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\n";
    let home = latchkey_e2e::Home::new(stack_config).expect("home");
    let empty_runtime = tempfile::tempdir().expect("tmp");
    let out = home
        .command(&["gateway", "set-key"])
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("XDG_RUNTIME_DIR", empty_runtime.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            if let Some(mut i) = c.stdin.take() {
                i.write_all(b"plaintext-canary-93ab")?;
            }
            c.wait_with_output()
        })
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(5),
        "keychain unavailable → exit 5: {stderr}"
    );
    assert!(stderr.contains("keychain"), "{stderr}");
    assert!(
        !stderr.contains("No default store"),
        "the raw backend text never reaches a person: {stderr}"
    );
    for dir in [home.config_dir(), home.data_dir()] {
        for entry in walk(&dir) {
            let bytes = std::fs::read(&entry).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains("plaintext-canary-93ab"),
                "{} holds the secret in plaintext",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
