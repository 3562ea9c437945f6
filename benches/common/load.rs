//! The closed-loop TCP echo load generator shared by the echo and shards
//! benches: N connections on one mio `Poll`, each keeping `depth` 64-byte
//! messages in flight, every echoed byte checked.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Size of one message.
pub const MSG: usize = 64;

/// The 64 bytes of message `seq` from client `id`: recognisable, and
/// different for every message so a stale or mixed-up echo is caught.
pub fn message(id: u32, seq: u64) -> [u8; MSG] {
    let mut m = [0u8; MSG];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m[8..12].copy_from_slice(&id.to_le_bytes());
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(id);
    for b in &mut m[12..] {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *b = (x >> 56) as u8;
    }
    m
}

struct TcpConn {
    stream: TcpStream,
    /// Bytes queued to send; `out[..written]` already went out.
    out: Vec<u8>,
    written: usize,
    /// Next message to queue, and the next one whose echo is expected.
    next_send: u64,
    next_recv: u64,
    /// Echoed bytes not yet checked (at most `depth` messages).
    input: Vec<u8>,
    got: usize,
    /// Bytes sent / echoed in total: an echo can never run ahead of the sends.
    sent_total: u64,
    echoed_total: u64,
}

/// A closed-loop TCP echo load on one mio `Poll`.
pub struct TcpLoad {
    poll: Poll,
    events: Events,
    conns: Vec<TcpConn>,
    completed: u64,
}

impl TcpLoad {
    /// Opens `conns` connections (TCP_NODELAY) to `addr` and sends `depth`
    /// messages on each.
    pub fn new(addr: SocketAddr, conns: usize, depth: usize) -> io::Result<TcpLoad> {
        assert!(depth >= 1, "at least one message in flight");
        let poll = Poll::new()?;
        let mut list = Vec::with_capacity(conns);
        for i in 0..conns {
            let std = std::net::TcpStream::connect(addr)?;
            std.set_nodelay(true)?;
            std.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(std);
            poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            list.push(TcpConn {
                stream,
                out: Vec::with_capacity(depth * MSG),
                written: 0,
                next_send: 0,
                next_recv: 0,
                input: vec![0; depth * MSG],
                got: 0,
                sent_total: 0,
                echoed_total: 0,
            });
        }
        let mut load = TcpLoad {
            poll,
            events: Events::with_capacity(1024),
            conns: list,
            completed: 0,
        };
        for (id, conn) in load.conns.iter_mut().enumerate() {
            for _ in 0..depth {
                conn.queue(id);
            }
            conn.send()?;
        }
        Ok(load)
    }

    /// Handles one batch of events (waiting at most `timeout`).
    pub fn step(&mut self, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            other => other?,
        }
        for event in self.events.iter() {
            let id = event.token().0;
            let conn = &mut self.conns[id];
            if event.is_writable() && conn.written < conn.out.len() {
                conn.send()?;
            }
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            if readable {
                self.completed += conn.receive(id)?;
            }
        }
        Ok(())
    }

    /// Round trips completed so far.
    pub fn completed(&self) -> u64 {
        self.completed
    }
}

impl TcpConn {
    fn queue(&mut self, id: usize) {
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        self.out
            .extend_from_slice(&message(id as u32, self.next_send));
        self.next_send += 1;
    }

    fn send(&mut self) -> io::Result<()> {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(n) => {
                    self.written += n;
                    self.sent_total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads echoes and checks them; returns the round trips completed (a
    /// new message is queued and sent for each). The buffer holds all that
    /// can be in flight (`depth` messages), so one read either gets all of it
    /// or comes up short because the socket is drained: no read is spent
    /// just to see `WouldBlock`.
    fn receive(&mut self, id: usize) -> io::Result<u64> {
        let n = loop {
            match self.stream.read(&mut self.input[self.got..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed",
                    ))
                }
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        self.echoed_total += n as u64;
        assert!(
            self.echoed_total <= self.sent_total,
            "echo of unsent bytes on conn {id}"
        );
        self.got += n;
        let whole = self.got / MSG;
        if whole == 0 {
            return Ok(0);
        }
        for k in 0..whole {
            assert_eq!(
                self.input[k * MSG..(k + 1) * MSG],
                message(id as u32, self.next_recv),
                "bad echo on conn {id} seq {}",
                self.next_recv
            );
            self.next_recv += 1;
            self.queue(id);
        }
        self.input.copy_within(whole * MSG..self.got, 0);
        self.got -= whole * MSG;
        self.send()?;
        Ok(whole as u64)
    }
}
