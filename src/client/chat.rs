//! A blocking chat client, for `sockloop chat`, tests and scripts.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::codec::{ChatLine, LengthDelimited, NdjsonCodec};
use crate::proto::chat::ChatMessage;
use crate::services::chat::Encoding;

/// What the server greets JSON members with, before the username.
const PROMPT: &[u8] = b"Enter your username: ";
/// The largest line or frame accepted from the server: a misbehaving one
/// cannot make the client buffer without bound.
const MAX_FRAME: usize = 1 << 20;

/// A member of a sockloop chat, in either encoding.
///
/// ```
/// use sockloop::client::chat::ChatClient;
/// use sockloop::services::chat::{Chat, ChatConfig, Encoding};
/// use sockloop::Server;
///
/// let any = "127.0.0.1:0".parse().unwrap();
/// let make = Chat::maker(ChatConfig::default(), &[Encoding::Json, Encoding::Protobuf]);
/// let server = Server::builder().tcp_group(&[any, any], make).build()?;
/// let (json, proto) = (server.tcp_addrs()[0], server.tcp_addrs()[1]);
/// let handle = server.handle();
/// let running = std::thread::spawn(move || server.run());
///
/// let (mut ann, _welcome) = ChatClient::connect(json, Encoding::Json, "ann")?;
/// let (mut bob, welcome) = ChatClient::connect(proto, Encoding::Protobuf, "bob")?;
/// assert!(welcome.content.starts_with("Welcome, bob!"));
/// assert_eq!(ann.recv()?.unwrap().content, "bob joined lobby");
/// bob.send("hi ann")?;
/// let got = ann.recv()?.unwrap();
/// assert_eq!((got.from.as_str(), got.content.as_str()), ("bob", "hi ann"));
///
/// handle.stop();
/// running.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ChatClient {
    stream: TcpStream,
    encoding: Encoding,
    /// Received bytes not yet decoded.
    input: Vec<u8>,
}

impl ChatClient {
    /// Connects, answers the prompt with `name` (empty: the server picks
    /// one) and returns the client with the server's welcome message.
    pub fn connect(
        addr: SocketAddr,
        encoding: Encoding,
        name: &str,
    ) -> io::Result<(ChatClient, ChatMessage)> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut client = ChatClient {
            stream,
            encoding,
            input: Vec::new(),
        };
        match encoding {
            Encoding::Json => {
                let mut prompt = [0; PROMPT.len()];
                client.stream.read_exact(&mut prompt)?;
                if prompt != PROMPT {
                    return Err(invalid("the server did not prompt for a username"));
                }
                client.stream.write_all(format!("{name}\n").as_bytes())?;
            }
            Encoding::Protobuf => {
                client.recv()?; // the prompt, as a System message
                client.send(name)?;
            }
        }
        let welcome = client
            .recv()?
            .ok_or_else(|| invalid("closed before the welcome"))?;
        Ok((client, welcome))
    }

    /// Sends one message (or `/command`) to the room.
    pub fn send(&mut self, content: &str) -> io::Result<()> {
        let mut out = Vec::new();
        match self.encoding {
            Encoding::Json => {
                let line = ChatLine {
                    content: content.into(),
                    ..ChatLine::default()
                };
                NdjsonCodec::encode(&line, &mut out).map_err(io::Error::other)?;
            }
            Encoding::Protobuf => {
                let message = ChatMessage {
                    content: content.into(),
                    ..ChatMessage::default()
                };
                LengthDelimited::encode(&message, &mut out).map_err(io::Error::other)?;
            }
        }
        self.stream.write_all(&out)
    }

    /// Waits for the next message; `None` once the server closed the
    /// connection. JSON members get no `room`.
    pub fn recv(&mut self) -> io::Result<Option<ChatMessage>> {
        loop {
            if let Some((message, used)) = self.decode()? {
                self.input.drain(..used);
                return Ok(Some(message));
            }
            let mut chunk = [0; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return match self.input.is_empty() {
                    true => Ok(None),
                    false => Err(invalid("closed in the middle of a message")),
                };
            }
            self.input.extend_from_slice(&chunk[..n]);
        }
    }

    fn decode(&self) -> io::Result<Option<(ChatMessage, usize)>> {
        match self.encoding {
            Encoding::Json => match NdjsonCodec::<ChatLine>::new(MAX_FRAME).decode(&self.input) {
                Ok(decoded) => Ok(decoded.map(|(line, used)| {
                    let message = ChatMessage {
                        from: line.from,
                        content: line.content,
                        time: line.time,
                        room: String::new(),
                    };
                    (message, used)
                })),
                Err(e) => Err(invalid(&e.to_string())),
            },
            Encoding::Protobuf => LengthDelimited::new(MAX_FRAME)
                .decode(&self.input)
                .map_err(|e| invalid(&e.to_string())),
        }
    }

    /// Sets how long `recv` waits (`None`: forever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// A second handle on the same connection (e.g. one thread sends while
    /// another receives). Bytes buffered but not decoded stay with `self`.
    pub fn try_clone(&self) -> io::Result<ChatClient> {
        Ok(ChatClient {
            stream: self.stream.try_clone()?,
            encoding: self.encoding,
            input: Vec::new(),
        })
    }

    /// Closes the sending side: the server sees EOF and the member leaves.
    pub fn shutdown(&self) -> io::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Write)
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A message as a terminal shows it: `[HH:MM:SS from]: content`. Control
/// characters from the network are escaped, so no peer can move the
/// cursor, clear the screen or retitle the window.
///
/// ```
/// use sockloop::client::chat::display;
/// use sockloop::proto::chat::ChatMessage;
///
/// let msg = ChatMessage {
///     from: "ann".into(),
///     content: "hi\u{1b}[2J".into(),
///     time: "12:00:00".into(),
///     room: "lobby".into(),
/// };
/// assert_eq!(display(&msg), r"[12:00:00 ann]: hi\u{1b}[2J");
/// ```
pub fn display(message: &ChatMessage) -> String {
    format!(
        "[{} {}]: {}",
        escape(&message.time),
        escape(&message.from),
        escape(&message.content)
    )
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c.is_control() {
            true => out.extend(c.escape_unicode()),
            false => out.push(c),
        }
    }
    out
}
