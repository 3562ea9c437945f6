//! What moves a connection's bytes: a plain TCP socket, or one with a TLS
//! session in front of it (and, in tests, an in-memory fake).
//!
//! A transport reads, writes, flushes TLS records and shuts down, and says
//! how many bytes each call moved; it counts nothing, holds no buffer and
//! knows no deadline. When to call it, and what the bytes mean, is the
//! connection state's business (`state.rs`, `read.rs`).
//!
//! An enum rather than a trait object: the hot path matches on a tag
//! instead of calling through a vtable, and the fake variant exists only in
//! test builds.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use socket2::SockRef;

use crate::net::sys;
use crate::net::tls::{TlsFailure, TlsSession, CIPHERTEXT_READ};
use crate::service::CloseReason;

#[derive(Debug)]
pub(crate) enum Transport {
    /// The stream and its descriptor, kept at hand: mio's `as_raw_fd` is
    /// a call that does not inline, on the path every echo takes twice.
    /// Build it with [`Transport::plain`], so the two always match.
    Plain(TcpStream, RawFd),
    /// The session is boxed: a plain connection's slab entry stays small.
    Tls(TcpStream, Box<TlsSession>),
    #[cfg(test)]
    Fake(Box<super::fake::Fake>),
}

/// What one read produced.
#[derive(Debug)]
pub(crate) enum Received {
    /// The peer closed its sending side (FIN, or TLS close_notify).
    Eof,
    /// The peer's TLS failed and its alert is sent: close the connection.
    /// (Boxed: the cold path should not widen every read's result.)
    TlsFailed(Box<TlsFailure>),
    Bytes {
        /// Bytes for the service, at the front of the slice read into.
        plain: usize,
        /// Bytes taken off the socket (the same as `plain` without TLS).
        wire: usize,
        /// The socket gave less than asked: nothing more to read now.
        drained: bool,
    },
}

impl Transport {
    /// A plain TCP transport over `stream`.
    pub(crate) fn plain(stream: TcpStream) -> Transport {
        let fd = stream.as_raw_fd();
        Transport::Plain(stream, fd)
    }

    /// One read into `out`, asking the socket for at most `asked` bytes.
    /// What TLS writes meanwhile (handshake replies, an alert) is added to
    /// `sent`, also when the call fails.
    #[inline]
    pub(crate) fn read(
        &mut self,
        out: &mut [u8],
        asked: usize,
        sent: &mut usize,
    ) -> io::Result<Received> {
        match self {
            Transport::Plain(_, fd) => plain_read(*fd, &mut out[..asked]),
            Transport::Tls(stream, tls) => tls_read(stream, tls, out, asked, sent),
            #[cfg(test)]
            Transport::Fake(fake) => fake.read(&mut out[..asked]),
        }
    }

    /// One read of the socket's bytes as they are, TLS or not: a PROXY
    /// header comes before the TLS handshake.
    pub(crate) fn read_raw(&mut self, out: &mut [u8]) -> io::Result<Received> {
        match self {
            Transport::Plain(_, fd) => plain_read(*fd, out),
            Transport::Tls(stream, _) => plain_read(stream.as_raw_fd(), out),
            #[cfg(test)]
            Transport::Fake(fake) => fake.read(out),
        }
    }

    /// Over TLS, hands the bytes that followed a PROXY header to the TLS
    /// session (its handshake replies go out at once) and returns true;
    /// without TLS returns false: they are the service's.
    pub(crate) fn take_ciphertext(
        &mut self,
        bytes: &[u8],
        sent: &mut usize,
    ) -> io::Result<Result<bool, Box<TlsFailure>>> {
        let Transport::Tls(stream, tls) = self else {
            return Ok(Ok(false));
        };
        if let Err(failure) = tls.receive(bytes) {
            let _ = tls.write_tls(stream, sent);
            return Ok(Err(Box::new(failure)));
        }
        tls.write_tls(stream, sent)?;
        Ok(Ok(true))
    }

    /// Writes `bytes` as far as the socket takes them and returns how many
    /// it took. Over TLS they go to rustls (up to its buffer limit) and its
    /// records to the socket. Bytes put on the wire are added to `sent`.
    #[inline(always)]
    pub(crate) fn write(&mut self, bytes: &[u8], sent: &mut usize) -> io::Result<usize> {
        match self {
            Transport::Plain(_, fd) => {
                let n = plain_write(*fd, bytes)?;
                *sent += n;
                Ok(n)
            }
            Transport::Tls(stream, tls) => tls_write(stream, tls, bytes, sent),
            #[cfg(test)]
            Transport::Fake(fake) => {
                let n = write_until_full(|b| io::Write::write(&mut **fake, b), bytes)?;
                *sent += n;
                Ok(n)
            }
        }
    }

    /// The outcome of an outbound connect once the socket reported
    /// readiness: `Ok(true)` connected, `Ok(false)` not yet (a spurious
    /// wake-up), `Err` failed, with the reason (refused, unreachable).
    pub(crate) fn connect_outcome(&mut self) -> io::Result<bool> {
        let Some(stream) = self.stream() else {
            return Ok(true); // a fake is connected from the start
        };
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        match stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes pending TLS records until the socket is full (nothing to do
    /// without TLS).
    pub(crate) fn flush(&mut self, sent: &mut usize) -> io::Result<()> {
        match self {
            Transport::Tls(stream, tls) => tls.write_tls(stream, sent),
            _ => Ok(()),
        }
    }

    /// Shuts down our sending side: true once the FIN is sent. Over TLS,
    /// close_notify goes first, and false means it still waits for the
    /// socket (call again after the next flush).
    pub(crate) fn shut_write(&mut self, sent: &mut usize) -> io::Result<bool> {
        match self {
            Transport::Plain(stream, _) => stream.shutdown(Shutdown::Write).map(|()| true),
            Transport::Tls(stream, tls) => {
                tls.close_notify();
                tls.write_tls(stream, sent)?;
                if tls.wants_write() {
                    return Ok(false);
                }
                stream.shutdown(Shutdown::Write).map(|()| true)
            }
            #[cfg(test)]
            Transport::Fake(fake) => {
                fake.fin_sent = true;
                Ok(true)
            }
        }
    }

    /// The last act before the socket closes for `reason`. A peer closed
    /// for not reading (output limits, write timeout) gets a reset: its
    /// unsent bytes are dropped and the kernel frees their memory at once,
    /// where a FIN would queue behind them and hold it for as long as the
    /// peer keeps its window shut. After a socket error there is nothing to
    /// send. Any other close is graceful: a TLS peer reads our end as clean
    /// only after close_notify (best effort; the FIN follows).
    pub(crate) fn before_close(&mut self, reason: CloseReason, sent: &mut usize) {
        if aborts(reason) {
            return self.abort();
        }
        if reason == CloseReason::Error {
            return;
        }
        if let Transport::Tls(stream, tls) = self {
            tls.close_notify();
            let _ = tls.write_tls(stream, sent);
        }
    }

    /// Makes closing the socket send a reset (`SO_LINGER` with a zero
    /// timeout) instead of a FIN behind the unsent data.
    fn abort(&mut self) {
        match self {
            Transport::Plain(stream, _) | Transport::Tls(stream, _) => {
                if let Err(e) = SockRef::from(&*stream).set_linger(Some(Duration::ZERO)) {
                    log::debug!("SO_LINGER before an abort: {e}");
                }
            }
            #[cfg(test)]
            Transport::Fake(fake) => fake.reset = true,
        }
    }

    /// TLS records wait for the socket.
    #[inline]
    pub(crate) fn output_pending(&self) -> bool {
        match self {
            Transport::Tls(_, tls) => tls.wants_write(),
            _ => false,
        }
    }

    /// Input that opens a frame before any plaintext came of it: a TLS
    /// handshake in progress, or a TLS record partly received.
    #[inline]
    pub(crate) fn input_open(&self) -> bool {
        match self {
            Transport::Plain(..) => false,
            Transport::Tls(_, tls) => tls.is_handshaking() || tls.record_incomplete(),
            #[cfg(test)]
            Transport::Fake(fake) => fake.handshaking || fake.partial_record,
        }
    }

    /// A TLS session still in its handshake.
    #[inline]
    pub(crate) fn handshaking(&self) -> bool {
        match self {
            Transport::Plain(..) => false,
            Transport::Tls(_, tls) => tls.is_handshaking(),
            #[cfg(test)]
            Transport::Fake(fake) => fake.handshaking,
        }
    }

    /// The fake socket of a test.
    #[cfg(test)]
    pub(crate) fn fake(&mut self) -> &mut super::fake::Fake {
        match self {
            Transport::Fake(fake) => fake,
            _ => panic!("not a fake transport"),
        }
    }

    fn stream(&mut self) -> Option<&mut TcpStream> {
        match self {
            Transport::Plain(stream, _) | Transport::Tls(stream, _) => Some(stream),
            #[cfg(test)]
            Transport::Fake(_) => None,
        }
    }
}

/// The poller watches the socket underneath (a fake has none).
impl Source for Transport {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.stream()
            .map_or(Ok(()), |s| s.register(registry, token, interest))
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.stream()
            .map_or(Ok(()), |s| s.reregister(registry, token, interest))
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.stream().map_or(Ok(()), |s| s.deregister(registry))
    }
}

/// Closes that reset the connection: the peer was closed for not reading
/// what it was sent, so nothing left in the kernel's queue is worth its
/// memory.
pub(crate) fn aborts(reason: CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::OutputHardLimit | CloseReason::OutputSoftLimit | CloseReason::WriteTimeout
    )
}

/// One read of a plain socket (its descriptor `fd`) into `out`.
#[inline(always)]
pub(super) fn plain_read(fd: RawFd, out: &mut [u8]) -> io::Result<Received> {
    Ok(match sys::recv(fd, out)? {
        0 => Received::Eof,
        n => Received::Bytes {
            plain: n,
            wire: n,
            drained: n < out.len(),
        },
    })
}

/// Decrypted bytes waiting in rustls come first; otherwise one read of
/// ciphertext, handed to rustls, whose replies go out at once. (Out of
/// line: a plain read's path stays short.)
#[inline(never)]
fn tls_read(
    stream: &mut TcpStream,
    tls: &mut TlsSession,
    out: &mut [u8],
    asked: usize,
    sent: &mut usize,
) -> io::Result<Received> {
    let plain = tls.read_plaintext(out);
    if plain > 0 {
        return Ok(Received::Bytes {
            plain,
            wire: 0,
            drained: false,
        });
    }
    if tls.peer_closed() {
        return Ok(Received::Eof);
    }
    let cap = asked.min(CIPHERTEXT_READ);
    let wire = sys::recv(stream.as_raw_fd(), &mut out[..cap])?;
    if wire == 0 {
        return Ok(Received::Eof);
    }
    if let Err(failure) = tls.receive(&out[..wire]) {
        // rustls queued an alert saying why: send it, then give up.
        let _ = tls.write_tls(stream, sent);
        return Ok(Received::TlsFailed(Box::new(failure)));
    }
    tls.write_tls(stream, sent)?; // handshake replies
    let plain = tls.read_plaintext(out);
    if plain == 0 && tls.peer_closed() {
        return Ok(Received::Eof); // close_notify: no readiness edge will follow
    }
    Ok(Received::Bytes {
        plain,
        wire,
        drained: wire < cap,
    })
}

/// One `send` of `bytes` to a plain socket (its descriptor `fd`): a short
/// write means the socket is full, as in [`write_until_full`], whose loop
/// only an interrupted call needs (out of line, with every other error).
#[inline(always)]
fn plain_write(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    if bytes.is_empty() {
        return Ok(0);
    }
    match sys::send(fd, bytes) {
        Ok(n) => Ok(n),
        Err(e) => plain_write_failed(fd, bytes, e),
    }
}

/// [`plain_write`]'s `send` failed with `e`: a full socket took nothing,
/// an interrupted call is made again.
#[inline(never)]
fn plain_write_failed(fd: RawFd, bytes: &[u8], e: io::Error) -> io::Result<usize> {
    match e.kind() {
        io::ErrorKind::WouldBlock => Ok(0),
        io::ErrorKind::Interrupted => write_until_full(|b| sys::send(fd, b), bytes),
        _ => Err(e),
    }
}

/// [`Transport::write`] over TLS: the plaintext goes to rustls (up to its
/// buffer limit), its records to the socket. (Out of line: a plain
/// write's path stays short.)
#[inline(never)]
fn tls_write(
    stream: &mut TcpStream,
    tls: &mut TlsSession,
    bytes: &[u8],
    sent: &mut usize,
) -> io::Result<usize> {
    tls.write_tls(stream, sent)?;
    if tls.wants_write() {
        return Ok(0); // the socket is full: keep the plaintext
    }
    let taken = tls.write_plaintext(bytes);
    tls.write_tls(stream, sent)?;
    Ok(taken)
}

/// Writes until `bytes` are all written or the socket is full; returns how
/// many were written. A short write means the socket buffer is full, so it
/// stops there rather than paying a syscall to see `WouldBlock`.
#[inline(always)]
fn write_until_full(
    mut write: impl FnMut(&[u8]) -> io::Result<usize>,
    bytes: &[u8],
) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match write(&bytes[written..]) {
            Ok(n) => {
                written += n;
                if written < bytes.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
