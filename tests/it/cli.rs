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

/// The column offsets of a table line: where each run of non-spaces after a gap of two or more
/// spaces starts (the table pads columns with at least two spaces).
fn column_starts(line: &str) -> Vec<usize> {
    let bytes = line.as_bytes();
    let mut starts = vec![0];
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b' ' {
            let gap = bytes[i..].iter().take_while(|b| **b == b' ').count();
            if gap >= 2 && i + gap < bytes.len() {
                starts.push(i + gap);
            }
            i += gap;
        } else {
            i += 1;
        }
    }
    starts
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn listings_stay_aligned_with_long_client_names_and_json_has_the_fields() {
    if !keychain_available() {
        return;
    }
    let stack = Stack::start(IdpOptions::default()).await;
    let serve = stack.home.serve().expect("serve");
    stack.login().await;
    let long = "a-client-with-a-name-much-longer-than-any-column-width-guess";
    let http = reqwest::Client::new();
    for name in ["a", long] {
        let add = stack
            .home
            .run(&["client", "add", name, "--service", "demo"], "")
            .expect("client add");
        assert_eq!(add.code, 0, "{}", add.stderr);
        let response = http
            .get(format!("{}/demo/whoami", serve.url))
            .header("x-latchkey-client", add.stdout.trim())
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
    }

    let list = stack
        .home
        .run(&["client", "list"], "")
        .expect("client list");
    assert_eq!(list.code, 0, "{}", list.stderr);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{}", list.stdout);
    let header = column_starts(lines[0]);
    let rows: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("a ") || l.starts_with(long))
        .collect();
    assert_eq!(rows.len(), 2, "both clients listed:\n{}", list.stdout);
    for row in rows {
        let services = row.find("demo").expect("services column");
        assert_eq!(
            Some(&services),
            header.get(1),
            "SERVICES starts at the same offset on every row:\n{}",
            list.stdout
        );
    }
    assert!(
        !list.stdout.contains('\u{1b}'),
        "no colour when not a terminal"
    );
    let json = stack
        .home
        .run(&["client", "list", "--json"], "")
        .expect("client list --json");
    let clients: serde_json::Value = serde_json::from_str(&json.stdout).expect("client list json");
    let names: Vec<&str> = clients
        .as_array()
        .expect("an array of clients")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(names.contains(&long), "{clients:#}");
    for c in clients.as_array().into_iter().flatten() {
        assert!(c["services"].is_array(), "{c:#}");
        assert!(c.get("created_at").is_some(), "{c:#}");
        assert!(c.get("token").is_none(), "no token in a listing: {c:#}");
    }

    let log = stack
        .home
        .run(&["log", "--service", "demo"], "")
        .expect("log");
    assert_eq!(log.code, 0, "{}", log.stderr);
    let lines: Vec<&str> = log.stdout.lines().collect();
    let path_at = lines[0].find("PATH").expect("a PATH heading");
    let whoami: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("/demo/whoami"))
        .collect();
    assert!(
        whoami.iter().any(|l| l.contains(long)),
        "the long name is in the log:\n{}",
        log.stdout
    );
    for row in &whoami {
        assert_eq!(
            row.find("/demo/whoami"),
            Some(path_at),
            "PATH starts at the same offset on every row:\n{}",
            log.stdout
        );
    }
    let log_json = stack
        .home
        .run(&["log", "--json", "--service", "demo"], "")
        .expect("log --json");
    for line in log_json.stdout.lines() {
        let row: serde_json::Value = serde_json::from_str(line).expect("one JSON row per line");
        for field in ["time", "client", "service", "method", "status", "path"] {
            assert!(row.get(field).is_some(), "{field} in {row}");
        }
    }

    for args in [
        &["connections", "--json"][..],
        &["server", "list", "--json"][..],
    ] {
        let out = stack.home.run(args, "").expect("listing");
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json listing");
        assert!(v.is_array(), "{args:?}: {v:#}");
    }
    let status = stack.home.run(&["status", "--json"], "").expect("status");
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
    for field in ["accounts", "services", "keychain", "running"] {
        assert!(status.get(field).is_some(), "{field} in {status:#}");
    }
    drop(serve);
}
