//! Talking to the running instance (the tray app or `latchkey serve`) over its loopback control
//! API, with the instance's control token, which never appears in argv, the environment or a
//! file.
//!
//! Finding the instance works with the minimal environment MCP hosts give the commands they start
//! (`HOME`, `PATH`, `USER`, `SHELL`, `TERM`, `LOGNAME`, plus what the host entry's `env` adds):
//! on Unix the instance's socket in the data directory hands over the port and the token to a
//! process of the same user (see `latchkey_runtime::socket`); only when that fails does the
//! command ask the keychain, which needs a desktop session (D-Bus on Linux) and is the only way on
//! Windows.

use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use latchkey_core::paths::Paths;
use latchkey_core::secret::Secret;
use latchkey_core::vault::{Vault, VaultKey};
use latchkey_runtime::instance::{self, InstanceError};

use crate::exit::Coded;

/// A connection to the running instance.
pub struct Remote {
    base: String,
    token: Secret,
    http: reqwest::Client,
    paths: Paths,
}

impl Remote {
    /// Finds the running instance: its socket first, then the instance file and the keychain.
    /// `None` when Latchkey is not running; a coded error (`keychain_unavailable`, …) when it runs
    /// but cannot be reached, saying what to do.
    pub async fn find(paths: &Paths) -> anyhow::Result<Option<Self>> {
        #[cfg(unix)]
        let socket_error = {
            use latchkey_runtime::socket;
            let path = instance::socket_path(paths);
            match socket::fetch(&path).await {
                Ok(handoff) => {
                    tracing::debug!(
                        pid = handoff.pid,
                        port = handoff.port,
                        "found Latchkey on its socket"
                    );
                    return Self::new(handoff.port, handoff.control_token, paths).map(Some);
                }
                Err(e) => {
                    tracing::debug!(code = e.code(), error = %e, "control socket gave no hand-off");
                    Some(e)
                }
            }
        };
        #[cfg(not(unix))]
        let socket_error: Option<std::convert::Infallible> = None;

        let info = match instance::running(paths) {
            Ok(info) => info,
            Err(InstanceError::NotRunning) => return Ok(None),
            Err(e) => return Err(Coded::from(latchkey_runtime::RuntimeError::from(e)).into()),
        };
        // Running, but the socket did not answer (an older instance, or the socket could not be
        // bound): the keychain is the way left.
        let unreachable = |e: latchkey_runtime::RuntimeError| -> anyhow::Error {
            let mut coded = Coded::from(e);
            if let Some(socket) = &socket_error {
                coded.message = format!(
                    "Latchkey is running (pid {}) but cannot be reached: {socket}, and {}. Restart Latchkey (it recreates its socket), or run this where the keychain is available",
                    info.pid, coded.message
                );
            }
            coded.into()
        };
        let vault =
            Vault::platform().map_err(|e| unreachable(latchkey_runtime::RuntimeError::from(e)))?;
        let token = vault
            .get(&VaultKey::ControlToken)
            .await
            .map_err(|e| unreachable(latchkey_runtime::RuntimeError::from(e)))?
            .ok_or_else(|| Coded {
                code: "not_running".into(),
                message: "Latchkey is running but has not published its control key; restart it"
                    .into(),
            })?;
        Self::new(info.port, token, paths).map(Some)
    }

    fn new(port: u16, token: Secret, paths: &Paths) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            base: format!("http://127.0.0.1:{port}"),
            token,
            http,
            paths: paths.clone(),
        })
    }

    /// The directories this instance was found through.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The instance's proxy base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request to the control API and decodes the JSON answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-Latchkey-Client", self.token.expose())
            .timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|_| Coded {
            code: "not_running".into(),
            message: format!(
                "Latchkey does not answer on {}: is it still running?",
                self.base
            ),
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .context("reading Latchkey's answer")?;
        if status.is_success() {
            if status == StatusCode::NO_CONTENT || bytes.is_empty() {
                return serde_json::from_slice(b"null").context("empty answer");
            }
            return serde_json::from_slice(&bytes)
                .context("Latchkey's answer is not the expected JSON");
        }
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            error: String,
            message: String,
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => Err(Coded {
                code: e.error,
                message: e.message,
            }
            .into()),
            Err(_) => Err(anyhow::anyhow!("Latchkey answered {status}")),
        }
    }

    /// GET with the default timeout.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::GET, path, None::<&()>, Duration::from_secs(30))
            .await
    }

    /// POST a JSON body with the default timeout.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> anyhow::Result<T> {
        self.call(Method::POST, path, Some(body), Duration::from_secs(30))
            .await
    }

    /// The underlying request builder, for streams.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("X-Latchkey-Client", self.token.expose())
    }
}
