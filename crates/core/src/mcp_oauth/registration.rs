//! Getting a client id at an MCP server's authorization server, in the priority order of the
//! MCP authorization specification: a pre-registered client id (from the person or the
//! configuration), else a Client ID Metadata Document (Latchkey's HTTPS URL is the client id)
//! when the server advertises `client_id_metadata_document_supported`, else Dynamic Client
//! Registration (RFC 7591) as a native app with a loopback redirect URI, else the person must be
//! asked for a client id ([`McpOAuthError::ClientIdRequired`]).

use serde::Deserialize;
use url::Url;

use super::fetch::{Fetcher, check_scheme, display, parse_json};
use super::metadata::AuthorizationServer;
use super::{McpOAuthError, shorten};
use crate::secret::Secret;

/// The redirect URI registered for Latchkey: loopback, any port (RFC 8252 §7.3: the server must
/// accept the port chosen at login time).
pub const LOOPBACK_REDIRECT_URI: &str = "http://127.0.0.1/oauth/callback";

/// The client name shown on consent pages.
pub const CLIENT_NAME: &str = "Latchkey";

/// How the client authenticates at the token endpoint. `Debug` never shows the secret.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientAuth {
    /// A public client (`token_endpoint_auth_method: none`): the client id only.
    None,
    /// `client_secret_basic`.
    ClientSecretBasic(Secret),
    /// `client_secret_post`.
    ClientSecretPost(Secret),
}

/// How the client id was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationMethod {
    /// Given by the person or the configuration.
    PreRegistered,
    /// Latchkey's Client ID Metadata Document URL is the client id.
    MetadataDocument,
    /// RFC 7591 Dynamic Client Registration.
    Dynamic,
}

/// A client id at one authorization server (client ids are per server, never reused elsewhere).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientRegistration {
    /// The authorization server's issuer this id belongs to.
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// How to authenticate at the token endpoint.
    pub auth: ClientAuth,
    /// How it was obtained.
    pub method: RegistrationMethod,
}

/// A client id the person (or the configuration) registered beforehand.
#[derive(Debug, Clone)]
pub struct PreRegisteredClient {
    /// The client id.
    pub client_id: String,
    /// Its secret, for a confidential client (sent `client_secret_basic`).
    pub client_secret: Option<Secret>,
}

/// What registration may use.
#[derive(Debug, Clone, Default)]
pub struct RegistrationInputs {
    /// A pre-registered client, first in priority.
    pub pre_registered: Option<PreRegisteredClient>,
    /// The HTTPS URL of Latchkey's Client ID Metadata Document (`docs/client-metadata.json`
    /// served somewhere stable), used when the server supports such documents.
    pub metadata_document_url: Option<Url>,
    /// A fixed loopback callback port to register too (`http://127.0.0.1:{port}/oauth/callback`)
    /// for authorization servers that match redirect URIs exactly, port included, instead of
    /// honouring RFC 8252 §7.3; the logins must then listen on that port.
    pub callback_port: Option<u16>,
}

/// Obtains a client id at `server` in the specification's priority order.
#[tracing::instrument(skip_all, fields(issuer = %shorten(&server.issuer)), err)]
pub async fn register(
    fetcher: &Fetcher,
    server: &AuthorizationServer,
    inputs: &RegistrationInputs,
) -> Result<ClientRegistration, McpOAuthError> {
    if let Some(pre) = &inputs.pre_registered {
        let auth = match &pre.client_secret {
            None => ClientAuth::None,
            Some(secret) => secret_auth(server, secret.clone())?,
        };
        return Ok(ClientRegistration {
            issuer: server.issuer.clone(),
            client_id: pre.client_id.clone(),
            auth,
            method: RegistrationMethod::PreRegistered,
        });
    }
    if server.client_id_metadata_document_supported
        && let Some(document) = &inputs.metadata_document_url
    {
        // The draft requires an https URL with a path; never plain http, even on loopback.
        check_scheme("client metadata document", document, false)?;
        return Ok(ClientRegistration {
            issuer: server.issuer.clone(),
            client_id: document.to_string(),
            auth: ClientAuth::None,
            method: RegistrationMethod::MetadataDocument,
        });
    }
    if let Some(endpoint) = &server.registration_endpoint {
        let mut redirect_uris = vec![LOOPBACK_REDIRECT_URI.to_owned()];
        if let Some(port) = inputs.callback_port {
            redirect_uris.push(format!("http://127.0.0.1:{port}/oauth/callback"));
        }
        return dynamic(fetcher, server, endpoint, &redirect_uris).await;
    }
    Err(McpOAuthError::ClientIdRequired {
        issuer: shorten(&server.issuer),
        metadata_document_supported: server.client_id_metadata_document_supported,
    })
}

/// How a pre-registered confidential client sends its secret: `client_secret_basic` when the
/// server advertises it or advertises nothing (RFC 8414 §2's default), else
/// `client_secret_post` when advertised; a server that allows neither cannot take the secret.
fn secret_auth(server: &AuthorizationServer, secret: Secret) -> Result<ClientAuth, McpOAuthError> {
    let Some(methods) = &server.token_endpoint_auth_methods_supported else {
        return Ok(ClientAuth::ClientSecretBasic(secret));
    };
    if methods.iter().any(|m| m == "client_secret_basic") {
        Ok(ClientAuth::ClientSecretBasic(secret))
    } else if methods.iter().any(|m| m == "client_secret_post") {
        Ok(ClientAuth::ClientSecretPost(secret))
    } else {
        Err(McpOAuthError::ClientAuthUnsupported {
            issuer: shorten(&server.issuer),
            offered: shorten(&methods.join(" ")),
        })
    }
}

#[derive(Deserialize)]
struct RegistrationAnswer {
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// RFC 7591 §3.1: a native public client with loopback redirect URIs.
async fn dynamic(
    fetcher: &Fetcher,
    server: &AuthorizationServer,
    endpoint: &Url,
    redirect_uris: &[String],
) -> Result<ClientRegistration, McpOAuthError> {
    let what = "client registration endpoint";
    fetcher.check_url(what, endpoint)?;
    let body = serde_json::json!({
        "client_name": CLIENT_NAME,
        "application_type": "native",
        "redirect_uris": redirect_uris,
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    });
    let request = fetcher.http().post(endpoint.clone()).json(&body);
    let answer = fetcher.send(what, endpoint, request).await?;
    let status = answer.status();
    let bytes = fetcher.read_capped(what, endpoint, answer).await?;
    if !status.is_success() {
        let parsed: Option<ErrorAnswer> = serde_json::from_slice(&bytes).ok();
        let (error, description) = parsed
            .map(|e| (e.error, e.error_description))
            .unwrap_or_default();
        return Err(McpOAuthError::RegistrationRefused {
            error: error.map_or_else(|| format!("http_{}", status.as_u16()), |e| shorten(&e)),
            description: description.map(|d| shorten(&d)),
        });
    }
    let answer: RegistrationAnswer = parse_json("client registration answer", endpoint, &bytes)?;
    let client_id = answer
        .client_id
        .filter(|id| !id.is_empty())
        .ok_or(McpOAuthError::RegistrationWithoutClientId)?;
    let secret = answer
        .client_secret
        .filter(|s| !s.is_empty())
        .map(Secret::new);
    let auth = match (answer.token_endpoint_auth_method.as_deref(), secret) {
        (None | Some("none"), _) => ClientAuth::None,
        (Some("client_secret_post"), Some(s)) => ClientAuth::ClientSecretPost(s),
        (Some("client_secret_basic"), Some(s)) => ClientAuth::ClientSecretBasic(s),
        (Some(other), _) => {
            return Err(McpOAuthError::Malformed {
                what: "client registration answer",
                url: display(endpoint),
                reason: format!(
                    "it registered token_endpoint_auth_method `{}`, which Latchkey cannot use",
                    shorten(other)
                ),
            });
        }
    };
    tracing::debug!(client_id = %shorten(&client_id), "registered dynamically");
    Ok(ClientRegistration {
        issuer: server.issuer.clone(),
        client_id,
        auth,
        method: RegistrationMethod::Dynamic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Client ID Metadata Document shipped in the repository, to be published at the HTTPS
    /// URL it names as `client_id`.
    const DOCUMENT: &str = include_str!("../../../../docs/client-metadata.json");

    fn server(methods: Option<&[&str]>, cimd: bool, dcr: bool) -> AuthorizationServer {
        let url = |p: &str| Url::parse(&format!("https://as.example.com{p}")).expect("url");
        AuthorizationServer {
            issuer: "https://as.example.com".into(),
            authorization_endpoint: url("/authorize"),
            token_endpoint: url("/token"),
            registration_endpoint: dcr.then(|| url("/register")),
            revocation_endpoint: None,
            code_challenge_methods_supported: vec!["S256".into()],
            client_id_metadata_document_supported: cimd,
            authorization_response_iss_parameter_supported: false,
            token_endpoint_auth_methods_supported: methods
                .map(|m| m.iter().map(|s| (*s).to_owned()).collect()),
            metadata_url: url("/.well-known/oauth-authorization-server"),
        }
    }

    fn pre(secret: Option<&str>) -> RegistrationInputs {
        RegistrationInputs {
            pre_registered: Some(PreRegisteredClient {
                client_id: "pre".into(),
                client_secret: secret.map(Secret::new),
            }),
            ..RegistrationInputs::default()
        }
    }

    #[tokio::test]
    async fn a_pre_registered_secret_is_sent_the_way_the_server_allows() {
        let fetcher = Fetcher::new(super::super::Settings::default()).expect("fetcher");
        let auth = |methods: Option<&'static [&'static str]>| {
            let fetcher = fetcher.clone();
            async move {
                register(
                    &fetcher,
                    &server(methods, false, false),
                    &pre(Some("s3cret")),
                )
                .await
                .map(|r| r.auth)
            }
        };
        assert!(
            matches!(auth(None).await, Ok(ClientAuth::ClientSecretBasic(_))),
            "RFC 8414 default"
        );
        assert!(matches!(
            auth(Some(&["client_secret_post", "client_secret_basic"])).await,
            Ok(ClientAuth::ClientSecretBasic(_))
        ));
        assert!(matches!(
            auth(Some(&["none", "client_secret_post"])).await,
            Ok(ClientAuth::ClientSecretPost(_))
        ));
        let e = auth(Some(&["private_key_jwt"]))
            .await
            .expect_err("no secret method");
        assert_eq!(e.code(), crate::Code::McpOauthClientAuthUnsupported);
        assert!(
            !format!("{e} {e:?}").contains("s3cret"),
            "the secret is never shown"
        );
        let public = register(&fetcher, &server(None, true, true), &pre(None)).await;
        assert!(matches!(public.map(|r| r.auth), Ok(ClientAuth::None)));
    }

    #[tokio::test]
    async fn the_metadata_document_comes_before_dynamic_registration_and_no_way_names_the_flags() {
        let fetcher = Fetcher::new(super::super::Settings::default()).expect("fetcher");
        let document =
            Url::parse("https://example.com/latchkey/client-metadata.json").expect("url");
        let inputs = RegistrationInputs {
            metadata_document_url: Some(document.clone()),
            ..RegistrationInputs::default()
        };
        let chosen = register(&fetcher, &server(None, true, true), &inputs)
            .await
            .expect("document");
        assert_eq!(chosen.method, RegistrationMethod::MetadataDocument);
        assert_eq!(chosen.client_id, document.as_str());

        let none = RegistrationInputs::default();
        let e = register(&fetcher, &server(None, false, false), &none)
            .await
            .expect_err("no way to register");
        assert_eq!(e.code(), crate::Code::McpOauthClientIdRequired);
        let text = e.to_string();
        assert!(
            text.contains("--client-id") && text.contains("--client-secret-stdin"),
            "{text}"
        );
        let e = register(&fetcher, &server(None, true, false), &none)
            .await
            .expect_err("document supported, no URL configured");
        assert!(e.to_string().contains("client_metadata_url"), "{e}");
    }

    #[test]
    fn the_shipped_client_metadata_document_describes_this_client() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        assert_eq!(doc["client_name"], CLIENT_NAME);
        assert_eq!(doc["token_endpoint_auth_method"], "none", "a public client");
        assert_eq!(
            doc["grant_types"],
            serde_json::json!(["authorization_code", "refresh_token"])
        );
        let redirects: Vec<&str> = doc["redirect_uris"]
            .as_array()
            .expect("redirect_uris")
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect();
        assert!(
            redirects.contains(&LOOPBACK_REDIRECT_URI),
            "the redirect URI Latchkey uses is listed: {redirects:?}"
        );
        for r in redirects {
            let url = Url::parse(r).expect("redirect URI");
            assert!(super::super::fetch::is_loopback(&url), "{r} is loopback");
        }
        let id = Url::parse(doc["client_id"].as_str().expect("client_id")).expect("URL");
        assert!(
            crate::config::parse_client_metadata_url(id.as_str()).is_ok(),
            "its client_id is a valid client_metadata_url, as where it is published must be"
        );
        assert_eq!(id.scheme(), "https", "a client id document URL is https");
        assert!(id.path().len() > 1, "with a path, as the draft requires");
    }
}
