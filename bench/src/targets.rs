//! The processes under test: `latchkey serve` and nginx, each configured to add the same
//! header to requests for the upstream.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The credential both proxies inject as `X-API-Key`.
pub const HEADER_VALUE: &str = "bench-credential-value";

/// A private Latchkey home (config, data, keychain namespace).
pub struct Home {
    dir: tempfile::TempDir,
    namespace: String,
}

impl Home {
    fn command(&self, binary: &Path, args: &[&str]) -> Command {
        self.wrapped_command(&[], binary, args)
    }

    /// `binary args`, run by `wrapper` (a program and its arguments, such as valgrind) when given.
    fn wrapped_command(&self, wrapper: &[String], binary: &Path, args: &[&str]) -> Command {
        let mut cmd = wrapped(wrapper, binary);
        cmd.args(args)
            .env("LATCHKEY_CONFIG_DIR", self.dir.path().join("config"))
            .env("LATCHKEY_DATA_DIR", self.dir.path().join("data"))
            .env("LATCHKEY_KEYCHAIN_SERVICE", &self.namespace)
            .env("LATCHKEY_LOG", "warn");
        cmd
    }
}

/// `program`, run by `wrapper` (a program and its arguments, such as valgrind) when it is not
/// empty.
pub fn wrapped(wrapper: &[String], program: &Path) -> Command {
    match wrapper.split_first() {
        Some((runner, before)) => {
            let mut cmd = Command::new(runner);
            cmd.args(before).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// A running `latchkey serve`.
pub struct Latchkey {
    /// The binary.
    pub binary: PathBuf,
    /// Proxy base URL.
    pub url: String,
    /// A client token scoped to the `bench` service.
    pub client_token: String,
    /// Process id, for RSS.
    pub pid: u32,
    child: Child,
    home: Home,
}

fn latchkey_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("bench binary dir")?.join("latchkey");
    anyhow::ensure!(
        path.is_file(),
        "build the CLI first: cargo build --release -p latchkey ({} missing)",
        path.display()
    );
    Ok(path)
}

impl Latchkey {
    /// Configures a home with one `manual` service pointing at `upstream`, stores its secret,
    /// creates a client, and starts `latchkey serve --port 0`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        Self::start_binary(latchkey_binary()?, upstream).await
    }

    /// [`Latchkey::start`] with another build of `latchkey` (the A/B mode).
    pub async fn start_binary(binary: PathBuf, upstream: SocketAddr) -> anyhow::Result<Self> {
        Self::start_wrapped(binary, upstream, &[]).await
    }

    /// [`Latchkey::start_binary`], with `latchkey serve` run by `wrapper` (the count mode's
    /// valgrind); set-up commands run bare.
    pub async fn start_wrapped(
        binary: PathBuf,
        upstream: SocketAddr,
        wrapper: &[String],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("config"))?;
        let config = format!(
            r#"version = 1
[proxy]
listen = "127.0.0.1:0"
rate_limit_per_second = 1000000000
rate_limit_burst = 1000000000

[[accounts]]
name = "bench"
issuer = "https://idp.bench.invalid"
client_id = "latchkey"

[[services]]
name = "bench"
account = "bench"
source = "manual"
upstream = "http://{upstream}"
allow_loopback_http = true
credentials = [{{ name = "key", header = "X-API-Key" }}]
"#
        );
        std::fs::write(dir.path().join("config/config.toml"), config)?;
        let namespace = format!(
            "dev.latchkey.bench.{}",
            dir.path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let home = Home { dir, namespace };
        run(
            home.command(&binary, &["secret", "set", "bench"]),
            &format!("key={HEADER_VALUE}\n"),
        )?;
        let token = run(
            home.command(
                &binary,
                &["client", "add", "bench-client", "--service", "bench"],
            ),
            "",
        )?;
        let (child, url) = spawn_serve(&home, wrapper, &binary)?;
        Ok(Self {
            pid: child.id(),
            binary,
            url,
            client_token: token.trim().to_owned(),
            child,
            home,
        })
    }

    /// Stops the server (SIGTERM), waits up to `within` for it to exit, and hands back its home.
    pub async fn stop_within(mut self, within: Duration) -> anyhow::Result<Home> {
        terminate_within(&mut self.child, within)?;
        Ok(self.home)
    }

    /// Stops the server (SIGTERM) and hands back its home for the start-up runs.
    pub async fn stop(mut self) -> anyhow::Result<Home> {
        terminate(&mut self.child)?;
        Ok(self.home)
    }
}

fn spawn_serve(home: &Home, wrapper: &[String], binary: &Path) -> anyhow::Result<(Child, String)> {
    let mut child = home
        .wrapped_command(wrapper, binary, &["serve", "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting latchkey serve")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://127.0.0.1:"))
                {
                    break url.to_owned();
                }
            }
            _ => bail!("latchkey serve exited before listening"),
        }
    };
    Ok((child, url))
}

fn terminate(child: &mut Child) -> anyhow::Result<()> {
    terminate_within(child, Duration::from_secs(10))
}

fn terminate_within(child: &mut Child, within: Duration) -> anyhow::Result<()> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    Ok(())
}

fn run(mut cmd: Command, stdin: &str) -> anyhow::Result<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Median, min and max start-to-ready times.
pub struct Ready {
    /// Runs.
    pub runs: usize,
    /// Median.
    pub median_ms: u64,
    /// Fastest.
    pub min_ms: u64,
    /// Slowest.
    pub max_ms: u64,
}

/// Starts `latchkey serve` `runs` times and measures spawn → first answered request through
/// the proxy (a credential injected and forwarded).
pub async fn start_to_ready(binary: &Path, home: &Home, runs: usize) -> anyhow::Result<Ready> {
    let token = run(
        home.command(
            binary,
            &["client", "add", "ready-client", "--service", "bench"],
        ),
        "",
    )?;
    let token = token.trim().to_owned();
    let mut times = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let (mut child, url) = spawn_serve(home, &[], binary)?;
        let client = crate::load::Client::connect(&url).await?;
        let mut client = client;
        loop {
            if client
                .get(
                    &format!("{url}/v1/status"),
                    Some(("x-latchkey-client", &token)),
                )
                .await
                .is_ok_and(|s| s == 200)
            {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "not ready within 10 s"
            );
        }
        times.push(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        terminate(&mut child)?;
    }
    times.sort_unstable();
    Ok(Ready {
        runs,
        median_ms: times[times.len() / 2],
        min_ms: times[0],
        max_ms: times[times.len() - 1],
    })
}

/// nginx in the foreground with its own prefix, adding the same header and writing its access
/// log to a file (Latchkey writes its audit log; fairness asks for the same kind of work).
pub struct Nginx {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The master's process id (its workers are its children).
    pub pid: u32,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx (Debian's) on a free loopback port.
    pub async fn start(upstream: SocketAddr, header_value: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let prefix = dir.path();
        let conf = format!(
            r#"worker_processes 2;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log {p}/access.log combined buffer=64k flush=1s;
  client_body_temp_path {p}/body;
  proxy_temp_path {p}/proxy;
  fastcgi_temp_path {p}/fastcgi;
  uwsgi_temp_path {p}/uwsgi;
  scgi_temp_path {p}/scgi;
  upstream backend {{ server {upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} backlog=1024;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-API-Key "{header_value}";
      proxy_buffering off;
      proxy_request_buffering off;
    }}
  }}
}}
"#,
            p = prefix.display()
        );
        std::fs::write(prefix.join("nginx.conf"), conf)?;
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .context("nginx is not installed (apt-get install nginx-light)")?;
        let child = Command::new(nginx)
            .args([
                "-p",
                &prefix.display().to_string(),
                "-c",
                &prefix.join("nginx.conf").display().to_string(),
                "-g",
                "daemon off;",
            ])
            .stdin(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "nginx did not start; see {}/error.log",
                prefix.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            addr,
            pid: child.id(),
            child,
            _dir: dir,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child);
    }
}
