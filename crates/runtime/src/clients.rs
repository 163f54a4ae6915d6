//! Local clients (the hosts and scripts that call the proxy) and their tokens: created, listed,
//! issued, revoked. The token of a new client is returned once and never shown again.

use std::time::Duration;

use latchkey_store::{ClientName, ClientOptions, ClientToken, TokenInfo};

use crate::view::{ClientView, CreatedClient};
use crate::{Latchkey, RuntimeError};

impl Latchkey {
    /// Local clients.
    pub fn list_clients(&self) -> Vec<ClientView> {
        self.inner
            .clients
            .list()
            .into_iter()
            .map(client_view)
            .collect()
    }

    /// Creates a client and returns its token once.
    pub fn create_client(
        &self,
        name: &str,
        services: &[String],
    ) -> Result<CreatedClient, RuntimeError> {
        self.create_client_with(name, services, &ClientOptions::default())
    }

    /// [`Latchkey::create_client`] with `options` (for example the right to read raw
    /// credentials).
    pub fn create_client_with(
        &self,
        name: &str,
        services: &[String],
        options: &ClientOptions,
    ) -> Result<CreatedClient, RuntimeError> {
        for s in services {
            if self.config().service(s).is_none() && !self.servers().contains(s) {
                return Err(RuntimeError::unknown_service(s));
            }
        }
        let name = ClientName::parse(name)?;
        let (info, token) = self.inner.clients.add_with(&name, services, options)?;
        Ok(CreatedClient {
            client: client_view(info),
            token: token.expose().to_owned(),
        })
    }

    /// Revokes a client and all its tokens.
    pub fn revoke_client(&self, name: &str) -> Result<(), RuntimeError> {
        let name = ClientName::parse(name)?;
        if self.inner.clients.revoke(&name)? {
            Ok(())
        } else {
            Err(RuntimeError::unknown_client(name.as_str()))
        }
    }

    /// An additional token for an existing client (e.g. written into a host's config file).
    pub fn issue_client_token(
        &self,
        client: &str,
        label: &str,
    ) -> Result<ClientToken, RuntimeError> {
        let name = ClientName::parse(client)?;
        Ok(self.inner.clients.issue_token(&name, label)?)
    }

    /// A stored token for an existing client labelled `label`, replacing the client's previous
    /// token of that label; with `expires_in` it stops working after that long.
    pub fn issue_client_token_expiring(
        &self,
        client: &str,
        label: &str,
        expires_in: Option<Duration>,
    ) -> Result<ClientToken, RuntimeError> {
        let name = ClientName::parse(client)?;
        Ok(self
            .inner
            .clients
            .issue_token_expiring(&name, label, expires_in)?)
    }

    /// A client's stored tokens: label, created, last used, expiry (never the token).
    pub fn client_tokens(&self, client: &str) -> Result<Vec<TokenInfo>, RuntimeError> {
        let name = ClientName::parse(client)?;
        Ok(self.inner.clients.tokens(&name)?)
    }

    /// Revokes one stored token of a client, by label; its other tokens keep working.
    pub fn revoke_client_token(&self, client: &str, label: &str) -> Result<(), RuntimeError> {
        let name = ClientName::parse(client)?;
        if self.inner.clients.revoke_token(&name, label)? {
            Ok(())
        } else {
            Err(RuntimeError::not_found("token labelled", label))
        }
    }

    /// A short-lived, memory-only token for a client (`latchkey headers`, `latchkey mcp-stdio`).
    pub fn issue_ephemeral_token(
        &self,
        client: &str,
        ttl: Duration,
    ) -> Result<ClientToken, RuntimeError> {
        let name = ClientName::parse(client)?;
        Ok(self.inner.clients.issue_ephemeral(&name, ttl)?)
    }
}

fn client_view(info: latchkey_store::ClientInfo) -> ClientView {
    ClientView {
        name: info.name.to_string(),
        services: info.services,
        created_at: info.created_at,
        last_used_at: info.last_used_at,
        raw_credentials: info.raw_credentials,
    }
}
