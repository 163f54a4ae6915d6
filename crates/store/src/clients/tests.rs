//! Unit tests of the registry's in-memory behaviour (expiry, snapshot carry-over, flushing).

use super::*;

fn registry() -> (Database, ClientRegistry) {
    let db = Database::open_in_memory().expect("in-memory database");
    let reg = ClientRegistry::open(&db).expect("registry");
    (db, reg)
}

fn name(s: &str) -> ClientName {
    ClientName::parse(s).expect("valid name")
}

fn services(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(start_paused = true)]
async fn ephemeral_tokens_work_until_their_ttl_then_stop() {
    let (_db, reg) = registry();
    reg.add(&name("cli"), &services(&["github"])).expect("add");
    let token = reg
        .issue_ephemeral(&name("cli"), Duration::from_secs(60))
        .expect("ephemeral");
    let grant = reg
        .verify(token.expose())
        .expect("fresh ephemeral token is accepted");
    assert!(grant.ephemeral);
    assert!(grant.allows("github"));

    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(
        reg.verify(token.expose()).is_some(),
        "still valid one second before expiry"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(reg.verify(token.expose()).is_none(), "expired at its ttl");
}

#[tokio::test(start_paused = true)]
async fn ephemeral_tokens_follow_service_changes_and_survive_other_writes() {
    let (_db, reg) = registry();
    reg.add(&name("cli"), &services(&["github"])).expect("add");
    let token = reg
        .issue_ephemeral(&name("cli"), Duration::from_secs(600))
        .expect("ephemeral");
    reg.add(&name("other"), &services(&["jira"]))
        .expect("an unrelated write rebuilds the snapshot");
    reg.set_services(&name("cli"), &services(&["jira"]))
        .expect("set services");
    let grant = reg
        .verify(token.expose())
        .expect("ephemeral token survives snapshot rebuilds");
    assert!(
        grant.allows("jira") && !grant.allows("github"),
        "scopes are the client's, live"
    );
}

#[test]
fn ephemeral_tokens_die_with_their_client_and_are_not_resurrected_by_a_namesake() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (_db, reg) = registry();
        reg.add(&name("cli"), &[]).expect("add");
        let token = reg
            .issue_ephemeral(&name("cli"), Duration::from_secs(600))
            .expect("ephemeral");
        assert!(reg.revoke(&name("cli")).expect("revoke"));
        assert!(
            reg.verify(token.expose()).is_none(),
            "revoked with the client"
        );
        reg.add(&name("cli"), &[]).expect("same name again");
        assert!(
            reg.verify(token.expose()).is_none(),
            "a new client with the same name starts clean"
        );
    });
}

#[test]
fn ephemeral_ttl_must_be_between_one_second_and_a_day() {
    let (_db, reg) = registry();
    reg.add(&name("cli"), &[]).expect("add");
    for bad in [
        Duration::ZERO,
        Duration::from_millis(999),
        MAX_EPHEMERAL_TTL + Duration::from_secs(1),
    ] {
        let err = reg
            .issue_ephemeral(&name("cli"), bad)
            .expect_err("out of range");
        assert_eq!(err.code(), latchkey_core::Code::InvalidTtl);
    }
    let err = reg
        .issue_ephemeral(&name("ghost"), Duration::from_secs(5))
        .expect_err("unknown client");
    assert_eq!(err.code(), latchkey_core::Code::UnknownClient);
}

#[test]
fn ephemeral_tokens_are_capped() {
    let (_db, reg) = registry();
    reg.add(&name("cli"), &[]).expect("add");
    for _ in 0..MAX_EPHEMERAL_TOKENS {
        reg.issue_ephemeral(&name("cli"), Duration::from_secs(600))
            .expect("within the cap");
    }
    let err = reg
        .issue_ephemeral(&name("cli"), Duration::from_secs(600))
        .expect_err("over the cap");
    assert_eq!(err.code(), latchkey_core::Code::TooManyEphemeralTokens);
}

#[test]
fn ephemeral_tokens_are_not_counted_or_stored() {
    let (db, reg) = registry();
    reg.add(&name("cli"), &[]).expect("add");
    reg.issue_ephemeral(&name("cli"), Duration::from_secs(600))
        .expect("ephemeral");
    assert_eq!(reg.get(&name("cli")).expect("listed").token_count, 1);
    let stored: i64 = db
        .read(|c| c.query_row("SELECT count(*) FROM client_tokens", [], |r| r.get(0)))
        .expect("count");
    assert_eq!(stored, 1, "ephemeral tokens are memory-only");
}

#[test]
fn verify_refuses_oversized_and_malformed_input_without_panicking() {
    let (_db, reg) = registry();
    reg.add(&name("cli"), &[]).expect("add");
    for junk in [
        "",
        "lk_",
        "Bearer lk_x",
        &"a".repeat(10_000),
        "lk_\u{0}\u{ffff}",
    ] {
        assert!(reg.verify(junk).is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn a_use_is_flushed_in_the_background_after_the_interval() {
    let (db, reg) = registry();
    let (_, token) = reg.add(&name("cli"), &[]).expect("add");
    assert!(reg.verify(token.expose()).is_some());
    assert!(reg.verify(token.expose()).is_some());
    assert!(
        reg.get(&name("cli"))
            .expect("listed")
            .last_used_at
            .is_some(),
        "visible in memory at once"
    );
    let stored = || -> Option<i64> {
        db.read(|c| {
            c.query_row(
                "SELECT last_used_at FROM clients WHERE name = 'cli'",
                [],
                |r| r.get(0),
            )
        })
        .expect("read")
    };
    assert_eq!(stored(), None, "not written on the request path");

    // Virtual time: the scheduled flush becomes due; then wait for its blocking write.
    tokio::time::sleep(LAST_USED_FLUSH_INTERVAL + Duration::from_millis(1)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stored().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "background flush never happened"
        );
        tokio::task::yield_now().await;
    }
    assert!(
        !reg.inner.flush_scheduled.load(Ordering::Acquire),
        "ready to schedule the next flush"
    );
}

#[test]
fn a_use_without_a_runtime_waits_for_an_explicit_flush() {
    let (db, reg) = registry();
    let (_, token) = reg.add(&name("cli"), &[]).expect("add");
    reg.add(&name("idle"), &[]).expect("add");
    assert!(reg.verify(token.expose()).is_some());
    assert!(
        reg.verify("lk_unknown").is_none(),
        "a refused token is no use"
    );
    assert!(!reg.inner.flush_scheduled.load(Ordering::Acquire));
    reg.flush_last_used().expect("flush");
    let stored = |client: &str| -> Option<i64> {
        db.read(|c| {
            c.query_row(
                "SELECT last_used_at FROM clients WHERE name = ?1",
                [client],
                |r| r.get(0),
            )
        })
        .expect("read")
    };
    assert!(
        stored("cli").is_some_and(|t| t > 1_600_000_000),
        "unix seconds recorded"
    );
    assert_eq!(stored("idle"), None, "only the token's own client is used");
}

#[test]
fn unflushed_last_use_survives_a_snapshot_rebuild() {
    let (_db, reg) = registry();
    let (_, token) = reg.add(&name("cli"), &[]).expect("add");
    assert!(reg.verify(token.expose()).is_some());
    let before = reg.get(&name("cli")).expect("listed").last_used_at;
    reg.add(&name("other"), &[]).expect("rebuild");
    assert_eq!(reg.get(&name("cli")).expect("listed").last_used_at, before);
    assert!(
        reg.inner
            .read()
            .clients
            .get("cli")
            .expect("state")
            .dirty
            .load(Ordering::Acquire)
    );
}
