//! Latchkey's core: everything the tray app, the CLI and the proxy share, with no GUI dependency.
//!
//! One module per concept: [`config`] (the TOML file), [`paths`] (where files live), [`secret`]
//! (types that keep tokens out of logs), [`vault`] (the OS keychain), [`login`] (OIDC + PKCE and
//! JWT validation), [`session`] (per-account state, refresh, logout) and [`gateway`] (per-service
//! credentials from the Auth Gateway), [`mcp_oauth`] and [`remote`] (remote MCP servers Latchkey
//! is the OAuth client of), [`clock`] (the wall clock as Unix time), and [`code`]: the one table
//! of error codes every surface maps.

pub use code::{Class, Code};

pub mod clock;
pub mod code;
pub mod config;
pub mod credentials;
pub mod gateway;
pub mod login;
pub mod mcp_oauth;
pub mod paths;
pub mod remote;
pub mod secret;
pub mod session;
pub mod vault;
