//! Fuzzes the splice of Latchkey's entry into a host's config file (`latchkey_hosts::apply`) with
//! arbitrary existing files: a file the scanner accepts is always spliced, the result scans again,
//! names the entry, and keeps every other member byte for byte.

use std::collections::BTreeMap;
use std::path::PathBuf;

use latchkey_hosts::fuzzing as jsonc;
use latchkey_hosts::{ClientToken, EntrySpec, HostId, HostPaths};

const NAME: &str = "latchkey-demo";

fn servers_key(id: HostId) -> &'static str {
    if id == HostId::VsCode {
        "servers"
    } else {
        "mcpServers"
    }
}

/// The text of every member but the one we write, in order, keyed by their path.
fn untouched(text: &str, id: HostId, jsonc: bool) -> Option<Vec<String>> {
    let top = jsonc::parse_top(text, jsonc).ok()?;
    let mut out = Vec::new();
    for m in &top.members {
        if m.key == servers_key(id) && text.as_bytes().get(m.value.start) == Some(&b'{') {
            let servers = jsonc::object_at(text, m.value.start, jsonc).ok()?;
            for s in servers.members.iter().filter(|s| s.key != NAME) {
                out.push(text[s.span.clone()].to_owned());
            }
        } else {
            out.push(text[m.span.clone()].to_owned());
        }
    }
    Some(out)
}

/// One run of the target on `data`: returns, or panics on a broken invariant.
pub fn run(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let id = HostId::ALL[usize::from(which) % HostId::ALL.len()];
    let Ok(home) = tempfile::tempdir() else {
        return;
    };
    let paths = HostPaths::under(home.path());
    let file = paths.config_file(id);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).expect("a fresh temporary directory");
    }
    std::fs::write(&file, text).expect("a fresh temporary directory");
    let jsonc = matches!(id, HostId::VsCode | HostId::Cursor);
    let before = if text.trim().is_empty() {
        Some(Vec::new())
    } else {
        untouched(text, id, jsonc)
    };
    let spec = EntrySpec {
        server_name: NAME.into(),
        service: "demo".into(),
        client: "fuzz".into(),
        proxy_base: "http://127.0.0.1:47821".into(),
        latchkey_program: PathBuf::from("/usr/bin/latchkey"),
        mcp_path: "mcp".into(),
        env: BTreeMap::new(),
    };
    let token = ClientToken::new("lk_fuzz".into());
    let result = latchkey_hosts::apply(id, &paths, &spec, Some(&token));
    let Some(before) = before else {
        assert!(
            result.is_err(),
            "a file the scanner refuses was spliced: {text:?}"
        );
        return;
    };
    let servers_ok = jsonc::parse_top(text, jsonc).map_or(true, |top| {
        top.members
            .iter()
            .find(|m| m.key == servers_key(id))
            .is_none_or(|m| text.as_bytes().get(m.value.start) == Some(&b'{'))
    });
    if !servers_ok {
        assert!(
            result.is_err(),
            "`{}` not an object, yet spliced",
            servers_key(id)
        );
        return;
    }
    // A servers object listed twice, or our entry listed twice in it, is refused on purpose:
    // hosts read the last duplicate, so editing the first would change nothing they use.
    let doubled = jsonc::parse_top(text, jsonc).is_ok_and(|top| {
        let mut servers = top.members.iter().filter(|m| m.key == servers_key(id));
        let first = servers.next();
        servers.next().is_some()
            || first.is_some_and(|m| {
                jsonc::object_at(text, m.value.start, jsonc)
                    .is_ok_and(|o| o.members.iter().filter(|s| s.key == NAME).count() > 1)
            })
    });
    if doubled {
        let refused = result.expect_err("a duplicate the host would read past was spliced");
        assert!(
            format!("{refused:?}").contains("appears twice"),
            "refused for the duplicate: {refused:?}"
        );
        return;
    }
    result.unwrap_or_else(|e| panic!("a valid file refused: {e:?} for {text:?}"));
    let after = std::fs::read_to_string(&file).expect("apply wrote the file");
    let kept = untouched(&after, id, jsonc)
        .unwrap_or_else(|| panic!("the spliced file does not scan: {after:?} from {text:?}"));
    assert_eq!(kept, before, "other members changed: {text:?} -> {after:?}");
    let top = jsonc::parse_top(&after, jsonc).expect("scanned above");
    let servers = top
        .members
        .iter()
        .find(|m| m.key == servers_key(id))
        .expect("servers object");
    let servers = jsonc::object_at(&after, servers.value.start, jsonc).expect("scanned above");
    assert_eq!(
        servers.members.iter().filter(|m| m.key == NAME).count(),
        1,
        "{after:?}"
    );
    // The scanner lets raw control characters inside strings pass (serde_json does not), so only
    // a file that was JSON must stay JSON (reported in SECURITY.md, "Fuzzing").
    let was_json =
        text.trim().is_empty() || serde_json::from_str::<serde_json::Value>(text).is_ok();
    if !jsonc && was_json {
        assert!(
            serde_json::from_str::<serde_json::Value>(&after).is_ok(),
            "not JSON: {after:?}"
        );
    }
}
