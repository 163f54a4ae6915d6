//! `latchkey mcp-stdio` as Claude Desktop runs it: the official SDK's stdio client
//! (`tests/mcp/host-stdio.mjs`) spawns the bridge, which reaches the SDK's Streamable HTTP server
//! (`server-http.mjs --resumable`, with an event store) through a running `latchkey serve` that
//! injects alice's key. Everything MCP carries must cross the bridge: notifications sent outside
//! any request, server-to-client requests answered by the host, a stream the server breaks on
//! purpose (resumed with `Last-Event-ID`), the end of a session, and a clean exit.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey_e2e::{Home, node};
use latchkey_testkit::{Gateway, Idp, IdpOptions, Upstream};
use serde_json::Value;

use crate::{DEMO_KEY, GATEWAY_KEY, Stack, keychain_available};

/// The key the MCP server demands (a canary: it must never reach a log line).
const MCP_KEY: &str = "e2e-bridge-mcp-key-canary-5e2a";

/// `server-http.mjs --resumable` and the events it reports on stdout.
struct McpServer {
    child: Child,
    url: String,
    events: Arc<Mutex<Vec<Value>>>,
}

impl McpServer {
    fn start() -> McpServer {
        assert!(
            latchkey_e2e::workspace()
                .join("tests/mcp/node_modules")
                .is_dir(),
            "tests/mcp/node_modules is missing: run scripts/setup"
        );
        let mut child = node("tests/mcp/server-http.mjs")
            .args(["--port", "0", "--expect-key", MCP_KEY, "--resumable"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if let Some(url) = v["url"].as_str() {
                    let _ = tx.send(url.to_owned());
                } else {
                    sink.lock().expect("events").push(v);
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the MCP server printed its URL in time");
        McpServer { child, url, events }
    }

    /// The server's origin, `http://127.0.0.1:<port>` (the service's upstream).
    fn origin(&self) -> String {
        self.url.trim_end_matches("/mcp").to_owned()
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().expect("events").clone()
    }

    /// Waits (with a deadline) for an event matching `pred`.
    fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(found) = self.events().into_iter().find(|e| pred(e)) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "the MCP server never saw {what}; it saw {:?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sandbox with a service `mcp` whose upstream is the MCP server, alice logged in, and
/// `latchkey serve` running.
async fn stack_with(server: &McpServer) -> Stack {
    let idp = Idp::start(IdpOptions::default()).await.expect("idp");
    let gateway = Gateway::start_with(
        idp.issuer(),
        GATEWAY_KEY,
        &[("alice", "mcp", "api_key", MCP_KEY)],
    )
    .await
    .expect("gateway");
    let upstream = Upstream::start(DEMO_KEY).await.expect("upstream");
    let config = format!(
        r#"version = 1
[proxy]
listen = "127.0.0.1:47821"

[[accounts]]
name = "sandbox"
issuer = "{issuer}"
client_id = "latchkey"
audience = "latchkey-gateway"
allow_insecure_http = true

[gateway]
url = "{gateway}"
allow_insecure_http = true

[[services]]
name = "mcp"
account = "sandbox"
gateway_endpoint = "/api/v1/credentials/mcp"
upstream = "{upstream}"
allow_loopback_http = true
credentials = [{{ name = "api_key", header = "X-API-Key" }}]
"#,
        issuer = idp.issuer(),
        gateway = gateway.url(),
        upstream = server.origin(),
    );
    let home = Home::new(&config).expect("home");
    let out = home
        .run(&["gateway", "set-key"], GATEWAY_KEY)
        .expect("set-key");
    assert_eq!(out.code, 0, "gateway set-key: {}", out.stderr);
    Stack {
        idp,
        gateway,
        upstream,
        home,
    }
}

/// What one host run printed.
struct HostRun {
    summary: Value,
    stderr: String,
}

/// How the host starts the bridge.
enum Launch<'a> {
    /// `latchkey mcp-stdio mcp --client bridge` with the test home's environment added to this
    /// process's.
    Home(&'a Home),
    /// Exactly the `claude-desktop` entry `mcp-config` printed (command, args, env), with only a
    /// host's minimal environment `HOME PATH USER SHELL TERM LOGNAME` besides the entry's env.
    Entry(&'a Value, &'a std::path::Path),
}

/// Runs `host-stdio.mjs` with the bridge as its stdio server.
async fn run_host(launch: Launch<'_>, scenario: &str, end: &str) -> HostRun {
    let mut cmd = host_command(launch, scenario, end);
    cmd.stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("host-stdio.mjs runs");
    host_run(
        &out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the `pause` scenario: `between` runs while the host waits, after its first call.
fn run_host_paused(launch: Launch<'_>, between: impl FnOnce()) -> HostRun {
    use std::io::{Read, Write};
    let mut child = host_command(launch, "pause", "stdin")
        .stdin(Stdio::piped())
        .spawn()
        .expect("host-stdio.mjs starts");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = stdout.read_line(&mut line).expect("read the host's stdout");
        assert!(n > 0, "the host ended before it was ready: {seen}");
        seen.push_str(&line);
        if line.contains("\"ready\"") {
            break;
        }
    }
    between();
    child
        .stdin
        .as_mut()
        .expect("piped stdin")
        .write_all(b"go\n")
        .expect("tell the host to go on");
    let _ = stdout.read_to_string(&mut seen);
    let status = child.wait().expect("the host ends");
    host_run(&status, seen, logs.join().unwrap_or_default())
}

fn host_run(status: &std::process::ExitStatus, stdout: String, stderr: String) -> HostRun {
    assert!(
        status.success(),
        "the host failed ({status:?}):\n{stderr}\n{stdout}"
    );
    let summary = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("no summary from the host: {stdout}\n{stderr}"));
    HostRun { summary, stderr }
}

fn host_command(launch: Launch<'_>, scenario: &str, end: &str) -> std::process::Command {
    let mut cmd = node("tests/mcp/host-stdio.mjs");
    cmd.args(["--scenario", scenario, "--end", end, "--"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match launch {
        Launch::Home(home) => {
            cmd.arg(latchkey_e2e::bin("latchkey"))
                .args(["mcp-stdio", "mcp", "--client", "bridge"])
                .envs(
                    home.command(&[])
                        .get_envs()
                        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
                );
        }
        Launch::Entry(entry, host_home) => {
            cmd.arg(entry["command"].as_str().expect("the entry's command"));
            for arg in entry["args"].as_array().expect("the entry's args") {
                cmd.arg(arg.as_str().expect("string args"));
            }
            // The host hands its own environment to the bridge: give it only what a desktop
            // host has, plus the entry's env.
            cmd.env_clear()
                .env("HOME", host_home)
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("USER", "tester")
                .env("SHELL", "/bin/sh")
                .env("TERM", "dumb")
                .env("LOGNAME", "tester");
            for (k, v) in entry["env"].as_object().into_iter().flatten() {
                cmd.env(k, v.as_str().expect("env values are strings"));
            }
        }
    }
    cmd
}

/// The session the server started for the run that began after `before` events.
fn session_after(server: &McpServer, before: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(s) = server
            .events()
            .iter()
            .skip(before)
            .find(|e| e["event"] == "session")
        {
            return s["session"].as_str().expect("session id").to_owned();
        }
        assert!(Instant::now() < deadline, "no session started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_full_run(run: &HostRun, server: &McpServer, session: &str, token: &str) {
    let s = &run.summary;
    let nonce = s["nonce"].as_str().expect("nonce");
    assert_eq!(
        s["errors"],
        serde_json::json!([]),
        "the bridge wrote only valid JSON-RPC on stdout: {s:#}"
    );
    // Outside any request, on the standalone GET stream.
    assert_eq!(
        s["logs"],
        serde_json::json!(["announced"]),
        "one log message: {s:#}"
    );
    assert_eq!(s["listChanged"], 1, "one tools/list_changed: {s:#}");
    // A server-to-client request during a call, answered by the host and used by the server.
    assert_eq!(s["elicitations"], 1, "{s:#}");
    assert_eq!(
        s["ask"],
        format!("the client said: {nonce}"),
        "the server used the host's answer: {s:#}"
    );
    // A server-to-client request on the GET stream.
    assert_eq!(s["rootsRequests"], 1, "{s:#}");
    assert_eq!(s["roots"], format!("file:///{nonce}"), "{s:#}");
    // The broken stream: every progress notification once, in order, then the result.
    assert_eq!(
        s["progress"],
        serde_json::json!([1, 2, 3, 4, 5]),
        "no lost and no duplicated message across the resumed stream: {s:#}"
    );
    assert_eq!(
        s["interruptedWire"],
        serde_json::json!([1, 2, 3, 4, 5, "result"]),
        "the bridge wrote every message of the broken call once, in order: {s:#}"
    );
    assert_eq!(s["interrupted"], "interrupted 5", "{s:#}");
    server.wait_for("the interrupted stream closing", |e| {
        e["event"] == "closed-stream" && e["session"] == session
    });
    server.wait_for("a GET resuming with Last-Event-ID", |e| {
        e["event"] == "GET" && e["session"] == session && e["lastEventId"].is_string()
    });
    // A clean end.
    assert_eq!(
        s["exit"],
        serde_json::json!({ "code": 0, "signal": null }),
        "the bridge exits 0: {s:#}\n{}",
        run.stderr
    );
    server.wait_for("the session's DELETE", |e| {
        e["event"] == "DELETE" && e["session"] == session
    });
    for secret in [MCP_KEY, GATEWAY_KEY, token] {
        assert!(
            !run.stderr.contains(secret),
            "a secret reached the bridge's logs"
        );
    }
    assert!(
        !run.stderr.contains("lk_"),
        "no Latchkey token (minted or not) in the bridge's logs"
    );
}

/// A running stack for the bridge: the MCP server, `latchkey serve` with alice logged in, and
/// a client `bridge` for the service; the client's token is returned for the canary checks.
struct Running {
    server: McpServer,
    stack: Stack,
    serve: latchkey_e2e::Serve,
    token: String,
}

async fn running() -> Running {
    let server = McpServer::start();
    let stack = stack_with(&server).await;
    let serve = stack.home.serve().expect("serve");
    stack.login().await;
    let add = stack
        .home
        .run(&["client", "add", "bridge", "--service", "mcp"], "")
        .expect("client add");
    assert_eq!(add.code, 0, "{}", add.stderr);
    let token = add.stdout.trim().to_owned();
    Running {
        server,
        stack,
        serve,
        token,
    }
}

impl Running {
    /// Stops `latchkey serve` and checks no secret reached its logs.
    fn stop(self) {
        let logs = self.serve.stop().expect("clean stop");
        for secret in [MCP_KEY, GATEWAY_KEY, self.token.as_str()] {
            assert!(!logs.contains(secret), "a secret reached the server's logs");
        }
    }
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn the_stdio_bridge_carries_everything_streamable_http_carries_and_ends_cleanly() {
    if !keychain_available() {
        return;
    }
    let r = running().await;
    // Host closes stdin.
    let before = r.server.events().len();
    let run = run_host(Launch::Home(&r.stack.home), "full", "stdin").await;
    let session = session_after(&r.server, before);
    assert_full_run(&run, &r.server, &session, &r.token);

    // Host sends SIGTERM instead.
    let before = r.server.events().len();
    let run = run_host(Launch::Home(&r.stack.home), "full", "sigterm").await;
    let session = session_after(&r.server, before);
    assert_full_run(&run, &r.server, &session, &r.token);

    // The host closes stdin while a call is in flight: the bridge still delivers its answer,
    // then ends the session.
    let before = r.server.events().len();
    let run = run_host(Launch::Home(&r.stack.home), "inflight", "stdin").await;
    let session = session_after(&r.server, before);
    let s = &run.summary;
    assert_eq!(
        s["inflight"], "counted 20",
        "the call in flight was answered: {s:#}"
    );
    assert_eq!(
        s["progress"],
        serde_json::json!((1..=20).collect::<Vec<_>>()),
        "{s:#}"
    );
    assert_eq!(
        s["exit"],
        serde_json::json!({ "code": 0, "signal": null }),
        "{s:#}"
    );
    r.server.wait_for("the session's DELETE", |e| {
        e["event"] == "DELETE" && e["session"] == session.as_str()
    });

    // As Claude Desktop starts it: the entry mcp-config writes, and a host's minimal environment
    // (no D-Bus session, so no keychain: the bridge finds the instance through its socket).
    let config = r
        .stack
        .home
        .run(
            &[
                "mcp-config",
                "--host",
                "claude-desktop",
                "--client",
                "bridge",
                "--service",
                "mcp",
            ],
            "",
        )
        .expect("mcp-config");
    assert_eq!(config.code, 0, "{}", config.stderr);
    let entry: Value = serde_json::from_str(&config.stdout).expect("entry JSON");
    let host_home = tempfile::tempdir().expect("host home");
    let before = r.server.events().len();
    let run = run_host(Launch::Entry(&entry, host_home.path()), "full", "stdin").await;
    let session = session_after(&r.server, before);
    assert_full_run(&run, &r.server, &session, &r.token);

    r.stop();
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn a_session_the_server_ended_is_reported_to_the_host_as_a_jsonrpc_error() {
    if !keychain_available() {
        return;
    }
    let r = running().await;
    // The server forgets the session: the host gets a JSON-RPC error saying so, and the bridge
    // still exits cleanly.
    let before = r.server.events().len();
    let run = run_host(Launch::Home(&r.stack.home), "expire", "stdin").await;
    let s = &run.summary;
    assert_eq!(s["expire"], "expired", "{s:#}");
    let message = s["afterExpiry"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("ended the session"),
        "the host learns the session ended: {s:#}"
    );
    assert_eq!(s["afterExpiry"]["code"], -32001, "{s:#}");
    assert!(
        run.stderr.contains("ended the session"),
        "the bridge says so on stderr: {}",
        run.stderr
    );
    assert_eq!(
        s["exit"],
        serde_json::json!({ "code": 0, "signal": null }),
        "{s:#}"
    );
    let _ = session_after(&r.server, before);

    r.stop();
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn a_refused_token_is_reminted_once_and_a_logout_reaches_the_host_as_latchkeys_error() {
    if !keychain_available() {
        return;
    }
    let r = running().await;
    // The proxy stops accepting the bridge's token (its client is revoked and added again): the
    // bridge mints a new one, once, and the host never notices.
    let run = run_host_paused(Launch::Home(&r.stack.home), || {
        let revoke = r
            .stack
            .home
            .run(&["client", "revoke", "bridge"], "")
            .expect("client revoke");
        assert_eq!(revoke.code, 0, "{}", revoke.stderr);
        let add = r
            .stack
            .home
            .run(&["client", "add", "bridge", "--service", "mcp"], "")
            .expect("client add");
        assert_eq!(add.code, 0, "{}", add.stderr);
    });
    let s = &run.summary;
    assert_eq!(
        s["afterPause"]["text"], "after the pause",
        "the call after the token was refused went through: {s:#}\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("minting a new one"),
        "the bridge re-minted its token: {}",
        run.stderr
    );
    assert_eq!(
        s["exit"],
        serde_json::json!({ "code": 0, "signal": null }),
        "{s:#}"
    );

    // Nobody logged in any more: the proxy's JSON-RPC error reaches the host as it is.
    let run = run_host_paused(Launch::Home(&r.stack.home), || {
        let logout = r.stack.home.run(&["logout"], "").expect("logout");
        assert_eq!(logout.code, 0, "{}", logout.stderr);
    });
    let s = &run.summary;
    assert_eq!(
        s["afterPause"]["data"]["latchkey_error"], "login_required",
        "the host sees Latchkey's JSON-RPC error: {s:#}"
    );
    assert!(
        s["afterPause"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("latchkey login") || m.contains("log in")),
        "it says what to do: {s:#}"
    );
    assert_eq!(
        s["exit"],
        serde_json::json!({ "code": 0, "signal": null }),
        "{s:#}"
    );

    r.stop();
}
