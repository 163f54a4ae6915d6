//! The Auth Gateway client (PROTOCOL §2) and the in-memory credential cache.
//!
//! `GET {gateway.url}{endpoint}` with `Authorization: Bearer <access token>` and
//! `X-API-Key: <api key>`; `200` carries `{"data": {"name": "value", ...}}` (or the bare object).
//! Errors map to [`GatewayError`], whose Display says what the person should do and never
//! contains a credential value.

mod cache;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use tracing::{debug, instrument};
use url::Url;

use crate::secret::Secret;

pub use cache::{CachedCredentials, CredentialCache};

use crate::Code;

/// Why the gateway gave no credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// `401`: the access token was refused.
    #[error("the Auth Gateway refused your login (401): log in again")]
    Unauthorized,
    /// `403`: the user may not use this service.
    #[error(
        "your account may not use this service (403 from the Auth Gateway at `{endpoint}`); ask your administrator"
    )]
    Forbidden {
        /// The endpoint asked.
        endpoint: String,
    },
    /// `404`: nothing configured for this user and service.
    #[error(
        "no credentials configured in the Auth Gateway for this service (404 at `{endpoint}`); add them there"
    )]
    NotConfigured {
        /// The endpoint asked.
        endpoint: String,
    },
    /// `5xx` or a connection failure.
    #[error("the Auth Gateway is unavailable ({reason}); try again later")]
    Unavailable {
        /// What happened (status or connection error, never a body with secrets).
        reason: String,
    },
    /// No answer within the timeout.
    #[error("the Auth Gateway is unavailable: no answer in time; try again later")]
    Timeout,
    /// The answer lacks credentials the service maps.
    #[error(
        "the Auth Gateway's answer lacks {}: add them in the gateway",
        names.join(", ")
    )]
    MissingCredentials {
        /// Names only, never values.
        names: Vec<String>,
    },
    /// The answer is not the expected JSON.
    #[error("the Auth Gateway gave an invalid answer: {reason}")]
    InvalidAnswer {
        /// What is wrong with it (never its values).
        reason: String,
    },
    /// The request could not be built (bad endpoint).
    #[error("the gateway endpoint `{endpoint}` is not a valid path; fix it in the configuration")]
    BadEndpoint {
        /// The endpoint configured.
        endpoint: String,
    },
    /// The stored API key cannot be sent (not a valid header value).
    #[error(
        "the Auth Gateway API key is malformed: run `latchkey gateway set-key` and paste the key again"
    )]
    InvalidApiKey,
    /// Another unexpected status.
    #[error("the Auth Gateway answered with unexpected status {status}")]
    UnexpectedStatus {
        /// HTTP status.
        status: u16,
    },
}

impl GatewayError {
    /// Stable code for HTTP, IPC and exit codes.
    pub fn code(&self) -> Code {
        match self {
            Self::Unauthorized => Code::LoginRequired,
            Self::Forbidden { .. } => Code::ForbiddenService,
            Self::NotConfigured { .. } => Code::CredentialsNotConfigured,
            Self::Unavailable { .. } => Code::GatewayUnavailable,
            Self::Timeout => Code::GatewayTimeout,
            Self::MissingCredentials { .. } => Code::CredentialsMissing,
            Self::InvalidAnswer { .. } => Code::GatewayInvalidAnswer,
            Self::BadEndpoint { .. } => Code::ConfigInvalid,
            Self::InvalidApiKey => Code::GatewayApiKeyInvalid,
            Self::UnexpectedStatus { .. } => Code::GatewayError,
        }
    }
}

/// Client of the Auth Gateway.
#[derive(Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    url: Url,
    timeout: Duration,
}

impl fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayClient")
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl GatewayClient {
    /// A client for the gateway at `url`; every request is limited to `timeout`.
    pub fn new(http: reqwest::Client, url: Url, timeout: Duration) -> Self {
        Self { http, url, timeout }
    }

    /// The gateway's base URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    fn endpoint_url(&self, endpoint: &str) -> Result<Url, GatewayError> {
        let base = self.url.as_str().trim_end_matches('/');
        let path = if endpoint.starts_with('/') {
            endpoint.to_owned()
        } else {
            format!("/{endpoint}")
        };
        Url::parse(&format!("{base}{path}")).map_err(|_| GatewayError::BadEndpoint {
            endpoint: endpoint.to_owned(),
        })
    }

    /// Fetches the credentials at `endpoint`, checking that every name in `required` is present.
    #[instrument(skip_all, fields(endpoint = %endpoint), err)]
    pub async fn fetch(
        &self,
        endpoint: &str,
        token: &Secret,
        api_key: &Secret,
        required: &[String],
    ) -> Result<BTreeMap<String, Secret>, GatewayError> {
        let url = self.endpoint_url(endpoint)?;
        // A token that cannot be a header value cannot be valid: treat it as refused.
        let mut auth = http::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| GatewayError::Unauthorized)?;
        auth.set_sensitive(true);
        let mut key = http::HeaderValue::from_str(api_key.expose())
            .map_err(|_| GatewayError::InvalidApiKey)?;
        key.set_sensitive(true);
        let request = self
            .http
            .get(url)
            .header(http::header::AUTHORIZATION, auth)
            .header("x-api-key", key)
            .header(http::header::ACCEPT, "application/json")
            .timeout(self.timeout);
        let answer = tokio::time::timeout(self.timeout, async {
            let response = request.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        })
        .await;
        let (status, body) = match answer {
            Err(_) => return Err(GatewayError::Timeout),
            Ok(Err(e)) if e.is_timeout() => return Err(GatewayError::Timeout),
            Ok(Err(e)) => {
                return Err(GatewayError::Unavailable {
                    reason: describe(&e),
                });
            }
            Ok(Ok(pair)) => pair,
        };
        debug!(status = status.as_u16(), "gateway answered");
        match status.as_u16() {
            200 => parse_answer(&body, required),
            401 => Err(GatewayError::Unauthorized),
            403 => Err(GatewayError::Forbidden {
                endpoint: endpoint.to_owned(),
            }),
            404 => Err(GatewayError::NotConfigured {
                endpoint: endpoint.to_owned(),
            }),
            s if status.is_server_error() => Err(GatewayError::Unavailable {
                reason: format!("status {s}"),
            }),
            s => Err(GatewayError::UnexpectedStatus { status: s }),
        }
    }
}

/// A connection error without the URL's query or anything from a body.
fn describe(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "cannot connect".to_owned()
    } else if e.is_body() || e.is_decode() {
        "the answer was cut off".to_owned()
    } else {
        "request failed".to_owned()
    }
}

fn parse_answer(
    body: &[u8],
    required: &[String],
) -> Result<BTreeMap<String, Secret>, GatewayError> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| GatewayError::InvalidAnswer {
            reason: "the body is not JSON".to_owned(),
        })?;
    let serde_json::Value::Object(mut top) = json else {
        return Err(GatewayError::InvalidAnswer {
            reason: "the body is not a JSON object".to_owned(),
        });
    };
    let object = match top.remove("data") {
        Some(serde_json::Value::Object(data)) => data,
        Some(_) => {
            return Err(GatewayError::InvalidAnswer {
                reason: "`data` is not an object".to_owned(),
            });
        }
        None => top,
    };
    let mut values = BTreeMap::new();
    for (name, value) in object {
        match value {
            serde_json::Value::String(s) => {
                values.insert(name, Secret::new(s));
            }
            _ => {
                return Err(GatewayError::InvalidAnswer {
                    reason: format!("credential `{name}` is not a string"),
                });
            }
        }
    }
    let missing: Vec<String> = required
        .iter()
        .filter(|n| !values.contains_key(n.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(GatewayError::MissingCredentials { names: missing });
    }
    Ok(values)
}

#[cfg(test)]
mod tests;
