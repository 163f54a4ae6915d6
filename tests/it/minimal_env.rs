//! Commands an MCP host starts (`latchkey headers`, `latchkey exec`, the stdio bridge) get only
//! the host's minimal environment: no D-Bus session, so no keychain. They find the running
//! instance through its Unix socket, with nothing but what `latchkey mcp-config` wrote into the
//! host's entry; without it (and non-default directories) they say Latchkey is not running. The
//! CLI's own control calls stay out of `latchkey log` unless asked for.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use latchkey_e2e::{Output, bin};
use latchkey_testkit::IdpOptions;

use crate::{DEMO_KEY, Stack, keychain_available};

/// `latchkey <args>` as a host starts it: only `HOME PATH USER SHELL TERM LOGNAME`, plus `env`.
fn as_host(home: &Path, env: &serde_json::Map<String, serde_json::Value>, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("latchkey"));
    cmd.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("USER", "tester")
        .env("SHELL", "/bin/sh")
        .env("TERM", "dumb")
        .env("LOGNAME", "tester")
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v.as_str().expect("env values are strings"));
    }
    let out = cmd.output().expect("run latchkey");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn log_rows(stack: &Stack, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["log", "--json", "--limit", "500"];
    all.extend_from_slice(args);
    let out = stack.home.run(&all, "").expect("latchkey log");
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON row per line"))
        .collect()
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn host_started_commands_need_only_the_hosts_environment_and_the_entrys_env() {
    if !keychain_available() {
        return;
    }
    let stack = Stack::start(IdpOptions::default()).await;
    let serve = stack.home.serve().expect("serve");
    stack.login().await;
    let add = stack
        .home
        .run(&["client", "add", "desk", "--service", "demo"], "")
        .expect("client add");
    assert_eq!(add.code, 0, "{}", add.stderr);

    // The entry Claude Desktop would run, with the sandbox's directories in its env.
    let config = stack
        .home
        .run(
            &[
                "mcp-config",
                "--host",
                "claude-desktop",
                "--client",
                "desk",
                "--service",
                "demo",
            ],
            "",
        )
        .expect("mcp-config");
    assert_eq!(config.code, 0, "{}", config.stderr);
    let entry: serde_json::Value = serde_json::from_str(&config.stdout).expect("entry JSON");
    let env = entry["env"]
        .as_object()
        .cloned()
        .unwrap_or_else(|| panic!("non-default directories are written into the entry: {entry:#}"));
    assert_eq!(
        env.get("LATCHKEY_DATA_DIR").and_then(|v| v.as_str()),
        Some(stack.home.data_dir().to_string_lossy().as_ref()),
        "{entry:#}"
    );
    assert_eq!(
        env.get("LATCHKEY_CONFIG_DIR").and_then(|v| v.as_str()),
        Some(stack.home.config_dir().to_string_lossy().as_ref()),
        "{entry:#}"
    );
    assert_eq!(env.len(), 2, "nothing but the directories: {entry:#}");

    let host_home = tempfile::tempdir().expect("host home");
    let none = serde_json::Map::new();

    // With the entry's env: Claude Code's headers helper and a stdio server via exec work.
    let headers = as_host(host_home.path(), &env, &["headers", "desk"]);
    assert_eq!(headers.code, 0, "headers: {}", headers.stderr);
    let headers: serde_json::Value =
        serde_json::from_str(headers.stdout.trim()).expect("headers JSON");
    assert!(
        headers["X-Latchkey-Client"]
            .as_str()
            .is_some_and(|t| t.starts_with("lk_")),
        "{headers}"
    );
    let exec = as_host(
        host_home.path(),
        &env,
        &[
            "exec",
            "--service",
            "demo",
            "--",
            "sh",
            "-c",
            "echo $DEMO_API_KEY",
        ],
    );
    assert_eq!(exec.code, 0, "exec: {}", exec.stderr);
    assert_eq!(exec.stdout.trim(), DEMO_KEY, "the stdio server got its key");

    // Without it, the default directories hold no instance: a clear "not running", no D-Bus.
    for args in [
        &["headers", "desk"][..],
        &[
            "exec",
            "--service",
            "demo",
            "--",
            "sh",
            "-c",
            "echo $DEMO_API_KEY",
        ][..],
    ] {
        let out = as_host(host_home.path(), &none, args);
        assert_eq!(
            out.code, 4,
            "{args:?} → exit 4 (not running): {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("not running"),
            "{args:?}: {}",
            out.stderr
        );
        let lower = out.stderr.to_lowercase();
        assert!(
            !lower.contains("d-bus") && !lower.contains("dbus"),
            "{args:?} mentions no D-Bus: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{args:?} printed {}", out.stdout);
    }

    // The audit log: the ephemeral-token calls are control calls, hidden unless asked for; the
    // credential read of `exec` is shown.
    let deadline = Instant::now() + Duration::from_secs(10);
    let with_control = loop {
        let rows = log_rows(&stack, &["--control"]);
        if rows.iter().any(|r| r["path"] == "/v1/control/ephemeral") || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        with_control
            .iter()
            .any(|r| r["path"] == "/v1/control/ephemeral" && r["kind"] == "control"),
        "--control shows the CLI's control calls: {with_control:#?}"
    );
    // Reads of the instance's state that were answered (each `latchkey log` above is a GET of
    // the activity) leave no row, so a window polling all day cannot push client traffic out
    // of the row cap.
    let again = log_rows(&stack, &["--control"]);
    assert!(
        again.iter().all(|r| r["kind"] != "control"
            || r["method"] != "GET"
            || r["status"].as_u64().is_some_and(|s| s >= 400)),
        "no answered control read is recorded: {again:#?}"
    );
    let default = log_rows(&stack, &[]);
    assert!(
        default.iter().all(|r| r["kind"] != "control"),
        "no control call by default: {default:#?}"
    );
    assert!(
        default
            .iter()
            .any(|r| r["path"] == "/v1/credentials/demo" && r["client"] == "latchkey"),
        "the credential read of exec stays visible: {default:#?}"
    );
    let text = stack.home.run(&["log"], "").expect("log");
    assert!(
        !text.stdout.contains("/v1/control/"),
        "the table leaves control calls out: {}",
        text.stdout
    );

    // Following the log: a control call (status) and client traffic arrive; only the traffic is
    // printed.
    let mut follow = stack
        .home
        .command(&["log", "--follow", "--json", "--limit", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("log --follow");
    let stdout = follow.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = lines_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the follower printed its first page");
    let token = headers["X-Latchkey-Client"]
        .as_str()
        .expect("token")
        .to_owned();
    let http = reqwest::Client::new();
    let mut followed = vec![first];
    let deadline = Instant::now() + Duration::from_secs(15);
    // The follower subscribes after printing its first page: repeat a control call and a client
    // request until the request shows up, so both were made while it listened.
    'outer: while Instant::now() < deadline {
        let status = stack.home.run(&["status"], "").expect("status");
        assert_eq!(status.code, 0, "{}", status.stderr);
        let proxied = http
            .get(format!("{}/demo/whoami?follow=1", serve.url))
            .header("x-latchkey-client", &token)
            .send()
            .await
            .expect("proxied request");
        assert_eq!(proxied.status(), 200);
        while let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(500)) {
            let done = line.contains("/demo/whoami");
            followed.push(line);
            if done {
                break 'outer;
            }
        }
    }
    assert!(
        followed.iter().any(|l| l.contains("/demo/whoami")),
        "the proxied request reached the follower: {followed:#?}"
    );
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        followed.iter().all(|l| !l.contains("\"kind\":\"control\"")),
        "the follower leaves control calls out: {followed:#?}"
    );

    // Running, but its socket gone (someone cleaned the data directory): with no keychain in the
    // host's environment the command says so, with a way out, instead of "not running".
    std::fs::remove_file(stack.home.data_dir().join("instance.sock")).expect("remove the socket");
    let stranded = as_host(host_home.path(), &env, &["headers", "desk"]);
    assert_eq!(
        stranded.code, 5,
        "keychain unavailable → exit 5: {}",
        stranded.stderr
    );
    assert!(
        stranded.stderr.contains("instance.sock") && stranded.stderr.contains("Restart Latchkey"),
        "names the socket and what to do: {}",
        stranded.stderr
    );

    let logs = serve.stop().expect("stop");
    assert!(logs.contains("control socket listening"), "{logs}");
    assert!(
        !logs.contains(DEMO_KEY),
        "the key is not in the server's logs"
    );
}
