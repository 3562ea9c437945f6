//! Encoding one large JSON value a slice at a time, consuming it as it
//! goes, so neither the encoding nor the drop of a huge message holds its
//! loop in one call.

use serde_json::{map, Value};

/// A container being written: what is left of it, and whether an element
/// was written already (so the next needs a comma).
#[derive(Debug)]
enum Frame {
    Array(std::vec::IntoIter<Value>, bool),
    Object(map::IntoIter, bool),
}

/// A resumable compact JSON encoder that owns its value: each [`step`]
/// appends at least `budget` more bytes (or the rest), keeping its place
/// with an explicit stack of consuming iterators (no recursion), so every
/// element is dropped right after it is written and nothing big is left
/// to drop at the end. Scalars and keys are written by serde_json itself,
/// so the bytes are exactly `serde_json::to_vec` of the value.
///
/// ```
/// use sockloop::codec::JsonEncodeSteps;
///
/// let value = serde_json::json!({"b": [1, 2.5, "x"], "a": null});
/// let want = serde_json::to_vec(&value)?;
/// let mut encoder = JsonEncodeSteps::new(value);
/// let (mut out, mut calls) = (Vec::new(), 1);
/// while !encoder.step(&mut out, 4) {
///     calls += 1;
/// }
/// assert_eq!(out, want);
/// assert!(calls > 1);
/// # Ok::<(), serde_json::Error>(())
/// ```
///
/// [`step`]: JsonEncodeSteps::step
#[derive(Debug)]
pub struct JsonEncodeSteps {
    /// The value, until its first byte is written.
    root: Option<Value>,
    open: Vec<Frame>,
}

impl JsonEncodeSteps {
    /// An encoder for `value`, nothing written yet.
    pub fn new(value: Value) -> JsonEncodeSteps {
        JsonEncodeSteps {
            root: Some(value),
            open: Vec::new(),
        }
    }

    /// Appends to `out` until about `budget` more bytes are written (a
    /// token is never split, so one long string may overrun it); true once
    /// the whole value is written (and further calls write nothing).
    pub fn step(&mut self, out: &mut Vec<u8>, budget: usize) -> bool {
        let stop = out.len().saturating_add(budget.max(1));
        loop {
            if let Some(value) = self.root.take() {
                self.write(value, out);
            } else {
                let Some(frame) = self.open.last_mut() else {
                    return true;
                };
                match frame {
                    Frame::Array(items, started) => match items.next() {
                        Some(item) => {
                            comma(out, started);
                            self.write(item, out);
                        }
                        None => {
                            out.push(b']');
                            self.open.pop();
                        }
                    },
                    Frame::Object(entries, started) => match entries.next() {
                        Some((key, item)) => {
                            comma(out, started);
                            scalar(out, &key);
                            out.push(b':');
                            self.write(item, out);
                        }
                        None => {
                            out.push(b'}');
                            self.open.pop();
                        }
                    },
                }
            }
            if out.len() >= stop {
                return self.root.is_none() && self.open.is_empty();
            }
        }
    }

    /// Writes a scalar whole, or opens a container.
    fn write(&mut self, value: Value, out: &mut Vec<u8>) {
        match value {
            Value::Array(items) => {
                out.push(b'[');
                self.open.push(Frame::Array(items.into_iter(), false));
            }
            Value::Object(entries) => {
                out.push(b'{');
                self.open.push(Frame::Object(entries.into_iter(), false));
            }
            scalar_value => scalar(out, &scalar_value),
        }
    }
}

/// A comma before every element but the first.
fn comma(out: &mut Vec<u8>, started: &mut bool) {
    if std::mem::replace(started, true) {
        out.push(b',');
    }
}

/// A string or scalar as serde_json writes it (this cannot fail: a `Vec`
/// takes every write, and JSON values always serialise).
fn scalar(out: &mut Vec<u8>, value: &impl serde::Serialize) {
    let _ = serde_json::to_writer(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_containers_and_nesting() {
        for text in [
            "[]",
            "{}",
            "[[],{}]",
            r#"{"a":{"b":[[1]]},"c":[]}"#,
            "1",
            "\"é\"",
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            for budget in [1, 2, 100] {
                let mut encoder = JsonEncodeSteps::new(value.clone());
                let mut out = Vec::new();
                while !encoder.step(&mut out, budget) {}
                assert_eq!(String::from_utf8(out).unwrap(), text, "budget {budget}");
                assert!(encoder.step(&mut Vec::new(), budget));
            }
        }
    }

    #[test]
    fn each_step_stops_near_its_budget() {
        let value = Value::from(vec![7; 1000]);
        let mut encoder = JsonEncodeSteps::new(value);
        let mut out = Vec::new();
        let mut before = 0;
        while !encoder.step(&mut out, 100) {
            // Tokens here are at most two bytes (",7").
            assert!((100..=101).contains(&(out.len() - before)));
            before = out.len();
        }
        assert_eq!(out.len(), 2001);
    }
}
