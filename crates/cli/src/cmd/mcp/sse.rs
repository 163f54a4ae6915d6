//! An incremental Server-Sent Events parser (the WHATWG `text/event-stream` format) for the
//! stdio bridge: bytes arrive in arbitrary chunks, events come out whole, with their `id:` (the
//! resumption cursor of MCP Streamable HTTP) and the stream's `retry:` advice kept.

use std::time::Duration;

/// The longest line the parser holds before giving up on a stream (a broken or hostile server
/// must not grow the bridge's memory without bound).
const MAX_LINE: usize = 16 * 1024 * 1024;

/// One dispatched event: the fields of one blank-line-terminated block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `id:` field of this block, when it had one (`Some("")` resets the cursor).
    pub id: Option<String>,
    /// The `event:` field, when present.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`; `None` when the block had no `data:` field.
    pub data: Option<String>,
}

/// A line longer than [`MAX_LINE`] arrived.
#[derive(Debug, thiserror::Error)]
#[error("the event stream sent a line longer than {MAX_LINE} bytes")]
pub struct LineTooLong;

/// Parser state between chunks.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    started: bool,
    pending: Event,
    has_field: bool,
    data_lines: usize,
    retry: Option<Duration>,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The reconnection delay the server asked for with `retry:`, if it did.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Feeds a chunk; returns the events it completed, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, LineTooLong> {
        let mut events = Vec::new();
        let mut rest = chunk;
        if self.after_cr && rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
        self.after_cr = false;
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let crlf = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if crlf {
                if rest.is_empty() {
                    self.after_cr = true;
                } else if rest[0] == b'\n' {
                    rest = &rest[1..];
                }
            }
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.line_done(&line) {
                events.push(event);
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > MAX_LINE {
            return Err(LineTooLong);
        }
        Ok(events)
    }

    fn line_done(&mut self, raw: &[u8]) -> Option<Event> {
        let mut line = String::from_utf8_lossy(raw).into_owned();
        if !self.started {
            self.started = true;
            if let Some(stripped) = line.strip_prefix('\u{feff}') {
                line = stripped.to_owned();
            }
        }
        if line.is_empty() {
            if !self.has_field {
                return None;
            }
            self.has_field = false;
            self.data_lines = 0;
            return Some(std::mem::take(&mut self.pending));
        }
        if line.starts_with(':') {
            return None; // a comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match field {
            "data" => {
                let data = self.pending.data.get_or_insert_with(String::new);
                if self.data_lines > 0 {
                    data.push('\n');
                }
                data.push_str(value);
                self.data_lines += 1;
            }
            "event" => self.pending.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.pending.id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => return None,
        }
        self.has_field = true;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> (Vec<Event>, Parser) {
        let mut parser = Parser::new();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(parser.feed(chunk).expect("no overlong line"));
        }
        (events, parser)
    }

    fn data(events: &[Event]) -> Vec<&str> {
        events.iter().filter_map(|e| e.data.as_deref()).collect()
    }

    #[test]
    fn an_event_split_at_every_byte_comes_out_once_and_whole() {
        let text = b"event: message\nid: 7\ndata: {\"a\":1}\n\ndata: two\n\n";
        let chunks: Vec<&[u8]> = text.chunks(1).collect();
        let (events, _) = feed_all(&chunks);
        assert_eq!(
            events,
            vec![
                Event {
                    id: Some("7".into()),
                    event: Some("message".into()),
                    data: Some("{\"a\":1}".into()),
                },
                Event {
                    data: Some("two".into()),
                    ..Event::default()
                },
            ]
        );
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let (events, _) = feed_all(&[b"data: {\ndata:  \"x\": 1\ndata:}\n\n"]);
        assert_eq!(data(&events), vec!["{\n \"x\": 1\n}"]);
    }

    #[test]
    fn crlf_and_lone_cr_end_lines_even_across_chunks() {
        let (events, _) = feed_all(&[
            b"id: a\r",
            b"\ndata: one\r\n\r",
            b"\ndata: two\r\rdata: three\n\n",
        ]);
        assert_eq!(data(&events), vec!["one", "two", "three"]);
        assert_eq!(events[0].id.as_deref(), Some("a"));
        assert_eq!(events[1].id, None, "an id belongs to its own block");
    }

    #[test]
    fn comments_are_ignored_and_do_not_dispatch() {
        let (events, _) = feed_all(&[b": keep-alive\n\n:another\ndata: x\n: mid\n\n"]);
        assert_eq!(data(&events), vec!["x"]);
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn a_priming_event_has_an_id_and_empty_data() {
        let (events, parser) = feed_all(&[b"id: p1\nretry: 250\ndata: \n\n"]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id.as_deref(), Some("p1"));
        assert_eq!(events[0].data.as_deref(), Some(""));
        assert_eq!(parser.retry(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn retry_must_be_digits_only() {
        let (_, parser) = feed_all(&[b"retry: 1.5\n\nretry: x\n\n"]);
        assert_eq!(parser.retry(), None);
        let (_, parser) = feed_all(&[b"retry:3000\n\n"]);
        assert_eq!(parser.retry(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn field_without_colon_and_value_without_space_are_read() {
        let (events, _) = feed_all(&[b"data\n\ndata:x\n\n"]);
        assert_eq!(data(&events), vec!["", "x"]);
    }

    #[test]
    fn an_id_with_nul_is_ignored_and_unknown_fields_too() {
        let (events, _) = feed_all(&[b"id: a\0b\nfoo: bar\ndata: x\n\n"]);
        assert_eq!(events[0].id, None);
        assert_eq!(data(&events), vec!["x"]);
    }

    #[test]
    fn an_unfinished_block_is_not_dispatched() {
        let (events, _) = feed_all(&[b"data: whole\n\ndata: half"]);
        assert_eq!(data(&events), vec!["whole"]);
    }

    #[test]
    fn a_leading_byte_order_mark_is_dropped() {
        let (events, _) = feed_all(&[b"\xef\xbb\xbfdata: x\n\n"]);
        assert_eq!(data(&events), vec!["x"]);
    }

    #[test]
    fn a_utf8_character_split_across_chunks_survives() {
        let text = "data: caf\u{e9} \u{1f511}\n\n".as_bytes();
        let (events, _) = feed_all(&[&text[..10], &text[10..13], &text[13..]]);
        assert_eq!(data(&events), vec!["caf\u{e9} \u{1f511}"]);
    }
}
