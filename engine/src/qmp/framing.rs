//! Splitting a QMP byte stream into JSON values.
//!
//! A client may send several requests in one write, or one request across many writes,
//! with any whitespace between them. [`JsonFramer`] buffers the bytes and yields each
//! complete value in order.
//!
//! Bounds, so no input can make it allocate without limit or panic:
//! - The buffer never holds more than [`MAX_MESSAGE_BYTES`] of one unfinished value; past
//!   that the value is refused ("JSON token size limit exceeded", as QEMU says) and the
//!   buffer is dropped.
//! - Values nested deeper than the parser's recursion limit (128) are refused ("JSON
//!   nesting depth limit exceeded").
//! - Invalid JSON yields one error ("JSON parse error, …"), then the framer skips to the
//!   end of the line on which the bad value began and parses on from there (clients send
//!   one request per line, so the next line is the next request; a bad value spread over
//!   several lines may give one error per line).

use serde_json::Value;

/// The largest single JSON value accepted, in bytes (1 MiB: a QMP request is a few hundred).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Why the input did not give a value. Each is answered with a `GenericError` carrying
/// the `Display` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// One value grew past [`MAX_MESSAGE_BYTES`]; the buffered bytes were dropped.
    #[error("JSON token size limit exceeded")]
    TooLarge,
    /// The value nests deeper than the parser allows.
    #[error("JSON nesting depth limit exceeded")]
    TooDeep,
    /// The bytes are not JSON.
    #[error("JSON parse error, {0}")]
    Syntax(String),
}

/// Buffers input bytes and yields the JSON values in them (see the module doc).
#[derive(Debug, Default)]
pub struct JsonFramer {
    buffer: Vec<u8>,
    /// A too-large value is being discarded: drop input up to its next newline.
    discarding: bool,
}

impl JsonFramer {
    /// An empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends input bytes. Nothing is parsed until [`next_value`](Self::next_value).
    ///
    /// Feed at most [`MAX_MESSAGE_BYTES`] per call and drain `next_value` between calls:
    /// the buffer keeps at most twice that (anything past it could only belong to a value
    /// that is refused as too large anyway, unless a caller skips the draining).
    pub fn push(&mut self, bytes: &[u8]) {
        let mut bytes = bytes;
        if self.discarding {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(newline) => {
                    self.discarding = false;
                    bytes = &bytes[newline + 1..];
                }
                None => return,
            }
        }
        // Keep at most one limit's worth past what is already buffered: a buffer beyond
        // the limit is refused by `next_value` anyway, so the excess never matters.
        let room = (2 * MAX_MESSAGE_BYTES).saturating_sub(self.buffer.len());
        self.buffer
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Drops input from now up to the next newline that arrives (input was lost: whatever
    /// is buffered ends at an arbitrary byte, so parsing resumes at a line start).
    pub fn skip_to_next_line(&mut self) {
        self.discarding = true;
    }

    /// Bytes buffered and not yet parsed.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next complete value, an error for bad input, or `None` when more input is needed.
    pub fn next_value(&mut self) -> Option<Result<Value, FrameError>> {
        let start = self.buffer.iter().position(|b| !b.is_ascii_whitespace());
        let Some(start) = start else {
            self.buffer.clear();
            return None;
        };
        self.buffer.drain(..start);
        let mut stream = serde_json::Deserializer::from_slice(&self.buffer).into_iter::<Value>();
        match stream.next() {
            None => {
                self.buffer.clear();
                None
            }
            Some(Ok(value)) => {
                let end = stream.byte_offset();
                if end > MAX_MESSAGE_BYTES {
                    self.buffer.drain(..end);
                    return Some(Err(FrameError::TooLarge));
                }
                self.buffer.drain(..end);
                Some(Ok(value))
            }
            Some(Err(error)) if error.is_eof() => {
                if self.buffer.len() > MAX_MESSAGE_BYTES {
                    self.drop_unfinished();
                    return Some(Err(FrameError::TooLarge));
                }
                None
            }
            Some(Err(error)) => {
                let too_deep = error.to_string().starts_with("recursion limit exceeded");
                // The offset of the bad value's first byte (nothing was consumed).
                let at = stream.byte_offset().min(self.buffer.len());
                self.skip_line_from(at);
                Some(Err(if too_deep {
                    FrameError::TooDeep
                } else {
                    FrameError::Syntax(syntax_message(&error))
                }))
            }
        }
    }

    /// Drops the unfinished value; input up to its next newline is dropped as it arrives.
    fn drop_unfinished(&mut self) {
        match self.buffer.iter().position(|&b| b == b'\n') {
            Some(newline) => {
                self.buffer.drain(..=newline);
            }
            None => {
                self.buffer.clear();
                self.discarding = true;
            }
        }
    }

    /// Drops the buffer through the first newline at or after `at` (all of it if none).
    fn skip_line_from(&mut self, at: usize) {
        match self.buffer[at..].iter().position(|&b| b == b'\n') {
            Some(newline) => {
                self.buffer.drain(..at + newline + 1);
            }
            None => self.buffer.clear(),
        }
    }
}

/// serde_json's message without its "at line L column C" tail (lines mean little on a
/// stream).
fn syntax_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn drain(framer: &mut JsonFramer) -> Vec<Result<Value, FrameError>> {
        std::iter::from_fn(|| framer.next_value()).collect()
    }

    #[test]
    fn one_object_across_many_writes() {
        let mut framer = JsonFramer::new();
        let text = br#"{"execute": "query-jobs", "id": 7}"#;
        for byte in text.iter() {
            assert!(drain(&mut framer).is_empty());
            framer.push(&[*byte]);
        }
        assert_eq!(
            drain(&mut framer),
            vec![Ok(json!({"execute": "query-jobs", "id": 7}))]
        );
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn several_objects_in_one_write() {
        let mut framer = JsonFramer::new();
        framer.push(b"{\"a\":1}{\"b\":2}\r\n  \n\t{\"c\":3}\n");
        assert_eq!(
            drain(&mut framer),
            vec![
                Ok(json!({"a": 1})),
                Ok(json!({"b": 2})),
                Ok(json!({"c": 3}))
            ]
        );
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn garbage_gives_one_error_then_the_next_line_parses() {
        let mut framer = JsonFramer::new();
        framer.push(b"{\"execute\": nope}\n{\"execute\": \"ok\"}\n");
        let out = drain(&mut framer);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            matches!(&out[0], Err(FrameError::Syntax(m)) if !m.contains("line")),
            "{out:?}"
        );
        assert_eq!(out[1], Ok(json!({"execute": "ok"})));
    }

    #[test]
    fn a_stray_closing_brace_is_an_error_not_a_hang() {
        let mut framer = JsonFramer::new();
        framer.push(b"}\n{}\n");
        let out = drain(&mut framer);
        assert!(matches!(out[0], Err(FrameError::Syntax(_))));
        assert_eq!(out[1], Ok(json!({})));
    }

    #[test]
    fn a_huge_unfinished_value_is_refused_and_dropped() {
        let mut framer = JsonFramer::new();
        framer.push(b"{\"execute\": \"");
        let chunk = vec![b'a'; 64 << 10];
        let mut errors = 0;
        for _ in 0..64 {
            framer.push(&chunk);
            for result in drain(&mut framer) {
                assert_eq!(result, Err(FrameError::TooLarge));
                errors += 1;
            }
            assert!(framer.buffered() <= 2 * MAX_MESSAGE_BYTES);
        }
        assert_eq!(errors, 1, "one error for one oversized value");
        // The rest of its line is dropped as it arrives; the next line parses.
        framer.push(b"aaaa\"}\n{\"execute\": \"next\"}\n");
        assert_eq!(drain(&mut framer), vec![Ok(json!({"execute": "next"}))]);
    }

    #[test]
    fn too_deep_nesting_is_refused() {
        let mut framer = JsonFramer::new();
        let deep = format!("{}{}\n{{}}\n", "[".repeat(1000), "]".repeat(1000));
        framer.push(deep.as_bytes());
        let out = drain(&mut framer);
        assert_eq!(out[0], Err(FrameError::TooDeep));
        assert_eq!(out.last(), Some(&Ok(json!({}))));
    }
}
