//! What the instance says about itself: the window's overview and the tray's icon and status
//! line, both computed from the live state on each call.

use crate::tray::{self, TrayStatus};
use crate::view::{AccountView, KeychainView, Overview, ProxyView};
use crate::{Latchkey, reload};

impl Latchkey {
    /// Everything the window's first screen shows.
    pub fn overview(&self) -> Overview {
        let accounts = self
            .config()
            .accounts
            .iter()
            .filter_map(|a| {
                let session = self.inner.sessions.get(a.name.as_str())?;
                Some(AccountView {
                    name: a.name.to_string(),
                    issuer: a.issuer.to_string(),
                    state: session.state(),
                    last_login_error: self.last_login_error(a.name.as_str()),
                    login_requested: self.login_requested(a.name.as_str()),
                    refresh_failure: session.refresh_failure(),
                })
            })
            .collect();
        Overview {
            accounts,
            services: self.inner.credentials.statuses(),
            proxy: ProxyView {
                url: self.proxy_url(),
                listening: self.inner.proxy_addr.is_some()
                    && self
                        .inner
                        .proxy_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .is_none(),
                error: self
                    .inner
                    .proxy_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            },
            keychain: KeychainView {
                ok: self.keychain_health().ok,
                backend: self.keychain_health().backend,
                message: self.keychain_health().message,
            },
            servers: self.server_views(),
            now: (self.inner.clock)(),
            config: self.inner.live.view(),
            activity_lost: self.inner.audit.dropped(),
        }
    }

    /// Icon and status line for the tray, across all accounts.
    pub fn tray_status(&self) -> TrayStatus {
        let now = (self.inner.clock)();
        let statuses: Vec<TrayStatus> = self
            .inner
            .sessions
            .iter()
            .map(|(name, s)| {
                let name = name.as_str();
                let state = s.state();
                let asked = tray::with_login_request(
                    tray::tray_status(&state, now),
                    &state,
                    name,
                    self.login_requested(name).as_ref(),
                    now,
                );
                tray::with_login_failure(asked, &state, self.last_login_error(name).as_ref())
            })
            .chain(self.server_tray_statuses(now))
            .collect();
        let status = tray::combine(&statuses).cloned().unwrap_or_else(|| {
            tray::tray_status(&latchkey_core::session::SessionState::LoggedOut, now)
        });
        reload::with_config_state(status, &self.inner.live.view())
    }
}
