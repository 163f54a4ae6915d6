//! The keychain's health: checked at start and, while it is broken (Secret Service not running,
//! collection locked), asked again in the background until it answers, when the sessions and
//! cached credentials it holds are restored without a restart.

use std::time::Duration;

use latchkey_core::vault::KeychainHealth;
use tracing::{info, warn};

use crate::Latchkey;

/// How often a broken keychain is asked again.
pub const KEYCHAIN_RETRY: Duration = Duration::from_secs(5);

impl Latchkey {
    /// The keychain's health as last checked.
    pub(crate) fn keychain_health(&self) -> KeychainHealth {
        self.inner
            .keychain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks the keychain again until it answers (unlocked, or its service started), then
    /// restores the sessions and cached credentials it holds: no restart needed.
    pub(crate) async fn retry_keychain(self) {
        let stop = self.inner.shutdown.clone();
        loop {
            tokio::select! {
                () = tokio::time::sleep(KEYCHAIN_RETRY) => {}
                () = stop.cancelled() => return,
            }
            let health = self.inner.vault.self_test().await;
            if !health.ok {
                continue;
            }
            info!(backend = %health.backend, "keychain available again");
            *self
                .inner
                .keychain
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = health;
            for (name, session) in &self.inner.sessions {
                if let Err(e) = session.restore().await {
                    warn!(account = %name, code = %e.code(), "session not restored");
                }
            }
            self.inner.credentials.warm_from_keychain().await;
            self.changed();
            return;
        }
    }
}
