//! MCP hosts as the window shows them: detect installed hosts, preview the entry Latchkey would
//! add, add it (minting a client token only for hosts that need one in the file), undo.

use std::path::PathBuf;

use latchkey_core::Code;
use latchkey_core::paths::Paths;
use latchkey_hosts::{EntrySpec, FileState, HostId, HostPaths};
use latchkey_store::ClientName;

use crate::view::{HostApplied, HostPreview, HostView};
use crate::{Latchkey, RuntimeError};

impl Latchkey {
    fn host_paths(&self) -> Result<HostPaths, RuntimeError> {
        HostPaths::from_env()
            .ok_or_else(|| RuntimeError::new(Code::HostIo, "cannot find your home directory"))
    }

    fn entry_spec(&self, client: &str, service: &str) -> Result<EntrySpec, RuntimeError> {
        if self.config().service(service).is_none() && !self.servers().contains(service) {
            return Err(RuntimeError::unknown_service(service));
        }
        let name = ClientName::parse(client)?;
        let known = self
            .list_clients()
            .into_iter()
            .find(|c| c.name == name.as_str());
        let Some(known) = known else {
            return Err(RuntimeError::unknown_client(client));
        };
        if !known.services.iter().any(|s| s == service) {
            return Err(RuntimeError::invalid_input(format!(
                "client `{client}` may not use `{service}`: create a client with that service first"
            )));
        }
        Ok(entry_spec(
            self.proxy_url(),
            client,
            service,
            "mcp",
            self.paths(),
        ))
    }

    /// MCP hosts found on this machine.
    pub fn detect_hosts(&self) -> Result<Vec<HostView>, RuntimeError> {
        let paths = self.host_paths()?;
        Ok(latchkey_hosts::detect(&paths)
            .into_iter()
            .map(|h| {
                let (status, error) = match &h.state {
                    FileState::Ok => ("ok", None),
                    FileState::Missing => ("missing", None),
                    FileState::Malformed { error } => ("malformed", Some(error.clone())),
                };
                HostView {
                    id: h.id.as_str().to_owned(),
                    name: h.name.to_owned(),
                    config_path: h.config_path.display().to_string(),
                    installed: h.installed,
                    status: status.to_owned(),
                    error,
                    servers: h.servers,
                    can_undo: h.can_undo,
                }
            })
            .collect())
    }

    /// The entry that would be added (no token in it).
    pub fn preview_host_entry(
        &self,
        host: &str,
        client: &str,
        service: &str,
    ) -> Result<HostPreview, RuntimeError> {
        let id = parse_host(host)?;
        let spec = self.entry_spec(client, service)?;
        let preview = latchkey_hosts::preview(id, &self.host_paths()?, &spec)?;
        Ok(HostPreview {
            host: id.as_str().to_owned(),
            config_path: preview.config_path.display().to_string(),
            server_name: preview.server_name,
            entry_json: preview.entry_json,
            replaces_existing: preview.replaces_existing,
        })
    }

    /// Adds the entry to the host's config file, with a backup.
    pub fn apply_host_entry(
        &self,
        host: &str,
        client: &str,
        service: &str,
    ) -> Result<HostApplied, RuntimeError> {
        let id = parse_host(host)?;
        let spec = self.entry_spec(client, service)?;
        let token = if latchkey_hosts::needs_token(id) {
            let issued = self.issue_client_token(client, &format!("host:{}", id.as_str()))?;
            Some(latchkey_hosts::ClientToken::new(issued.expose().to_owned()))
        } else {
            None
        };
        let applied = latchkey_hosts::apply(id, &self.host_paths()?, &spec, token.as_ref())?;
        Ok(HostApplied {
            host: id.as_str().to_owned(),
            config_path: applied.config_path.display().to_string(),
            backup_path: applied.backup_path.map(|p| p.display().to_string()),
            server_name: applied.server_name,
        })
    }

    /// Restores the host's config file from the newest backup.
    pub fn undo_host_entry(&self, host: &str) -> Result<(), RuntimeError> {
        let id = parse_host(host)?;
        latchkey_hosts::undo(id, &self.host_paths()?)?;
        Ok(())
    }
}

/// The entry a host needs to reach `service` as `client` through the proxy at `proxy_base`: what
/// the window adds to a host's file and what `latchkey mcp-config` prints.
pub fn entry_spec(
    proxy_base: String,
    client: &str,
    service: &str,
    mcp_path: &str,
    paths: &Paths,
) -> EntrySpec {
    EntrySpec {
        server_name: format!("latchkey-{service}"),
        service: service.to_owned(),
        client: client.to_owned(),
        proxy_base,
        latchkey_program: cli_program(),
        mcp_path: mcp_path.to_owned(),
        env: paths.env_overrides(),
    }
}

fn parse_host(host: &str) -> Result<HostId, RuntimeError> {
    host.parse::<HostId>()
        .map_err(|_| RuntimeError::invalid_input(format!("unknown MCP host `{host}`")))
}

/// The `latchkey` command hosts should run: next to this program when installed together,
/// else found on PATH.
pub fn cli_program() -> PathBuf {
    let name = if cfg!(windows) {
        "latchkey.exe"
    } else {
        "latchkey"
    };
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}
