//! The window's *Services* → *Add*, *Edit* and *Remove*: one `[[services]]` table changed through
//! `toml_edit` (the person's comments and order survive), the result validated by the same
//! [`Config::parse`] as the file and written atomically (see [`super::edit`]). A refused change
//! writes nothing; its error is the file's own text plus the form field it belongs to. The
//! running instance's reload applies the written file, so nothing else is needed here.

use std::path::Path;

use serde::Deserialize;
use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, value};

use super::edit::{read, write};
use super::{Config, ConfigError};
use crate::Code;

/// One service as the form has it. Keys the form does not show (`env`) are kept on edit, and so
/// are `gateway_endpoint` and `credentials` when an edit leaves them out (`None`).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "ts", ts(optional_fields = nullable))]
pub struct ServiceForm {
    /// Proxy route name.
    pub name: String,
    /// The account whose session unlocks it.
    pub account: String,
    /// `gateway`, `access_token` or `manual`.
    #[cfg_attr(
        feature = "ts",
        ts(type = "\"gateway\" | \"access_token\" | \"manual\"")
    )]
    pub source: String,
    /// Path on the Auth Gateway (source `gateway` only).
    #[serde(default)]
    pub gateway_endpoint: Option<String>,
    /// Base URL requests are forwarded to.
    pub upstream: String,
    /// Allows `http://` to a loopback upstream.
    #[serde(default)]
    pub allow_loopback_http: bool,
    /// How each credential is injected.
    #[serde(default)]
    pub credentials: Option<Vec<MappingForm>>,
    /// Lifetime of fetched credentials; the default when absent.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// One credential mapping: a header (with a prefix) or a query parameter.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "ts", ts(optional_fields = nullable))]
pub struct MappingForm {
    /// Credential name.
    pub name: String,
    /// Header it goes into.
    #[serde(default)]
    pub header: Option<String>,
    /// Text before the value in the header.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Query parameter it goes into.
    #[serde(default)]
    pub query_param: Option<String>,
}

/// Why a service change was refused; the file is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceChangeError {
    /// The file (before or after the change) does not pass the configuration's rules.
    #[error("{error}")]
    Refused {
        /// The file's own error text.
        error: ConfigError,
        /// The form field it is about, when it is one.
        field: Option<&'static str>,
    },
    /// No `[[services]]` table has this name.
    #[error("there is no service `{name}` in the configuration: reload the list and try again")]
    UnknownService {
        /// The name looked for.
        name: String,
    },
}

impl ServiceChangeError {
    /// Stable code for IPC.
    pub fn code(&self) -> Code {
        match self {
            Self::Refused { error, .. } => error.code(),
            Self::UnknownService { .. } => Code::UnknownService,
        }
    }

    /// The form field the error belongs to, if any.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Refused { field, .. } => *field,
            Self::UnknownService { .. } => Some("name"),
        }
    }
}

impl From<ConfigError> for ServiceChangeError {
    fn from(error: ConfigError) -> Self {
        Self::Refused { error, field: None }
    }
}

/// The keys of a service table the form edits, which are also its field names.
const FIELDS: [&str; 8] = [
    "name",
    "account",
    "source",
    "gateway_endpoint",
    "upstream",
    "allow_loopback_http",
    "credentials",
    "ttl_seconds",
];

/// Appends a `[[services]]` table; returns the new configuration.
pub fn add_service(path: &Path, form: &ServiceForm) -> Result<Config, ServiceChangeError> {
    let mut doc = read(path)?;
    let services = services_mut(&mut doc, path)?;
    let mut table = Table::new();
    fill(&mut table, form, false);
    services.push(table);
    checked_write(path, &doc)
}

/// Replaces the form's keys of the service named `name` (it may be renamed); other keys,
/// comments and the table's place stay.
pub fn edit_service(
    path: &Path,
    name: &str,
    form: &ServiceForm,
) -> Result<Config, ServiceChangeError> {
    let mut doc = read(path)?;
    let services = services_mut(&mut doc, path)?;
    let table = services
        .iter_mut()
        .find(|t| t.get("name").and_then(Item::as_str) == Some(name))
        .ok_or_else(|| ServiceChangeError::UnknownService {
            name: name.to_owned(),
        })?;
    fill(table, form, true);
    checked_write(path, &doc)
}

/// Removes the service named `name`; returns the new configuration.
pub fn remove_service(path: &Path, name: &str) -> Result<Config, ServiceChangeError> {
    let mut doc = read(path)?;
    let services = services_mut(&mut doc, path)?;
    let before = services.len();
    services.retain(|t| t.get("name").and_then(Item::as_str) != Some(name));
    if services.len() == before {
        return Err(ServiceChangeError::UnknownService {
            name: name.to_owned(),
        });
    }
    if services.is_empty() {
        doc.remove("services");
    }
    checked_write(path, &doc)
}

/// Sets the form's keys in `table`, keeping the decoration of keys that stay; with `keep`,
/// an endpoint or mappings the form leaves out stay as written.
fn fill(table: &mut Table, form: &ServiceForm, keep: bool) {
    set(table, "name", Some(value(form.name.trim())));
    set(table, "account", Some(value(form.account.trim())));
    set(table, "source", Some(value(form.source.trim())));
    let gateway = form.source.trim() == "gateway";
    let endpoint = form
        .gateway_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty() && gateway);
    if !(keep && gateway && form.gateway_endpoint.is_none()) {
        set(table, "gateway_endpoint", endpoint.map(value));
    }
    set(table, "upstream", Some(value(form.upstream.trim())));
    set(
        table,
        "allow_loopback_http",
        form.allow_loopback_http.then(|| value(true)),
    );
    let mut array = Array::new();
    for m in form.credentials.iter().flatten() {
        let mut inline = InlineTable::new();
        inline.insert("name", m.name.trim().into());
        if let Some(header) = nonempty(&m.header) {
            inline.insert("header", header.into());
            if let Some(prefix) = m.prefix.as_deref().filter(|p| !p.is_empty()) {
                inline.insert("prefix", prefix.into());
            }
        }
        if let Some(param) = nonempty(&m.query_param) {
            inline.insert("query_param", param.into());
        }
        array.push(inline);
    }
    if !(keep && form.credentials.is_none()) {
        set(
            table,
            "credentials",
            (!array.is_empty()).then(|| value(array)),
        );
    }
    set(
        table,
        "ttl_seconds",
        form.ttl_seconds
            .map(|t| value(i64::try_from(t).unwrap_or(i64::MAX))),
    );
}

fn nonempty(text: &Option<String>) -> Option<&str> {
    text.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

/// Sets or removes one key; an existing key keeps its comments.
fn set(table: &mut Table, key: &str, item: Option<Item>) {
    match (item, table.get_mut(key)) {
        (Some(Item::Value(new)), Some(Item::Value(old))) => {
            let decor = old.decor().clone();
            *old = new;
            *old.decor_mut() = decor;
        }
        (Some(item), _) => {
            table.insert(key, item);
        }
        (None, _) => {
            table.remove(key);
        }
    }
}

fn services_mut<'a>(
    doc: &'a mut DocumentMut,
    path: &Path,
) -> Result<&'a mut toml_edit::ArrayOfTables, ConfigError> {
    let item = doc
        .entry("services")
        .or_insert(Item::ArrayOfTables(toml_edit::ArrayOfTables::new()));
    item.as_array_of_tables_mut()
        .ok_or_else(|| ConfigError::Invalid {
            path: path.to_owned(),
            line: 1,
            column: 1,
            message: "`services` is not written as [[services]] tables".to_owned(),
            fix: "correct the file by hand (see README \"Configuration\"), then try again"
                .to_owned(),
        })
}

/// Validates the edited text with the file's rules (naming the field the error is on), then
/// writes it atomically.
fn checked_write(path: &Path, doc: &DocumentMut) -> Result<Config, ServiceChangeError> {
    let text = doc.to_string();
    if let Err(error) = Config::parse(&text, path) {
        let field = field_of(&error, &text);
        return Err(ServiceChangeError::Refused { error, field });
    }
    Ok(write(path, doc)?)
}

/// The form field on the line an error points at: the key written on that line.
fn field_of(error: &ConfigError, text: &str) -> Option<&'static str> {
    let ConfigError::Invalid { line, message, .. } = error else {
        return None;
    };
    let written = text.lines().nth(line.checked_sub(1)?)?;
    let key = written.split('=').next()?.trim();
    FIELDS.into_iter().find(|f| *f == key).map(|f| {
        // A service without a mapping is reported on its name; the mappings are what to fix.
        let about_mappings = message.contains("injects no credential")
            || message.contains("source = \"access_token\"");
        if f == "name" && about_mappings {
            "credentials"
        } else if f == "name" && message.contains("no gateway_endpoint") {
            "gateway_endpoint"
        } else {
            f
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"version = 1
# my accounts
[[accounts]]
name = "work"   # the one
issuer = "https://idp.example.com"
client_id = "latchkey"

# the code host
[[services]]
name = "github"   # keep me
account = "work"
source = "access_token"
upstream = "https://api.github.com"
credentials = [{ name = "access_token", header = "Authorization", prefix = "Bearer " }]
env = { GH_TOKEN = "access_token" }
"#;

    fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    fn form(name: &str, upstream: &str) -> ServiceForm {
        ServiceForm {
            name: name.into(),
            account: "work".into(),
            source: "manual".into(),
            upstream: upstream.into(),
            credentials: Some(vec![MappingForm {
                name: "token".into(),
                header: Some("X-API-Key".into()),
                ..MappingForm::default()
            }]),
            ..ServiceForm::default()
        }
    }

    #[test]
    fn add_then_remove_keeps_the_persons_text() {
        let (_dir, path) = file(BASE);
        let config = add_service(&path, &form("linear", "https://api.linear.app")).expect("added");
        let linear = config.service("linear").expect("there");
        assert_eq!(linear.upstream.as_str(), "https://api.linear.app/");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with(BASE), "{text}");
        let config = remove_service(&path, "linear").expect("removed");
        assert!(config.service("linear").is_none());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), BASE);
    }

    #[test]
    fn an_edit_keeps_comments_order_and_unshown_keys() {
        let (_dir, path) = file(BASE);
        let mut edited = form("gh", "https://api.github.com/v3");
        edited.source = "access_token".into();
        edited.credentials = None;
        let config = edit_service(&path, "github", &edited).expect("edited");
        let gh = config.service("gh").expect("renamed");
        assert_eq!(
            gh.env.get("GH_TOKEN").map(String::as_str),
            Some("access_token")
        );
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("# the code host\n[[services]]"), "{text}");
        assert!(text.contains("name = \"gh\"   # keep me"), "{text}");
        assert!(
            text.contains("credentials = [{ name = \"access_token\""),
            "{text}"
        );
        assert!(
            text.contains("upstream = \"https://api.github.com/v3\""),
            "{text}"
        );
    }

    #[test]
    fn a_refused_change_writes_nothing_and_names_the_field_with_the_files_text() {
        let (_dir, path) = file(BASE);
        let e = add_service(&path, &form("linear", "http://api.linear.app")).expect_err("http");
        assert_eq!(e.field(), Some("upstream"));
        assert!(e.to_string().contains("is not https://"), "{e}");
        let e = add_service(&path, &form("github", "https://x.example")).expect_err("twice");
        assert_eq!(e.field(), Some("name"));
        assert!(e.to_string().contains("defined twice"), "{e}");
        let mut no_mapping = form("linear", "https://api.linear.app");
        no_mapping.credentials = Some(Vec::new());
        let e = add_service(&path, &no_mapping).expect_err("no mapping");
        assert_eq!(e.field(), Some("credentials"));
        let mut bad_account = form("linear", "https://api.linear.app");
        bad_account.account = "home".into();
        let e = edit_service(&path, "github", &bad_account).expect_err("account");
        assert_eq!(e.field(), Some("account"));
        assert!(e.to_string().contains("unknown account `home`"), "{e}");
        let e = remove_service(&path, "nope").expect_err("unknown");
        assert_eq!(e.code(), crate::Code::UnknownService);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), BASE);
    }

    #[test]
    fn toml_in_a_value_stays_a_value() {
        let (_dir, path) = file(BASE);
        let e = add_service(
            &path,
            &form("x", "https://a.example\"\n[gateway]\nurl = \"https://evil"),
        )
        .expect_err("not a URL");
        assert_eq!(e.field(), Some("upstream"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), BASE);
    }
}
