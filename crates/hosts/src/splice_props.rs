//! Property test of the host-file splice (issue 10): for generated JSON and JSONC files (comments,
//! trailing commas, any indentation, with or without a servers object or an earlier entry of
//! ours), [`crate::apply`] leaves every other member byte for byte, writes exactly one entry of
//! ours, and the result scans again (and is plain JSON where the host wants JSON).

use std::collections::BTreeMap;
use std::path::PathBuf;

use proptest::prelude::*;

use crate::{ClientToken, EntrySpec, HostId, HostPaths, jsonc};

const NAME: &str = "latchkey-demo";

fn value(jsonc: bool) -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("-1.5e3".to_owned()),
        Just("\"a \\\"quoted\\\" {value}, // not a comment\"".to_owned()),
        Just("\"\\u00e9\\n\"".to_owned()),
        Just("\"é ✓\"".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
    ];
    leaf.prop_recursive(3, 16, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z]{1,3}", inner), 0..4).prop_map(move |m| {
                let body: Vec<String> = m.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
                let trailing = if jsonc && !body.is_empty() { "," } else { "" };
                format!("{{{}{trailing}}}", body.join(", "))
            }),
        ]
    })
}

/// A host file: members (ours perhaps among the servers), indentation, comments and trailing
/// commas where the host allows them.
fn file(id: HostId) -> impl Strategy<Value = String> {
    let jsonc = matches!(id, HostId::VsCode | HostId::Cursor);
    let key = if id == HostId::VsCode {
        "servers"
    } else {
        "mcpServers"
    };
    let servers = prop::option::of(prop::collection::vec(
        (
            prop_oneof![Just(NAME.to_owned()), "[a-z]{1,6}"],
            value(jsonc),
        ),
        0..4,
    ));
    (
        prop::collection::vec(("[a-z]{1,6}", value(jsonc)), 0..4),
        servers,
        0usize..5,
        prop_oneof![Just("  "), Just("\t"), Just("    "), Just("")],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(others, servers, at, indent, comments, trailing)| {
            let nl = if indent.is_empty() { "" } else { "\n" };
            let comment = |s: &str| {
                if jsonc && comments {
                    format!("{s}// note {{ \"x\": 1 }}\n{s}")
                } else {
                    String::new()
                }
            };
            let mut members: Vec<String> = others
                .iter()
                .filter(|(k, _)| k != key)
                .map(|(k, v)| format!("{}\"{k}\": {v}", comment(indent)))
                .collect();
            // Duplicate keys are left out: with our entry twice, the splice replaces the first
            // and JSON.parse keeps the last (reported in SECURITY.md, "Fuzzing").
            if let Some(mut servers) = servers {
                let mut seen = std::collections::HashSet::new();
                servers.retain(|(k, _)| seen.insert(k.clone()));
                let inner = format!("{indent}{indent}");
                let body: Vec<String> = servers
                    .iter()
                    .map(|(k, v)| format!("{nl}{inner}\"{k}\": {v}"))
                    .collect();
                let tail = if jsonc && trailing && !body.is_empty() {
                    ","
                } else {
                    ""
                };
                let obj = format!("{{{}{tail}{nl}{indent}}}", body.join(","));
                members.insert(
                    at.min(members.len()),
                    format!("{}\"{key}\": {obj}", comment(indent)),
                );
            }
            let tail = if jsonc && trailing && !members.is_empty() {
                ","
            } else {
                ""
            };
            let joined: Vec<String> = members.iter().map(|m| format!("{nl}{indent}{m}")).collect();
            format!("{}{{{}{tail}{nl}}}\n", comment(""), joined.join(","))
        })
}

/// The text of every member but the entry we write, in file order.
fn untouched(text: &str, key: &str, jsonc: bool) -> Option<Vec<String>> {
    let top = jsonc::parse_top(text, jsonc).ok()?;
    let mut out = Vec::new();
    for m in &top.members {
        if m.key == key && text.as_bytes().get(m.value.start) == Some(&b'{') {
            let servers = jsonc::object_at(text, m.value.start, jsonc).ok()?;
            out.extend(
                servers
                    .members
                    .iter()
                    .filter(|s| s.key != NAME)
                    .map(|s| text[s.span.clone()].to_owned()),
            );
        } else {
            out.push(text[m.span.clone()].to_owned());
        }
    }
    Some(out)
}

fn host() -> impl Strategy<Value = HostId> {
    prop::sample::select(HostId::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn splicing_keeps_the_rest_byte_for_byte_and_the_result_scans(
        (id, text) in host().prop_flat_map(|id| (Just(id), file(id))),
    ) {
        let jsonc = matches!(id, HostId::VsCode | HostId::Cursor);
        let key = id.servers_key();
        let before = untouched(&text, key, jsonc);
        prop_assert!(before.is_some(), "the generator wrote a file the scanner refuses: {:?}", text);
        let home = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let paths = HostPaths::under(home.path());
        let path = paths.config_file(id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        std::fs::write(&path, &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let spec = EntrySpec {
            server_name: NAME.into(),
            service: "demo".into(),
            client: "props".into(),
            proxy_base: "http://127.0.0.1:47821".into(),
            latchkey_program: PathBuf::from("/usr/bin/latchkey"),
            mcp_path: "mcp".into(),
            env: BTreeMap::new(),
        };
        let applied = crate::apply(id, &paths, &spec, Some(&ClientToken::new("lk_props".into())));
        prop_assert!(applied.is_ok(), "{:?} refused {:?}", applied, text);
        let after = std::fs::read_to_string(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let kept = untouched(&after, key, jsonc);
        prop_assert_eq!(kept, before, "{:?}\nbecame\n{:?}", text, after);
        let top = jsonc::parse_top(&after, jsonc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let servers = top.members.iter().find(|m| m.key == key).ok_or_else(|| TestCaseError::fail("no servers object"))?;
        let servers = jsonc::object_at(&after, servers.value.start, jsonc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(servers.members.iter().filter(|m| m.key == NAME).count(), 1, "{:?}", after);
        if !jsonc {
            let parsed: Result<serde_json::Value, _> = serde_json::from_str(&after);
            prop_assert!(parsed.is_ok(), "not JSON: {:?}", after);
        }
    }
}
