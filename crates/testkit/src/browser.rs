//! A browser stand-in for the sandbox sign-in page: follows redirects by hand with a cookie jar,
//! fills in the login form, and finally calls the loopback redirect URI so the waiting Latchkey
//! listener receives the authorization code.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{StatusCode, redirect};
use url::Url;

const MAX_HOPS: usize = 20;

/// Drive the IdP's sign-in page from `authorize_url` as `user`, then GET the loopback callback.
///
/// Fails when the IdP rejects the credentials, answers an error, or the callback carries
/// `error=` (the callback is still delivered first, so the listener sees the error too).
pub async fn browser_login(authorize_url: &Url, user: &str, password: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .context("build the browser client")?;
    let idp_origin = authorize_url.origin();
    let mut url = authorize_url.clone();
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .context("GET the authorization URL")?;
    let mut signed_in = false;
    for _ in 0..MAX_HOPS {
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .context("a redirect without Location")?;
            url = url.join(location).context("an invalid redirect")?;
            if url.origin() != idp_origin {
                return deliver_callback(&client, &url).await;
            }
            response = client
                .get(url.clone())
                .send()
                .await
                .with_context(|| format!("GET {}", url.path()))?;
        } else if status == StatusCode::OK && !signed_in {
            let html = response.text().await.context("read the sign-in page")?;
            let action = form_action(&html).context("the IdP page has no sign-in form")?;
            url = url.join(&action).context("an invalid form action")?;
            response = client
                .post(url.clone())
                .form(&[("login", user), ("password", password)])
                .send()
                .await
                .context("POST the sign-in form")?;
            signed_in = true;
        } else {
            let path = url.path().to_owned();
            let body = response.text().await.unwrap_or_default();
            let hint = if signed_in && body.contains("Invalid login") {
                "the IdP rejected the login or password"
            } else {
                "the IdP did not redirect"
            };
            bail!("{hint}: HTTP {status} at {path}");
        }
    }
    bail!("more than {MAX_HOPS} redirects during sign-in")
}

async fn deliver_callback(client: &reqwest::Client, url: &Url) -> anyhow::Result<()> {
    let error = url
        .query_pairs()
        .find(|(k, _)| k == "error")
        .map(|(_, v)| v.into_owned());
    let response = client
        .get(url.clone())
        .send()
        .await
        .context("GET the loopback redirect URI (is Latchkey's listener up?)")?;
    if let Some(error) = error {
        bail!("the IdP redirected back with error={error}");
    }
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        bail!("the loopback callback answered HTTP {status}");
    }
    Ok(())
}

/// The `action` of the page's first `<form>`, HTML-unescaped.
fn form_action(html: &str) -> Option<String> {
    let form = &html[html.find("<form")?..];
    let tag = &form[..form.find('>')?];
    let start = tag.find("action=\"")? + "action=\"".len();
    let end = start + tag[start..].find('"')?;
    Some(tag[start..end].replace("&amp;", "&"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_form_action_is_read_from_the_first_form() {
        let html = r#"<p>x</p><form method="post" action="/interaction/a&amp;b/login" x>"#;
        assert_eq!(
            super::form_action(html).as_deref(),
            Some("/interaction/a&b/login")
        );
        assert_eq!(super::form_action("<p>no form</p>"), None);
    }
}
