//! End-to-end tests: the `latchkey` binary as a person runs it, `latchkey serve`, the sandbox's
//! real `oidc-provider`, the gateway double and demo upstream, the real Secret Service (the test
//! script runs this inside a private gnome-keyring), and MCP peers from the official SDK.

mod bridge;
mod cli;
mod config_init;
mod faults;
mod keychain;
mod login_errors;
mod minimal_env;
mod proxy;
mod reload;
mod servers;

use latchkey_e2e::Home;
use latchkey_testkit::{Gateway, Idp, IdpOptions, Upstream, browser_login};

/// The sandbox stack for one test, and a Latchkey home configured for it.
pub struct Stack {
    /// The real oidc-provider.
    pub idp: Idp,
    /// The Auth Gateway double.
    pub gateway: Gateway,
    /// The demo upstream API.
    pub upstream: Upstream,
    /// The Latchkey home configured for the stack.
    pub home: Home,
}

/// The gateway API key the sandbox gateway expects.
pub const GATEWAY_KEY: &str = "e2e-gateway-key-canary-7d1f";
/// alice's demo credential in the gateway double (a canary: it must never be logged).
pub const DEMO_KEY: &str = "e2e-demo-key-canary-41c9";

impl Stack {
    /// Starts the stack and a home whose gateway key is set.
    pub async fn start(options: IdpOptions) -> Stack {
        let idp = Idp::start(options).await.expect("idp");
        let gateway = Gateway::start_with(
            idp.issuer(),
            GATEWAY_KEY,
            &[("alice", "demo", "api_key", DEMO_KEY)],
        )
        .await
        .expect("gateway");
        let upstream = Upstream::start(DEMO_KEY).await.expect("upstream");
        let config = format!(
            r#"version = 1
[proxy]
listen = "127.0.0.1:47821"

[[accounts]]
name = "sandbox"
issuer = "{issuer}"
client_id = "latchkey"
audience = "latchkey-gateway"
allow_insecure_http = true

[gateway]
url = "{gateway}"
allow_insecure_http = true

[[services]]
name = "demo"
account = "sandbox"
gateway_endpoint = "/api/v1/credentials/demo"
upstream = "{upstream}"
allow_loopback_http = true
credentials = [{{ name = "api_key", header = "X-API-Key" }}]
env = {{ DEMO_API_KEY = "api_key" }}
"#,
            issuer = idp.issuer(),
            gateway = gateway.url(),
            upstream = upstream.url(),
        );
        let home = Home::new(&config).expect("home");
        let out = home
            .run(&["gateway", "set-key"], GATEWAY_KEY)
            .expect("set-key");
        assert_eq!(out.code, 0, "gateway set-key: {}", out.stderr);
        Stack {
            idp,
            gateway,
            upstream,
            home,
        }
    }

    /// `latchkey login --no-browser`, driving the printed URL through the IdP's sign-in page.
    pub async fn login(&self) {
        let mut child = self
            .home
            .command(&["login", "--no-browser"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("latchkey login");
        let stdout = child.stdout.take().expect("stdout");
        let url = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .find(|l| l.starts_with("http://"))
        })
        .await
        .expect("join")
        .expect("login printed the authorization URL");
        let url = url::Url::parse(&url).expect("a URL");
        browser_login(&url, "alice", "alice-password")
            .await
            .expect("sign-in page");
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("join")
            .expect("wait");
        assert!(
            out.status.success(),
            "login failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Keychain entries under this home's namespace (via libsecret's own tool).
    pub fn keychain_entries(&self) -> usize {
        let out = std::process::Command::new("secret-tool")
            .args(["search", "--all", "service", self.home.keychain_namespace()])
            .output()
            .expect("secret-tool");
        // Entries of the `sandbox` account are named `<kind>:sandbox[:<service>]`; the
        // organisation-wide gateway API key is not the account's and survives a logout.
        // secret-tool prints the attributes on stderr and the rest on stdout.
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .filter_map(|l| l.strip_prefix("attribute.username = "))
            .filter(|user| user.split(':').nth(1) == Some("sandbox"))
            .count()
    }
}

/// Why a test that needs the real Secret Service is ignored (reported as skipped) outside
/// `scripts/with-keychain`; `build.rs` sets `keychain_session` inside it.
pub const NEEDS_KEYCHAIN: &str = "needs the Secret Service: run under scripts/with-keychain";

/// Asserts that this test runs inside a keychain session. Such tests are ignored outside one
/// (`#[cfg_attr(not(keychain_session), ignore = …)]`), so reaching here without one (a binary
/// built inside the session run outside it, or `--run-ignored`) fails instead of passing.
pub fn keychain_available() -> bool {
    assert!(
        cfg!(keychain_session) && std::env::var_os("LATCHKEY_TEST_KEYCHAIN").is_some(),
        "{NEEDS_KEYCHAIN}"
    );
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "the keychain session has no D-Bus session bus, so no Secret Service"
    );
    true
}
