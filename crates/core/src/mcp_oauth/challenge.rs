//! `WWW-Authenticate` challenges (RFC 9110 §11.6.1): an MCP server's `401` names its
//! protected-resource metadata (`resource_metadata`, RFC 9728 §5.1) and the scopes it wants
//! (`scope`), and a `403` with `error="insufficient_scope"` asks for a step-up (RFC 6750 §3.1).
//! The grammar allows several challenges in one header, commas inside quoted strings and a
//! `token68` instead of parameters, so this is a real parser rather than a split on commas.

use http::HeaderMap;

/// One challenge: an auth scheme with its `token68` or its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The auth scheme as sent (compare with [`Challenge::is_bearer`], schemes are case-insensitive).
    pub scheme: String,
    /// The `token68` form, when the challenge uses it instead of parameters.
    pub token68: Option<String>,
    /// The parameters in order, names lowercased, quoted strings unescaped.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// True for the `Bearer` scheme (any case).
    pub fn is_bearer(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("bearer")
    }

    /// The first parameter called `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `resource_metadata` (RFC 9728 §5.1): where the protected-resource metadata is.
    pub fn resource_metadata(&self) -> Option<&str> {
        self.param("resource_metadata").filter(|v| !v.is_empty())
    }

    /// `scope`, split on spaces (RFC 6750 §3); `None` when absent or empty.
    pub fn scopes(&self) -> Option<Vec<String>> {
        let scopes: Vec<String> = self
            .param("scope")?
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        (!scopes.is_empty()).then_some(scopes)
    }

    /// `error` (RFC 6750 §3.1), e.g. `invalid_token` or `insufficient_scope`.
    pub fn error(&self) -> Option<&str> {
        self.param("error")
    }
}

/// Parses one `WWW-Authenticate` field value (several header lines joined with `, ` are one
/// value). Parsing stops at the first malformed part; what came before it is kept.
pub fn parse(value: &str) -> Vec<Challenge> {
    let mut cursor = Cursor {
        bytes: value.as_bytes(),
        at: 0,
    };
    let mut challenges = Vec::new();
    loop {
        cursor.skip_separators();
        if cursor.eof() {
            break;
        }
        let Some(scheme) = cursor.token() else {
            break;
        };
        let mut challenge = Challenge {
            scheme,
            token68: None,
            params: Vec::new(),
        };
        let spaced = cursor.skip_whitespace();
        if spaced && !cursor.eof() && cursor.peek() != Some(b',') {
            if let Some(token68) = cursor.token68() {
                challenge.token68 = Some(token68);
            } else if let Some(param) = cursor.param() {
                challenge.params.push(param);
                while let Some(param) = cursor.next_param() {
                    challenge.params.push(param);
                }
            } else {
                challenges.push(challenge);
                break;
            }
        }
        challenges.push(challenge);
    }
    challenges
}

/// Every challenge of every `WWW-Authenticate` header of an answer, in order.
pub fn from_headers(headers: &HeaderMap) -> Vec<Challenge> {
    let joined = headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    parse(&joined)
}

/// The first `Bearer` challenge of an answer.
pub fn bearer(headers: &HeaderMap) -> Option<Challenge> {
    from_headers(headers).into_iter().find(Challenge::is_bearer)
}

/// The scopes to ask for in a step-up login after a `403` whose Bearer challenge says
/// `error="insufficient_scope"`: the scopes already granted, then the challenge's new ones
/// (the union, order kept, no duplicates). `None` when the challenge is not an
/// `insufficient_scope` one or names no scope, so there is nothing to step up to.
pub fn step_up_scopes(granted: &[String], challenge: &Challenge) -> Option<Vec<String>> {
    if !challenge.is_bearer() || challenge.error() != Some("insufficient_scope") {
        return None;
    }
    let wanted = challenge.scopes()?;
    let mut union: Vec<String> = Vec::with_capacity(granted.len() + wanted.len());
    for scope in granted.iter().chain(wanted.iter()) {
        if !union.contains(scope) {
            union.push(scope.clone());
        }
    }
    Some(union)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

impl Cursor<'_> {
    fn eof(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Skips spaces and tabs; true when there was at least one.
    fn skip_whitespace(&mut self) -> bool {
        let start = self.at;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
        self.at > start
    }

    /// Skips whitespace and empty list elements (`, ,`).
    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.at += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        (self.at > start).then(|| String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned())
    }

    /// A `token68` that is the whole of the challenge's credentials (followed by the end or a
    /// comma); otherwise nothing is consumed.
    fn token68(&mut self) -> Option<String> {
        let start = self.at;
        while self.peek().is_some_and(is_token68_char) {
            self.at += 1;
        }
        if self.at == start {
            return None;
        }
        while self.peek() == Some(b'=') {
            self.at += 1;
        }
        let end = self.at;
        self.skip_whitespace();
        if self.eof() || self.peek() == Some(b',') {
            return Some(String::from_utf8_lossy(&self.bytes[start..end]).into_owned());
        }
        self.at = start;
        None
    }

    /// `token BWS "=" BWS ( token / quoted-string )`; otherwise nothing is consumed.
    fn param(&mut self) -> Option<(String, String)> {
        let start = self.at;
        let parsed = (|| {
            let name = self.token()?;
            self.skip_whitespace();
            if self.peek() != Some(b'=') {
                return None;
            }
            self.at += 1;
            self.skip_whitespace();
            let value = if self.peek() == Some(b'"') {
                self.quoted_string()?
            } else {
                self.token()?
            };
            Some((name.to_ascii_lowercase(), value))
        })();
        if parsed.is_none() {
            self.at = start;
        }
        parsed
    }

    /// `, param` continuing the current challenge; nothing is consumed when what follows the
    /// comma is not a parameter (it is the next challenge).
    fn next_param(&mut self) -> Option<(String, String)> {
        let start = self.at;
        self.skip_whitespace();
        if self.peek() != Some(b',') {
            self.at = start;
            return None;
        }
        self.skip_separators();
        let param = self.param();
        if param.is_none() {
            self.at = start;
        }
        param
    }

    fn quoted_string(&mut self) -> Option<String> {
        self.at += 1; // the opening quote
        let mut value = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(String::from_utf8_lossy(&value).into_owned());
                }
                b'\\' => {
                    self.at += 1;
                    value.push(self.peek()?);
                    self.at += 1;
                }
                b => {
                    value.push(b);
                    self.at += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn a_bearer_challenge_yields_resource_metadata_and_scopes() {
        let c = parse(
            r#"Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp", scope="files:read files:write""#,
        );
        assert_eq!(c.len(), 1);
        assert!(c[0].is_bearer());
        assert_eq!(
            c[0].resource_metadata(),
            Some("https://mcp.example.com/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(
            c[0].scopes(),
            Some(vec!["files:read".to_owned(), "files:write".to_owned()])
        );
    }

    #[test]
    fn commas_and_escaped_quotes_inside_quoted_strings_stay_in_the_value() {
        let c = parse(r#"Bearer realm="a, b", error_description="say \"no\", twice", scope=x"#);
        assert_eq!(
            c.len(),
            1,
            "a comma in a quoted string must not start a challenge"
        );
        assert_eq!(
            params(&c[0]),
            vec![
                ("realm", "a, b"),
                ("error_description", r#"say "no", twice"#),
                ("scope", "x")
            ]
        );
    }

    #[test]
    fn several_challenges_in_one_header_are_told_apart() {
        let c = parse(
            r#"Basic realm="simple", Newauth realm="apps", type=1, title="Login to \"apps\"", Bearer scope="a b",resource_metadata="https://x/m""#,
        );
        let schemes: Vec<&str> = c.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["Basic", "Newauth", "Bearer"]);
        assert_eq!(
            params(&c[1]),
            vec![
                ("realm", "apps"),
                ("type", "1"),
                ("title", r#"Login to "apps""#)
            ]
        );
        assert_eq!(c[2].resource_metadata(), Some("https://x/m"));
    }

    #[test]
    fn token68_and_bare_schemes_are_challenges_of_their_own() {
        let c = parse("Negotiate abc+/d==, Bearer, DPoP algs=\"ES256\"");
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].token68.as_deref(), Some("abc+/d=="));
        assert!(c[1].is_bearer() && c[1].params.is_empty());
        assert_eq!(
            c[2].param("ALGS"),
            Some("ES256"),
            "names are case-insensitive"
        );
    }

    #[test]
    fn whitespace_around_equals_and_empty_list_elements_are_tolerated() {
        let c = parse(" , bearer  scope = \"a\" ,, error = insufficient_scope ,");
        assert_eq!(c.len(), 1);
        assert!(c[0].is_bearer(), "the scheme is case-insensitive");
        assert_eq!(c[0].param("scope"), Some("a"));
        assert_eq!(c[0].error(), Some("insufficient_scope"));
    }

    #[test]
    fn a_malformed_tail_keeps_what_came_before() {
        let c = parse(r#"Bearer scope="a", Basic realm="unterminated"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("scope"), Some("a"));
        assert!(
            c[1].params.is_empty(),
            "an unterminated quote yields no parameter"
        );
        assert!(parse("").is_empty());
        assert!(parse("=oops").is_empty());
    }

    #[test]
    fn headers_on_several_lines_are_read_as_one_list() {
        let mut headers = HeaderMap::new();
        headers.append(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Basic realm=\"x\""),
        );
        headers.append(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer resource_metadata=\"https://r/m\""),
        );
        let b = bearer(&headers).expect("the second line's Bearer challenge");
        assert_eq!(b.resource_metadata(), Some("https://r/m"));
    }

    #[test]
    fn step_up_asks_for_the_union_of_granted_and_challenged_scopes() {
        let c = &parse(r#"Bearer error="insufficient_scope", scope="files:read admin""#)[0];
        let granted = vec!["files:read".to_owned(), "mcp".to_owned()];
        assert_eq!(
            step_up_scopes(&granted, c),
            Some(vec!["files:read".into(), "mcp".into(), "admin".into()])
        );
        let other = &parse(r#"Bearer error="invalid_token", scope="admin""#)[0];
        assert_eq!(
            step_up_scopes(&granted, other),
            None,
            "only insufficient_scope steps up"
        );
        let no_scope = &parse(r#"Bearer error="insufficient_scope""#)[0];
        assert_eq!(step_up_scopes(&granted, no_scope), None);
    }
}
