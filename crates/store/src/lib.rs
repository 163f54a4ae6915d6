//! Latchkey's local state, in one SQLite file: the registry of local clients allowed to call the
//! loopback proxy (their tokens stored only as SHA-256 hashes) and the audit log of requests
//! (never a secret).
//!
//! ```no_run
//! # async fn demo() -> Result<(), latchkey_store::StoreError> {
//! use latchkey_store::{AuditLog, ClientName, ClientRegistry, Database, Retention};
//!
//! let db = Database::open(std::path::Path::new("/home/me/.local/share/latchkey/latchkey.db"))?;
//! let clients = ClientRegistry::open(&db)?;
//! let audit = AuditLog::open(&db, Retention::default())?;
//! let (_info, token) = clients.add(&ClientName::parse("cursor")?, &["github".to_owned()])?;
//! assert!(clients.verify(token.expose()).is_some_and(|g| g.allows("github")));
//! audit.flush().await;
//! # Ok(()) }
//! ```

mod audit;
mod clients;
mod db;
mod error;

pub use audit::{
    ActivityBuckets, AuditEvent, AuditFilter, AuditKind, AuditLog, AuditOptions, AuditPage,
    AuditRow, DEFAULT_PAGE, MAX_PAGE, Retention, ServiceSeries, StatusClass,
};
pub use clients::{
    ClientGrant, ClientInfo, ClientName, ClientOptions, ClientRegistry, ClientToken,
    LAST_USED_FLUSH_INTERVAL, MAX_EPHEMERAL_TOKENS, MAX_EPHEMERAL_TTL, MAX_TOKEN_LIFETIME,
    TOKEN_PREFIX, TokenInfo,
};
pub use db::{Database, SCHEMA_VERSION};
pub use error::StoreError;
