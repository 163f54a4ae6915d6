//! Latchkey's test kit: the Node sandbox (a real `oidc-provider` IdP, the Auth Gateway double and
//! a demo upstream) as child processes on loopback ports, a browser stand-in for the sign-in
//! page, canary secrets, an in-memory log capture and a poll-until helper. Dev-only; never
//! shipped.

mod browser;
pub mod glewlwyd;
mod logs;
pub mod mcp_auth;
mod poll;
mod sandbox;

pub use browser::browser_login;
pub use logs::LogCapture;
pub use poll::eventually;
pub use sandbox::{
    AccessTokenFormat, Gateway, Idp, IdpOptions, IdpProfile, IdpStats, RefreshTokens, Upstream,
};

/// A unique, recognisable secret value (`canary-{name}-{32 hex}`) to plant in a flow and then
/// look for in captured logs.
pub fn canary(name: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    format!("canary-{name}-{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn canaries_are_unique_and_named() {
        let a = super::canary("x");
        let b = super::canary("x");
        assert_ne!(a, b, "two canaries must never collide");
        assert!(a.starts_with("canary-x-"), "the name is recognisable: {a}");
    }
}
