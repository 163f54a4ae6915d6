//! The bridge against a scripted HTTP server on loopback, for what the SDK's server never does on
//! its own: replay an event twice, refuse a token, keep reconnecting the `GET` stream. The server
//! is a few lines over a `TcpListener` (one request per connection, bodies end at close), so each
//! test says exactly what goes over the wire.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use latchkey_core::secret::Secret;

use super::{Endpoint, Mint, Settings, run};

/// One request as the scripted server received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    headers: HashMap<String, String>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// What the scripted server answers.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    /// Keep the response open until the client goes away, then log a `CLOSED` request.
    hold: bool,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
            hold: false,
        }
    }

    fn sse(body: &str) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type", "text/event-stream".into())],
            body: body.to_owned(),
            hold: false,
        }
    }

    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            hold: false,
        }
    }

    fn held(mut self) -> Self {
        self.hold = true;
        self
    }

    fn with(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

type Script = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// Serves `script` on `127.0.0.1:0`; returns the MCP URL and the requests seen so far.
async fn scripted(script: Script) -> (String, Arc<std::sync::Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let script = script.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut read = BufReader::new(read);
                let mut line = String::new();
                if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let method = line.split(' ').next().unwrap_or_default().to_owned();
                let mut headers = HashMap::new();
                loop {
                    line.clear();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let Some((name, value)) = line.trim_end().split_once(':') else {
                        break;
                    };
                    headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
                }
                let length: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                if read.read_exact(&mut body).await.is_err() {
                    return;
                }
                let request = Seen {
                    method,
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                log.lock().expect("log").push(request.clone());
                let reply = script(&request);
                let mut head = format!(
                    "HTTP/1.1 {} Scripted\r\nconnection: close\r\n",
                    reply.status
                );
                for (name, value) in &reply.headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                if !reply.headers.iter().any(|(n, _)| *n == "content-type") || reply.status != 200 {
                    head.push_str(&format!("content-length: {}\r\n", reply.body.len()));
                }
                head.push_str("\r\n");
                let _ = write.write_all(head.as_bytes()).await;
                let _ = write.write_all(reply.body.as_bytes()).await;
                if reply.hold {
                    let mut rest = Vec::new();
                    let _ = read.read_to_end(&mut rest).await;
                    log.lock().expect("log").push(Seen {
                        method: "CLOSED".into(),
                        headers: HashMap::new(),
                        body: String::new(),
                    });
                    return;
                }
                let _ = write.shutdown().await;
            });
        }
    });
    (url, seen)
}

/// Waits (with a deadline) until the server has seen a request matching `pred`.
async fn wait_seen(seen: &std::sync::Mutex<Vec<Seen>>, pred: impl Fn(&Seen) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.lock().expect("seen").iter().any(&pred) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never saw the request; it saw {:?}",
            seen.lock().expect("seen")
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Hands out `token` and counts how often it was asked.
struct CountingMint {
    token: &'static str,
    count: Arc<AtomicUsize>,
}

impl Mint for CountingMint {
    async fn mint(&self) -> anyhow::Result<Secret> {
        self.count.fetch_add(1, Ordering::SeqCst);
        Ok(Secret::new(self.token))
    }
}

/// The bridge between `lines` and the returned stdout lines, against `url`.
struct Running {
    lines: mpsc::Sender<String>,
    out: BufReader<tokio::io::DuplexStream>,
    done: tokio::task::JoinHandle<()>,
    mints: Arc<AtomicUsize>,
}

fn start(url: String, token: &str, fresh: &'static str) -> Running {
    start_with(url, token, fresh, Duration::from_secs(5))
}

/// As [`start`], with `drain` as the limit for requests in flight once stdin closes.
fn start_with(url: String, token: &str, fresh: &'static str, drain: Duration) -> Running {
    let (lines, rx) = mpsc::channel(16);
    let (stdout, out) = tokio::io::duplex(1 << 16);
    let mints = Arc::new(AtomicUsize::new(0));
    let endpoint = Endpoint {
        url,
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        settings: Settings {
            drain,
            reconnect_attempts: 3,
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            quick_timeout: Duration::from_secs(5),
        },
    };
    let mint = CountingMint {
        token: fresh,
        count: mints.clone(),
    };
    let done = tokio::spawn(run(
        endpoint,
        mint,
        Secret::new(token),
        rx,
        stdout,
        std::future::pending(),
    ));
    Running {
        lines,
        out: BufReader::new(out),
        done,
        mints,
    }
}

impl Running {
    async fn send(&self, message: Value) {
        self.lines
            .send(message.to_string())
            .await
            .expect("bridge reads");
    }

    async fn next(&mut self) -> Value {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(10), self.out.read_line(&mut line))
            .await
            .expect("a message for the host in time")
            .expect("read");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    }

    /// Closes stdin and returns everything the bridge still wrote.
    async fn finish(mut self) -> (Vec<Value>, usize) {
        drop(self.lines);
        tokio::time::timeout(Duration::from_secs(10), self.done)
            .await
            .expect("the bridge ends in time")
            .expect("no panic");
        let mut rest = String::new();
        let _ = self.out.read_to_string(&mut rest).await;
        let rest = rest
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON lines"))
            .collect();
        (rest, self.mints.load(Ordering::SeqCst))
    }
}

fn initialize() -> Value {
    json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})
}

fn initialized() -> Value {
    json!({"jsonrpc":"2.0","method":"notifications/initialized"})
}

fn progress(n: u32) -> String {
    json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":7,"progress":n}})
        .to_string()
}

/// A server that answers `initialize` with session `s1`, accepts notifications and responses,
/// allows `DELETE`, and hands everything else to `rest`.
fn session_server(rest: impl Fn(&Seen, &Value) -> Reply + Send + Sync + 'static) -> Script {
    Arc::new(move |req: &Seen| {
        let body: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
        match (req.method.as_str(), body["method"].as_str()) {
            ("POST", Some("initialize")) => Reply::json(
                200,
                json!({"jsonrpc":"2.0","id":body["id"],"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"s","version":"1"}}}),
            )
            .with("mcp-session-id", "s1"),
            ("POST", Some(m)) if m.starts_with("notifications/") => Reply::status(202),
            ("POST", None) => Reply::status(202),
            ("DELETE", _) => Reply::status(200),
            _ => rest(req, &body),
        }
    })
}

#[tokio::test]
async fn a_broken_stream_is_resumed_once_in_order_without_the_replayed_duplicate() {
    let script = session_server(|req, body| match req.method.as_str() {
        "POST" => Reply::sse(&format!(
            "id: a\nretry: 10\ndata: \n\nid: b\ndata: {}\n\n",
            progress(1)
        ))
        .with("x-call", &body["id"].to_string()),
        "GET" if req.header("last-event-id") == Some("b") => Reply::sse(&format!(
            ": replay\nid: b\ndata: {}\n\nid: c\nevent: message\ndata: {}\n\nid: d\ndata: {}\n\n",
            progress(1),
            progress(2),
            json!({"jsonrpc":"2.0","id":5,"result":{"content":[]}})
        )),
        _ => Reply::status(405),
    });
    let (url, seen) = scripted(script).await;
    let mut bridge = start(url, "lk_old", "lk_new");
    bridge.send(initialize()).await;
    assert_eq!(bridge.next().await["id"], 0, "initialize answered");
    bridge.send(initialized()).await;
    bridge
        .send(json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":7}}}))
        .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(bridge.next().await);
    }
    let (rest, mints) = bridge.finish().await;
    assert!(rest.is_empty(), "nothing more, no duplicate: {rest:?}");
    assert_eq!(got[0]["params"]["progress"], 1);
    assert_eq!(got[1]["params"]["progress"], 2);
    assert_eq!(got[2]["id"], 5, "the answer last: {got:?}");
    assert_eq!(mints, 0);

    let seen = seen.lock().expect("seen").clone();
    let resume = seen
        .iter()
        .find(|r| r.method == "GET" && r.header("last-event-id").is_some())
        .expect("a GET with Last-Event-ID");
    assert_eq!(resume.header("last-event-id"), Some("b"));
    assert_eq!(resume.header("accept"), Some("text/event-stream"));
    for r in seen.iter().filter(|r| !r.body.contains("\"initialize\"")) {
        assert_eq!(r.header("mcp-session-id"), Some("s1"), "{r:?}");
        assert_eq!(
            r.header("mcp-protocol-version"),
            Some("2025-11-25"),
            "{r:?}"
        );
        assert_eq!(r.header("x-latchkey-client"), Some("lk_old"), "{r:?}");
    }
    let init = seen
        .iter()
        .find(|r| r.body.contains("\"initialize\""))
        .expect("initialize");
    assert_eq!(init.header("mcp-protocol-version"), None);
    assert_eq!(
        init.header("accept"),
        Some("application/json, text/event-stream")
    );
    assert!(
        seen.iter().any(|r| r.method == "DELETE"),
        "the session is ended"
    );
}

#[tokio::test]
async fn the_get_stream_carries_server_requests_reconnects_with_the_last_id_and_answers_go_back() {
    let script =
        session_server(
            |req, _| match (req.method.as_str(), req.header("last-event-id")) {
                ("GET", None) => Reply::sse(&format!(
                    "id: g1\ndata: {}\n\n",
                    json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"})
                )),
                ("GET", Some("g1")) => Reply::sse(&format!(
                    "id: g1\ndata: {}\n\nid: g2\ndata: {}\n\n",
                    json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"}),
                    json!({"jsonrpc":"2.0","id":"s-1","method":"roots/list"})
                )),
                _ => Reply::status(405),
            },
        );
    let (url, seen) = scripted(script).await;
    let mut bridge = start(url, "lk_old", "lk_new");
    bridge.send(initialize()).await;
    bridge.next().await;
    bridge.send(initialized()).await;
    let first = bridge.next().await;
    assert_eq!(first["method"], "notifications/tools/list_changed");
    let request = bridge.next().await;
    assert_eq!(
        request["method"], "roots/list",
        "the replayed notification is not written twice"
    );
    bridge
        .send(json!({"jsonrpc":"2.0","id":"s-1","result":{"roots":[]}}))
        .await;
    wait_seen(&seen, |r| {
        r.method == "GET" && r.header("last-event-id") == Some("g2")
    })
    .await;
    let (rest, _) = bridge.finish().await;
    assert!(rest.is_empty(), "{rest:?}");
    let seen = seen.lock().expect("seen").clone();
    let gets: Vec<_> = seen
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.header("last-event-id").unwrap_or("-"))
        .collect();
    assert_eq!(
        gets,
        vec!["-", "g1", "g2"],
        "reconnected from the last id until 405"
    );
    assert!(
        seen.iter()
            .any(|r| r.method == "POST" && r.body.contains("\"s-1\"") && r.body.contains("roots")),
        "the host's answer was POSTed"
    );
}

#[tokio::test]
async fn a_refused_token_is_reminted_once_per_request_and_a_second_refusal_reaches_the_host() {
    let script: Script = Arc::new(|req: &Seen| match req.header("x-latchkey-client") {
        Some("lk_new") if req.body.contains("\"ok\"") => {
            Reply::json(200, json!({"jsonrpc":"2.0","id":"ok","result":{}}))
        }
        _ => Reply::json(
            401,
            json!({"error":"client_unauthorized","message":"This client token is not valid: add the server again."}),
        ),
    });
    let (url, seen) = scripted(script).await;
    let mut bridge = start(url, "lk_old", "lk_new");
    bridge
        .send(json!({"jsonrpc":"2.0","id":"ok","method":"ping"}))
        .await;
    assert_eq!(
        bridge.next().await,
        json!({"jsonrpc":"2.0","id":"ok","result":{}}),
        "answered with the new token"
    );
    bridge
        .send(json!({"jsonrpc":"2.0","id":"no","method":"ping"}))
        .await;
    let refused = bridge.next().await;
    let (_, mints) = bridge.finish().await;
    assert_eq!(refused["id"], "no");
    assert_eq!(
        refused["error"]["message"],
        "Latchkey: This client token is not valid: add the server again."
    );
    assert_eq!(refused["error"]["data"]["latchkey"], "client_unauthorized");
    assert_eq!(mints, 2, "one new token per refused request, never a loop");
    let tokens: Vec<_> = seen
        .lock()
        .expect("seen")
        .iter()
        .map(|r| r.header("x-latchkey-client").unwrap_or("-").to_owned())
        .collect();
    assert_eq!(tokens, vec!["lk_old", "lk_new", "lk_new", "lk_new"]);
}

#[tokio::test]
async fn from_2026_07_28_a_cancelled_request_closes_its_stream_and_sends_no_notification() {
    let script: Script = Arc::new(|req: &Seen| {
        if req.method == "POST" && req.body.contains("tools/call") {
            Reply::sse(&format!("data: {}\n\n", progress(1))).held()
        } else {
            Reply::status(202)
        }
    });
    let (url, seen) = scripted(script).await;
    let mut bridge = start(url, "lk_old", "lk_new");
    bridge
        .send(
            json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{
            "name":"slow tool","arguments":{},
            "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","progressToken":7}}}),
        )
        .await;
    assert_eq!(bridge.next().await["params"]["progress"], 1);
    bridge
        .send(json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":9}}))
        .await;
    wait_seen(&seen, |r| r.method == "CLOSED").await;
    let (rest, _) = bridge.finish().await;
    assert!(
        rest.is_empty(),
        "no answer for a cancelled request: {rest:?}"
    );
    let seen = seen.lock().expect("seen").clone();
    assert!(
        !seen
            .iter()
            .any(|r| r.body.contains("notifications/cancelled")),
        "closing the stream is the cancellation: {seen:?}"
    );
    let call = &seen[0];
    assert_eq!(call.header("mcp-protocol-version"), Some("2026-07-28"));
    assert_eq!(call.header("mcp-method"), Some("tools/call"));
    assert_eq!(call.header("mcp-name"), Some("slow tool"));
    assert_eq!(call.header("mcp-session-id"), None);
    assert!(
        !seen
            .iter()
            .any(|r| r.method == "DELETE" || r.method == "GET"),
        "no session, no GET stream: {seen:?}"
    );
}

#[tokio::test]
async fn before_2026_07_28_a_cancellation_is_posted_and_the_drain_limit_ends_what_never_answers() {
    let script: Script = Arc::new(|req: &Seen| {
        if req.method == "POST" && req.body.contains("tools/call") {
            Reply::sse(&format!("data: {}\n\n", progress(1))).held()
        } else {
            Reply::status(202)
        }
    });
    let (url, seen) = scripted(script).await;
    let drain = Duration::from_millis(300);
    let mut bridge = start_with(url, "lk_old", "lk_new", drain);
    bridge
        .send(json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"slow","_meta":{"progressToken":7}}}))
        .await;
    assert_eq!(bridge.next().await["params"]["progress"], 1);
    bridge
        .send(json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":9}}))
        .await;
    wait_seen(&seen, |r| r.body.contains("notifications/cancelled")).await;
    let closing = tokio::time::Instant::now();
    let (rest, _) = bridge.finish().await;
    let took = closing.elapsed();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        took >= drain && took < drain * 10,
        "stdin closed: the request in flight had the drain limit, no more ({took:?})"
    );
    wait_seen(&seen, |r| r.method == "CLOSED").await;
}
