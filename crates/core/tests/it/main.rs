//! The core's integration tests, one binary: sessions and credentials against the real
//! `oidc-provider`, the gateway double and (under `scripts/with-keychain`) the real Secret Service.

mod glewlwyd;
mod manual;
mod mcp_oauth;
mod providers;
mod remote;
mod session;
mod support;
