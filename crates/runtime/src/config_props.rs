//! Property test of the one set of configuration rules (issue 11, item 4): every configuration
//! `Config::parse` accepts must start a proxy, built the way the instance builds it
//! ([`crate::source::proxy_config`]) and validated as `ProxyState::new` validates it; every one it
//! refuses is refused with a line of the file. The generator mixes the spellings each side once
//! treated differently (reserved names in another case, upstream queries and fragments,
//! proxy-managed headers, the same header or parameter twice in another case) with arbitrary
//! names, headers, prefixes, parameters, upstreams and proxy settings.

use std::path::Path;

use latchkey_core::config::{Config, ConfigError};
use proptest::prelude::*;

use crate::source::proxy_config;

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn service_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop_oneof![
            Just("github"),
            Just("a.b-c_d"),
            Just("V1"),
            Just("v1"),
            Just("OAuth"),
            Just("oauth"),
            Just("x"),
            Just("."),
            Just(".."),
            Just(".hidden"),
            Just("a/b"),
            Just(""),
        ]
        .prop_map(String::from),
        "[A-Za-z0-9._/ -]{0,66}",
    ]
}

fn upstream() -> impl Strategy<Value = (String, bool)> {
    let fixed = prop_oneof![
        Just("https://api.example.com"),
        Just("https://api.example.com/base/"),
        Just("https://api.example.com/?a=1"),
        Just("https://api.example.com/?"),
        Just("https://api.example.com/#frag"),
        Just("https://api.example.com/#"),
        Just("https://user:pw@api.example.com"),
        Just("https://user@api.example.com"),
        Just("http://127.0.0.1:8080"),
        Just("http://localhost:9/x"),
        Just("http://LOCALHOST:9/x"),
        Just("http://[::1]:9"),
        Just("http://127.1.2.3"),
        Just("http://api.example.com"),
        Just("ftp://api.example.com"),
        Just("file:///etc/passwd"),
        Just("https://"),
        Just("not a url"),
        Just("data:text/plain,x"),
    ]
    .prop_map(String::from);
    let built = (
        prop_oneof![Just("https"), Just("http"), Just("HTTPS"), Just("ws")],
        prop_oneof![
            Just("api.example.com"),
            Just("127.0.0.1"),
            Just("localhost"),
            Just("[::1]"),
            Just("10.0.0.1")
        ],
        "(/[a-z%?#=&]{0,6}){0,3}",
    )
        .prop_map(|(scheme, host, path)| format!("{scheme}://{host}{path}"));
    (prop_oneof![fixed, built], any::<bool>())
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop_oneof![
            Just("Authorization"),
            Just("X-Api-Key"),
            Just("x-api-key"),
            Just("Host"),
            Just("HOST"),
            Just("Content-Length"),
            Just("Transfer-Encoding"),
            Just("Connection"),
            Just("Upgrade"),
            Just("Expect"),
            Just("TE"),
            Just("Trailer"),
            Just("Proxy-Authorization"),
            Just("proxy-anything"),
            Just("X-Latchkey-Client"),
            Just("Cookie"),
            Just("Bad Header"),
            Just(""),
        ]
        .prop_map(String::from),
        "[A-Za-z0-9:_ -]{0,12}",
    ]
}

fn prefix() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        prop_oneof![
            Just("Bearer "),
            Just("a\u{7f}b"),
            Just("tab\tok"),
            Just("é "),
            Just("a\r\nb"),
            Just("")
        ]
        .prop_map(|p| Some(p.to_owned())),
        "[ -~\t\u{0}-\u{1f}é]{0,6}".prop_map(Some),
    ]
}

fn param() -> impl Strategy<Value = String> {
    prop_oneof![
        prop_oneof![
            Just("api_key"),
            Just("API_KEY"),
            Just("key"),
            Just("a b"),
            Just("a&b"),
            Just("")
        ]
        .prop_map(String::from),
        "[A-Za-z_&= ]{0,6}",
    ]
}

fn mapping() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("token"),
        Just("key"),
        Just("other"),
        Just("access_token"),
        Just(" ")
    ];
    prop_oneof![
        (name.clone(), header_name(), prefix()).prop_map(|(n, h, p)| match p {
            Some(p) => format!(
                "{{ name = \"{n}\", header = {}, prefix = {} }}",
                toml_str(&h),
                toml_str(&p)
            ),
            None => format!("{{ name = \"{n}\", header = {} }}", toml_str(&h)),
        }),
        (name.clone(), param())
            .prop_map(|(n, q)| format!("{{ name = \"{n}\", query_param = {} }}", toml_str(&q))),
        (name, header_name(), param()).prop_map(|(n, h, q)| format!(
            "{{ name = \"{n}\", header = {}, query_param = {} }}",
            toml_str(&h),
            toml_str(&q)
        )),
    ]
}

fn proxy_table() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("127.0.0.1:47821"),
            Just("127.0.0.1:0"),
            Just("[::1]:47821"),
            Just("0.0.0.0:47821"),
            Just("localhost:47821")
        ],
        prop_oneof![Just("50"), Just("0.5"), Just("0"), Just("-1"), Just("nan")],
        prop_oneof![Just("100"), Just("1"), Just("0")],
        prop_oneof![Just("2048"), Just("1"), Just("0"), Just("65537")],
    )
        .prop_map(|(listen, rate, burst, max)| {
            format!(
                "[proxy]\nlisten = \"{listen}\"\nrate_limit_per_second = {rate}\nrate_limit_burst = {burst}\nmax_connections = {max}\n"
            )
        })
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
    (proxy_table(), prop::collection::vec(service, 1..4)).prop_map(|(proxy, services)| {
        let mut text = format!(
            "version = 1\n\n{proxy}\n[[accounts]]\nname = \"work\"\nissuer = \"https://idp.example.com\"\nclient_id = \"latchkey\"\n\n[gateway]\nurl = \"https://gateway.example.com\"\n",
        );
        for (name, (upstream, loopback_http), credentials, source) in services {
            text.push_str(&format!(
                "\n[[services]]\nname = {}\naccount = \"work\"\n{source}\nupstream = {}\nallow_loopback_http = {loopback_http}\ncredentials = [{}]\n",
                toml_str(&name),
                toml_str(&upstream),
                credentials.join(", "),
            ));
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_config_the_loader_accepts_starts_a_proxy_and_every_refusal_names_a_line(
        text in config_text()
    ) {
        match Config::parse(&text, Path::new("/props/latchkey.toml")) {
            Ok(config) => {
                let proxy = proxy_config(&config, 47821).map_err(|e| e.to_string());
                let started = proxy.and_then(|p| p.validate().map_err(|e| e.to_string()));
                prop_assert!(
                    started.is_ok(),
                    "core accepts, the proxy refuses ({:?}):\n{}",
                    started,
                    text
                );
            }
            Err(ConfigError::Invalid { line, fix, .. }) => {
                let lines = text.lines().count().max(1);
                prop_assert!((1..=lines).contains(&line), "line {} of {}:\n{}", line, lines, text);
                prop_assert!(!fix.is_empty(), "a refusal says how to fix it:\n{}", text);
            }
            Err(other) => prop_assert!(false, "refused without a line: {other}\n{text}"),
        }
    }
}
