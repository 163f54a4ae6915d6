//! The window's IPC types in TypeScript, generated from the Rust types by `ts-rs` into
//! `ui/src/lib/generated/` (checked in, one file per type and an `index.ts`), so the UI cannot
//! drift from what the commands take, return and emit. The test fails when the checked-in files
//! differ from what the Rust types generate; `scripts/gen-types` rewrites them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use latchkey_core::config::init::{Draft, Written};
use latchkey_core::config::services::ServiceForm;
use latchkey_runtime::view::{
    ActivityFilter, ClientView, ConnectionView, CreatedClient, HostApplied, HostPreview, HostView,
    Overview, ServerView,
};
use latchkey_runtime::{ActivityBuckets, AuditPage, RuntimeError};
use ts_rs::{Config, ExportError, TS};

use crate::commands::AddServerRequest;
use crate::login::LoginFailed;
use crate::settings::Settings;
use crate::setup::{ConnectForm, SetupError};
use crate::tray::OpenAt;

/// Set (to anything) to write the files in place instead of comparing: `scripts/gen-types`.
const WRITE: &str = "LATCHKEY_WRITE_TYPES";

/// Where the UI imports them from.
fn checked_in() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/src/lib/generated")
}

/// Writes every type a command takes, returns or rejects with, and every event payload, with the
/// types they use, into `dir` (one file each), and an `index.ts` that re-exports them all.
fn export(dir: &Path) -> Result<(), ExportError> {
    // Tauri's IPC is JSON, where an i64 or u64 arrives as a JS number (unix seconds, byte counts
    // and row ids stay far below 2^53), never a bigint.
    let cfg = Config::new().with_large_int("number").with_out_dir(dir);
    // What commands return.
    Overview::export_all(&cfg)?;
    ClientView::export_all(&cfg)?;
    CreatedClient::export_all(&cfg)?;
    AuditPage::export_all(&cfg)?;
    ActivityBuckets::export_all(&cfg)?;
    ConnectionView::export_all(&cfg)?;
    HostView::export_all(&cfg)?;
    HostPreview::export_all(&cfg)?;
    HostApplied::export_all(&cfg)?;
    ServerView::export_all(&cfg)?;
    Settings::export_all(&cfg)?;
    Draft::export_all(&cfg)?;
    Written::export_all(&cfg)?;
    // What commands take (beyond plain strings and flags).
    ActivityFilter::export_all(&cfg)?;
    AddServerRequest::export_all(&cfg)?;
    ConnectForm::export_all(&cfg)?;
    ServiceForm::export_all(&cfg)?;
    // What they reject with.
    RuntimeError::export_all(&cfg)?;
    SetupError::export_all(&cfg)?;
    // Event payloads (`latchkey://activity` is an `AuditRow`, exported with `AuditPage`).
    LoginFailed::export_all(&cfg)?;
    OpenAt::export_all(&cfg)?;

    let mut index = String::from(
        "// Generated with the types beside it by src-tauri/src/ipc_types.rs (scripts/gen-types). Do not edit.\n",
    );
    for name in read(dir)?.keys().filter(|name| *name != "index.ts") {
        let module = name.trim_end_matches(".ts");
        index.push_str(&format!("export type * from './{module}';\n"));
    }
    std::fs::write(dir.join("index.ts"), index)?;
    Ok(())
}

/// The `.ts` files in `dir` by name (none when it does not exist).
fn read(dir: &Path) -> Result<BTreeMap<String, String>, std::io::Error> {
    let mut files = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "ts") {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.insert(name, std::fs::read_to_string(&path)?);
        }
    }
    Ok(files)
}

/// A fresh directory for one export, removed afterwards.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_checked_in_typescript_types_are_what_the_rust_ipc_types_generate() {
    let target = checked_in();
    if std::env::var_os(WRITE).is_some() {
        for name in read(&target).expect("read the generated types").keys() {
            std::fs::remove_file(target.join(name)).expect("remove a stale generated file");
        }
        export(&target).expect("write the generated types");
        return;
    }
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "latchkey-ipc-types-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )));
    export(&scratch.0).expect("export the types into a scratch directory");
    let fresh = read(&scratch.0).expect("read the fresh export");
    let have = read(&target).expect("read ui/src/lib/generated");
    assert!(
        fresh.len() > 20 && fresh.contains_key("Overview.ts"),
        "the export wrote the window's types: {:?}",
        fresh.keys()
    );
    let mut wrong: Vec<String> = Vec::new();
    for (name, text) in &fresh {
        match have.get(name) {
            None => wrong.push(format!("{name} missing")),
            Some(old) if old != text => wrong.push(format!("{name} differs")),
            Some(_) => {}
        }
    }
    wrong.extend(
        have.keys()
            .filter(|name| !fresh.contains_key(*name))
            .map(|name| format!("{name} is generated by no Rust type")),
    );
    assert!(
        wrong.is_empty(),
        "ui/src/lib/generated/ is not what the Rust IPC types generate ({}): run scripts/gen-types \
         and commit the result (then fix what `cd ui && npm run check` reports)",
        wrong.join(", ")
    );
}
