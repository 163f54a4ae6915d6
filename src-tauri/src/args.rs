//! What `latchkey-app` is asked to be: the tray instance (no arguments), the window process
//! (`--window [--at <section>/<item>]`), or a login window process (`--login <account>`,
//! `--server-login <server>`). The tray starts the others with its own executable.

use std::ffi::OsString;

/// Added by the tray to the processes it starts: their stdin is a pipe from the tray, and its
/// end (the tray ended them, quit or died) ends them.
pub const FROM_TRAY: &str = "--from-tray";

/// What this process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The tray instance: runtime, proxy, tray icon, notices; never a webview.
    Tray,
    /// A window process, started by the tray or not.
    Window {
        /// What it shows.
        job: Job,
        /// Started by the tray: ends when its stdin does.
        from_tray: bool,
    },
}

/// What a window process shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// The main window, at `<section>/<item>` when given.
    Main {
        /// Where to open.
        at: Option<String>,
    },
    /// A login to this account in the login window.
    Login(String),
    /// A sign-in to this remote MCP server in the login window.
    ServerLogin(String),
}

impl Mode {
    /// The mode of the arguments after the program's name; a message saying what is wrong.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, String> {
        let mut args = args.into_iter().map(|a| {
            a.into_string()
                .map_err(|a| format!("unreadable argument {}", a.to_string_lossy()))
        });
        let mut job = None;
        let mut at = None;
        let mut from_tray = false;
        while let Some(arg) = args.next() {
            let arg = arg?;
            let mut value = |flag: &str| -> Result<String, String> {
                match args.next() {
                    Some(Ok(v)) if !v.is_empty() && !v.starts_with("--") => Ok(v),
                    _ => Err(format!("{flag} needs a value")),
                }
            };
            let next = match arg.as_str() {
                "--window" => Job::Main { at: None },
                "--at" => {
                    at = Some(value("--at")?);
                    continue;
                }
                "--login" => Job::Login(value("--login")?),
                "--server-login" => Job::ServerLogin(value("--server-login")?),
                FROM_TRAY => {
                    from_tray = true;
                    continue;
                }
                // Launchers and session managers may add their own (`-psn_…` on macOS, an
                // autostart's `--minimized`): the tray ignores what it does not know.
                _ => continue,
            };
            if job.replace(next).is_some() {
                return Err("only one of --window, --login and --server-login".into());
            }
        }
        match (job, at) {
            (None, None) => Ok(Self::Tray),
            (None, Some(_)) => Err("--at goes with --window".into()),
            (Some(Job::Main { .. }), at) => Ok(Self::Window {
                job: Job::Main { at },
                from_tray,
            }),
            (Some(_), Some(_)) => Err("--at goes with --window".into()),
            (Some(job), None) => Ok(Self::Window { job, from_tray }),
        }
    }
}

/// The arguments of a window process opening at `at`.
pub fn window(at: Option<&str>) -> Vec<String> {
    let mut args = vec!["--window".to_owned()];
    if let Some(at) = at {
        args.extend(["--at".to_owned(), at.to_owned()]);
    }
    args
}

/// The arguments of a login window process for `account`.
pub fn login(account: &str) -> Vec<String> {
    vec!["--login".to_owned(), account.to_owned()]
}

/// The arguments of a sign-in window process for the remote MCP server `name`.
pub fn server_login(name: &str) -> Vec<String> {
    vec!["--server-login".to_owned(), name.to_owned()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Mode, String> {
        Mode::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn no_arguments_is_the_tray_and_unknown_ones_are_ignored() {
        assert_eq!(parse(&[]), Ok(Mode::Tray));
        assert_eq!(parse(&["--minimized"]), Ok(Mode::Tray));
    }

    #[test]
    fn what_the_tray_starts_parses_back_to_the_same_job() {
        let cases = [
            (window(None), Job::Main { at: None }),
            (
                window(Some("services/demo")),
                Job::Main {
                    at: Some("services/demo".into()),
                },
            ),
            (login("work"), Job::Login("work".into())),
            (server_login("sdk"), Job::ServerLogin("sdk".into())),
        ];
        for (mut args, job) in cases {
            assert_eq!(
                Mode::parse(args.iter().map(OsString::from)),
                Ok(Mode::Window {
                    job: job.clone(),
                    from_tray: false
                }),
                "{args:?}"
            );
            args.push(FROM_TRAY.to_owned());
            assert_eq!(
                Mode::parse(args.iter().map(OsString::from)),
                Ok(Mode::Window {
                    job,
                    from_tray: true
                }),
                "{args:?}"
            );
        }
    }

    #[test]
    fn contradictory_or_incomplete_arguments_are_refused_with_what_is_wrong() {
        for (args, wanted) in [
            (&["--login"][..], "--login needs a value"),
            (&["--login", "--window"][..], "--login needs a value"),
            (&["--window", "--login", "work"][..], "only one of"),
            (&["--at", "services/demo"][..], "--at goes with --window"),
            (
                &["--login", "work", "--at", "x/y"][..],
                "--at goes with --window",
            ),
        ] {
            let e = parse(args).expect_err("refused");
            assert!(e.contains(wanted), "{args:?}: {e}");
        }
    }
}
