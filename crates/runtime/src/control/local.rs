//! [`Control`] in-process: what the control router serves, and what the `latchkey` command
//! does itself when no instance runs. Everything an answer adds to a [`Latchkey`] call (the
//! login timeout, the ephemeral token's bounds, the status report) is decided here, once.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use url::Url;

use latchkey_core::Code;
use latchkey_core::secret::Secret;
use latchkey_store::{ActivityBuckets, AuditPage, TokenInfo};

use super::{
    ActivityEvent, ActivityStream, AddedServerView, Control, EphemeralToken, EventStream,
    HostEntry, InstanceEvent, LOGIN_WAIT, NewClient, NewServer, StatusReport, WindowRequest,
};
use crate::view::{
    ActivityFilter, ClientView, ConnectionView, CreatedClient, HostApplied, HostPreview, HostView,
    Overview, ServerView,
};
use crate::{AddServer, ClientOptions, Latchkey, RuntimeError};

/// An ephemeral token lasts this long unless asked otherwise…
const EPHEMERAL_TTL: Duration = Duration::from_secs(3600);
/// …and never less than this…
const EPHEMERAL_MIN: Duration = Duration::from_secs(60);
/// …nor more than this.
const EPHEMERAL_MAX: Duration = Duration::from_secs(86_400);

impl Control for Latchkey {
    async fn status(&self) -> Result<StatusReport, RuntimeError> {
        Ok(StatusReport {
            overview: self.overview(),
            clients: self.list_clients(),
        })
    }

    async fn overview(&self) -> Result<Overview, RuntimeError> {
        Ok(Latchkey::overview(self))
    }

    async fn follow_events(&self, as_window: bool) -> Result<EventStream, RuntimeError> {
        let mut changes = self.subscribe();
        // Only changes from now on: the follower reads the overview once it is subscribed.
        changes.mark_unchanged();
        let rows = self.subscribe_activity();
        // Held for as long as the window follows: it counts as open.
        let windows = as_window.then(|| self.subscribe_windows());
        // Ends with the instance, so an open stream never holds up its shutdown.
        let stopped = Box::pin(self.shutdown_signal());
        let state = (changes, rows, windows, stopped);
        let stream = futures_util::stream::unfold(state, |state| async move {
            let (mut changes, mut rows, mut windows, mut stopped) = state;
            let event = tokio::select! {
                () = &mut stopped => return None,
                changed = changes.changed() => match changed {
                    Ok(()) => InstanceEvent::Changed,
                    Err(_) => return None,
                },
                row = rows.recv() => match row {
                    Ok(row) => InstanceEvent::Activity(Box::new(row)),
                    Err(RecvError::Lagged(n)) => InstanceEvent::Lagged(n),
                    Err(RecvError::Closed) => return None,
                },
                request = next_request(&mut windows) => match request {
                    Some(request) => InstanceEvent::ShowWindow { at: request.at },
                    None => return None,
                },
            };
            Some((Ok(event), (changes, rows, windows, stopped)))
        });
        Ok(Box::pin(stream))
    }

    async fn begin_login(&self, account: &str) -> Result<Url, RuntimeError> {
        Latchkey::begin_login(self, account).await
    }

    async fn wait_login(&self, account: &str) -> Result<Overview, RuntimeError> {
        match tokio::time::timeout(LOGIN_WAIT, Latchkey::wait_login(self, account)).await {
            Ok(result) => result?,
            Err(_) => {
                self.cancel_login(account);
                // Kept as the account's last login failure (instead of the cancel just recorded).
                let e = RuntimeError::new(
                    Code::LoginTimeout,
                    "the login was not completed within 10 minutes; try again",
                );
                return Err(self.login_failed(account, e));
            }
        }
        Ok(self.overview())
    }

    async fn cancel_login(&self, account: &str) -> Result<(), RuntimeError> {
        Latchkey::cancel_login(self, account);
        Ok(())
    }

    async fn refresh_now(&self, account: &str) -> Result<(), RuntimeError> {
        Latchkey::refresh_now(self, account).await
    }

    async fn logout(&self, account: &str) -> Result<(), RuntimeError> {
        Latchkey::logout(self, account).await
    }

    async fn access_token(&self, account: &str) -> Result<Secret, RuntimeError> {
        Latchkey::access_token(self, account).await
    }

    async fn set_gateway_api_key(&self, key: Secret) -> Result<(), RuntimeError> {
        Latchkey::set_gateway_api_key(self, key).await
    }

    async fn set_manual_secret(
        &self,
        service: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        Latchkey::set_manual_secret(self, service, values).await
    }

    async fn list_clients(&self) -> Result<Vec<ClientView>, RuntimeError> {
        Ok(Latchkey::list_clients(self))
    }

    async fn create_client(&self, client: &NewClient) -> Result<CreatedClient, RuntimeError> {
        let mut options = ClientOptions::default();
        options.allow_raw_credentials = client.allow_raw_credentials;
        self.create_client_with(&client.name, &client.services, &options)
    }

    async fn revoke_client(&self, name: &str) -> Result<(), RuntimeError> {
        Latchkey::revoke_client(self, name)
    }

    async fn client_tokens(&self, name: &str) -> Result<Vec<TokenInfo>, RuntimeError> {
        Latchkey::client_tokens(self, name)
    }

    async fn issue_client_token(
        &self,
        name: &str,
        label: &str,
        expires_in: Option<Duration>,
    ) -> Result<Secret, RuntimeError> {
        let token = self.issue_client_token_expiring(name, label, expires_in)?;
        Ok(Secret::new(token.expose()))
    }

    async fn revoke_client_token(&self, name: &str, label: &str) -> Result<(), RuntimeError> {
        Latchkey::revoke_client_token(self, name, label)
    }

    async fn issue_ephemeral_token(
        &self,
        client: &str,
        ttl: Option<Duration>,
    ) -> Result<EphemeralToken, RuntimeError> {
        let ttl = ttl
            .unwrap_or(EPHEMERAL_TTL)
            .clamp(EPHEMERAL_MIN, EPHEMERAL_MAX);
        let token = Latchkey::issue_ephemeral_token(self, client, ttl)?;
        Ok(EphemeralToken {
            token: Secret::new(token.expose()),
            expires_in: ttl,
        })
    }

    async fn query_activity(&self, filter: ActivityFilter) -> Result<AuditPage, RuntimeError> {
        Latchkey::query_activity(self, filter).await
    }

    async fn activity_chart(&self, span: &str) -> Result<ActivityBuckets, RuntimeError> {
        Latchkey::activity_chart(self, span).await
    }

    async fn follow_activity(&self) -> Result<ActivityStream, RuntimeError> {
        let rows = self.subscribe_activity();
        // Ends with the instance, so `latchkey log --follow` never holds up its shutdown.
        let stopped = Box::pin(self.shutdown_signal());
        // A lagging reader is told how many rows it missed, then carries on.
        let stream = futures_util::stream::unfold((rows, stopped), |state| async move {
            let (mut rows, mut stopped) = state;
            let event = tokio::select! {
                () = &mut stopped => return None,
                row = rows.recv() => match row {
                    Ok(row) => ActivityEvent::Row(Box::new(row)),
                    Err(RecvError::Lagged(n)) => ActivityEvent::Lagged(n),
                    Err(RecvError::Closed) => return None,
                },
            };
            Some((Ok(event), (rows, stopped)))
        });
        Ok(Box::pin(stream))
    }

    async fn list_connections(&self) -> Result<Vec<ConnectionView>, RuntimeError> {
        Ok(Latchkey::list_connections(self))
    }

    async fn close_connection(&self, id: &str) -> Result<(), RuntimeError> {
        Latchkey::close_connection(self, id)
    }

    async fn detect_hosts(&self) -> Result<Vec<HostView>, RuntimeError> {
        blocking(self, |lk| lk.detect_hosts()).await
    }

    async fn preview_host_entry(&self, entry: &HostEntry) -> Result<HostPreview, RuntimeError> {
        let entry = entry.clone();
        blocking(self, move |lk| {
            lk.preview_host_entry(&entry.host, &entry.client, &entry.service)
        })
        .await
    }

    async fn apply_host_entry(&self, entry: &HostEntry) -> Result<HostApplied, RuntimeError> {
        let entry = entry.clone();
        blocking(self, move |lk| {
            lk.apply_host_entry(&entry.host, &entry.client, &entry.service)
        })
        .await
    }

    async fn undo_host_entry(&self, host: &str) -> Result<(), RuntimeError> {
        let host = host.to_owned();
        blocking(self, move |lk| lk.undo_host_entry(&host)).await
    }

    async fn list_servers(&self) -> Result<Vec<ServerView>, RuntimeError> {
        Ok(self.server_views())
    }

    async fn add_server(&self, server: &NewServer) -> Result<AddedServerView, RuntimeError> {
        let options = AddServer {
            name: server.name.clone(),
            client_id: server.client_id.clone(),
            client_secret: server
                .client_secret
                .as_ref()
                .filter(|s| !s.is_empty())
                .map(|s| Secret::new(s.expose())),
            scopes: server.scopes.clone(),
            callback_port: server.callback_port,
            allow_insecure_loopback: server.allow_insecure_loopback,
        };
        let added = self.add_server_with(&server.url, options).await?;
        Ok(AddedServerView {
            authorize_url: added.authorize_url,
            name: added.name,
        })
    }

    async fn remove_server(&self, name: &str) -> Result<Option<String>, RuntimeError> {
        Latchkey::remove_server(self, name).await
    }

    async fn server_login(&self, name: &str) -> Result<Url, RuntimeError> {
        Latchkey::server_login(self, name).await
    }

    async fn wait_server_login(&self, name: &str) -> Result<Vec<ServerView>, RuntimeError> {
        if tokio::time::timeout(LOGIN_WAIT, Latchkey::wait_server_login(self, name))
            .await
            .is_err()
        {
            self.cancel_server_login(name);
            return Err(RuntimeError::new(
                Code::LoginTimeout,
                "the sign-in was not completed within 10 minutes; try again",
            ));
        }
        Latchkey::wait_server_login(self, name).await?;
        Ok(self.server_views())
    }

    async fn cancel_server_login(&self, name: &str) -> Result<(), RuntimeError> {
        Latchkey::cancel_server_login(self, name);
        Ok(())
    }
}

/// Runs `f` (files, SQLite) on the blocking pool, off the async workers that serve the proxy.
async fn blocking<T: Send + 'static>(
    lk: &Latchkey,
    f: impl FnOnce(&Latchkey) -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, RuntimeError> {
    let lk = lk.clone();
    tokio::task::spawn_blocking(move || f(&lk))
        .await
        .map_err(|e| RuntimeError::internal(format!("a blocking task failed: {e}")))?
}

/// The next request to show the window; never, for a follower that is not a window. `None` when
/// the instance is gone. A request missed while behind is dropped: the next one shows the window.
async fn next_request(
    windows: &mut Option<tokio::sync::broadcast::Receiver<WindowRequest>>,
) -> Option<WindowRequest> {
    let Some(windows) = windows else {
        return std::future::pending().await;
    };
    loop {
        match windows.recv().await {
            Ok(request) => return Some(request),
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return None,
        }
    }
}
