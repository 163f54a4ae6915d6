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

    let logs = serve.stop().expect("stop");
    assert!(logs.contains("control socket listening"), "{logs}");
    assert!(
        !logs.contains(DEMO_KEY),
        "the key is not in the server's logs"
    );
}
