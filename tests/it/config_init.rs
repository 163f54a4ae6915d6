//! `latchkey config init` as a person on a fresh machine runs it: no configuration file, the
//! sandbox's real oidc-provider as their organisation's issuer, flags from a script and prompts
//! on a real terminal (tmux). Each refusal names its reason before anything is written.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use latchkey_e2e::Home;
use latchkey_testkit::{Idp, IdpOptions, browser_login};

/// A home with no configuration file at all.
fn fresh_home() -> (Home, PathBuf) {
    let home = Home::new("").expect("home");
    let path = home.config_dir().join("config.toml");
    std::fs::remove_file(&path).expect("remove the config");
    (home, path)
}

#[tokio::test]
#[cfg_attr(
    not(keychain_session),
    ignore = "needs the Secret Service: run under scripts/with-keychain"
)]
async fn config_init_with_flags_checks_the_sandbox_then_the_login_works() {
    let idp = Idp::start(IdpOptions::default()).await.expect("idp");
    let (home, path) = fresh_home();

    let status = home.run(&["status"], "").expect("status");
    assert!(
        status.stderr.contains("latchkey config init"),
        "a missing file points to config init: {}",
        status.stderr
    );
    assert!(
        !status.stderr.contains("ERROR"),
        "said once by the command, not again by an ERROR log line: {}",
        status.stderr
    );

    let out = home
        .run(
            &[
                "config",
                "init",
                "--issuer",
                idp.issuer(),
                "--client-id",
                "latchkey",
                "--audience",
                "latchkey-gateway",
                "--allow-insecure-http",
            ],
            "",
        )
        .expect("config init");
    assert_eq!(out.code, 0, "config init: {}", out.stderr);
    assert!(
        out.stdout.contains("client id:  accepted"),
        "the provider accepted the client id: {}",
        out.stdout
    );
    assert!(out.stdout.contains("S256"), "PKCE shown: {}", out.stdout);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the file is private");
    }
    let check = home.run(&["config", "check"], "").expect("check");
    assert_eq!(
        check.code, 0,
        "the written file passes config check: {}",
        check.stderr
    );

    // Run again: refused without --force, file unchanged; with --force, a backup is kept.
    let before = std::fs::read_to_string(&path).expect("read");
    let again = home
        .run(
            &[
                "config",
                "init",
                "--issuer",
                idp.issuer(),
                "--client-id",
                "latchkey",
                "--allow-insecure-http",
            ],
            "",
        )
        .expect("again");
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert_eq!(std::fs::read_to_string(&path).expect("read"), before);
    let forced = home
        .run(
            &[
                "config",
                "init",
                "--force",
                "--issuer",
                idp.issuer(),
                "--client-id",
                "latchkey",
                "--audience",
                "latchkey-gateway",
                "--allow-insecure-http",
            ],
            "",
        )
        .expect("forced");
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    let backups: Vec<_> = std::fs::read_dir(home.config_dir())
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".bak"))
        .collect();
    assert_eq!(backups.len(), 1, "one timestamped backup");
    assert_eq!(
        std::fs::read_to_string(backups[0].path()).expect("backup"),
        before
    );

    if !crate::keychain_available() {
        return;
    }
    // The configuration written is enough to log in.
    let mut child = home
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
    browser_login(
        &url::Url::parse(&url).expect("url"),
        "alice",
        "alice-password",
    )
    .await
    .expect("sign-in page");
    let done = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    assert!(
        done.status.success(),
        "login: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    let status = home.run(&["status", "--json"], "").expect("status");
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    assert_eq!(json["accounts"][0]["state"]["kind"], "active", "{json:#}");
}

#[tokio::test]
async fn config_init_says_exactly_why_and_writes_nothing() {
    let idp = Idp::start(IdpOptions::default()).await.expect("idp");
    let (home, path) = fresh_home();
    // `localhost` reaches the same provider, which says its issuer is 127.0.0.1.
    let localhost = idp.issuer().replace("127.0.0.1", "localhost");
    let cases: [(&[&str], &str, &str); 5] = [
        (
            &["--issuer", "http://idp.example.com", "--client-id", "x"],
            "invalid_field",
            "must use https",
        ),
        (
            &["--issuer", idp.issuer(), "--client-id", "x"],
            "invalid_field",
            "allow_insecure_http",
        ),
        (
            &[
                "--issuer",
                &localhost,
                "--client-id",
                "latchkey",
                "--allow-insecure-http",
            ],
            "issuer_mismatch",
            "it says its issuer is",
        ),
        (
            &[
                "--issuer",
                "http://127.0.0.1:9",
                "--client-id",
                "latchkey",
                "--allow-insecure-http",
            ],
            "idp_unreachable",
            "unreachable",
        ),
        (
            &[
                "--issuer",
                idp.issuer(),
                "--client-id",
                "nobody-knows-me",
                "--allow-insecure-http",
            ],
            "client_not_registered",
            "nobody-knows-me",
        ),
    ];
    for (flags, code, text) in cases {
        let mut args = vec!["config", "init"];
        args.extend_from_slice(flags);
        let out = home.run(&args, "").expect("config init");
        assert_ne!(out.code, 0, "{flags:?} must fail");
        assert!(
            out.stderr.contains(code) || out.stderr.contains(text),
            "{flags:?}: expected {code} / `{text}` in: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(text),
            "{flags:?}: `{text}` in: {}",
            out.stderr
        );
        assert!(!path.exists(), "{flags:?}: nothing written");
    }

    // An administrator's file with a mistake is refused with its line; a good one is imported.
    let bad = home.config_dir().join("handed-out.toml");
    std::fs::write(&bad, "version = 1\n[[accounts]]\nname = \"w\"\nissuer = \"https://idp.example.com\"\nclient_id = \"x\"\ncolour = \"blue\"\n").expect("write");
    let out = home
        .run(
            &["config", "init", "--from", bad.to_str().expect("utf-8")],
            "",
        )
        .expect("import");
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("handed-out.toml:6"), "{}", out.stderr);
    assert!(!path.exists(), "nothing written");
    std::fs::write(&bad, "version = 1\n[[accounts]]\nname = \"w\"\nissuer = \"https://idp.example.com\"\nclient_id = \"x\"\n").expect("write");
    let out = home
        .run(
            &["config", "init", "--from", bad.to_str().expect("utf-8")],
            "",
        )
        .expect("import");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("Account `w`"), "{}", out.stdout);
    assert!(path.exists());
}

/// Waits until the tmux pane shows `text`, returning the pane.
fn wait_for_pane(session: &str, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", session])
            .output()
            .expect("tmux capture-pane");
        let pane = String::from_utf8_lossy(&out.stdout).into_owned();
        if pane.contains(text) {
            return pane;
        }
        assert!(
            Instant::now() < deadline,
            "`{text}` never appeared:\n{pane}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ends the tmux session however the test ends.
struct Tmux(String);

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

fn send(session: &str, keys: &str) {
    let ok = Command::new("tmux")
        .args(["send-keys", "-t", session, "-l", keys])
        .status()
        .expect("tmux send-keys");
    assert!(ok.success());
    let ok = Command::new("tmux")
        .args(["send-keys", "-t", session, "Enter"])
        .status()
        .expect("tmux send-keys");
    assert!(ok.success());
}

#[tokio::test]
async fn config_init_asks_on_a_terminal_and_asks_again_after_a_mistake() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: needs tmux");
        return;
    }
    let idp = Idp::start(IdpOptions::default()).await.expect("idp");
    let (home, path) = fresh_home();
    let session = format!(
        "latchkey-init-{}",
        home.config_dir()
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n
                .to_string_lossy()
                .replace(|c: char| !c.is_ascii_alphanumeric(), ""))
            .unwrap_or_default()
    );
    let cmd = home.command(&["config", "init", "--allow-insecure-http"]);
    let mut line = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v.filter(|_| k != "LATCHKEY_LOG") {
            line.push_str(&format!(
                "{}='{}' ",
                k.to_string_lossy(),
                v.to_string_lossy()
            ));
        }
    }
    line.push_str(&format!(
        "'{}' config init --allow-insecure-http; echo EXIT=$?; sleep 120",
        latchkey_e2e::bin("latchkey").display()
    ));
    let issuer = idp.issuer().to_owned();
    let session_for_test = session.clone();
    let path_for_test = path.clone();
    let pane = tokio::task::spawn_blocking(move || {
        let session = session_for_test;
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                "200",
                "-y",
                "50",
                "env",
                "-u",
                "DISPLAY",
                "sh",
                "-c",
                &line,
            ])
            .status()
            .expect("tmux new-session");
        assert!(ok.success(), "tmux new-session");
        let _guard = Tmux(session.clone());
        wait_for_pane(&session, "Choose 1 or 2");
        send(&session, "1");
        wait_for_pane(&session, "Issuer URL:");
        send(&session, "https://127.0.0.1:9");
        wait_for_pane(&session, "Client ID:");
        send(&session, "latchkey");
        wait_for_pane(&session, "Auth Gateway URL");
        send(&session, "");
        wait_for_pane(&session, "Try again");
        send(&session, &issuer);
        wait_for_pane(&session, "Client ID:");
        send(&session, "latchkey");
        // The second "Auth Gateway URL" prompt.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pane = wait_for_pane(&session, "Auth Gateway URL");
            if pane.matches("Auth Gateway URL").count() >= 2 {
                break;
            }
            assert!(Instant::now() < deadline, "second gateway prompt:\n{pane}");
            std::thread::sleep(Duration::from_millis(50));
        }
        send(&session, "");
        let pane = wait_for_pane(&session, "Write this configuration");
        assert!(
            !path_for_test.exists(),
            "nothing written before the person confirms"
        );
        send(&session, "y");
        let pane_end = wait_for_pane(&session, "EXIT=");
        format!("{pane}\n---\n{pane_end}")
    })
    .await
    .expect("join");
    assert!(pane.contains("EXIT=0"), "config init succeeded:\n{pane}");
    assert!(
        pane.contains("idp_unreachable"),
        "the first issuer's reason was shown:\n{pane}"
    );
    assert!(pane.contains("client id:  accepted"), "{pane}");
    let text = std::fs::read_to_string(&path).expect("written");
    assert!(
        text.contains(&idp.issuer().trim_end_matches('/').to_owned()),
        "{text}"
    );
}
