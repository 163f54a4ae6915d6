//! Property test of the config loader against the proxy (issue 10): every configuration
//! `Config::parse` accepts must start a proxy, built the way the instance builds it
//! ([`crate::source::proxy_config`]) and validated as `ProxyState::new` validates it. The
//! generator draws services, upstreams and credential mappings from the spellings each side is
//! known to treat differently.

use std::path::Path;

use latchkey_core::config::Config;
use proptest::prelude::*;

use crate::source::proxy_config;

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn service_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("github"),
        Just("a.b-c_d"),
        Just("V1"),
        Just("v1"),
        Just("OAuth"),
        Just("x"),
        Just("."),
        Just(".."),
    ]
}

fn upstream() -> impl Strategy<Value = (&'static str, bool)> {
    (
        prop_oneof![
            Just("https://api.example.com"),
            Just("https://api.example.com/base/"),
            Just("https://api.example.com/?a=1"),
            Just("https://api.example.com/#frag"),
            Just("https://user:pw@api.example.com"),
            Just("http://127.0.0.1:8080"),
            Just("http://localhost:9/x"),
            Just("http://[::1]:9"),
            Just("http://api.example.com"),
            Just("ftp://api.example.com"),
        ],
        any::<bool>(),
    )
}

fn mapping() -> impl Strategy<Value = String> {
    let header = prop_oneof![
        Just("Authorization"),
        Just("X-Api-Key"),
        Just("x-api-key"),
        Just("Host"),
        Just("Content-Length"),
        Just("Transfer-Encoding"),
        Just("Connection"),
        Just("Upgrade"),
        Just("Expect"),
        Just("TE"),
        Just("Trailer"),
        Just("Proxy-Authorization"),
        Just("X-Latchkey-Client"),
        Just("Cookie"),
    ];
    let prefix = prop_oneof![
        Just(None),
        Just(Some("Bearer ")),
        Just(Some("a\u{7f}b")),
        Just(Some("tab\tok"))
    ];
    let param = prop_oneof![
        Just("api_key"),
        Just("API_KEY"),
        Just("key"),
        Just("a b"),
        Just("a&b")
    ];
    let name = prop_oneof![Just("token"), Just("key"), Just("other")];
    prop_oneof![
        (name.clone(), header, prefix).prop_map(|(n, h, p)| match p {
            Some(p) => format!(
                "{{ name = \"{n}\", header = {}, prefix = {} }}",
                toml_str(h),
                toml_str(p)
            ),
            None => format!("{{ name = \"{n}\", header = {} }}", toml_str(h)),
        }),
        (name, param)
            .prop_map(|(n, q)| format!("{{ name = \"{n}\", query_param = {} }}", toml_str(q))),
    ]
}

fn config_text() -> impl Strategy<Value = String> {
    let service = (
        service_name(),
        upstream(),
        prop::collection::vec(mapping(), 1..4),
        prop_oneof![
            Just("gateway_endpoint = \"/api/v1/credentials/x\""),
            Just("source = \"access_token\""),
            Just("source = \"manual\"")
        ],
    );
    prop::collection::vec(service, 1..3).prop_map(|services| {
        let mut text = String::from(
            "version = 1\n\n[proxy]\nlisten = \"127.0.0.1:47821\"\n\n[[accounts]]\nname = \"work\"\nissuer = \"https://idp.example.com\"\nclient_id = \"latchkey\"\n\n[gateway]\nurl = \"https://gateway.example.com\"\n",
        );
        for (name, (upstream, loopback_http), credentials, source) in services {
            text.push_str(&format!(
                "\n[[services]]\nname = {}\naccount = \"work\"\n{source}\nupstream = {}\nallow_loopback_http = {loopback_http}\ncredentials = [{}]\n",
                toml_str(name),
                toml_str(upstream),
                credentials.join(", "),
            ));
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    // Fails today (issue 11, item 4): core accepts a service named `V1`, an upstream with a query
    // or fragment, an injected `Host`/`Content-Length`/`Transfer-Encoding`/`Connection`/
    // `Upgrade`/`Expect`/`TE`/`Trailer`/`Proxy-*`/`X-Latchkey-Client` header, and the same header
    // or query parameter injected twice in another case; the proxy refuses each at start.
    // Run it with `--ignored` once core validates them.
    #[test]
    #[ignore = "core accepts configs the proxy refuses until issue 11 item 4"]
    fn every_config_the_loader_accepts_starts_a_proxy(text in config_text()) {
        let Ok(config) = Config::parse(&text, Path::new("/props/latchkey.toml")) else {
            return Ok(());
        };
        let proxy = proxy_config(&config, 47821).map_err(|e| e.to_string());
        let started = proxy.and_then(|p| p.validate().map_err(|e| e.to_string()));
        prop_assert!(started.is_ok(), "core accepts, the proxy refuses ({:?}):\n{}", started, text);
    }
}
