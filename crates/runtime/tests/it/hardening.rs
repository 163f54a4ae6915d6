//! The running instance against what a local client holding a token tries (issue 10): reading
//! raw credentials without the right, an account's access token at all, the status of services
//! outside its scope, the control API with a body it may not send; and both loopback listeners
//! or none.

use std::sync::Arc;

use latchkey_core::paths::Paths;
use latchkey_core::vault::{MemoryStore, Vault};
use latchkey_runtime::{ClientOptions, Latchkey, StartOptions};

/// [`crate::serving::CONFIG`] plus `idp`, whose credential is the account's own access token.
fn config() -> String {
    format!(
        "{}\n[[services]]\nname = \"idp\"\naccount = \"work\"\nsource = \"access_token\"\nupstream = \"http://127.0.0.1:9\"\nallow_loopback_http = true\ncredentials = [{{ name = \"access_token\", header = \"Authorization\", prefix = \"Bearer \" }}]\n",
        crate::serving::CONFIG
    )
}

fn paths_with(dir: &tempfile::TempDir, config: &str) -> Paths {
    let paths = Paths::new(dir.path().join("config"), dir.path().join("data"));
    std::fs::create_dir_all(paths.config_dir()).expect("config dir");
    std::fs::write(paths.config_file(), config).expect("config");
    paths
}

async fn start_on(paths: &Paths, port: u16) -> Result<Latchkey, latchkey_runtime::RuntimeError> {
    Latchkey::start(StartOptions {
        paths: paths.clone(),
        proxy_port: Some(port),
        vault: Some(Vault::new(Arc::new(MemoryStore::new()))),
        serve_proxy: true,
    })
    .await
}

async fn get(port: u16, path: &str, token: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("x-latchkey-client", token)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn raw_credentials_need_the_right_and_an_access_token_is_never_given_to_a_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lk = start_on(&paths_with(&dir, &config()), 0)
        .await
        .expect("start");
    let port = lk.proxy_addr().expect("serving").port();
    let both = ["demo".to_owned(), "idp".to_owned()];
    let plain = lk.create_client("cursor", &both).expect("plain client");
    assert!(!plain.client.raw_credentials);
    let mut options = ClientOptions::default();
    options.allow_raw_credentials = true;
    let trusted = lk
        .create_client_with("native", &both, &options)
        .expect("trusted client");
    assert!(trusted.client.raw_credentials);
    assert!(
        lk.list_clients()
            .iter()
            .any(|c| c.name == "native" && c.raw_credentials),
        "the window's list shows who can read raw credentials"
    );

    let (status, body) = get(port, "/v1/credentials/demo", &plain.token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden_raw_credentials"))
    );
    let (status, body) = get(port, "/v1/credentials/demo", &trusted.token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (424, Some("login_required")),
        "past the gate: only the missing login stops it"
    );
    for token in [&plain.token, &trusted.token] {
        let (status, body) = get(port, "/v1/credentials/idp", token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("forbidden_raw_credentials")),
            "an access_token service is never read raw by a client"
        );
    }
    lk.shutdown().await;
}

#[tokio::test]
async fn a_client_sees_only_its_own_services_in_the_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lk = start_on(&paths_with(&dir, &config()), 0)
        .await
        .expect("start");
    let port = lk.proxy_addr().expect("serving").port();
    let client = lk
        .create_client("cursor", &["demo".to_owned()])
        .expect("client");
    let (status, body) = get(port, "/v1/status", &client.token).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["demo"], "not `idp`: {body}");
    assert_eq!(body["proxy"]["services"], serde_json::json!(["demo"]));
    let accounts = body["accounts"].as_array().expect("accounts");
    assert_eq!(accounts.len(), 1, "{body}");
    assert_eq!(accounts[0]["name"], "work");
    assert_eq!(accounts[0]["state"]["kind"], "logged_out");
    assert!(
        accounts[0]["state"].get("user").is_none(),
        "never who is logged in: {body}"
    );
    lk.shutdown().await;
}

#[tokio::test]
async fn the_control_api_refuses_a_client_token_before_reading_its_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lk = start_on(&paths_with(&dir, &config()), 0)
        .await
        .expect("start");
    let port = lk.proxy_addr().expect("serving").port();
    let client = lk
        .create_client("cursor", &["demo".to_owned()])
        .expect("client");
    for (path, body) in [
        ("/v1/control/gateway-key", "{ not json"),
        (
            "/v1/control/clients",
            r#"{"name":"sneaky","services":["demo"],"allow_raw_credentials":true}"#,
        ),
        ("/v1/control/secret/demo", "[]"),
    ] {
        let response = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}{path}"))
            .header("x-latchkey-client", &client.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 401, "{path}");
        let answer: serde_json::Value = response.json().await.expect("json");
        assert_eq!(answer["error"], "control_unauthorized", "{path}");
    }
    assert!(
        lk.list_clients().iter().all(|c| c.name != "sneaky"),
        "no client was created"
    );
    lk.shutdown().await;
}

#[tokio::test]
async fn a_port_taken_on_ipv6_loopback_refuses_to_start_unless_ipv4_only() {
    let Ok(squatter) = std::net::TcpListener::bind("[::1]:0") else {
        // No IPv6 loopback on this machine: IPv4 alone is the right answer.
        let dir = tempfile::tempdir().expect("tempdir");
        let lk = start_on(&paths_with(&dir, &config()), 0)
            .await
            .expect("starts on IPv4 alone");
        lk.shutdown().await;
        return;
    };
    let port = squatter.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = start_on(&paths_with(&dir, &config()), port).await;
    let Err(e) = refused else {
        panic!("started while another program holds [::1]:{port}");
    };
    assert_eq!(
        e.code,
        latchkey_core::Code::ProxyPortUnavailable,
        "{}",
        e.message
    );
    assert!(
        e.message.contains("[::1]"),
        "says which address: {}",
        e.message
    );

    let v4_only = config().replacen("version = 1", "version = 1\n[proxy]\nipv6 = false", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let lk = start_on(&paths_with(&dir, &v4_only), port)
        .await
        .expect("ipv6 = false starts on 127.0.0.1 alone");
    assert_eq!(lk.proxy_addr().expect("serving").port(), port);
    lk.shutdown().await;
    drop(squatter);
}
