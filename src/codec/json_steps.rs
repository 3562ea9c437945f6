//! Parsing one long JSON line a slice at a time, so a huge message does not
//! hold its loop for the whole parse.

use serde_json::{Map, Value};

use super::json_error::MAX_DEPTH;

/// What one [`JsonSteps::step`] call ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonStep {
    /// The budget ran out: call again with the same line.
    Pending,
    /// The line is one JSON value, exactly what `serde_json::from_slice`
    /// returns for it.
    Done(Value),
    /// The line is not valid JSON (`serde_json::from_slice` fails on it
    /// too): ask serde_json for the error text.
    Failed,
}

/// A container being filled.
#[derive(Debug, Clone)]
enum Open {
    Array(Vec<Value>),
    /// The map, and the key whose value comes next.
    Object(Map<String, Value>, Option<String>),
}

/// What may come next.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// A value (at the top, after `:` or after `,` in an array).
    Value,
    /// A value or `]`: just after `[`.
    ValueOrEnd,
    /// A key or `}`: just after `{`.
    KeyOrEnd,
    /// A key: after `,` in an object.
    Key,
    /// `:` after a key.
    Colon,
    /// `,` or the container's end; at the top, only whitespace.
    AfterValue,
}

/// A resumable JSON parser for one complete line: each [`step`] parses at
/// least `budget` bytes more (or to the end), keeping its place and the
/// containers it has open, with an explicit stack (no recursion) bounded by
/// serde_json's depth limit. Scalars are converted by serde_json itself,
/// token by token, so numbers, escapes and errors agree with it exactly.
///
/// ```
/// use sockloop::codec::{JsonSteps, JsonStep};
///
/// let line = br#"{"a":[1,2.5,"x"],"b":null}"#;
/// let mut steps = JsonSteps::new();
/// let mut calls = 1;
/// let value = loop {
///     match steps.step(line, 4) {
///         JsonStep::Pending => calls += 1,
///         JsonStep::Done(value) => break value,
///         JsonStep::Failed => unreachable!(),
///     }
/// };
/// assert_eq!(value, serde_json::from_slice::<serde_json::Value>(line)?);
/// assert!(calls > 1);
/// assert_eq!(JsonSteps::new().step(b"[1,]", 100), JsonStep::Failed);
/// # Ok::<(), serde_json::Error>(())
/// ```
///
/// [`step`]: JsonSteps::step
#[derive(Debug, Clone)]
pub struct JsonSteps {
    pos: usize,
    expect: Expect,
    open: Vec<Open>,
    /// The top-level value, once complete.
    root: Option<Value>,
}

impl Default for JsonSteps {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonSteps {
    /// A parser at the start of a line.
    pub fn new() -> JsonSteps {
        JsonSteps {
            pos: 0,
            expect: Expect::Value,
            open: Vec::new(),
            root: None,
        }
    }

    /// Bytes of the line parsed so far.
    pub fn parsed(&self) -> usize {
        self.pos
    }

    /// Parses on from where the last call stopped until about `budget`
    /// more bytes are done (a token is never split, so one long string
    /// may overrun it). `line` must be the same line on every call, without
    /// its newline.
    pub fn step(&mut self, line: &[u8], budget: usize) -> JsonStep {
        let stop = self.pos.saturating_add(budget.max(1));
        loop {
            while let Some(b' ' | b'\t' | b'\r' | b'\n') = line.get(self.pos) {
                self.pos += 1;
            }
            let Some(&byte) = line.get(self.pos) else {
                return match (self.expect, self.open.is_empty(), self.root.take()) {
                    (Expect::AfterValue, true, Some(value)) => JsonStep::Done(value),
                    _ => JsonStep::Failed, // the line ended inside a value
                };
            };
            if self.pos >= stop {
                return JsonStep::Pending;
            }
            if self.advance(line, byte).is_none() {
                self.open.clear(); // free what was built
                return JsonStep::Failed;
            }
        }
    }

    /// Takes the token starting with `byte` at `pos`; `None` if it is wrong.
    fn advance(&mut self, line: &[u8], byte: u8) -> Option<()> {
        match (self.expect, byte) {
            (Expect::Value | Expect::ValueOrEnd, _) if byte != b']' => self.value(line, byte),
            (Expect::ValueOrEnd | Expect::AfterValue, b']') => {
                let Some(Open::Array(items)) = self.open.pop() else {
                    return None;
                };
                self.pos += 1;
                self.put(Value::Array(items))
            }
            (Expect::KeyOrEnd | Expect::AfterValue, b'}') => {
                let Some(Open::Object(map, None)) = self.open.pop() else {
                    return None;
                };
                self.pos += 1;
                self.put(Value::Object(map))
            }
            (Expect::KeyOrEnd | Expect::Key, b'"') => {
                let end = string_end(line, self.pos)?;
                let key: String = serde_json::from_slice(&line[self.pos..end]).ok()?;
                let Some(Open::Object(_, pending)) = self.open.last_mut() else {
                    return None;
                };
                *pending = Some(key);
                self.pos = end;
                self.expect = Expect::Colon;
                Some(())
            }
            (Expect::Colon, b':') => {
                self.pos += 1;
                self.expect = Expect::Value;
                Some(())
            }
            (Expect::AfterValue, b',') => {
                self.pos += 1;
                self.expect = match self.open.last()? {
                    Open::Array(_) => Expect::Value,
                    Open::Object(..) => Expect::Key,
                };
                Some(())
            }
            _ => None,
        }
    }

    /// Takes the value starting with `byte` at `pos`.
    fn value(&mut self, line: &[u8], byte: u8) -> Option<()> {
        let open = match byte {
            b'[' => Some(Open::Array(Vec::new())),
            b'{' => Some(Open::Object(Map::new(), None)),
            _ => None,
        };
        if let Some(open) = open {
            if self.open.len() >= MAX_DEPTH {
                return None; // serde_json's recursion limit
            }
            self.expect = match open {
                Open::Array(_) => Expect::ValueOrEnd,
                Open::Object(..) => Expect::KeyOrEnd,
            };
            self.open.push(open);
            self.pos += 1;
            return Some(());
        }
        let end = match byte {
            b'"' => string_end(line, self.pos)?,
            b'-' | b'0'..=b'9' => number_end(line, self.pos),
            b't' | b'f' | b'n' => literal_end(line, self.pos)?,
            _ => return None,
        };
        let token = &line[self.pos..end];
        let value =
            small_integer(token).map_or_else(|| serde_json::from_slice(token).ok(), Some)?;
        self.pos = end;
        self.put(value)
    }

    /// Places a complete value in the innermost open container, or as the
    /// root.
    fn put(&mut self, value: Value) -> Option<()> {
        self.expect = Expect::AfterValue;
        match self.open.last_mut() {
            None => self.root = Some(value),
            Some(Open::Array(items)) => items.push(value),
            Some(Open::Object(map, key)) => {
                map.insert(key.take()?, value); // a later duplicate wins, as in serde_json
            }
        }
        Some(())
    }
}

/// One past the closing quote of the string opening at `start`.
fn string_end(line: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match *line.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// One past the number-like bytes starting at `start` (serde_json judges
/// whether they make a number).
fn number_end(line: &[u8], start: usize) -> usize {
    let len = line[start..]
        .iter()
        .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .unwrap_or(line.len() - start);
    start + len
}

/// One past `true`, `false` or `null` at `start`.
fn literal_end(line: &[u8], start: usize) -> Option<usize> {
    let rest = &line[start..];
    [&b"true"[..], b"false", b"null"]
        .iter()
        .find(|word| rest.starts_with(word))
        .map(|word| start + word.len())
}

/// The common case without serde_json's setup: a non-negative integer of
/// at most 18 digits and no leading zero, which serde_json makes a `u64`.
fn small_integer(token: &[u8]) -> Option<Value> {
    let plain = token.len() <= 18
        && token.iter().all(u8::is_ascii_digit)
        && (token.len() == 1 || token[0] != b'0');
    plain.then(|| {
        let n = token.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        Value::from(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &[u8], budget: usize) -> JsonStep {
        let mut steps = JsonSteps::new();
        loop {
            match steps.step(line, budget) {
                JsonStep::Pending => continue,
                done => return done,
            }
        }
    }

    fn reference(line: &[u8]) -> JsonStep {
        match serde_json::from_slice::<Value>(line) {
            Ok(value) => JsonStep::Done(value),
            Err(_) => JsonStep::Failed,
        }
    }

    #[test]
    fn agrees_with_serde_json_on_edge_cases() {
        let lines: &[&[u8]] = &[
            b"{}",
            b"[]",
            b" { \"a\" : [ 1 , { } , [ ] ] } \r",
            br#"{"a":1,"a":2}"#,
            br#"{"k\"ey":"v\\\"al\u00e9\ud83d\ude00"}"#,
            br#"["\ud800"]"#,
            b"[0,-0,01,-,1.,.5,1e5,1E+5,-1.5e-3,18446744073709551615,18446744073709551616]",
            b"[0]",
            b"[-0]",
            b"[1e400]",
            b"[999999999999999999,1000000000000000000,-9223372036854775808]",
            b"[true,false,null,tru,nul]",
            b"[truex]",
            b"[1 2]",
            b"[1,]",
            b"{\"a\"}",
            b"{\"a\":}",
            b"{,}",
            b"{\"a\":1,}",
            b"[}",
            b"{]",
            b"1 1",
            b"\"s\"",
            b"[\"a\tb\"]",
            b"[\"\xff\"]",
            b"[1]x",
            b"",
            b"  ",
            b"[",
            b"{\"a\":[1,",
            b"[\"abc",
            b"[\"abc\\",
            b"{1:2}",
        ];
        for line in lines {
            for budget in [1, 3, 1000] {
                assert_eq!(
                    run(line, budget),
                    reference(line),
                    "{} budget {budget}",
                    String::from_utf8_lossy(line)
                );
            }
        }
    }

    #[test]
    fn the_depth_limit_is_serde_jsons() {
        for depth in [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1] {
            let line = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let line = line.as_bytes();
            assert_eq!(run(line, 5), reference(line), "depth {depth}");
        }
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(matches!(run(ok.as_bytes(), 5), JsonStep::Done(_)));
    }

    #[test]
    fn each_step_stops_near_its_budget() {
        let line = format!("[{}1]", "1,".repeat(1000));
        let mut steps = JsonSteps::new();
        let mut before = 0;
        while steps.step(line.as_bytes(), 100) == JsonStep::Pending {
            // Tokens here are one byte: a step overruns by at most one.
            assert!((100..=101).contains(&(steps.parsed() - before)));
            before = steps.parsed();
        }
        assert!(line.len() - before <= 101);
    }
}
