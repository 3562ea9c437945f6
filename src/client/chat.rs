//! A blocking chat client, for `sockloop chat`, tests and scripts.

mod greeting;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::protocol::chat::{decode_message, encode, ChatMessage, Encoding};
use crate::TraceLines;

use greeting::{classify, excerpt, Greeting, GREETING_MAX};
pub use greeting::{GreetingError, GREETING_TIMEOUT};

/// Stands in for a peer address the socket no longer knows.
const UNKNOWN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));
/// The largest line or frame accepted from the server: a misbehaving one
/// cannot make the client buffer without bound.
const MAX_FRAME: usize = 1 << 20;

/// A member of a sockloop chat, in either encoding.
///
/// ```
/// use sockloop::client::chat::ChatClient;
/// use sockloop::protocol::chat::Encoding;
/// use sockloop::services::chat::{Chat, ChatConfig};
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
    /// `sockloop chat --trace`.
    trace: TraceLines,
}

impl ChatClient {
    /// Connects (trying each address `addr` resolves to in turn), reads
    /// the server's greeting, answers the prompt with `name` (empty: the
    /// server picks one) and returns the client with the server's welcome
    /// message.
    ///
    /// The greeting tells what the port is. Anything but this encoding's
    /// prompt within [`GREETING_TIMEOUT`] fails with a [`GreetingError`]
    /// inside the `io::Error`: the other encoding's prompt, a refusal
    /// (the server is full, the address banned), foreign bytes, silence.
    pub fn connect(
        addr: impl ToSocketAddrs,
        encoding: Encoding,
        name: &str,
    ) -> io::Result<(ChatClient, ChatMessage)> {
        ChatClient::connect_traced(addr, encoding, name, TraceLines::off())
    }

    /// As [`connect`](Self::connect), writing a line per connect, read,
    /// write and message decoded through `trace` (its clones, from
    /// [`try_clone`](Self::try_clone), each keep their own rate).
    pub fn connect_traced(
        addr: impl ToSocketAddrs,
        encoding: Encoding,
        name: &str,
        trace: TraceLines,
    ) -> io::Result<(ChatClient, ChatMessage)> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let stream = TcpStream::connect(&addrs[..])?;
        stream.set_nodelay(true)?;
        let mut client = ChatClient {
            stream,
            encoding,
            input: Vec::new(),
            trace,
        };
        let (local, peer) = (client.stream.local_addr()?, client.stream.peer_addr()?);
        let now = Instant::now();
        client
            .trace
            .line(now, format_args!("connect {local} to {peer}"));
        let deadline = Instant::now() + GREETING_TIMEOUT;
        let spoken = client.greeting(deadline)?;
        if spoken != encoding {
            return Err(GreetingError::WrongEncoding(spoken).into());
        }
        match encoding {
            Encoding::Json => {
                let line = format!("{name}\n");
                client.stream.write_all(line.as_bytes())?;
                let n = line.len();
                client
                    .trace
                    .line(Instant::now(), format_args!("write {n}B (sendto)"));
            }
            Encoding::Protobuf => client.send(name)?,
        }
        // The welcome, bounded like the greeting.
        client.set_read_timeout(Some(GREETING_TIMEOUT))?;
        let welcome = client
            .recv()?
            .ok_or_else(|| invalid("closed before the welcome"))?;
        client.set_read_timeout(None)?;
        Ok((client, welcome))
    }

    /// Reads until the greeting says which encoding the port speaks, or
    /// fails with the [`GreetingError`] that explains why it does not.
    /// What follows the prompt stays in `input`.
    fn greeting(&mut self, deadline: Instant) -> io::Result<Encoding> {
        let mut chunk = [0; GREETING_MAX];
        loop {
            if !self.input.is_empty() {
                match classify(&self.input) {
                    Greeting::Prompt(encoding, used) => {
                        self.input.drain(..used);
                        return Ok(encoding);
                    }
                    Greeting::System(message) => return Err(GreetingError::Refused(message).into()),
                    Greeting::Incomplete if self.input.len() < GREETING_MAX => {}
                    _ => return Err(self.unrecognised().into()),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.unrecognised().into());
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(0) if self.input.is_empty() => return Err(GreetingError::Closed.into()),
                Ok(0) => return Err(self.unrecognised().into()),
                Ok(n) => {
                    self.trace
                        .line(Instant::now(), format_args!("read {n}B (recvfrom)"));
                    self.input.extend_from_slice(&chunk[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(self.unrecognised().into())
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Why the greeting so far is none, once no more will come.
    fn unrecognised(&self) -> GreetingError {
        match self.input.is_empty() {
            true => GreetingError::NoPrompt(self.stream.peer_addr().unwrap_or(UNKNOWN)),
            false => GreetingError::NotChat(excerpt(&self.input)),
        }
    }

    /// Sends one message (or `/command`) to the room.
    pub fn send(&mut self, content: &str) -> io::Result<()> {
        let message = ChatMessage {
            content: content.into(),
            ..ChatMessage::default()
        };
        let mut out = Vec::new();
        encode(self.encoding, &message, &mut out);
        self.stream.write_all(&out)?;
        let n = out.len();
        self.trace
            .line(Instant::now(), format_args!("write {n}B (sendto)"));
        Ok(())
    }

    /// Waits for the next message; `None` once the server closed the
    /// connection. JSON members get no `room`.
    pub fn recv(&mut self) -> io::Result<Option<ChatMessage>> {
        loop {
            if let Some((message, used)) = self.decode()? {
                self.input.drain(..used);
                let what = format_args!("message of {used}B from {:?}", message.from);
                self.trace.line(Instant::now(), what);
                return Ok(Some(message));
            }
            let mut chunk = [0; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            self.trace
                .line(Instant::now(), format_args!("read {n}B (recvfrom)"));
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
        decode_message(self.encoding, MAX_FRAME, &self.input).map_err(|e| invalid(&e.to_string()))
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
            trace: self.trace.clone(),
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

/// A message as a terminal shows it: `[HH:MM:SS from]: content`, or
/// `[from]: content` without a time (a refusal). Control
/// characters from the network are escaped, so no peer can move the
/// cursor, clear the screen or retitle the window.
///
/// ```
/// use sockloop::client::chat::display;
/// use sockloop::protocol::chat::ChatMessage;
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
    // A refusal carries no time: the server ran no turn for it.
    let head = match message.time.is_empty() {
        true => escape(&message.from),
        false => format!("{} {}", escape(&message.time), escape(&message.from)),
    };
    format!("[{head}]: {}", escape(&message.content))
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
