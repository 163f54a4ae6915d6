//! The accounts' sessions as the window and the CLI act on them: log out, refresh now, hand a
//! script a valid access token. Logging in has its own module, [`crate::login`].

use latchkey_core::secret::Secret;
use tracing::info;

use crate::{Latchkey, RuntimeError};

impl Latchkey {
    /// Revokes and wipes the account's tokens and cached credentials.
    pub async fn logout(&self, account: &str) -> Result<(), RuntimeError> {
        self.cancel_login(account);
        let report = self.session(account)?.logout().await?;
        self.inner.credentials.forget_account(account);
        if let Some(note) = report.revocation_note {
            info!(account, note = %note, "logged out without revocation");
        }
        self.changed();
        Ok(())
    }

    /// Refreshes the account's tokens now.
    pub async fn refresh_now(&self, account: &str) -> Result<(), RuntimeError> {
        self.session(account)?.refresh_now().await?;
        self.changed();
        Ok(())
    }

    /// A valid access token for scripts (`latchkey token`), refreshed first when due.
    pub async fn access_token(&self, account: &str) -> Result<Secret, RuntimeError> {
        let token = self.session(account)?.access_token().await?;
        self.changed();
        Ok(token)
    }
}
