//! Support for the end-to-end tests: a private Latchkey home (config and data directories and a
//! keychain namespace of its own), the `latchkey` binary run as a person would, and a
//! `latchkey serve` process whose logs are kept for the canary check.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A binary built in this workspace's target directory (next to the test executable).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/e2e-<hash> → target/debug/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace().join("target/debug"));
    dir.join(name)
}

/// A private Latchkey installation for one test.
pub struct Home {
    dir: tempfile::TempDir,
    keychain_namespace: String,
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Home {
    /// A fresh home with `config` as its configuration file.
    pub fn new(config: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("tempdir")?;
        std::fs::create_dir_all(dir.path().join("config"))?;
        std::fs::create_dir_all(dir.path().join("data"))?;
        std::fs::write(dir.path().join("config/config.toml"), config)?;
        let unique = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            dir,
            keychain_namespace: format!("dev.latchkey.test.{unique}"),
        })
    }

    /// The configuration directory.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The keychain service name this home's entries live under.
    pub fn keychain_namespace(&self) -> &str {
        &self.keychain_namespace
    }

    /// `latchkey <args>` with this home's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("latchkey"));
        cmd.args(args)
            .env("LATCHKEY_CONFIG_DIR", self.config_dir())
            .env("LATCHKEY_DATA_DIR", self.data_dir())
            .env("LATCHKEY_KEYCHAIN_SERVICE", &self.keychain_namespace)
            .env("LATCHKEY_LOG", "debug")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        cmd
    }

    /// Runs `latchkey <args>` to the end with `stdin` as input.
    pub fn run(&self, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting latchkey {args:?}"))?;
        if let Some(mut input) = child.stdin.take() {
            use std::io::Write;
            input.write_all(stdin.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        Ok(Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Starts `latchkey serve --port 0` and waits until it listens.
    pub fn serve(&self) -> anyhow::Result<Serve> {
        let mut child = self
            .command(&["serve", "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting latchkey serve")?;
        let logs = Arc::new(Mutex::new(String::new()));
        // Signals (by dropping its sender) once stderr reached its end: `stop` waits for it, so
        // what the process logs while shutting down is in the logs it returns.
        let (drained_tx, drained) = std::sync::mpsc::channel::<()>();
        if let Some(stderr) = child.stderr.take() {
            let logs = logs.clone();
            std::thread::spawn(move || {
                let _drained = drained_tx;
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut l = logs.lock().unwrap_or_else(|p| p.into_inner());
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let stdout = child.stdout.take().context("serve stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://127.0.0.1:"))
                {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let logs = logs.lock().unwrap_or_else(|p| p.into_inner()).clone();
                bail!("latchkey serve did not start within 30 s:\n{logs}");
            }
        };
        Ok(Serve {
            child,
            url,
            logs,
            drained,
        })
    }
}

/// A running `latchkey serve`.
pub struct Serve {
    child: Child,
    /// Its base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    logs: Arc<Mutex<String>>,
    /// Disconnected once the stderr reader has read everything.
    drained: std::sync::mpsc::Receiver<()>,
}

impl Serve {
    /// Everything it logged so far (at debug level).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops it with SIGTERM (a clean shutdown) and waits.
    pub fn stop(mut self) -> anyhow::Result<String> {
        #[cfg(unix)]
        {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                // The pipe closes with the process; wait for the reader to reach its end.
                let left = deadline.saturating_duration_since(Instant::now());
                if let Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    self.drained.recv_timeout(left)
                {
                    bail!("latchkey serve stopped but its stderr was not read to the end");
                }
                return Ok(self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        bail!("latchkey serve did not stop within 10 s")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Node, for the MCP peers and the sandbox.
pub fn node(script: &str) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(workspace().join(script));
    cmd
}
