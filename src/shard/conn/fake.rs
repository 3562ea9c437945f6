//! An in-memory socket for the connection's tests: what the peer sent and
//! whether its FIN came, how much one read returns, how much room the send
//! side has and how much one write takes, what reached the peer, and how
//! many read and write calls were made. Nothing in it waits or fails by
//! chance, so every test of it is exact.

use std::collections::VecDeque;
use std::io::{self, Write};

use super::transport::Received;

#[derive(Debug, Default)]
pub(crate) struct Fake {
    /// Bytes from the peer that arrived and are not read yet.
    pub(crate) inbox: VecDeque<u8>,
    /// The peer's FIN arrived, after `inbox`.
    pub(crate) peer_fin: bool,
    /// The most one read returns (1: a byte at a time); 0: no limit.
    pub(crate) read_chunk: usize,
    /// What the send side takes before it is full; the peer reading frees
    /// room (`peer_reads`).
    pub(crate) room: usize,
    /// The most one write takes; 0: no limit.
    pub(crate) write_chunk: usize,
    /// Everything written, in order: what the peer receives.
    pub(crate) sent: Vec<u8>,
    /// Our FIN went out.
    pub(crate) fin_sent: bool,
    /// Closing sends a reset instead of a FIN (`SO_LINGER` zero).
    pub(crate) reset: bool,
    /// Stands for a TLS session in its handshake.
    pub(crate) handshaking: bool,
    /// Ciphertext bytes from the peer not read yet: part of a TLS record,
    /// which gives no plaintext (read before `inbox`).
    pub(crate) ciphertext: usize,
    /// Stands for a TLS session holding part of a record: set once such
    /// ciphertext is read, cleared by a read of plaintext (the record
    /// completed).
    pub(crate) partial_record: bool,
    /// Calls made, as a socket would count syscalls.
    pub(crate) reads: usize,
    pub(crate) writes: usize,
}

impl Fake {
    /// A socket whose send side takes `room` bytes.
    pub(crate) fn with_room(room: usize) -> Fake {
        Fake {
            room,
            ..Fake::default()
        }
    }

    /// Stands for a plain socket: no TLS handshake or record in progress
    /// (a read gives the service every byte it takes off the socket).
    pub(crate) fn plain(&self) -> bool {
        !self.handshaking && self.ciphertext == 0 && !self.partial_record
    }

    /// The peer sends `bytes`.
    pub(crate) fn arrive(&mut self, bytes: &[u8]) {
        assert!(!self.peer_fin, "bytes after the peer's FIN");
        self.inbox.extend(bytes);
    }

    /// The peer sends `n` bytes of a TLS record, not all of it.
    pub(crate) fn arrive_partial_record(&mut self, n: usize) {
        assert!(!self.peer_fin, "bytes after the peer's FIN");
        self.ciphertext += n;
    }

    /// The peer reads `n` bytes of what was sent, which frees as much room.
    pub(crate) fn peer_reads(&mut self, n: usize) {
        self.room += n;
    }

    pub(crate) fn read(&mut self, out: &mut [u8]) -> io::Result<Received> {
        self.reads += 1;
        if self.ciphertext > 0 {
            let n = self.ciphertext.min(out.len());
            self.ciphertext -= n;
            self.partial_record = true;
            return Ok(Received::Bytes {
                plain: 0,
                wire: n,
                drained: self.ciphertext == 0,
            });
        }
        self.partial_record = false;
        if self.inbox.is_empty() {
            return match self.peer_fin {
                true => Ok(Received::Eof),
                false => Err(io::ErrorKind::WouldBlock.into()),
            };
        }
        let chunk = if self.read_chunk == 0 {
            usize::MAX
        } else {
            self.read_chunk
        };
        let n = out.len().min(self.inbox.len()).min(chunk);
        for (slot, byte) in out.iter_mut().zip(self.inbox.drain(..n)) {
            *slot = byte;
        }
        Ok(Received::Bytes {
            plain: n,
            wire: n,
            drained: n < out.len(),
        })
    }
}

impl Write for Fake {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.writes += 1;
        if self.fin_sent {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let chunk = if self.write_chunk == 0 {
            usize::MAX
        } else {
            self.write_chunk
        };
        let n = bytes.len().min(self.room).min(chunk);
        self.sent.extend_from_slice(&bytes[..n]);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
