//! The window's *Set up Latchkey* commands: thin over `latchkey_core::config::init`. They need no
//! running configuration (there is none yet); the file they write is picked up by the runtime's
//! reload. Errors cross IPC as `{code, message, field}` so the form can mark the field.

use latchkey_core::Code;
use latchkey_core::config::init::{self, ConnectRequest, Draft, InitError, Written};
use latchkey_core::config::services::{self, ServiceChangeError, ServiceForm};
use latchkey_core::paths::Paths;
use serde::{Deserialize, Serialize};

/// A setup step's failure: a stable code, one sentence, and the form field it is about.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SetupError {
    code: Code,
    message: String,
    field: Option<&'static str>,
}

impl From<InitError> for SetupError {
    fn from(e: InitError) -> Self {
        Self {
            code: e.code(),
            message: e.to_string(),
            field: e.field(),
        }
    }
}

impl From<ServiceChangeError> for SetupError {
    fn from(e: ServiceChangeError) -> Self {
        Self {
            code: e.code(),
            message: e.to_string(),
            field: e.field(),
        }
    }
}

type Result<T> = std::result::Result<T, SetupError>;

fn config_file() -> Result<std::path::PathBuf> {
    Paths::from_env()
        .map(|p| p.config_file())
        .map_err(|e| SetupError {
            code: Code::NoHome,
            message: e.to_string(),
            field: None,
        })
}

/// *Connect to your organisation*, as typed.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(test, ts(optional_fields = nullable))]
pub struct ConnectForm {
    issuer: String,
    client_id: String,
    gateway_url: Option<String>,
    audience: Option<String>,
    #[serde(default)]
    #[cfg_attr(test, ts(as = "Option<_>", optional))]
    allow_insecure_http: bool,
}

/// Runs discovery (and the client pre-flight) for the typed issuer; nothing is written.
#[tauri::command(async)]
pub async fn setup_connect(form: ConnectForm) -> Result<Draft> {
    let http = init::http_client()?;
    let request = ConnectRequest {
        issuer: form.issuer,
        client_id: form.client_id,
        gateway_url: form.gateway_url,
        audience: form.audience,
        allow_insecure_http: form.allow_insecure_http,
    };
    Ok(init::connect(&http, &request).await?)
}

/// Reads and validates a configuration from an `https` URL (or a path); nothing is written.
#[tauri::command(async)]
pub async fn setup_import(source: String, allow_insecure_http: Option<bool>) -> Result<Draft> {
    let http = init::http_client()?;
    Ok(init::import(&http, &source, allow_insecure_http.unwrap_or(false)).await?)
}

/// Validates configuration text the person picked or pasted; nothing is written.
#[tauri::command(async)]
pub fn setup_import_text(text: String, origin: Option<String>) -> Result<Draft> {
    Ok(init::import_text(
        &text,
        origin.as_deref().unwrap_or("the imported configuration"),
    )?)
}

/// Writes the previewed configuration (validated again) to Latchkey's configuration file.
#[tauri::command(async)]
pub fn setup_save(toml: String, force: Option<bool>) -> Result<Written> {
    let paths = Paths::from_env().map_err(|e| SetupError {
        code: Code::NoHome,
        message: e.to_string(),
        field: None,
    })?;
    Ok(init::write_config(
        &paths.config_file(),
        &toml,
        force.unwrap_or(false),
    )?)
}

/// *Services* → *Add*: appends the service to the configuration file; the runtime's reload
/// applies it.
#[tauri::command(async)]
pub fn service_add(service: ServiceForm) -> Result<()> {
    services::add_service(&config_file()?, &service)?;
    Ok(())
}

/// *Services* → *Edit*: changes the service named `name` (it may be renamed).
#[tauri::command(async)]
pub fn service_edit(name: String, service: ServiceForm) -> Result<()> {
    services::edit_service(&config_file()?, &name, &service)?;
    Ok(())
}

/// *Services* → *Remove*.
#[tauri::command(async)]
pub fn service_remove(name: String) -> Result<()> {
    services::remove_service(&config_file()?, &name)?;
    Ok(())
}
