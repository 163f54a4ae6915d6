//! The client registry: token format, hashes only on disk, verification, revocation, last use.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use latchkey_store::{ClientName, ClientOptions, ClientRegistry, Database, TOKEN_PREFIX};
use sha2::{Digest, Sha256};

use crate::{contains, disk_bytes, temp_db};

fn name(s: &str) -> ClientName {
    ClientName::parse(s).expect("valid name")
}

fn services(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn memory_registry() -> ClientRegistry {
    ClientRegistry::open(&Database::open_in_memory().expect("db")).expect("registry")
}

#[test]
fn tokens_are_lk_prefixed_base62_and_unique() {
    let reg = memory_registry();
    let mut seen = HashSet::new();
    for i in 0..200 {
        let (_, token) = reg.add(&name(&format!("c{i}")), &[]).expect("add");
        let t = token.expose();
        assert!(
            t.starts_with(TOKEN_PREFIX) && t.len() == 35,
            "lk_ + 32 characters"
        );
        assert!(t[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(seen.insert(t.to_owned()), "tokens never repeat");
    }
}

#[test]
fn only_token_hashes_reach_the_disk() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let (_dir, path) = temp_db();
    let db = Database::open(&path).expect("open");
    let reg = ClientRegistry::open(&db).expect("registry");
    let (_, first) = reg
        .add(&name("claude-desktop"), &services(&["github"]))
        .expect("add");
    let second = reg
        .issue_token(&name("claude-desktop"), "written into a host config")
        .expect("issue");
    let ephemeral = rt
        .block_on(async { reg.issue_ephemeral(&name("claude-desktop"), Duration::from_secs(60)) })
        .expect("ephemeral");
    assert!(reg.verify(first.expose()).is_some());
    reg.flush_last_used().expect("flush");

    let tokens = [first.expose(), second.expose(), ephemeral.expose()];
    let check = |bytes: &[u8], when: &str| {
        for t in tokens {
            assert!(
                !contains(bytes, t.as_bytes()),
                "a token is on disk ({when})"
            );
            assert!(
                !contains(bytes, &t.as_bytes()[3..]),
                "a token's random part is on disk ({when})"
            );
        }
    };
    check(&disk_bytes(&path), "while open");
    let hash: [u8; 32] = Sha256::digest(first.expose().as_bytes()).into();
    assert!(
        contains(&disk_bytes(&path), &hash),
        "the SHA-256 of the token is what is stored"
    );

    drop(reg);
    drop(db);
    check(&disk_bytes(&path), "after close and checkpoint");
}

#[test]
fn verify_accepts_the_right_token_and_rejects_near_misses() {
    let reg = memory_registry();
    let (info, token) = reg
        .add(&name("cursor"), &services(&["jira", "github", "jira"]))
        .expect("add");
    assert_eq!(
        info.services,
        ["github", "jira"],
        "services are sorted and de-duplicated"
    );
    let (_, other) = reg
        .add(&name("vscode"), &services(&["slack"]))
        .expect("add");

    let grant = reg.verify(token.expose()).expect("right token");
    assert_eq!(grant.client.as_str(), "cursor");
    assert!(grant.allows("github") && grant.allows("jira") && !grant.allows("slack"));
    assert!(!grant.ephemeral);
    assert_eq!(
        reg.verify(other.expose())
            .expect("other client")
            .client
            .as_str(),
        "vscode"
    );

    let t = token.expose();
    let mut flipped = t.to_owned();
    let last = flipped.pop().expect("non-empty");
    flipped.push(if last == 'a' { 'b' } else { 'a' });
    for wrong in [
        &flipped[..],
        &t[..t.len() - 1],
        &format!("{t}x"),
        &t[3..],
        &t.to_uppercase(),
        "",
    ] {
        assert!(reg.verify(wrong).is_none(), "a near miss must be refused");
    }
}

#[test]
fn a_revoked_token_is_refused_by_every_clone_at_once() {
    let reg = memory_registry();
    let proxy_view = reg.clone();
    let (_, token) = reg
        .add(&name("cursor"), &services(&["github"]))
        .expect("add");
    assert!(proxy_view.verify(token.expose()).is_some());
    assert!(reg.revoke(&name("cursor")).expect("revoke"));
    assert!(
        proxy_view.verify(token.expose()).is_none(),
        "revocation is synchronous"
    );
    assert!(
        !reg.revoke(&name("cursor")).expect("second revoke"),
        "nothing left to revoke"
    );
    assert!(reg.list().is_empty());
}

#[test]
fn revocation_races_with_verifying_threads_and_wins() {
    let reg = memory_registry();
    let (_, token) = reg.add(&name("cursor"), &[]).expect("add");
    let token = Arc::new(token);
    let revoked = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (reg, token, revoked) = (reg.clone(), Arc::clone(&token), Arc::clone(&revoked));
            std::thread::spawn(move || {
                let mut accepted_after = 0u32;
                for _ in 0..20_000 {
                    let was_revoked = revoked.load(Ordering::Acquire);
                    if reg.verify(token.expose()).is_some() && was_revoked {
                        accepted_after += 1;
                    }
                }
                accepted_after
            })
        })
        .collect();
    assert!(reg.revoke(&name("cursor")).expect("revoke"));
    revoked.store(true, Ordering::Release);
    for w in workers {
        assert_eq!(
            w.join().expect("worker"),
            0,
            "no token accepted after revoke returned"
        );
    }
}

#[test]
fn a_client_may_hold_several_tokens_and_revoke_removes_them_all() {
    let reg = memory_registry();
    let (_, first) = reg
        .add(&name("claude-code"), &services(&["github"]))
        .expect("add");
    let second = reg
        .issue_token(&name("claude-code"), "claude-code settings")
        .expect("second");
    let third = reg
        .issue_token(&name("claude-code"), "")
        .expect("an empty label is allowed");
    assert_eq!(
        reg.get(&name("claude-code")).expect("listed").token_count,
        3
    );
    for t in [&first, &second, &third] {
        assert_eq!(
            reg.verify(t.expose())
                .expect("each token works")
                .client
                .as_str(),
            "claude-code"
        );
    }
    assert!(reg.revoke(&name("claude-code")).expect("revoke"));
    for t in [&first, &second, &third] {
        assert!(
            reg.verify(t.expose()).is_none(),
            "revoke removes every token"
        );
    }
}

#[test]
fn writes_report_typed_errors() {
    let reg = memory_registry();
    reg.add(&name("cursor"), &[]).expect("add");
    let dup = reg.add(&name("cursor"), &[]).expect_err("duplicate");
    assert_eq!(dup.code(), latchkey_core::Code::ClientExists);
    assert!(dup.to_string().contains("`cursor` already exists"), "{dup}");
    assert_eq!(
        reg.issue_token(&name("ghost"), "x")
            .expect_err("unknown")
            .code(),
        latchkey_core::Code::UnknownClient
    );
    assert_eq!(
        reg.set_services(&name("ghost"), &[])
            .expect_err("unknown")
            .code(),
        latchkey_core::Code::UnknownClient
    );
    assert_eq!(
        reg.issue_token(&name("cursor"), "a\nb")
            .expect_err("label")
            .code(),
        latchkey_core::Code::InvalidTokenLabel
    );
    assert_eq!(
        reg.issue_token(&name("cursor"), &"x".repeat(65))
            .expect_err("label")
            .code(),
        latchkey_core::Code::InvalidTokenLabel
    );
    assert_eq!(
        reg.add(&name("new"), &services(&["bad name"]))
            .expect_err("service")
            .code(),
        latchkey_core::Code::InvalidServiceName
    );
    assert!(
        reg.get(&name("new")).is_none(),
        "a failed add leaves nothing behind"
    );
    assert_eq!(
        ClientName::parse("no spaces").expect_err("name").code(),
        latchkey_core::Code::InvalidClientName
    );
}

#[test]
fn set_services_changes_the_scope_of_existing_tokens() {
    let reg = memory_registry();
    let (_, token) = reg
        .add(&name("cursor"), &services(&["github"]))
        .expect("add");
    reg.set_services(&name("cursor"), &services(&["slack"]))
        .expect("set");
    let grant = reg.verify(token.expose()).expect("still valid");
    assert!(grant.allows("slack") && !grant.allows("github"));
}

#[test]
fn last_use_is_flushed_and_read_back_after_a_restart() {
    let (_dir, path) = temp_db();
    {
        let db = Database::open(&path).expect("open");
        let reg = ClientRegistry::open(&db).expect("registry");
        let (_, explicit) = reg.add(&name("explicit"), &[]).expect("add");
        let (_, on_drop) = reg.add(&name("on-drop"), &[]).expect("add");
        reg.add(&name("idle"), &[]).expect("add");
        assert!(reg.verify(explicit.expose()).is_some());
        reg.flush_last_used().expect("flush");
        assert!(reg.verify(on_drop.expose()).is_some());
        // Dropping the last handle flushes what is pending.
    }
    let db = Database::open(&path).expect("reopen");
    let reg = ClientRegistry::open(&db).expect("registry");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for n in ["explicit", "on-drop"] {
        let at = reg
            .get(&name(n))
            .expect("listed")
            .last_used_at
            .expect("persisted");
        assert!(
            (now - at).abs() < 120,
            "{n}: last use is unix seconds, recent"
        );
    }
    assert_eq!(reg.get(&name("idle")).expect("listed").last_used_at, None);
}

#[test]
fn list_is_sorted_and_serialises_without_tokens() {
    let reg = memory_registry();
    let (_, token) = reg.add(&name("zed"), &services(&["github"])).expect("add");
    reg.add(&name("alpha"), &[]).expect("add");
    let list = reg.list();
    assert_eq!(
        list.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["alpha", "zed"]
    );
    let json = serde_json::to_value(&list).expect("json");
    assert_eq!(json[1]["name"], "zed");
    assert_eq!(json[1]["services"][0], "github");
    assert_eq!(json[1]["token_count"], 1);
    assert!(json[1]["created_at"].is_i64());
    assert!(json[1]["last_used_at"].is_null());
    assert!(
        !json.to_string().contains(&token.expose()[3..]),
        "no token in the listing"
    );
    assert!(
        !format!("{token:?} {reg:?}").contains(&token.expose()[3..]),
        "no token in Debug"
    );
}

#[test]
fn a_second_process_sees_new_clients_after_reload() {
    let (_dir, path) = temp_db();
    let app = ClientRegistry::open(&Database::open(&path).expect("app db")).expect("app registry");
    let cli = ClientRegistry::open(&Database::open(&path).expect("cli db")).expect("cli registry");
    let (_, token) = cli.add(&name("from-cli"), &[]).expect("add");
    assert!(
        app.verify(token.expose()).is_none(),
        "the app's snapshot is its own"
    );
    app.reload().expect("reload");
    assert!(app.verify(token.expose()).is_some());
}

#[test]
fn reading_raw_credentials_is_off_by_default_and_kept_when_granted_at_creation() {
    let (_dir, path) = temp_db();
    let (plain, trusted) = {
        let db = Database::open(&path).expect("open");
        let reg = ClientRegistry::open(&db).expect("registry");
        let (info, plain) = reg
            .add(&name("cursor"), &services(&["github"]))
            .expect("add");
        assert!(
            !info.raw_credentials,
            "a new client cannot read raw credentials"
        );
        let mut options = ClientOptions::default();
        options.allow_raw_credentials = true;
        let (info, trusted) = reg
            .add_with(&name("native-server"), &services(&["github"]), &options)
            .expect("add with the right");
        assert!(info.raw_credentials);
        (plain, trusted)
    };
    let db = Database::open(&path).expect("reopen");
    let reg = ClientRegistry::open(&db).expect("registry");
    let grant = reg.verify(plain.expose()).expect("plain token");
    assert!(!grant.raw_credentials, "the plain client's grant says no");
    let grant = reg.verify(trusted.expose()).expect("trusted token");
    assert!(grant.raw_credentials, "the right survives a restart");
    let listed: Vec<(String, bool)> = reg
        .list()
        .into_iter()
        .map(|c| (c.name.to_string(), c.raw_credentials))
        .collect();
    assert_eq!(
        listed,
        [
            ("cursor".to_owned(), false),
            ("native-server".to_owned(), true)
        ],
        "the list shows who can read raw credentials"
    );
    let json =
        serde_json::to_value(reg.get(&name("native-server")).expect("listed")).expect("serialise");
    assert_eq!(json["raw_credentials"], true);
}

#[test]
fn a_new_token_of_the_same_label_revokes_the_previous_one_only() {
    let reg = memory_registry();
    let client = name("claude");
    let (_, first) = reg.add(&client, &services(&["github"])).expect("add");
    let old = reg
        .issue_token(&client, "mcp-config:claude-code")
        .expect("first host token");
    let cursor = reg
        .issue_token(&client, "mcp-config:cursor")
        .expect("another host");
    let new = reg
        .issue_token(&client, "mcp-config:claude-code")
        .expect("the same host again");

    assert!(
        reg.verify(old.expose()).is_none(),
        "the token the host file held before is revoked"
    );
    assert!(reg.verify(new.expose()).is_some());
    assert!(reg.verify(cursor.expose()).is_some(), "other labels stay");
    assert!(
        reg.verify(first.expose()).is_some(),
        "the first token stays"
    );
    let labels: Vec<String> = reg
        .tokens(&client)
        .expect("tokens")
        .into_iter()
        .map(|t| t.label)
        .collect();
    assert_eq!(labels.len(), 3, "one token per label: {labels:?}");
    assert_eq!(
        reg.get(&client).expect("client").token_count,
        3,
        "tokens do not pile up"
    );
}

#[test]
fn tokens_are_listed_with_label_dates_and_expiry_but_never_the_token() {
    let reg = memory_registry();
    let client = name("cursor");
    reg.add(&client, &services(&["github"])).expect("add");
    let host = reg
        .issue_token_expiring(
            &client,
            "mcp-config:cursor",
            Some(Duration::from_secs(30 * 24 * 3600)),
        )
        .expect("expiring token");
    assert!(reg.verify(host.expose()).is_some());

    let tokens = reg.tokens(&client).expect("tokens");
    let listed = tokens
        .iter()
        .find(|t| t.label == "mcp-config:cursor")
        .expect("listed by label");
    let expires_in = listed.expires_at.expect("an expiry") - listed.created_at;
    assert_eq!(expires_in, 30 * 24 * 3600);
    assert!(listed.last_used_at.is_some(), "its use is shown at once");
    let default = tokens
        .iter()
        .find(|t| t.label == "default")
        .expect("default");
    assert_eq!(
        (default.expires_at, default.last_used_at),
        (None, None),
        "never expires, never used"
    );
    let shown = format!(
        "{tokens:?} {}",
        serde_json::to_string(&tokens).expect("json")
    );
    assert!(!shown.contains(host.expose()), "no token in a listing");
    assert!(!shown.contains(TOKEN_PREFIX), "nothing token-like");
}

#[test]
fn the_last_use_of_a_token_reaches_sqlite() {
    let (_dir, path) = temp_db();
    let db = Database::open(&path).expect("db");
    let reg = ClientRegistry::open(&db).expect("registry");
    let client = name("zed");
    let (_, token) = reg.add(&client, &[]).expect("add");
    assert!(reg.verify(token.expose()).is_some());
    reg.flush_last_used().expect("flush");
    let reopened = ClientRegistry::open(&db).expect("reopen");
    let tokens = reopened.tokens(&client).expect("tokens");
    assert!(tokens[0].last_used_at.is_some(), "{tokens:?}");
}

#[test]
fn one_token_is_revoked_by_label_and_the_others_keep_working() {
    let reg = memory_registry();
    let client = name("codex");
    let (_, first) = reg.add(&client, &[]).expect("add");
    let host = reg.issue_token(&client, "mcp-config:codex").expect("issue");
    assert!(
        reg.revoke_token(&client, "mcp-config:codex")
            .expect("revoke")
    );
    assert!(reg.verify(host.expose()).is_none(), "refused at once");
    assert!(reg.verify(first.expose()).is_some());
    assert!(
        !reg.revoke_token(&client, "mcp-config:codex")
            .expect("again"),
        "nothing left of that label"
    );
    assert!(matches!(
        reg.revoke_token(&name("nobody"), "default"),
        Err(latchkey_store::StoreError::UnknownClient(_))
    ));
}

#[test]
fn a_stored_token_is_refused_once_it_has_expired() {
    let reg = memory_registry();
    let client = name("short");
    reg.add(&client, &[]).expect("add");
    let token = reg
        .issue_token_expiring(&client, "brief", Some(Duration::from_secs(1)))
        .expect("issue");
    assert!(reg.verify(token.expose()).is_some(), "valid before");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while reg.verify(token.expose()).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "still accepted 5 s after a 1 s expiry"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(matches!(
        reg.issue_token_expiring(&client, "zero", Some(Duration::ZERO)),
        Err(latchkey_store::StoreError::InvalidExpiry)
    ));
}
