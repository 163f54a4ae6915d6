//! A small JSON-with-comments scanner that reports where things are instead of building a tree:
//! the byte spans of the top-level object's members and of one nested object's members. Host
//! config files are edited by splicing text at those spans, so everything Latchkey does not
//! touch — other entries, comments, key order, formatting — stays byte for byte.

use std::ops::Range;

/// One `"key": value` member of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The key, unescaped (simple escapes only; exotic keys compare unequal, which is safe).
    pub key: String,
    /// The span of the key's opening quote to the value's end.
    pub span: Range<usize>,
    /// The span of the value.
    pub value: Range<usize>,
}

/// An object: its braces and members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Index of `{`.
    pub open: usize,
    /// Index of `}`.
    pub close: usize,
    /// Members in file order.
    pub members: Vec<Member>,
}

/// Why a file is not valid JSON (or JSONC where allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What was expected.
    pub message: String,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

/// Parses `text` whose top level must be an object. `jsonc` allows comments and trailing commas.
pub fn parse_top(text: &str, jsonc: bool) -> Result<Object, SyntaxError> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        jsonc,
    };
    p.skip_ws()?;
    if p.peek() != Some(b'{') {
        return Err(p.error("the file must contain one JSON object"));
    }
    let obj = p.object()?;
    p.skip_ws()?;
    if p.i != p.s.len() {
        return Err(p.error("unexpected text after the top-level object"));
    }
    Ok(obj)
}

/// Parses the object that starts at `at` (already known valid).
pub fn object_at(text: &str, at: usize, jsonc: bool) -> Result<Object, SyntaxError> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: at,
        jsonc,
    };
    p.object()
}

/// Whether a trailing comma follows `end` before `close` (JSONC).
pub fn comma_after(text: &str, end: usize, close: usize) -> Option<usize> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: end,
        jsonc: true,
    };
    p.skip_ws().ok()?;
    (p.peek() == Some(b',') && p.i < close).then_some(p.i)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    jsonc: bool,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn error(&self, message: &str) -> SyntaxError {
        let upto = &self.s[..self.i.min(self.s.len())];
        let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = upto.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
        SyntaxError {
            line,
            column,
            message: message.to_owned(),
        }
    }

    fn skip_ws(&mut self) -> Result<(), SyntaxError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.i += 1,
                Some(0xEF) if self.i == 0 && self.s.starts_with(&[0xEF, 0xBB, 0xBF]) => self.i += 3,
                Some(b'/') if self.jsonc => match self.s.get(self.i + 1) {
                    Some(b'/') => {
                        while let Some(b) = self.peek() {
                            if b == b'\n' {
                                break;
                            }
                            self.i += 1;
                        }
                    }
                    Some(b'*') => {
                        self.i += 2;
                        loop {
                            match self.peek() {
                                None => return Err(self.error("unterminated comment")),
                                Some(b'*') if self.s.get(self.i + 1) == Some(&b'/') => {
                                    self.i += 2;
                                    break;
                                }
                                Some(_) => self.i += 1,
                            }
                        }
                    }
                    _ => return Err(self.error("unexpected `/`")),
                },
                _ => return Ok(()),
            }
        }
    }

    fn expect(&mut self, b: u8, what: &str) -> Result<(), SyntaxError> {
        if self.peek() == Some(b) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    fn object(&mut self) -> Result<Object, SyntaxError> {
        let open = self.i;
        self.expect(b'{', "expected `{`")?;
        let mut members = Vec::new();
        loop {
            self.skip_ws()?;
            if self.peek() == Some(b'}') {
                if !members.is_empty()
                    && !self.jsonc
                    && self.s[..self.i]
                        .iter()
                        .rev()
                        .find(|b| !b.is_ascii_whitespace())
                        == Some(&b',')
                {
                    return Err(self.error("trailing comma before `}`"));
                }
                let close = self.i;
                self.i += 1;
                return Ok(Object {
                    open,
                    close,
                    members,
                });
            }
            let start = self.i;
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a quoted key or `}`"));
            }
            let key = self.string()?;
            self.skip_ws()?;
            self.expect(b':', "expected `:` after the key")?;
            self.skip_ws()?;
            let vstart = self.i;
            self.value()?;
            let vend = self.i;
            members.push(Member {
                key,
                span: start..vend,
                value: vstart..vend,
            });
            self.skip_ws()?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                _ => return Err(self.error("expected `,` or `}` after a value")),
            }
        }
    }

    fn array(&mut self) -> Result<(), SyntaxError> {
        self.expect(b'[', "expected `[`")?;
        let mut first = true;
        loop {
            self.skip_ws()?;
            if self.peek() == Some(b']') {
                if !first
                    && !self.jsonc
                    && self.s[..self.i]
                        .iter()
                        .rev()
                        .find(|b| !b.is_ascii_whitespace())
                        == Some(&b',')
                {
                    return Err(self.error("trailing comma before `]`"));
                }
                self.i += 1;
                return Ok(());
            }
            first = false;
            self.value()?;
            self.skip_ws()?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {}
                _ => return Err(self.error("expected `,` or `]` in an array")),
            }
        }
    }

    fn value(&mut self) -> Result<(), SyntaxError> {
        match self.peek() {
            Some(b'{') => self.object().map(|_| ()),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(|_| ()),
            Some(b't') => self.word("true"),
            Some(b'f') => self.word("false"),
            Some(b'n') => self.word("null"),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                while matches!(
                    self.peek(),
                    Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                ) {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("x");
                if text.parse::<f64>().is_ok() {
                    Ok(())
                } else {
                    Err(self.error("invalid number"))
                }
            }
            _ => Err(self.error("expected a value")),
        }
    }

    fn word(&mut self, w: &str) -> Result<(), SyntaxError> {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            Ok(())
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        self.expect(b'"', "expected `\"`")?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b'\\') => {
                    let esc = self.s.get(self.i + 1).copied();
                    match esc {
                        Some(b'"' | b'\\' | b'/') => out.push(esc.unwrap_or(b'?')),
                        Some(b'n') => out.push(b'\n'),
                        Some(b't') => out.push(b'\t'),
                        Some(b'r') => out.push(b'\r'),
                        Some(b'b') => out.push(0x08),
                        Some(b'f') => out.push(0x0c),
                        Some(b'u') => {
                            let c = self.unicode_escape()?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return Err(self.error("invalid escape")),
                    }
                    self.i += 2;
                }
                // JSON (and every host's parser) refuses a raw control character in a string: a
                // file that has one is not edited, whatever else it holds.
                Some(b) if b < 0x20 => {
                    return Err(self.error(&format!(
                        "a control character (U+{b:04X}) inside a string: write it as an escape such as \\u{b:04x}"
                    )));
                }
                Some(b) => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
    }

    /// `\uXXXX` at the cursor (and its low half when it is a high surrogate), decoded the way
    /// `JSON.parse` reads it, so keys compare by what they mean; a lone surrogate becomes U+FFFD
    /// (such a key matches no name Latchkey writes).
    fn unicode_escape(&mut self) -> Result<char, SyntaxError> {
        let high = self.hex4()?;
        if !(0xD800..0xDC00).contains(&high) {
            return Ok(char::from_u32(high).unwrap_or(char::REPLACEMENT_CHARACTER));
        }
        if self.s.get(self.i) == Some(&b'\\') && self.s.get(self.i + 1) == Some(&b'u') {
            let save = self.i;
            let low = self.hex4()?;
            if (0xDC00..0xE000).contains(&low) {
                let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                return Ok(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            self.i = save;
        }
        Ok(char::REPLACEMENT_CHARACTER)
    }

    /// Reads `\u` and four hex digits at the cursor.
    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let digits = self
            .s
            .get(self.i + 2..self.i + 6)
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u32::from_str_radix(d, 16).ok());
        match digits {
            Some(code) => {
                self.i += 6;
                Ok(code)
            }
            None => Err(self.error("invalid \\u escape: it needs four hex digits")),
        }
    }
}

/// The 1-based line of byte `at` in `text`.
pub fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
