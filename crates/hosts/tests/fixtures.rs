//! Host config files in each host's real format (existing servers, comments and trailing commas
//! where the format allows them, unrelated keys, malformed files): merge, backup and undo are
//! checked byte for byte against `tests/fixtures/*.expected`. `LATCHKEY_BLESS=1` rewrites the
//! expected files (review the diff before committing).

use std::path::{Path, PathBuf};

use latchkey_hosts::{
    ClientToken, EntrySpec, FileState, HostError, HostId, HostPaths, apply, detect, preview, undo,
};

const TOKEN: &str = "lk_fixtureTOKEN0123456789abcdef";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn spec() -> EntrySpec {
    EntrySpec {
        server_name: "latchkey-demo".into(),
        service: "demo".into(),
        client: "laptop".into(),
        proxy_base: "http://127.0.0.1:47821".into(),
        latchkey_program: PathBuf::from("/usr/local/bin/latchkey"),
        mcp_path: "mcp".into(),
        env: Default::default(),
    }
}

/// The spec of an instance running with non-default directories (the sandbox, the tests).
fn spec_with_dirs() -> EntrySpec {
    EntrySpec {
        env: [
            ("LATCHKEY_CONFIG_DIR", "/srv/latchkey sandbox/config"),
            ("LATCHKEY_DATA_DIR", "/srv/latchkey sandbox/data"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..spec()
    }
}

fn token_for(id: HostId) -> Option<ClientToken> {
    latchkey_hosts::needs_token(id).then(|| ClientToken::new(TOKEN.into()))
}

/// Installs `fixture` as `id`'s config file under a fake home.
fn install(id: HostId, fixture: &str) -> (tempfile::TempDir, HostPaths, PathBuf, Vec<u8>) {
    let home = tempfile::tempdir().expect("tempdir");
    let paths = HostPaths::under(home.path());
    let file = paths.config_file(id);
    std::fs::create_dir_all(file.parent().expect("parent")).expect("dirs");
    let original = std::fs::read(fixtures().join(fixture)).expect("fixture");
    std::fs::write(&file, &original).expect("write");
    (home, paths, file, original)
}

fn check_expected(fixture: &str, actual: &[u8]) {
    let expected_path = fixtures().join(format!("{fixture}.expected"));
    if std::env::var_os("LATCHKEY_BLESS").is_some() {
        std::fs::write(&expected_path, actual).expect("bless");
    }
    let expected = std::fs::read(&expected_path).expect("expected fixture exists");
    assert_eq!(
        String::from_utf8_lossy(actual),
        String::from_utf8_lossy(&expected),
        "{fixture}: merged file differs from {}",
        expected_path.display()
    );
}

fn merge_backup_undo(id: HostId, fixture: &str) {
    let (_home, paths, file, original) = install(id, fixture);
    let before = detect(&paths)
        .into_iter()
        .find(|h| h.id == id)
        .expect("host listed");
    assert_eq!(before.state, FileState::Ok, "{fixture}");
    assert!(!before.servers.contains(&"latchkey-demo".to_owned()));
    assert!(!before.can_undo);

    let p = preview(id, &paths, &spec()).expect("preview");
    assert!(!p.replaces_existing);
    assert!(!p.entry_json.contains(TOKEN), "previews never show a token");

    let applied = apply(id, &paths, &spec(), token_for(id).as_ref()).expect("apply");
    let merged = std::fs::read(&file).expect("read merged");
    check_expected(fixture, &merged);
    let backup = applied.backup_path.expect("a backup of the existing file");
    assert_eq!(
        std::fs::read(&backup).expect("backup"),
        original,
        "backup is the original, byte for byte"
    );

    // Applying again replaces our entry instead of adding a second one.
    let again = preview(id, &paths, &spec()).expect("preview again");
    assert!(again.replaces_existing);
    apply(id, &paths, &spec(), token_for(id).as_ref()).expect("apply again");
    assert_eq!(
        std::fs::read(&file).expect("read"),
        merged,
        "re-applying is idempotent"
    );
    let after = detect(&paths)
        .into_iter()
        .find(|h| h.id == id)
        .expect("host");
    assert_eq!(
        after
            .servers
            .iter()
            .filter(|s| *s == "latchkey-demo")
            .count(),
        1
    );
    assert!(after.can_undo);

    // Undo twice walks back to the original bytes.
    undo(id, &paths).expect("undo");
    assert_eq!(std::fs::read(&file).expect("read"), merged);
    undo(id, &paths).expect("undo");
    assert_eq!(
        std::fs::read(&file).expect("read"),
        original,
        "undo restores the original byte for byte"
    );
    assert!(matches!(undo(id, &paths), Err(HostError::NoBackup { .. })));
}

#[test]
fn vscode_jsonc_keeps_comments_and_trailing_commas() {
    merge_backup_undo(HostId::VsCode, "vscode.jsonc");
}

#[test]
fn cursor_keeps_its_other_servers() {
    merge_backup_undo(HostId::Cursor, "cursor.json");
}

#[test]
fn cursor_fills_an_empty_servers_object() {
    merge_backup_undo(HostId::Cursor, "cursor-empty-servers.json");
}

#[test]
fn claude_desktop_gets_a_stdio_bridge_and_keeps_its_indentation() {
    merge_backup_undo(HostId::ClaudeDesktop, "claude-desktop.json");
}

#[test]
fn claude_code_only_gains_a_top_level_entry() {
    merge_backup_undo(HostId::ClaudeCode, "claude-code.json");
}

/// An instance with non-default directories: the entries Claude Desktop and Claude Code run
/// carry the overrides, so the host's minimal environment finds the instance.
#[cfg(unix)]
#[test]
fn non_default_directories_are_written_into_the_entries_hosts_run() {
    for (id, fixture, expected) in [
        (
            HostId::ClaudeDesktop,
            "claude-desktop.json",
            "claude-desktop.json.dirs",
        ),
        (
            HostId::ClaudeCode,
            "claude-code.json",
            "claude-code.json.dirs",
        ),
    ] {
        let (_home, paths, file, original) = install(id, fixture);
        let p = preview(id, &paths, &spec_with_dirs()).expect("preview");
        assert!(
            p.entry_json.contains("/srv/latchkey sandbox/data"),
            "{fixture}: {}",
            p.entry_json
        );
        apply(id, &paths, &spec_with_dirs(), None).expect("apply");
        check_expected(expected, &std::fs::read(&file).expect("read merged"));
        undo(id, &paths).expect("undo");
        assert_eq!(std::fs::read(&file).expect("read"), original, "{fixture}");
    }
}

#[test]
fn malformed_files_are_reported_and_never_written() {
    for (id, fixture) in [
        (HostId::Cursor, "malformed.json"),
        (HostId::ClaudeDesktop, "claude-desktop-with-comment.json"),
    ] {
        let (_home, paths, file, original) = install(id, fixture);
        let host = detect(&paths)
            .into_iter()
            .find(|h| h.id == id)
            .expect("host");
        assert!(
            matches!(host.state, FileState::Malformed { .. }),
            "{fixture}: {:?}",
            host.state
        );
        let err = apply(id, &paths, &spec(), token_for(id).as_ref()).expect_err("malformed");
        assert_eq!(
            err.code(),
            latchkey_core::Code::HostConfigMalformed,
            "{fixture}"
        );
        assert!(
            err.to_string().contains("line"),
            "the error says where: {err}"
        );
        assert_eq!(
            std::fs::read(&file).expect("read"),
            original,
            "{fixture} untouched"
        );
        let siblings = std::fs::read_dir(file.parent().expect("dir"))
            .expect("dir")
            .count();
        assert_eq!(siblings, 1, "no backup or temp file left behind");
    }
}

#[test]
fn files_a_host_would_refuse_or_read_otherwise_are_reported_and_never_written() {
    for (fixture, says) in [
        // A raw tab inside a string: JSON.parse refuses the file.
        ("control-char.json", "control character (U+0009)"),
        // Two servers objects: hosts read the last, an edit of the first would change nothing.
        (
            "servers-key-twice.json",
            "`mcpServers` appears twice (lines 2 and 4)",
        ),
    ] {
        let id = HostId::Cursor;
        let (_home, paths, file, original) = install(id, fixture);
        let host = detect(&paths)
            .into_iter()
            .find(|h| h.id == id)
            .expect("host");
        assert!(
            matches!(&host.state, FileState::Malformed { error } if error.contains(says)),
            "{fixture}: {:?}",
            host.state
        );
        let err = apply(id, &paths, &spec(), token_for(id).as_ref()).expect_err(fixture);
        assert_eq!(
            err.code(),
            latchkey_core::Code::HostConfigMalformed,
            "{fixture}"
        );
        assert!(err.to_string().contains(says), "{fixture}: {err}");
        assert_eq!(
            std::fs::read(&file).expect("read"),
            original,
            "{fixture} untouched"
        );
    }
}

/// With Latchkey's entry twice, replacing the first would leave the host on the last (the one it
/// reads): the file is refused with both lines named, for preview and apply alike.
#[test]
fn an_entry_listed_twice_is_refused_with_both_lines() {
    let id = HostId::Cursor;
    let (_home, paths, file, original) = install(id, "entry-twice.json");
    let err = preview(id, &paths, &spec()).expect_err("preview refuses");
    assert!(
        err.to_string()
            .contains("`latchkey-demo` appears twice (lines 3 and 5)"),
        "{err}"
    );
    let err = apply(id, &paths, &spec(), token_for(id).as_ref()).expect_err("apply refuses");
    assert_eq!(err.code(), latchkey_core::Code::HostConfigMalformed);
    assert!(err.to_string().contains("Keep one"), "{err}");
    assert_eq!(std::fs::read(&file).expect("read"), original, "untouched");
    let siblings = std::fs::read_dir(file.parent().expect("dir"))
        .expect("dir")
        .count();
    assert_eq!(siblings, 1, "no backup or temp file left behind");
}

/// A key written with `\u` escapes is the same key to a host: Latchkey replaces that entry
/// instead of adding a second `latchkey-demo` beside it.
#[test]
fn an_entry_whose_name_is_escaped_is_replaced_not_doubled() {
    let id = HostId::Cursor;
    let (_home, paths, file, _original) = install(id, "escaped-key.json");
    let preview = preview(id, &paths, &spec()).expect("preview");
    assert!(preview.replaces_existing, "the escaped name is ours");
    apply(id, &paths, &spec(), token_for(id).as_ref()).expect("apply");
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(
        !text.contains("\"latchkey-demo\""),
        "no second entry: {text}"
    );
    assert!(
        !text.contains("mcp-old"),
        "the old entry was replaced: {text}"
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(
        v["mcpServers"]["latchkey-demo"]["headers"]["X-Latchkey-Client"],
        TOKEN
    );
    assert_eq!(v["mcpServers"]["emoji-\u{1F600}"]["command"], "smile");
}

#[test]
fn a_missing_file_is_created_private_and_undo_removes_it() {
    let home = tempfile::tempdir().expect("tempdir");
    let paths = HostPaths::under(home.path());
    let applied = apply(
        HostId::Cursor,
        &paths,
        &spec(),
        Some(&ClientToken::new(TOKEN.into())),
    )
    .expect("apply");
    assert!(applied.backup_path.is_none());
    let text = std::fs::read_to_string(&applied.config_path).expect("created");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(
        v["mcpServers"]["latchkey-demo"]["headers"]["X-Latchkey-Client"],
        TOKEN
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&applied.config_path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "a file holding a token is private");
    }
    undo(HostId::Cursor, &paths).expect("undo");
    assert!(
        !applied.config_path.exists(),
        "undo deletes the file Latchkey created"
    );
}

#[test]
fn hosts_that_need_a_token_refuse_to_write_without_one() {
    let home = tempfile::tempdir().expect("tempdir");
    let paths = HostPaths::under(home.path());
    assert!(apply(HostId::VsCode, &paths, &spec(), None).is_err());
    assert!(!paths.config_file(HostId::VsCode).exists());
}
