//! Talking to the running instance (the tray app or `latchkey serve`) over its loopback control
//! API. The control token comes from the keychain, so only the same user's processes can use it,
//! and it never appears in argv, the environment or a file.

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
}

impl Remote {
    /// Finds the running instance; `None` when Latchkey is not running.
    pub async fn find(paths: &Paths) -> anyhow::Result<Option<Self>> {
        let info = match instance::running(paths) {
            Ok(info) => info,
            Err(InstanceError::NotRunning) => return Ok(None),
            Err(e) => return Err(Coded::from(latchkey_runtime::RuntimeError::from(e)).into()),
        };
        let vault =
            Vault::platform().map_err(|e| Coded::from(latchkey_runtime::RuntimeError::from(e)))?;
        let token = vault
            .get(&VaultKey::ControlToken)
            .await
            .map_err(|e| Coded::from(latchkey_runtime::RuntimeError::from(e)))?
            .ok_or_else(|| Coded {
                code: "not_running".into(),
                message: "Latchkey is running but has not published its control key; restart it"
                    .into(),
            })?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Some(Self {
            base: format!("http://127.0.0.1:{}", info.port),
            token,
            http,
        }))
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
