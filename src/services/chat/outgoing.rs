//! A message on its way to members of both encodings: members of both
//! kinds share rooms, so a message is held as one [`ChatMessage`] and
//! encoded at most once per encoding, however many members receive it.

use crate::protocol::chat::{encode, ChatMessage, Encoding};

/// A message on its way to members, encoded lazily once per encoding.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) message: ChatMessage,
    json: Option<Vec<u8>>,
    protobuf: Option<Vec<u8>>,
}

impl Outgoing {
    pub(crate) fn new(message: ChatMessage) -> Outgoing {
        Outgoing {
            message,
            json: None,
            protobuf: None,
        }
    }

    /// The message as `encoding` puts it on the wire.
    pub(crate) fn bytes(&mut self, encoding: Encoding) -> &[u8] {
        let message = &self.message;
        let cached = match encoding {
            Encoding::Json => &mut self.json,
            Encoding::Protobuf => &mut self.protobuf,
        };
        cached.get_or_insert_with(|| {
            let mut out = Vec::new();
            encode(encoding, message, &mut out);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::LengthDelimited;
    use crate::protocol::chat::sample as message;

    #[test]
    fn outgoing_in_both_encodings() {
        let mut out = Outgoing::new(message("a \"quote\"\n"));
        let json = out.bytes(Encoding::Json).to_vec();
        let want = "{\"from\":\"ann\",\"content\":\"a \\\"quote\\\"\\n\",\"time\":\"01:02:03\"}\n";
        assert_eq!(String::from_utf8(json).unwrap(), want);
        let proto = out.bytes(Encoding::Protobuf).to_vec();
        let codec = LengthDelimited::new(1024);
        let back: ChatMessage = codec.decode(&proto).unwrap().unwrap().0;
        assert_eq!(back, out.message);
    }
}
