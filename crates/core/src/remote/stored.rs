//! A remote server's keychain entries: the registration (with the authorization server's
//! metadata as discovered, so a restart refreshes without the network's discovery) and the
//! tokens, both JSON inside the secret. Also RFC 7009 revocation, which needs both.

use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::ServerSettings;
use crate::mcp_oauth::registration::{ClientAuth, ClientRegistration, RegistrationMethod};
use crate::mcp_oauth::{AuthorizationServer, Fetcher, McpOAuthError};
use crate::secret::Secret;
use crate::vault::{Vault, VaultError, VaultKey};

/// Latchkey's registration at a server's authorization server. `Debug` hides the secret.
#[derive(Clone)]
pub struct StoredClient {
    /// The issuer.
    pub issuer: String,
    /// Its authorization endpoint.
    pub authorization_endpoint: Url,
    /// Its token endpoint.
    pub token_endpoint: Url,
    /// Its RFC 7009 revocation endpoint, when advertised.
    pub revocation_endpoint: Option<Url>,
    /// Where its metadata was read.
    pub metadata_url: Url,
    /// Whether it sends `iss` in authorization responses (RFC 9207).
    pub iss_supported: bool,
    /// The client id.
    pub client_id: String,
    /// A client secret from registration, if one was issued.
    pub client_secret: Option<Secret>,
    /// `none`, `client_secret_basic` or `client_secret_post`.
    pub auth_method: String,
    /// `pre_registered`, `metadata_document` or `dynamic`.
    pub method: String,
    /// The MCP server's resource (RFC 8707).
    pub resource: String,
}

impl std::fmt::Debug for StoredClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredClient")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl StoredClient {
    pub(super) fn new(
        server: &AuthorizationServer,
        registration: &ClientRegistration,
        resource: &str,
    ) -> Self {
        let (auth_method, client_secret) = match &registration.auth {
            ClientAuth::ClientSecretBasic(s) => ("client_secret_basic", Some(s.clone())),
            ClientAuth::ClientSecretPost(s) => ("client_secret_post", Some(s.clone())),
            _ => ("none", None),
        };
        let method = match registration.method {
            RegistrationMethod::PreRegistered => "pre_registered",
            RegistrationMethod::MetadataDocument => "metadata_document",
            _ => "dynamic",
        };
        let mut client = Self {
            issuer: server.issuer.clone(),
            authorization_endpoint: server.authorization_endpoint.clone(),
            token_endpoint: server.token_endpoint.clone(),
            revocation_endpoint: None,
            metadata_url: server.metadata_url.clone(),
            iss_supported: false,
            client_id: registration.client_id.clone(),
            client_secret,
            auth_method: auth_method.to_owned(),
            method: method.to_owned(),
            resource: String::new(),
        };
        client.refresh_metadata(server, resource);
        client
    }

    /// Takes the endpoints of a fresh discovery (same issuer).
    pub(super) fn refresh_metadata(&mut self, server: &AuthorizationServer, resource: &str) {
        self.authorization_endpoint = server.authorization_endpoint.clone();
        self.token_endpoint = server.token_endpoint.clone();
        self.revocation_endpoint = server.revocation_endpoint.clone();
        self.metadata_url = server.metadata_url.clone();
        self.iss_supported = server.authorization_response_iss_parameter_supported;
        resource.clone_into(&mut self.resource);
    }

    /// Whether this registration is the one the settings ask for (a configured client id must
    /// be the one kept).
    pub(super) fn client_id_matches(&self, settings: &ServerSettings) -> bool {
        settings
            .client_id
            .as_ref()
            .is_none_or(|id| *id == self.client_id)
    }

    pub(super) fn registration(&self) -> ClientRegistration {
        let auth = match (self.auth_method.as_str(), &self.client_secret) {
            ("client_secret_basic", Some(s)) => ClientAuth::ClientSecretBasic(s.clone()),
            ("client_secret_post", Some(s)) => ClientAuth::ClientSecretPost(s.clone()),
            _ => ClientAuth::None,
        };
        let method = match self.method.as_str() {
            "pre_registered" => RegistrationMethod::PreRegistered,
            "metadata_document" => RegistrationMethod::MetadataDocument,
            _ => RegistrationMethod::Dynamic,
        };
        ClientRegistration {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            auth,
            method,
        }
    }

    /// The authorization server as kept (for refresh and revocation without discovery).
    pub(super) fn authorization_server(&self) -> Result<AuthorizationServer, McpOAuthError> {
        Ok(AuthorizationServer {
            issuer: self.issuer.clone(),
            authorization_endpoint: self.authorization_endpoint.clone(),
            token_endpoint: self.token_endpoint.clone(),
            registration_endpoint: None,
            revocation_endpoint: self.revocation_endpoint.clone(),
            code_challenge_methods_supported: vec!["S256".to_owned()],
            client_id_metadata_document_supported: false,
            authorization_response_iss_parameter_supported: self.iss_supported,
            token_endpoint_auth_methods_supported: None,
            metadata_url: self.metadata_url.clone(),
        })
    }
}

/// A server's tokens. `Debug` hides them.
#[derive(Clone)]
pub struct StoredServerTokens {
    /// The access token.
    pub access_token: Secret,
    /// The refresh token, when granted.
    pub refresh_token: Option<Secret>,
    /// Expiry, unix seconds.
    pub expires_at: i64,
    /// Issued, unix seconds.
    pub issued_at: i64,
    /// Granted scopes (or those asked for when the answer did not list them).
    pub scopes: Vec<String>,
    /// The resource they are for.
    pub resource: String,
}

impl std::fmt::Debug for StoredServerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredServerTokens")
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct ClientWire {
    issuer: String,
    authorization_endpoint: Url,
    token_endpoint: Url,
    revocation_endpoint: Option<Url>,
    metadata_url: Url,
    iss_supported: bool,
    client_id: String,
    client_secret: Option<String>,
    auth_method: String,
    method: String,
    resource: String,
}

#[derive(Serialize, Deserialize)]
struct TokensWire {
    access_token: String,
    refresh_token: Option<String>,
    expires_at: i64,
    issued_at: i64,
    scopes: Vec<String>,
    resource: String,
}

fn corrupt(key: &VaultKey) -> VaultError {
    VaultError::Corrupt { entry: key.entry() }
}

async fn load_json<T: for<'de> Deserialize<'de>>(
    vault: &Vault,
    key: &VaultKey,
) -> Result<Option<T>, VaultError> {
    match vault.get(key).await? {
        None => Ok(None),
        Some(secret) => serde_json::from_str(secret.expose())
            .map(Some)
            .map_err(|_| corrupt(key)),
    }
}

async fn save_json<T: Serialize>(
    vault: &Vault,
    key: &VaultKey,
    value: &T,
) -> Result<(), VaultError> {
    let text = serde_json::to_string(value).map_err(|_| corrupt(key))?;
    vault.put(key, &Secret::new(text)).await
}

pub(super) async fn load_client(
    vault: &Vault,
    server: &str,
) -> Result<Option<StoredClient>, VaultError> {
    let key = VaultKey::ServerClient {
        server: server.to_owned(),
    };
    let wire: Option<ClientWire> = load_json(vault, &key).await?;
    Ok(wire.map(|w| StoredClient {
        issuer: w.issuer,
        authorization_endpoint: w.authorization_endpoint,
        token_endpoint: w.token_endpoint,
        revocation_endpoint: w.revocation_endpoint,
        metadata_url: w.metadata_url,
        iss_supported: w.iss_supported,
        client_id: w.client_id,
        client_secret: w.client_secret.map(Secret::new),
        auth_method: w.auth_method,
        method: w.method,
        resource: w.resource,
    }))
}

pub(super) async fn save_client(
    vault: &Vault,
    server: &str,
    c: &StoredClient,
) -> Result<(), VaultError> {
    let key = VaultKey::ServerClient {
        server: server.to_owned(),
    };
    let wire = ClientWire {
        issuer: c.issuer.clone(),
        authorization_endpoint: c.authorization_endpoint.clone(),
        token_endpoint: c.token_endpoint.clone(),
        revocation_endpoint: c.revocation_endpoint.clone(),
        metadata_url: c.metadata_url.clone(),
        iss_supported: c.iss_supported,
        client_id: c.client_id.clone(),
        client_secret: c.client_secret.as_ref().map(|s| s.expose().to_owned()),
        auth_method: c.auth_method.clone(),
        method: c.method.clone(),
        resource: c.resource.clone(),
    };
    save_json(vault, &key, &wire).await
}

pub(super) async fn load_tokens(
    vault: &Vault,
    server: &str,
) -> Result<Option<StoredServerTokens>, VaultError> {
    let key = VaultKey::ServerTokens {
        server: server.to_owned(),
    };
    let wire: Option<TokensWire> = load_json(vault, &key).await?;
    Ok(wire.map(|w| StoredServerTokens {
        access_token: Secret::new(w.access_token),
        refresh_token: w.refresh_token.map(Secret::new),
        expires_at: w.expires_at,
        issued_at: w.issued_at,
        scopes: w.scopes,
        resource: w.resource,
    }))
}

pub(super) async fn save_tokens(
    vault: &Vault,
    server: &str,
    t: &StoredServerTokens,
) -> Result<(), VaultError> {
    let key = VaultKey::ServerTokens {
        server: server.to_owned(),
    };
    let wire = TokensWire {
        access_token: t.access_token.expose().to_owned(),
        refresh_token: t.refresh_token.as_ref().map(|s| s.expose().to_owned()),
        expires_at: t.expires_at,
        issued_at: t.issued_at,
        scopes: t.scopes.clone(),
        resource: t.resource.clone(),
    };
    save_json(vault, &key, &wire).await
}

/// RFC 7009: the refresh token (which revokes its grant at most servers), then the access token.
/// Returns why revocation was not (fully) done, for the log; never fails the removal.
pub(super) async fn revoke(
    fetcher: &Fetcher,
    client: &StoredClient,
    tokens: &StoredServerTokens,
) -> Option<String> {
    let Some(endpoint) = &client.revocation_endpoint else {
        return Some("the authorization server advertises no revocation endpoint".to_owned());
    };
    if let Err(e) = fetcher.check_url("revocation endpoint", endpoint) {
        return Some(e.to_string());
    }
    let mut tokens_to_revoke = Vec::new();
    if let Some(refresh) = &tokens.refresh_token {
        tokens_to_revoke.push((refresh, "refresh_token"));
    }
    tokens_to_revoke.push((&tokens.access_token, "access_token"));
    let mut notes = Vec::new();
    for (token, hint) in tokens_to_revoke {
        let mut form = vec![("token", token.expose()), ("token_type_hint", hint)];
        let mut request = fetcher.http().post(endpoint.clone());
        match (client.auth_method.as_str(), &client.client_secret) {
            ("client_secret_basic", Some(secret)) => {
                let encode = |v: &str| {
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                };
                request =
                    request.basic_auth(encode(&client.client_id), Some(encode(secret.expose())));
            }
            ("client_secret_post", Some(secret)) => {
                form.push(("client_id", &client.client_id));
                form.push(("client_secret", secret.expose()));
            }
            _ => form.push(("client_id", &client.client_id)),
        }
        let request = request.form(&form);
        match fetcher.send("revocation endpoint", endpoint, request).await {
            Ok(answer) if answer.status().is_success() => {}
            Ok(answer) => notes.push(format!(
                "revoking the {hint} was answered {}",
                answer.status().as_u16()
            )),
            Err(e) => notes.push(format!("revoking the {hint} failed: {e}")),
        }
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}
