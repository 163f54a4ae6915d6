//! Service credentials through the instance: read (warming the cache from the gateway or the
//! keychain), and the secrets a person types in (the gateway's API key, a manual service's
//! values), which go to the keychain only.

use std::collections::BTreeMap;
use std::sync::Arc;

use latchkey_core::credentials::CredentialValues;
use latchkey_core::secret::Secret;

use crate::{Latchkey, RuntimeError};

impl Latchkey {
    /// Credentials of a service (used by the in-process CLI paths and tests).
    pub async fn credentials(&self, service: &str) -> Result<Arc<CredentialValues>, RuntimeError> {
        let values = self.inner.credentials.get(service).await;
        self.changed();
        Ok(values?)
    }

    /// Stores the Auth Gateway API key in the keychain.
    pub async fn set_gateway_api_key(&self, key: Secret) -> Result<(), RuntimeError> {
        self.inner.credentials.set_api_key(key).await?;
        Ok(())
    }

    /// Stores the named secrets of a `source = "manual"` service in the keychain.
    pub async fn set_manual_secret(
        &self,
        service: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        self.inner.credentials.set_manual(service, values).await?;
        self.changed();
        Ok(())
    }
}
