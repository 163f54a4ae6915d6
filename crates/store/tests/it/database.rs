//! Opening the database file: private permissions and persistence across restarts.

use latchkey_store::{ClientName, ClientRegistry, Database, SCHEMA_VERSION};

use crate::temp_db;

#[cfg(unix)]
#[test]
fn the_file_is_0600_and_a_missing_parent_is_created_0700() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = temp_db();
    let nested = path
        .parent()
        .expect("parent")
        .join("data")
        .join("latchkey.db");
    let db = Database::open(&nested).expect("open creates the parent");
    assert_eq!(db.path(), Some(nested.as_path()));
    let file_mode = std::fs::metadata(&nested)
        .expect("file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        file_mode, 0o600,
        "the database is readable by its owner only"
    );
    let dir_mode = std::fs::metadata(nested.parent().expect("dir"))
        .expect("dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700, "the directory is private");
    let wal = std::fs::metadata(format!("{}-wal", nested.display()))
        .expect("wal file exists in WAL mode");
    assert_eq!(
        wal.permissions().mode() & 0o777,
        0o600,
        "SQLite gives the WAL the database's mode"
    );
}

#[cfg(unix)]
#[test]
fn an_existing_readable_file_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = temp_db();
    std::fs::write(&path, b"").expect("create");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    Database::open(&path).expect("open");
    let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn clients_and_tokens_persist_across_a_restart() {
    let (_dir, path) = temp_db();
    let token = {
        let db = Database::open(&path).expect("open");
        let reg = ClientRegistry::open(&db).expect("registry");
        let (_, token) = reg
            .add(
                &ClientName::parse("cursor").expect("name"),
                &["github".to_owned()],
            )
            .expect("add");
        token
    };
    let db = Database::open(&path).expect("reopen");
    assert_eq!(db.schema_version().expect("version"), SCHEMA_VERSION);
    let reg = ClientRegistry::open(&db).expect("registry");
    let grant = reg
        .verify(token.expose())
        .expect("a stored token works after a restart");
    assert_eq!(grant.client.as_str(), "cursor");
    assert!(!grant.ephemeral);
}

#[test]
fn in_memory_databases_are_independent() {
    let a = Database::open_in_memory().expect("a");
    let b = Database::open_in_memory().expect("b");
    let ra = ClientRegistry::open(&a).expect("ra");
    ra.add(&ClientName::parse("x").expect("name"), &[])
        .expect("add");
    assert!(ClientRegistry::open(&b).expect("rb").list().is_empty());
    assert_eq!(a.path(), None);
}
