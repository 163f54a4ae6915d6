//! Where the login window's page comes from. An embedded sign-in page has no address bar, so the
//! window's title carries the page's origin (scheme, punycode host, port; never a path, query or
//! userinfo) with a mark for https, and a page that would send the password in the clear (plain
//! `http` off this computer) or leave the web (`file:`, `javascript:`, a custom scheme) is refused.

use std::net::IpAddr;

use url::{Host, Url};

/// How the login window treats an address it is asked to navigate to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Navigation {
    /// A web page the window may show; `title` is what the window's title bar says.
    Allow {
        /// The origin with its mark, e.g. `🔒 https://idp.example.com`.
        title: String,
    },
    /// Not a page for a password: the navigation is refused and `message` says why.
    Block {
        /// What was refused: the origin, or only the scheme when it is not a web address.
        target: String,
        /// One sentence for the person, naming the target and the reason.
        message: String,
    },
    /// A page without an address of its own (`about:blank`, `about:srcdoc`), which frames load;
    /// allowed, and it leaves the title as it is.
    Blank,
}

/// Mark of an encrypted page.
pub const SECURE: &str = "🔒";
/// Mark of a plain-http page on this computer (the sandbox, a local provider).
pub const LOCAL: &str = "⚠";
/// Mark of a refused page.
pub const BLOCKED: &str = "✖";

/// Judges `url`: https anywhere, http only on loopback, `about:blank`/`about:srcdoc`; anything
/// else is blocked.
pub fn judge(url: &Url) -> Navigation {
    match url.scheme() {
        "https" => Navigation::Allow {
            title: format!("{SECURE} {}", display_origin(url)),
        },
        "http" if is_loopback(url) => Navigation::Allow {
            title: format!(
                "{LOCAL} {} (not encrypted, this computer)",
                display_origin(url)
            ),
        },
        "http" => {
            let target = display_origin(url);
            Navigation::Block {
                message: format!(
                    "Latchkey stopped this sign-in from going to {target}: it is not encrypted (plain http), so a password sent there could be read on the way. Close this window and ask whoever runs the sign-in page for an https address."
                ),
                target,
            }
        }
        "about" if matches!(url.path(), "blank" | "srcdoc") => Navigation::Blank,
        other => {
            let target = format!("{other}:");
            Navigation::Block {
                message: format!(
                    "Latchkey stopped this sign-in from opening a `{target}` address: the login window only shows web pages (https, or http on this computer). Close this window to cancel the sign-in."
                ),
                target,
            }
        }
    }
}

/// `scheme://host[:port]`: the host as the URL parser stores it (an internationalised name in
/// punycode, so look-alike letters show as `xn--`), the port only when it is not the default,
/// and nothing of the userinfo, path, query or fragment.
pub fn display_origin(url: &Url) -> String {
    let host = match url.host() {
        Some(Host::Domain(d)) => d.to_owned(),
        Some(Host::Ipv4(ip)) => ip.to_string(),
        Some(Host::Ipv6(ip)) => format!("[{ip}]"),
        None => String::new(),
    };
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// This computer: `localhost` or a loopback address (127.0.0.0/8, ::1).
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// The window's page after a refusal: a self-contained `data:` page (no script) saying what was
/// refused and why, so the message is in the window the person is looking at.
pub fn notice_page(message: &str) -> Result<Url, url::ParseError> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Blocked — Latchkey</title>\
<style>body{{font:16px system-ui,sans-serif;margin:2rem;line-height:1.5;color:#1b1b1f;background:#fff}}\
h1{{font-size:1.25rem;color:#a3122a}}@media (prefers-color-scheme:dark){{body{{color:#e8e8ee;background:#1b1b1f}}h1{{color:#ff8a9a}}}}</style></head>\
<body><h1 id=\"blocked\">Latchkey blocked a page</h1><p id=\"reason\">{}</p></body></html>",
        escape(message)
    );
    let encoded = url::form_urlencoded::byte_serialize(html.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    Url::parse(&format!("data:text/html;charset=utf-8,{encoded}"))
}

/// HTML-escapes text for the notice page.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(s: &str) -> Navigation {
        judge(&Url::parse(s).expect("a valid URL"))
    }

    fn title(s: &str) -> String {
        match judged(s) {
            Navigation::Allow { title } => title,
            other => panic!("{s} should be allowed, got {other:?}"),
        }
    }

    #[test]
    fn https_pages_show_their_origin_with_the_lock() {
        assert_eq!(
            title("https://idp.example.com/authorize?client_id=x&state=secret#frag"),
            "🔒 https://idp.example.com",
            "path, query and fragment are not part of the origin"
        );
        assert_eq!(
            title("https://idp.example.com:8443/login"),
            "🔒 https://idp.example.com:8443",
            "a non-default port is shown"
        );
        assert_eq!(
            title("https://idp.example.com:443/login"),
            "🔒 https://idp.example.com",
            "the default port is not"
        );
    }

    #[test]
    fn userinfo_is_stripped_so_it_cannot_pose_as_the_host() {
        assert_eq!(
            title("https://accounts.google.com:pw@evil.example/login"),
            "🔒 https://evil.example"
        );
    }

    #[test]
    fn internationalised_hosts_are_shown_in_punycode() {
        // Cyrillic "а" in place of the Latin one: a look-alike of apple.com.
        assert_eq!(title("https://аpple.com/"), "🔒 https://xn--pple-43d.com");
        assert_eq!(
            title("https://BÜCHER.example/"),
            "🔒 https://xn--bcher-kva.example"
        );
    }

    #[test]
    fn plain_http_is_allowed_only_on_this_computer_and_marked() {
        assert_eq!(
            title("http://127.0.0.1:4000/auth"),
            "⚠ http://127.0.0.1:4000 (not encrypted, this computer)"
        );
        assert_eq!(
            title("http://localhost:9/"),
            "⚠ http://localhost:9 (not encrypted, this computer)"
        );
        assert_eq!(
            title("http://[::1]:8080/"),
            "⚠ http://[::1]:8080 (not encrypted, this computer)"
        );
        for off in [
            "http://idp.example.com/login",
            "http://10.0.0.5:8080/",
            "http://localhost.evil.example/",
            "http://127.0.0.1.nip.io/",
        ] {
            match judged(off) {
                Navigation::Block { target, message } => {
                    assert!(message.contains(&target), "{off}: the message names it");
                    assert!(message.contains("not encrypted"), "{off}: and says why");
                }
                other => panic!("{off} is plain http off loopback and must be blocked: {other:?}"),
            }
        }
    }

    #[test]
    fn non_web_schemes_are_blocked_without_echoing_the_address() {
        for bad in [
            "javascript:alert(document.cookie)",
            "file:///etc/passwd",
            "vscode://open?secret=1",
            "data:text/html,<script>x</script>",
            "ftp://example.com/",
            "about:config",
        ] {
            match judged(bad) {
                Navigation::Block { target, message } => {
                    assert!(target.ends_with(':'), "{bad}: only the scheme is named");
                    assert!(
                        !message.contains("passwd") && !message.contains("secret"),
                        "{bad}: the rest of the address is not echoed"
                    );
                }
                other => panic!("{bad} must be blocked: {other:?}"),
            }
        }
    }

    #[test]
    fn blank_frames_are_allowed_and_leave_the_title() {
        assert_eq!(judged("about:blank"), Navigation::Blank);
        assert_eq!(judged("about:srcdoc"), Navigation::Blank);
    }

    #[test]
    fn the_notice_page_is_escaped_and_has_no_script() {
        let url = notice_page("<script>alert(1)</script> & \"x\"").expect("a data URL");
        assert_eq!(url.scheme(), "data");
        let body = url.as_str();
        assert!(
            !body.contains("%3Cscript"),
            "the message cannot inject markup"
        );
        assert!(
            body.contains("%26lt%3Bscript%26gt%3B"),
            "it is shown escaped"
        );
        assert!(!body.contains('+'), "spaces are %20, not +, in a data URL");
    }
}
