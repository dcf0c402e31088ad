//! Where one JSON value ends, found in pieces as its bytes arrive. Only what decides the end
//! is tracked (strings with their escapes, nesting, the end of a bare scalar), so a value is
//! crossed at memory speed and parsed properly (serde_json) once all its bytes are there.
//! Syntax inside the value is that parser's to judge.

use memchr::memchr2;

/// The scan of one value, resumable: call [`ValueEnd::find`] again with more bytes.
#[derive(Debug, Default, Clone)]
pub(super) struct ValueEnd {
    /// Bytes of the value already scanned.
    scanned: usize,
    started: bool,
    /// Open `{` and `[` not closed yet.
    depth: u32,
    in_string: bool,
    /// The previous byte was a backslash inside a string.
    escaped: bool,
    /// The value is a bare scalar (a number, `true`, `false`, `null`, or junk).
    scalar: bool,
}

/// Where a bare scalar ends: JSON whitespace and the delimiters that may follow a value.
fn ends_scalar(b: u8) -> bool {
    matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
}

impl ValueEnd {
    /// `value` holds the value's bytes from its first one (the whitespace before it already
    /// skipped) to the end of what has arrived. The scan goes on where the last call stopped;
    /// `Some(len)` once the value ends after `len` bytes.
    pub(super) fn find(&mut self, value: &[u8]) -> Option<usize> {
        let mut i = self.scanned;
        if !self.started {
            match value.first()? {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth = 1,
                _ => self.scalar = true,
            }
            self.started = true;
            if !self.scalar {
                i = 1;
            }
        }
        let end = if self.scalar {
            match value[i..].iter().position(|&b| ends_scalar(b)) {
                Some(k) => Some(i + k),
                None => {
                    i = value.len();
                    None
                }
            }
        } else {
            self.structure(value, &mut i)
        };
        self.scanned = i;
        end
    }

    /// Strings and nesting from `*i`; leaves `*i` where the scan stopped.
    fn structure(&mut self, value: &[u8], i: &mut usize) -> Option<usize> {
        loop {
            if self.in_string {
                if self.escaped {
                    if *i >= value.len() {
                        return None;
                    }
                    *i += 1;
                    self.escaped = false;
                }
                match memchr2(b'"', b'\\', &value[*i..]) {
                    None => {
                        *i = value.len();
                        return None;
                    }
                    Some(k) => {
                        *i += k + 1;
                        if value[*i - 1] == b'\\' {
                            self.escaped = true;
                            continue;
                        }
                        self.in_string = false;
                        if self.depth == 0 {
                            return Some(*i);
                        }
                    }
                }
            }
            // Between the tokens of a container: short runs (`":`, `,"`, numbers).
            loop {
                let &b = value.get(*i)?;
                *i += 1;
                match b {
                    b'"' => {
                        self.in_string = true;
                        break;
                    }
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            return Some(*i);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Whether the scan has started.
    pub(super) fn begun(&self) -> bool {
        self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end found when `text` arrives in pieces of `piece` bytes.
    fn end_in_pieces(text: &str, piece: usize) -> Option<usize> {
        let bytes = text.as_bytes();
        let mut scan = ValueEnd::default();
        let mut have = 0;
        loop {
            have = (have + piece).min(bytes.len());
            if let Some(end) = scan.find(&bytes[..have]) {
                return Some(end);
            }
            if have == bytes.len() {
                return None;
            }
        }
    }

    #[test]
    fn finds_the_end_of_every_kind_of_value_in_any_pieces() {
        for (text, value) in [
            (
                r#"{"a":"x}","b":[1,{"c":"\"]"}]} ,"#,
                r#"{"a":"x}","b":[1,{"c":"\"]"}]}"#,
            ),
            (r#""a\\" ,"#, r#""a\\""#),
            (r#""\"\\\"" ]"#, r#""\"\\\"""#),
            ("[[],[[]]]]", "[[],[[]]]"),
            ("-12.5e3,", "-12.5e3"),
            ("true}", "true"),
            ("null\n", "null"),
            (r#"{"k":"é😀"}x"#, r#"{"k":"é😀"}"#),
        ] {
            for piece in 1..=text.len() {
                assert_eq!(
                    end_in_pieces(text, piece),
                    Some(value.len()),
                    "{text} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn an_unfinished_value_asks_for_more() {
        for text in [r#"{"a":"}"#, r#""abc\""#, "[[]", "123", r#"{"a":"\"#] {
            for piece in 1..=text.len() {
                assert_eq!(end_in_pieces(text, piece), None, "{text}");
            }
        }
    }
}
