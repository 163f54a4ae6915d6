//! Changing the configuration file for the person (`latchkey server add/remove`, the window's
//! *Add MCP server*): a format-preserving edit (`toml_edit`), so their comments, order and layout
//! survive. The file is validated before and after the edit and replaced atomically; an edit that
//! would make it invalid is refused and leaves the file as it was. Secrets are never written.

use std::io::Write;
use std::path::Path;

use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};

use super::{Config, ConfigError, ServerSettings};

/// Adds a `[[servers]]` table for `server` and returns the new configuration. Refused (file
/// unchanged) when the file is invalid or the result would be (a duplicate name, say).
pub fn add_server(path: &Path, server: &ServerSettings) -> Result<Config, ConfigError> {
    let mut doc = read(path)?;
    let servers = servers_mut(&mut doc, path)?;
    let mut table = Table::new();
    table.insert("name", value(server.name.as_str()));
    table.insert("url", value(server.url.as_str()));
    if let Some(id) = &server.client_id {
        table.insert("client_id", value(id.as_str()));
    }
    if let Some(scopes) = &server.scopes {
        let array: Array = scopes.iter().map(String::as_str).collect();
        table.insert("scopes", value(array));
    }
    if server.allow_insecure_loopback {
        table.insert("allow_insecure_loopback", value(true));
    }
    if let Some(port) = server.callback_port {
        table.insert("callback_port", value(i64::from(port)));
    }
    servers.push(table);
    write(path, &doc)
}

/// Removes the `[[servers]]` table named `name`; returns the new configuration, or `None` when
/// there was no such table (file unchanged).
pub fn remove_server(path: &Path, name: &str) -> Result<Option<Config>, ConfigError> {
    let mut doc = read(path)?;
    let servers = servers_mut(&mut doc, path)?;
    let before = servers.len();
    servers.retain(|t| t.get("name").and_then(Item::as_str) != Some(name));
    if servers.len() == before {
        return Ok(None);
    }
    if servers.is_empty() {
        doc.remove("servers");
    }
    write(path, &doc).map(Some)
}

pub(super) fn read(path: &Path) -> Result<DocumentMut, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    // The file must be valid before Latchkey touches it: the person fixes it first.
    Config::parse(&text, path)?;
    text.parse::<DocumentMut>()
        .map_err(|e| invalid(path, format!("not valid TOML: {e}")))
}

fn servers_mut<'a>(
    doc: &'a mut DocumentMut,
    path: &Path,
) -> Result<&'a mut ArrayOfTables, ConfigError> {
    let item = doc
        .entry("servers")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
    item.as_array_of_tables_mut().ok_or_else(|| {
        invalid(
            path,
            "`servers` is not written as [[servers]] tables".to_owned(),
        )
    })
}

/// Validates the edited text, then replaces the file atomically (same directory, same mode).
pub(super) fn write(path: &Path, doc: &DocumentMut) -> Result<Config, ConfigError> {
    let text = doc.to_string();
    let config = Config::parse(&text, path)?;
    let io = |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut temp = tempfile_in(dir, path).map_err(io)?;
    temp.1.write_all(text.as_bytes()).map_err(io)?;
    temp.1.sync_all().map_err(io)?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&temp.0, meta.permissions()).map_err(io)?;
    }
    std::fs::rename(&temp.0, path).map_err(|e| {
        let _ = std::fs::remove_file(&temp.0);
        io(e)
    })?;
    Ok(config)
}

fn tempfile_in(dir: &Path, path: &Path) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let name = path.file_name().map_or_else(
        || "config.toml".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    Ok((temp, file))
}

fn invalid(path: &Path, message: String) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        line: 1,
        column: 1,
        message,
        fix: "correct the file by hand (see README \"Configuration\"), then try again".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Name;

    const BASE: &str = r#"version = 1
# my accounts
[[accounts]]
name = "work"   # the one
issuer = "https://idp.example.com"
client_id = "latchkey"

[[services]]
name = "github"
account = "work"
source = "access_token"
upstream = "https://api.github.com"
credentials = [{ name = "access_token", header = "Authorization", prefix = "Bearer " }]
"#;

    fn server(name: &str) -> ServerSettings {
        ServerSettings {
            name: Name::parse(name).expect("name"),
            url: url::Url::parse("https://mcp.example.com/mcp").expect("url"),
            client_id: None,
            scopes: Some(vec!["read".into(), "write".into()]),
            allow_insecure_loopback: false,
            callback_port: None,
        }
    }

    fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn adding_and_removing_a_server_keeps_comments_and_layout() {
        let (_dir, path) = file(BASE);
        let config = add_server(&path, &server("linear")).expect("added");
        assert_eq!(config.servers.len(), 1);
        assert_eq!(
            config.server("linear").and_then(|s| s.scopes.clone()),
            Some(vec!["read".to_owned(), "write".to_owned()])
        );
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.starts_with(BASE),
            "the person's text is untouched: {text}"
        );
        assert!(text.contains("[[servers]]\nname = \"linear\""), "{text}");
        let config = remove_server(&path, "linear")
            .expect("removed")
            .expect("was there");
        assert!(config.servers.is_empty());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), BASE);
    }

    #[test]
    fn a_server_named_like_a_service_or_twice_is_refused_and_the_file_kept() {
        let (_dir, path) = file(BASE);
        let e = add_server(&path, &server("github")).expect_err("collides");
        assert!(e.to_string().contains("has the name of a service"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), BASE);
        add_server(&path, &server("linear")).expect("added");
        let e = add_server(&path, &server("linear")).expect_err("twice");
        assert!(e.to_string().contains("defined twice"), "{e}");
        assert_eq!(
            Config::load_from(&path).expect("still valid").servers.len(),
            1
        );
    }

    #[test]
    fn removing_an_unknown_server_changes_nothing() {
        let (_dir, path) = file(BASE);
        assert!(remove_server(&path, "nope").expect("ok").is_none());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), BASE);
    }
}
