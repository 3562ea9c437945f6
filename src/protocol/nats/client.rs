//! What the client sends: `CONNECT`, `PUB`, `SUB`, `UNSUB`, `PING`, `PONG`,
//! appended to an output buffer. Subjects are the caller's to validate
//! ([`valid_subject`](super::valid_subject), [`valid_filter`](super::valid_filter)).

use serde::Serialize;

/// `PING␍␊`.
pub const PING: &[u8] = b"PING\r\n";
/// `PONG␍␊`.
pub const PONG: &[u8] = b"PONG\r\n";

/// The `CONNECT` options this client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Connect {
    /// `+OK` after every operation (false: errors only).
    pub verbose: bool,
    /// Strict subject checks by the server.
    pub pedantic: bool,
    /// Whether the server may send `TLS`; this client speaks plain TCP.
    pub tls_required: bool,
    /// The client's name, shown in the server's monitoring.
    pub name: String,
    /// The client's language.
    pub lang: String,
    /// The client's version.
    pub version: String,
    /// 1: the client understands an `INFO` at any time.
    pub protocol: u8,
    /// Whether the server delivers this connection's own publications to
    /// its own subscriptions (false: a process never hears itself).
    pub echo: bool,
}

impl Connect {
    /// `verbose` and `pedantic` off, protocol 1, `echo` off, language
    /// `rust`, this crate's version, and the given name.
    pub fn named(name: &str) -> Connect {
        Connect {
            verbose: false,
            pedantic: false,
            tls_required: false,
            name: name.to_owned(),
            lang: "rust".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: 1,
            echo: false,
        }
    }

    /// Appends `CONNECT {json}␍␊`.
    ///
    /// ```
    /// use sockloop::protocol::nats::Connect;
    ///
    /// let mut out = Vec::new();
    /// Connect::named("shard-0").encode(&mut out);
    /// assert!(out.starts_with(br#"CONNECT {"verbose":false,"pedantic":false,"#));
    /// assert!(out.ends_with(b"\"echo\":false}\r\n"));
    /// ```
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"CONNECT ");
        // Serializing plain strings and booleans cannot fail.
        serde_json::to_writer(&mut *out, self).expect("CONNECT serializes");
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `PUB <subject> <#bytes>␍␊<payload>␍␊`.
///
/// ```
/// let mut out = Vec::new();
/// sockloop::protocol::nats::encode_pub("a.b", b"hi", &mut out);
/// assert_eq!(out, b"PUB a.b 2\r\nhi\r\n");
/// ```
pub fn encode_pub(subject: &str, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(pub_len(subject, payload.len()));
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    out.extend_from_slice(format!(" {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// The bytes [`encode_pub`] appends.
pub fn pub_len(subject: &str, payload: usize) -> usize {
    "PUB  \r\n\r\n".len() + subject.len() + decimal_len(payload) + payload
}

/// Appends `SUB <subject> <sid>␍␊`.
pub fn encode_sub(subject: &str, sid: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
}

/// Appends `UNSUB <sid>␍␊`.
pub fn encode_unsub(sid: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("UNSUB {sid}\r\n").as_bytes());
}

fn decimal_len(mut n: usize) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        let mut out = Vec::new();
        encode_sub("sockloop.chat.room.*", 1, &mut out);
        encode_unsub(1, &mut out);
        out.extend_from_slice(PING);
        out.extend_from_slice(PONG);
        assert_eq!(
            out,
            b"SUB sockloop.chat.room.* 1\r\nUNSUB 1\r\nPING\r\nPONG\r\n"
        );
        let mut out = Vec::new();
        Connect::named("p").encode(&mut out);
        let text = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\
             \"name\":\"p\",\"lang\":\"rust\",\"version\":\"{}\",\"protocol\":1,\
             \"echo\":false}}\r\n",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(String::from_utf8(out).unwrap(), text);
    }

    #[test]
    fn pub_len_is_exact() {
        for n in [0, 1, 9, 10, 99, 100, 12_345] {
            let payload = vec![b'x'; n];
            let mut out = Vec::new();
            encode_pub("s.t", &payload, &mut out);
            assert_eq!(out.len(), pub_len("s.t", n), "{n}");
        }
    }
}
