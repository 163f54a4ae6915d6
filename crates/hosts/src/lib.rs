//! MCP hosts (Claude Desktop, Cursor, VS Code, Claude Code): where their configuration files
//! live, what Latchkey's entry looks like for each, and adding it safely — the entry is spliced
//! into the file's text so other servers, comments and formatting stay as they were; the previous
//! file is kept as a timestamped backup; undo restores it byte for byte. A malformed file is
//! reported and never written.

mod jsonc;
#[cfg(test)]
mod splice_props;

/// The JSONC scanner, opened to the fuzz crate (`fuzz/`) only, behind the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::jsonc::{Member, Object, SyntaxError, object_at, parse_top};
}

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{Value, json};

use latchkey_core::Code;

/// Text shown instead of a token in previews.
pub const TOKEN_PLACEHOLDER: &str = "<client token>";

const BACKUP_MARK: &str = ".latchkey-backup-";
/// Marks a backup of a file that did not exist (undo deletes the file).
const CREATED_MARK: &str = ".created";

/// A supported MCP host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostId {
    /// Claude Desktop (stdio servers only).
    ClaudeDesktop,
    /// Cursor.
    Cursor,
    /// Visual Studio Code.
    VsCode,
    /// Claude Code (the CLI).
    ClaudeCode,
}

impl HostId {
    /// Every host, in display order.
    pub const ALL: [HostId; 4] = [
        Self::ClaudeDesktop,
        Self::ClaudeCode,
        Self::Cursor,
        Self::VsCode,
    ];

    /// Stable id.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClaudeDesktop => "claude-desktop",
            Self::Cursor => "cursor",
            Self::VsCode => "vscode",
            Self::ClaudeCode => "claude-code",
        }
    }

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ClaudeDesktop => "Claude Desktop",
            Self::Cursor => "Cursor",
            Self::VsCode => "VS Code",
            Self::ClaudeCode => "Claude Code",
        }
    }

    /// The object holding server entries.
    fn servers_key(self) -> &'static str {
        match self {
            Self::VsCode => "servers",
            _ => "mcpServers",
        }
    }

    /// Whether the host's parser accepts comments and trailing commas.
    fn jsonc(self) -> bool {
        matches!(self, Self::VsCode | Self::Cursor)
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HostId {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|h| h.as_str() == s)
            .ok_or_else(|| HostError::UnknownHost {
                host: s.chars().take(40).collect(),
            })
    }
}

/// Where host files live: the home directory and the platform's application-data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    home: PathBuf,
    app_data: PathBuf,
}

impl HostPaths {
    /// This user's locations (`HOME`, and `~/.config` / `~/Library/Application Support` /
    /// `%APPDATA%`).
    pub fn from_env() -> Option<HostPaths> {
        let home = std::env::var_os("HOME")
            .or_else(|| std::env::var_os("USERPROFILE"))
            .map(PathBuf::from)?;
        let app_data = if cfg!(target_os = "macos") {
            home.join("Library/Application Support")
        } else if cfg!(windows) {
            std::env::var_os("APPDATA").map_or_else(|| home.join("AppData/Roaming"), PathBuf::from)
        } else {
            std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| home.join(".config"))
        };
        Some(Self { home, app_data })
    }

    /// Everything below `home`, laid out as on Linux (tests).
    pub fn under(home: &Path) -> HostPaths {
        Self {
            home: home.to_owned(),
            app_data: home.join(".config"),
        }
    }

    /// The configuration file of `id`.
    pub fn config_file(&self, id: HostId) -> PathBuf {
        match id {
            HostId::ClaudeDesktop => self.app_data.join("Claude/claude_desktop_config.json"),
            HostId::Cursor => self.home.join(".cursor/mcp.json"),
            HostId::VsCode => self.app_data.join("Code/User/mcp.json"),
            HostId::ClaudeCode => self.home.join(".claude.json"),
        }
    }

    fn installed(&self, id: HostId) -> bool {
        let file = self.config_file(id);
        file.exists()
            || match id {
                HostId::ClaudeCode => self.home.join(".claude").is_dir(),
                _ => file.parent().is_some_and(Path::is_dir),
            }
    }
}

/// What Latchkey's entry points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    /// The server's name in the host (e.g. `latchkey-github`).
    pub server_name: String,
    /// Latchkey service.
    pub service: String,
    /// Local client the host authenticates as.
    pub client: String,
    /// The proxy, e.g. `http://127.0.0.1:47821`.
    pub proxy_base: String,
    /// The `latchkey` program (for stdio bridges and header helpers).
    pub latchkey_program: PathBuf,
    /// MCP endpoint path under the service (usually `mcp`).
    pub mcp_path: String,
    /// Environment the `latchkey` commands the host starts need on top of the host's minimal
    /// one: Latchkey's directory overrides when the running instance uses non-default
    /// directories (see [`snippet`]); empty with the default directories.
    pub env: BTreeMap<String, String>,
}

impl EntrySpec {
    fn url(&self) -> String {
        format!(
            "{}/{}/{}",
            self.proxy_base.trim_end_matches('/'),
            self.service,
            self.mcp_path.trim_start_matches('/')
        )
    }

    fn program(&self) -> String {
        self.latchkey_program.display().to_string()
    }
}

/// A client token for hosts that keep one in their file. `Debug` hides it.
#[derive(Clone)]
pub struct ClientToken(String);

impl ClientToken {
    /// Wraps a token.
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// The token.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientToken([redacted])")
    }
}

/// Whether `id`'s entry carries a token in the file (Cursor, VS Code). Claude Desktop runs a
/// stdio bridge and Claude Code a headers helper, which fetch short-lived tokens themselves.
pub fn needs_token(id: HostId) -> bool {
    matches!(id, HostId::Cursor | HostId::VsCode)
}

/// The entry for `id` (a placeholder instead of the token when `token` is `None`).
///
/// Hosts start their servers and helpers with a minimal environment (often only `HOME`, `PATH`,
/// `USER`, `SHELL`, `TERM`, `LOGNAME`), so [`EntrySpec::env`] is written where the host applies
/// it: the stdio entry's `env` object (Claude Desktop), and for Claude Code's `headersHelper`,
/// which the host runs through a shell with its own environment and no per-entry `env`, as
/// `NAME=value` assignments in front of the command. Nothing is added when it is empty.
pub fn snippet(id: HostId, spec: &EntrySpec, token: Option<&ClientToken>) -> Value {
    let token = token.map_or(TOKEN_PLACEHOLDER, ClientToken::expose);
    match id {
        HostId::ClaudeDesktop => {
            let mut entry = json!({
                "command": spec.program(),
                "args": ["mcp-stdio", spec.service, "--client", spec.client, "--path", spec.mcp_path],
            });
            if !spec.env.is_empty()
                && let Some(map) = entry.as_object_mut()
            {
                map.insert("env".to_owned(), json!(spec.env));
            }
            entry
        }
        HostId::Cursor => json!({
            "url": spec.url(),
            "headers": { "X-Latchkey-Client": token },
        }),
        HostId::VsCode => json!({
            "type": "http",
            "url": spec.url(),
            "headers": { "X-Latchkey-Client": token },
        }),
        HostId::ClaudeCode => json!({
            "type": "http",
            "url": spec.url(),
            "headersHelper": format!(
                "{}{} headers {}",
                env_prefix(&spec.env),
                shell_quote(&spec.program()),
                spec.client
            ),
        }),
    }
}

/// `NAME='value' ` assignments for a POSIX shell command line. Names that are not shell
/// identifiers are left out (they cannot be assigned that way). Windows hosts run helpers through
/// `cmd.exe`, which has no such syntax, and find Latchkey through the keychain instead.
fn env_prefix(env: &BTreeMap<String, String>) -> String {
    if cfg!(windows) {
        return String::new();
    }
    env.iter()
        .filter(|(k, _)| is_env_name(k))
        .map(|(k, v)| format!("{k}={} ", shell_quote(v)))
        .collect()
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The state of a host's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// Parsed.
    Ok,
    /// No file yet.
    Missing,
    /// Not valid JSON (JSONC where the host allows it); never written.
    Malformed {
        /// Where and what.
        error: String,
    },
}

/// A host as found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectedHost {
    /// Which.
    pub id: HostId,
    /// Display name.
    pub name: &'static str,
    /// Its config file.
    pub config_path: PathBuf,
    /// Whether the host seems installed.
    pub installed: bool,
    /// The file's state.
    pub state: FileState,
    /// Server names configured.
    pub servers: Vec<String>,
    /// A Latchkey backup exists to undo the last change.
    pub can_undo: bool,
}

/// Every supported host and the state of its file.
pub fn detect(paths: &HostPaths) -> Vec<DetectedHost> {
    HostId::ALL
        .into_iter()
        .map(|id| {
            let path = paths.config_file(id);
            let (state, servers) = match read(&path) {
                Ok(None) => (FileState::Missing, Vec::new()),
                Ok(Some(text)) => match parse(id, &path, &text) {
                    Ok(doc) => (FileState::Ok, doc.server_names(&text)),
                    Err(e) => (
                        FileState::Malformed {
                            error: e.to_string(),
                        },
                        Vec::new(),
                    ),
                },
                Err(e) => (
                    FileState::Malformed {
                        error: e.to_string(),
                    },
                    Vec::new(),
                ),
            };
            DetectedHost {
                id,
                name: id.name(),
                installed: paths.installed(id),
                can_undo: newest_backup(&path).is_some(),
                config_path: path,
                state,
                servers,
            }
        })
        .collect()
}

/// What adding would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// The file.
    pub config_path: PathBuf,
    /// The server name.
    pub server_name: String,
    /// The entry, pretty JSON, token replaced by [`TOKEN_PLACEHOLDER`].
    pub entry_json: String,
    /// An entry of that name exists and would be replaced.
    pub replaces_existing: bool,
}

/// Previews adding `spec` to `id`'s file (fails on a malformed file, like [`apply`]).
pub fn preview(id: HostId, paths: &HostPaths, spec: &EntrySpec) -> Result<Preview, HostError> {
    let path = paths.config_file(id);
    let replaces_existing = match read(&path)? {
        Some(text) => {
            let doc = parse(id, &path, &text)?;
            doc.refuse_twice(&text, &path, &spec.server_name)?;
            doc.server_names(&text).contains(&spec.server_name)
        }
        None => false,
    };
    Ok(Preview {
        entry_json: pretty(&snippet(id, spec, None)),
        config_path: path,
        server_name: spec.server_name.clone(),
        replaces_existing,
    })
}

/// What adding did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The file written.
    pub config_path: PathBuf,
    /// The backup of the previous file (`None` when the file was created; undo then deletes it).
    pub backup_path: Option<PathBuf>,
    /// The server name.
    pub server_name: String,
}

/// Adds (or replaces) Latchkey's entry in `id`'s file, keeping a backup first.
pub fn apply(
    id: HostId,
    paths: &HostPaths,
    spec: &EntrySpec,
    token: Option<&ClientToken>,
) -> Result<Applied, HostError> {
    if needs_token(id) && token.is_none() {
        return Err(HostError::TokenRequired { host: id });
    }
    let path = paths.config_file(id);
    let entry = snippet(id, spec, token);
    let existing = read(&path)?;
    let new_text = match &existing {
        Some(text) if !text.trim().is_empty() => {
            let doc = parse(id, &path, text)?;
            doc.refuse_twice(text, &path, &spec.server_name)?;
            splice(text, &doc, id, &spec.server_name, &entry)
        }
        _ => {
            let mut map = serde_json::Map::new();
            map.insert(spec.server_name.clone(), entry);
            let mut root = serde_json::Map::new();
            root.insert(id.servers_key().to_owned(), Value::Object(map));
            format!("{}\n", pretty(&Value::Object(root)))
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(&path, e))?;
    }
    let backup = backup_name(&path, existing.is_none());
    match &existing {
        Some(text) => write_atomic(&backup, text.as_bytes(), true)?,
        None => write_atomic(&backup, b"", true)?,
    }
    write_atomic(
        &path,
        new_text.as_bytes(),
        token.is_some() || existing.is_none(),
    )?;
    Ok(Applied {
        config_path: path,
        backup_path: existing.is_some().then_some(backup),
        server_name: spec.server_name.clone(),
    })
}

/// Restores the newest backup of `id`'s file (or deletes a file Latchkey created), and removes
/// that backup.
pub fn undo(id: HostId, paths: &HostPaths) -> Result<(), HostError> {
    let path = paths.config_file(id);
    let Some(backup) = newest_backup(&path) else {
        return Err(HostError::NoBackup { path });
    };
    let created = backup
        .file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with(CREATED_MARK));
    if created {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path, e)),
        }
    } else {
        let bytes = std::fs::read(&backup).map_err(|e| io(&backup, e))?;
        write_atomic(&path, &bytes, false)?;
    }
    std::fs::remove_file(&backup).map_err(|e| io(&backup, e))
}

/// Why a host file could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The file is not valid; it was left alone.
    #[error("{} is not valid JSON ({error}); fix or remove it, Latchkey will not overwrite it", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Where and what.
        error: String,
    },
    /// Reading or writing failed.
    #[error("cannot access {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Nothing to undo.
    #[error("there is no Latchkey backup of {} to restore", path.display())]
    NoBackup {
        /// The file.
        path: PathBuf,
    },
    /// Unknown host id.
    #[error("unknown MCP host `{host}` (known: claude-desktop, claude-code, cursor, vscode)")]
    UnknownHost {
        /// What was given.
        host: String,
    },
    /// This host's entry needs a client token.
    #[error("{host} keeps a client token in its file; none was given")]
    TokenRequired {
        /// The host.
        host: HostId,
    },
}

impl HostError {
    /// Stable code.
    pub fn code(&self) -> Code {
        match self {
            Self::Malformed { .. } => Code::HostConfigMalformed,
            Self::Io { .. } => Code::HostIo,
            Self::NoBackup { .. } => Code::HostNoBackup,
            Self::UnknownHost { .. } => Code::InvalidInput,
            Self::TokenRequired { .. } => Code::InvalidInput,
        }
    }
}

fn io(path: &Path, source: std::io::Error) -> HostError {
    HostError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read(path: &Path) -> Result<Option<String>, HostError> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| HostError::Malformed {
                path: path.to_owned(),
                error: "not UTF-8 text".into(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
    }
}

struct Doc {
    top: jsonc::Object,
    /// The servers object, when present and an object.
    servers: Option<jsonc::Object>,
}

impl Doc {
    fn server_names(&self, _text: &str) -> Vec<String> {
        self.servers
            .as_ref()
            .map(|s| s.members.iter().map(|m| m.key.clone()).collect())
            .unwrap_or_default()
    }
}

fn parse(id: HostId, path: &Path, text: &str) -> Result<Doc, HostError> {
    let malformed = |error: String| HostError::Malformed {
        path: path.to_owned(),
        error,
    };
    if text.trim().is_empty() {
        return Ok(Doc {
            top: jsonc::Object {
                open: 0,
                close: 0,
                members: Vec::new(),
            },
            servers: None,
        });
    }
    let top = jsonc::parse_top(text, id.jsonc()).map_err(|e| malformed(e.to_string()))?;
    if let Some(twice) = twice(text, &top, id.servers_key()) {
        return Err(malformed(twice));
    }
    let servers = match top.members.iter().find(|m| m.key == id.servers_key()) {
        Some(m) if text.as_bytes().get(m.value.start) == Some(&b'{') => Some(
            jsonc::object_at(text, m.value.start, id.jsonc())
                .map_err(|e| malformed(e.to_string()))?,
        ),
        Some(_) => {
            return Err(malformed(format!(
                "`{}` is not an object",
                id.servers_key()
            )));
        }
        None => None,
    };
    Ok(Doc { top, servers })
}

/// "`key` appears twice (lines a and b)…" when `obj` holds `key` more than once: hosts read the
/// last, an edit of the first would change nothing they use, so such a file is not edited.
fn twice(text: &str, obj: &jsonc::Object, key: &str) -> Option<String> {
    let mut same = obj.members.iter().filter(|m| m.key == key);
    let first = same.next()?;
    let second = same.next()?;
    Some(format!(
        "`{key}` appears twice (lines {} and {}); the host reads only the last one. Keep one and try again",
        jsonc::line_of(text, first.span.start),
        jsonc::line_of(text, second.span.start)
    ))
}

impl Doc {
    /// Refuses a file whose servers object names `name` more than once.
    fn refuse_twice(&self, text: &str, path: &Path, name: &str) -> Result<(), HostError> {
        match self.servers.as_ref().and_then(|s| twice(text, s, name)) {
            Some(error) => Err(HostError::Malformed {
                path: path.to_owned(),
                error,
            }),
            None => Ok(()),
        }
    }
}

/// The file with the entry added or replaced, everything else untouched.
fn splice(text: &str, doc: &Doc, id: HostId, name: &str, entry: &Value) -> String {
    let unit = indent_unit(text);
    let key = serde_json::to_string(name).unwrap_or_else(|_| format!("\"{name}\""));
    if let Some(servers) = &doc.servers {
        let inner = line_indent(text, servers.open) + &unit;
        let value = reindent(&pretty(entry), &inner, &unit);
        if let Some(existing) = servers.members.iter().find(|m| m.key == name) {
            return format!(
                "{}{value}{}",
                &text[..existing.value.start],
                &text[existing.value.end..]
            );
        }
        return insert_member(text, servers, &inner, &format!("{key}: {value}"));
    }
    // No servers object yet: add one to the top-level object.
    let inner = line_indent(text, doc.top.open) + &unit;
    let mut servers = serde_json::Map::new();
    servers.insert(name.to_owned(), entry.clone());
    let value = reindent(&pretty(&Value::Object(servers)), &inner, &unit);
    let member = format!(
        "{}: {value}",
        serde_json::to_string(id.servers_key()).unwrap_or_default()
    );
    insert_member(text, &doc.top, &inner, &member)
}

fn insert_member(text: &str, obj: &jsonc::Object, inner: &str, member: &str) -> String {
    match obj.members.last() {
        Some(last) => {
            let at = jsonc::comma_after(text, last.value.end, obj.close)
                .map_or(last.value.end, |c| c + 1);
            let comma = if at == last.value.end { "," } else { "" };
            // With a trailing comma already there, ours goes after it and gets its own.
            let trailing = if at == last.value.end { "" } else { "," };
            format!(
                "{}{comma}\n{inner}{member}{trailing}{}",
                &text[..at],
                &text[at..]
            )
        }
        None => {
            let outer = line_indent(text, obj.open);
            format!(
                "{}{{\n{inner}{member}\n{outer}}}{}",
                &text[..obj.open],
                &text[obj.close + 1..]
            )
        }
    }
}

/// The leading whitespace of the line holding byte `at`.
fn line_indent(text: &str, at: usize) -> String {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text[start..]
        .chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .collect()
}

/// The file's indentation step: the first indented line's leading whitespace, else two spaces.
fn indent_unit(text: &str) -> String {
    text.lines()
        .map(|l| {
            l.chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .collect::<String>()
        })
        .find(|w| !w.is_empty())
        .unwrap_or_else(|| "  ".to_owned())
}

/// serde_json's two-space pretty text, re-indented with `unit` and shifted by `base`.
fn reindent(pretty: &str, base: &str, unit: &str) -> String {
    pretty
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let depth = line.chars().take_while(|c| *c == ' ').count() / 2;
            let body = line.trim_start_matches(' ');
            let prefix = if i == 0 {
                String::new()
            } else {
                format!("{base}{}", unit.repeat(depth))
            };
            format!("{prefix}{body}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn backup_name(path: &Path, created: bool) -> PathBuf {
    let stamp = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:09}",
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second(),
        stamp.nanosecond()
    );
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = if created { CREATED_MARK } else { "" };
    path.with_file_name(format!("{file}{BACKUP_MARK}{stamp}{suffix}"))
}

fn newest_backup(path: &Path) -> Option<PathBuf> {
    let dir = path.parent()?;
    let prefix = format!("{}{BACKUP_MARK}", path.file_name()?.to_string_lossy());
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    backups.sort();
    backups.pop()
}

fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), HostError> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.latchkey-tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Keep an existing file's permissions; new files and files with a token are private.
        let mode = match std::fs::metadata(path) {
            Ok(m) if !private => std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777,
            _ => 0o600,
        };
        options.mode(mode);
    }
    let result = (|| {
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids_round_trip() {
        for id in HostId::ALL {
            assert_eq!(id.as_str().parse::<HostId>().expect("parse"), id);
        }
        assert!("emacs".parse::<HostId>().is_err());
    }

    #[test]
    fn reindent_shifts_nested_lines() {
        let v = json!({"a": {"b": 1}});
        assert_eq!(
            reindent(&pretty(&v), "    ", "    "),
            "{\n        \"a\": {\n            \"b\": 1\n        }\n    }"
        );
    }

    fn spec(env: &[(&str, &str)]) -> EntrySpec {
        EntrySpec {
            server_name: "latchkey-demo".into(),
            service: "demo".into(),
            client: "laptop".into(),
            proxy_base: "http://127.0.0.1:47821".into(),
            latchkey_program: PathBuf::from("/usr/bin/latchkey"),
            mcp_path: "mcp".into(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn default_directories_add_no_environment_to_any_entry() {
        for id in HostId::ALL {
            let entry = snippet(id, &spec(&[]), None);
            assert!(entry.get("env").is_none(), "{id}: {entry}");
        }
        let code = snippet(HostId::ClaudeCode, &spec(&[]), None);
        assert_eq!(code["headersHelper"], "/usr/bin/latchkey headers laptop");
    }

    #[cfg(unix)]
    #[test]
    fn directory_overrides_reach_the_stdio_bridge_and_the_headers_helper() {
        let s = spec(&[
            ("LATCHKEY_CONFIG_DIR", "/tmp/lk sandbox/config"),
            ("LATCHKEY_DATA_DIR", "/tmp/it's/data"),
            ("NOT A NAME", "x"),
        ]);
        let desktop = snippet(HostId::ClaudeDesktop, &s, None);
        assert_eq!(desktop["env"]["LATCHKEY_DATA_DIR"], "/tmp/it's/data");
        assert_eq!(
            desktop["env"]["LATCHKEY_CONFIG_DIR"],
            "/tmp/lk sandbox/config"
        );
        let code = snippet(HostId::ClaudeCode, &s, None);
        assert_eq!(
            code["headersHelper"],
            "LATCHKEY_CONFIG_DIR='/tmp/lk sandbox/config' LATCHKEY_DATA_DIR='/tmp/it'\\''s/data' /usr/bin/latchkey headers laptop",
            "quoted for the shell, unusable names left out"
        );
    }

    #[test]
    fn client_token_debug_is_redacted() {
        assert!(!format!("{:?}", ClientToken::new("lk_secret".into())).contains("lk_secret"));
    }
}
