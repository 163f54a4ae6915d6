use super::*;

const SAMPLE: &str = r#"
version = 1

[proxy]
listen = "127.0.0.1:47821"

[[accounts]]
name = "work"
issuer = "https://idp.example.com"
client_id = "latchkey"
scopes = ["openid", "profile", "email", "offline_access"]
audience = "https://gateway.example.com"

[gateway]
url = "https://auth-gateway.example.com"

[[services]]
name = "github"
account = "work"
gateway_endpoint = "/api/v1/credentials/github"
upstream = "https://api.github.com"
credentials = [{ name = "token", header = "Authorization", prefix = "Bearer " }]
env = { GITHUB_TOKEN = "token" }
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/cfg/latchkey.toml"))
}

fn invalid(text: &str) -> (usize, String, String) {
    match parse(text) {
        Err(ConfigError::Invalid {
            line, message, fix, ..
        }) => (line, message, fix),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn protocol_sample_parses() {
    let c = parse(SAMPLE).expect("the PROTOCOL §5 sample is valid");
    assert_eq!(c.proxy.listen.port(), 47821);
    let s = c.service("github").expect("github service");
    assert_eq!(s.account.as_str(), "work");
    assert_eq!(
        s.credentials[0].target,
        InjectTarget::Header {
            name: http::header::AUTHORIZATION,
            prefix: "Bearer ".into()
        }
    );
    assert_eq!(s.env.get("GITHUB_TOKEN").map(String::as_str), Some("token"));
    assert_eq!(s.ttl, Duration::from_secs(3600));
    assert_eq!(s.required_credentials(), vec!["token".to_owned()]);
}

#[test]
fn unknown_key_is_refused_with_its_line() {
    let text = SAMPLE.replace(
        "client_id = \"latchkey\"",
        "client_id = \"latchkey\"\nclient_secret = \"x\"",
    );
    let (line, message, fix) = invalid(&text);
    assert_eq!(line, 11, "points at the unknown key");
    assert!(message.contains("client_secret"), "{message}");
    assert!(fix.contains("remove"), "{fix}");
}

#[test]
fn error_display_names_file_line_and_fix() {
    let text = SAMPLE.replace("https://api.github.com", "ftp://x");
    let err = parse(&text).expect_err("ftp upstream");
    let shown = err.to_string();
    assert!(shown.starts_with("/cfg/latchkey.toml:21:"), "{shown}");
    assert!(shown.contains("fix:"), "{shown}");
}

#[test]
fn service_naming_an_unknown_account_is_refused() {
    let text = SAMPLE.replace("account = \"work\"", "account = \"home\"");
    let (_, message, fix) = invalid(&text);
    assert!(message.contains("unknown account `home`"), "{message}");
    assert!(fix.contains("work"), "lists the known accounts: {fix}");
}

#[test]
fn mapping_without_a_name_is_refused() {
    let text = SAMPLE.replace("{ name = \"token\", header", "{ name = \"\", header");
    let (_, message, _) = invalid(&text);
    assert!(message.contains("names no credential"), "{message}");
}

#[test]
fn mapping_with_both_header_and_query_is_refused() {
    let text = SAMPLE.replace(
        "prefix = \"Bearer \" }",
        "prefix = \"Bearer \", query_param = \"k\" }",
    );
    let (_, message, _) = invalid(&text);
    assert!(
        message.contains("exactly one of header or query_param"),
        "{message}"
    );
}

#[test]
fn plain_http_upstream_is_refused_unless_loopback_and_allowed() {
    let remote = SAMPLE.replace("https://api.github.com", "http://api.github.com");
    let (line, message, _) = invalid(&remote);
    assert_eq!(line, 21);
    assert!(message.contains("not https"), "{message}");

    let loopback = SAMPLE.replace("https://api.github.com", "http://127.0.0.1:9000");
    let (_, message, fix) = invalid(&loopback);
    assert!(message.contains("allowed explicitly"), "{message}");
    assert!(fix.contains("allow_loopback_http"), "{fix}");

    let allowed = loopback.replace(
        "upstream = \"http://127.0.0.1:9000\"",
        "upstream = \"http://127.0.0.1:9000\"\nallow_loopback_http = true",
    );
    let c = parse(&allowed).expect("loopback http allowed explicitly");
    assert_eq!(c.services[0].upstream.as_str(), "http://127.0.0.1:9000/");

    let remote_allowed = allowed.replace("127.0.0.1:9000", "10.0.0.1:9000");
    invalid(&remote_allowed);
}

#[test]
fn insecure_issuer_needs_opt_in_and_loopback() {
    let text = SAMPLE.replace("https://idp.example.com", "http://127.0.0.1:47900");
    let (_, _, fix) = invalid(&text);
    assert!(fix.contains("allow_insecure_http"), "{fix}");
    let ok = text.replace(
        "client_id = \"latchkey\"",
        "client_id = \"latchkey\"\nallow_insecure_http = true",
    );
    parse(&ok).expect("loopback issuer with opt-in");
    let remote = ok.replace("127.0.0.1:47900", "idp.example.com");
    invalid(&remote);
}

#[test]
fn proxy_must_listen_on_loopback() {
    let text = SAMPLE.replace("127.0.0.1:47821", "0.0.0.0:47821");
    let (line, message, _) = invalid(&text);
    assert_eq!(line, 5);
    assert!(message.contains("loopback"), "{message}");
    let v6 = SAMPLE.replace("127.0.0.1:47821", "[::1]:47821");
    parse(&v6).expect("[::1] is loopback");
}

#[test]
fn credentials_in_urls_are_refused() {
    let text = SAMPLE.replace(
        "https://auth-gateway.example.com",
        "https://u:p@auth-gateway.example.com",
    );
    let (_, message, _) = invalid(&text);
    assert!(message.contains("user name or password"), "{message}");
    assert!(
        !message.contains("u:p"),
        "the secret is not echoed: {message}"
    );
}

#[test]
fn toml_syntax_error_points_at_the_line() {
    let text = "version = 1\n[proxy\nlisten = 1\n";
    let (line, _, _) = invalid(text);
    assert_eq!(line, 2);
}

#[test]
fn wrong_version_is_refused() {
    let (_, message, fix) = invalid(&SAMPLE.replace("version = 1", "version = 7"));
    assert!(message.contains("version 7"), "{message}");
    assert!(fix.contains("version = 1"), "{fix}");
}

#[test]
fn gateway_service_without_gateway_table_is_refused() {
    let text = SAMPLE.replace(
        "[gateway]\nurl = \"https://auth-gateway.example.com\"\n",
        "",
    );
    let (_, message, _) = invalid(&text);
    assert!(message.contains("no [gateway] table"), "{message}");
}

#[test]
fn access_token_and_manual_sources_parse() {
    let text = format!(
        "{SAMPLE}\n[[services]]\nname = \"api\"\naccount = \"work\"\nsource = \"access_token\"\nupstream = \"https://api.example.com\"\ncredentials = [{{ name = \"access_token\", header = \"Authorization\", prefix = \"Bearer \" }}]\n\n[[services]]\nname = \"pat\"\naccount = \"work\"\nsource = \"manual\"\nupstream = \"https://pat.example.com\"\ncredentials = [{{ name = \"token\", query_param = \"key\" }}]\n"
    );
    let c = parse(&text).expect("three services");
    assert_eq!(
        c.service("api").map(|s| &s.source),
        Some(&CredentialSource::AccessToken)
    );
    assert_eq!(
        c.service("pat").map(|s| s.credentials[0].target.clone()),
        Some(InjectTarget::Query {
            param: "key".into()
        })
    );
}

#[test]
fn duplicate_and_reserved_names_are_refused() {
    let dup = format!(
        "{SAMPLE}\n[[services]]\nname = \"github\"\naccount = \"work\"\ngateway_endpoint = \"/x\"\nupstream = \"https://x.example.com\"\ncredentials = [{{ name = \"t\", header = \"X-T\" }}]\n"
    );
    let (_, message, _) = invalid(&dup);
    assert!(message.contains("defined twice"), "{message}");
    let reserved = SAMPLE.replace("name = \"github\"", "name = \"v1\"");
    let (_, message, _) = invalid(&reserved);
    assert!(message.contains("reserved"), "{message}");
    let slash = SAMPLE.replace("name = \"github\"", "name = \"a/b\"");
    invalid(&slash);
}

#[test]
fn bad_header_name_and_env_var_are_refused() {
    let (_, message, _) =
        invalid(&SAMPLE.replace("header = \"Authorization\"", "header = \"Bad Header\""));
    assert!(message.contains("not a valid header name"), "{message}");
    let (_, message, _) = invalid(&SAMPLE.replace("GITHUB_TOKEN", "\"1-X\""));
    assert!(message.contains("environment variable"), "{message}");
}

#[test]
fn missing_file_says_how_to_create_one() {
    let err = Config::load_from(Path::new("/nonexistent/latchkey.toml")).expect_err("missing");
    assert_eq!(err.code(), crate::Code::ConfigNotFound);
    assert!(err.to_string().contains("latchkey config init"), "{err}");
}

const ACCOUNT: &str = "version = 1\n\n[[accounts]]\nname = \"work\"\nissuer = \"https://idp.example.com\"\nclient_id = \"latchkey\"\n";

#[test]
fn access_tokens_are_opaque_and_the_client_public_unless_the_account_says_otherwise() {
    let c = parse(ACCOUNT).expect("valid");
    let a = &c.accounts[0];
    assert!(!a.validate_access_token);
    assert_eq!(a.token_endpoint_auth_method, None);
    let c = parse(&format!(
        "{ACCOUNT}audience = \"api://default\"\nvalidate_access_token = true\ntoken_endpoint_auth_method = \"client_secret_post\"\n"
    ))
    .expect("valid");
    let a = &c.accounts[0];
    assert!(a.validate_access_token);
    assert_eq!(
        a.token_endpoint_auth_method,
        Some(ClientAuthMethod::ClientSecretPost)
    );
}

#[test]
fn validate_access_token_without_an_audience_is_refused_with_its_line_and_fix() {
    let (line, message, fix) = invalid(&format!("{ACCOUNT}validate_access_token = true\n"));
    assert_eq!(line, 7, "{message}");
    assert!(message.contains("validate_access_token"), "{message}");
    assert!(fix.contains("audience"), "{fix}");
    // Explicitly off needs nothing.
    parse(&format!("{ACCOUNT}validate_access_token = false\n")).expect("off is fine");
}

#[test]
fn an_unknown_client_authentication_method_is_refused() {
    let (line, message, fix) = invalid(&format!(
        "{ACCOUNT}token_endpoint_auth_method = \"private_key_jwt\"\n"
    ));
    assert_eq!(line, 7);
    assert!(message.contains("private_key_jwt"), "{message}");
    assert!(fix.contains("client_secret_basic"), "{fix}");
}

#[test]
fn a_client_secret_in_the_file_is_refused_with_the_command_that_stores_it() {
    let (line, message, fix) = invalid(&format!("{ACCOUNT}client_secret = \"GOCSPX-abc\"\n"));
    assert_eq!(line, 7);
    assert!(message.contains("client_secret"), "{message}");
    assert!(
        fix.contains("latchkey account set-secret --account work"),
        "{fix}"
    );
    assert!(
        !message.contains("GOCSPX") && !fix.contains("GOCSPX"),
        "the value is never repeated"
    );
}

#[test]
fn the_proxy_connection_cap_defaults_and_is_configurable() {
    assert_eq!(parse(SAMPLE).expect("sample").proxy.max_connections, 2048);
    let capped = SAMPLE.replace(
        "listen = \"127.0.0.1:47821\"",
        "listen = \"127.0.0.1:47821\"\nmax_connections = 64",
    );
    assert_eq!(parse(&capped).expect("capped").proxy.max_connections, 64);
    let zero = SAMPLE.replace(
        "listen = \"127.0.0.1:47821\"",
        "listen = \"127.0.0.1:47821\"\nmax_connections = 0",
    );
    let (line, message, fix) = invalid(&zero);
    assert_eq!(line, 6, "points at the max_connections line");
    assert!(message.contains("max_connections"), "{message}");
    assert!(fix.contains("2048"), "{fix}");
}

#[test]
fn ipv6_is_served_unless_the_proxy_section_says_ipv4_only() {
    assert!(
        parse(SAMPLE).expect("sample").proxy.ipv6,
        "both listeners by default"
    );
    let v4_only = SAMPLE.replace(
        "listen = \"127.0.0.1:47821\"",
        "listen = \"127.0.0.1:47821\"\nipv6 = false",
    );
    assert!(!parse(&v4_only).expect("ipv4 only").proxy.ipv6);
}

#[test]
fn remote_servers_parse_with_their_options() {
    let text = format!(
        "{SAMPLE}\n[[servers]]\nname = \"tracker\"\nurl = \"https://mcp.example.com/mcp\"\nclient_id = \"pre\"\nscopes = [\"read\", \"write\"]\n\n[[servers]]\nname = \"local\"\nurl = \"http://127.0.0.1:8080/mcp\"\nallow_insecure_loopback = true\n"
    );
    let c = parse(&text).expect("valid");
    let tracker = c.server("tracker").expect("tracker");
    assert_eq!(tracker.client_id.as_deref(), Some("pre"));
    assert_eq!(
        tracker.scopes.as_deref(),
        Some(&["read".to_owned(), "write".to_owned()][..])
    );
    assert!(c.server("local").is_some_and(|s| s.allow_insecure_loopback));
}

#[test]
fn a_remote_server_is_refused_with_its_line_and_fix() {
    let base_lines = SAMPLE.lines().count();
    let case = |server: &str| invalid(&format!("{SAMPLE}[[servers]]\n{server}"));

    let (line, message, fix) = case("name = \"github\"\nurl = \"https://mcp.example.com/mcp\"\n");
    assert_eq!(line, base_lines + 2);
    assert!(message.contains("has the name of a service"), "{message}");
    assert!(fix.contains("rename"), "{fix}");

    let (line, message, fix) = case("name = \"local\"\nurl = \"http://127.0.0.1:8080/mcp\"\n");
    assert_eq!(line, base_lines + 3);
    assert!(message.contains("plain http://"), "{message}");
    assert!(fix.contains("allow_insecure_loopback"), "{fix}");

    let (_, message, _) = case(
        "name = \"far\"\nurl = \"http://mcp.example.com/mcp\"\nallow_insecure_loopback = true\n",
    );
    assert!(
        message.contains("must use https://"),
        "off loopback: {message}"
    );

    let (_, message, fix) =
        case("name = \"t\"\nurl = \"https://mcp.example.com/mcp\"\nclient_secret = \"s3cret\"\n");
    assert!(message.contains("client secret"), "{message}");
    assert!(fix.contains("secrets never go"), "{fix}");

    let (_, message, _) = case("name = \"v1\"\nurl = \"https://mcp.example.com/mcp\"\n");
    assert!(message.contains("reserved"), "{message}");
}

#[test]
fn a_file_with_only_remote_servers_is_valid_and_an_empty_one_is_not() {
    let c = parse(
        "version = 1\n\n[[servers]]\nname = \"tracker\"\nurl = \"https://mcp.example.com/mcp\"\ncallback_port = 33418\n",
    )
    .expect("servers need no account");
    assert!(c.accounts.is_empty());
    assert_eq!(
        c.server("tracker").and_then(|s| s.callback_port),
        Some(33418)
    );
    assert!(c.default_account().is_none());

    let (_, message, fix) = invalid("version = 1\n");
    assert!(message.contains("[[accounts]]"), "{message}");
    assert!(fix.contains("[[servers]]"), "names both ways out: {fix}");
}

#[test]
fn a_server_callback_port_of_zero_is_refused() {
    let (_, message, fix) = invalid(&format!(
        "{SAMPLE}[[servers]]\nname = \"t\"\nurl = \"https://mcp.example.com/mcp\"\ncallback_port = 0\n"
    ));
    assert!(message.contains("callback_port"), "{message}");
    assert!(fix.contains("registered"), "{fix}");
}

#[test]
fn the_client_metadata_url_must_be_https_with_a_path_and_no_fragment() {
    let with = |url: &str| format!("client_metadata_url = \"{url}\"\n{SAMPLE}");
    let c = parse(&with("https://example.com/latchkey/client-metadata.json")).expect("valid");
    assert_eq!(
        c.client_metadata_url.as_ref().map(Url::as_str),
        Some("https://example.com/latchkey/client-metadata.json")
    );
    assert!(parse(SAMPLE).expect("valid").client_metadata_url.is_none());
    for (url, why) in [
        (
            "http://example.com/client-metadata.json",
            "must use https://",
        ),
        ("https://example.com/client-metadata.json#x", "fragment"),
        ("https://example.com/", "a path"),
        ("https://u:p@example.com/c.json", "user name"),
        ("not a url", "is not a URL"),
    ] {
        let (line, message, fix) = invalid(&with(url));
        assert_eq!(line, 1, "{url}");
        assert!(message.contains(why), "{url}: {message}");
        assert!(fix.contains("client-metadata.json"), "{fix}");
    }
}

#[test]
fn values_the_proxy_manages_are_refused_with_their_line() {
    let cases = [
        ("name = \"github\"", "name = \"V1\"", 18, "reserved"),
        ("name = \"github\"", "name = \"OAuth\"", 18, "reserved"),
        (
            "upstream = \"https://api.github.com\"",
            "upstream = \"https://api.github.com/?org=x\"",
            21,
            "query",
        ),
        (
            "upstream = \"https://api.github.com\"",
            "upstream = \"https://api.github.com/#top\"",
            21,
            "fragment",
        ),
        (
            "header = \"Authorization\"",
            "header = \"Host\"",
            22,
            "managed by the proxy",
        ),
        (
            "header = \"Authorization\"",
            "header = \"Proxy-Authorization\"",
            22,
            "managed by the proxy",
        ),
        (
            "header = \"Authorization\"",
            "header = \"X-Latchkey-Client\"",
            22,
            "managed by the proxy",
        ),
        (
            "prefix = \"Bearer \"",
            "prefix = \"B\\u007Fearer \"",
            22,
            "prefix",
        ),
    ];
    for (from, to, want_line, want) in cases {
        let text = SAMPLE.replace(from, to);
        let (line, message, fix) = invalid(&text);
        assert_eq!(line, want_line, "{to}: points at the value ({message})");
        assert!(message.contains(want), "{to}: {message}");
        assert!(!fix.is_empty(), "{to}: a fix is given");
    }
}

#[test]
fn the_same_header_or_parameter_injected_twice_in_another_case_is_refused() {
    let twice = SAMPLE.replace(
        "credentials = [{ name = \"token\", header = \"Authorization\", prefix = \"Bearer \" }]",
        "credentials = [\n  { name = \"token\", header = \"Authorization\" },\n  { name = \"other\", header = \"authorization\" },\n]",
    );
    let (line, message, _) = invalid(&twice);
    assert_eq!(line, 24, "points at the second mapping");
    assert!(message.contains("twice"), "{message}");
    let twice = SAMPLE.replace(
        "credentials = [{ name = \"token\", header = \"Authorization\", prefix = \"Bearer \" }]",
        "credentials = [{ name = \"token\", query_param = \"api_key\" }, { name = \"k\", query_param = \"API_KEY\" }]",
    );
    let (line, message, _) = invalid(&twice);
    assert_eq!(line, 22);
    assert!(message.contains("twice"), "{message}");
}
