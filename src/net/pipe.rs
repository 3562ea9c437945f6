//! A pipe to move a stream's bytes through the kernel without copying
//! them into user space: `splice(2)` from a TCP socket into the pipe takes
//! references to the received pages, and from the pipe into a TCP socket
//! sends those pages by reference.
//!
//! One pipe serves many connections in turn: whoever fills it empties it
//! before anyone else uses it ([`Pipe::is_empty`] says whether that held).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use super::sys;

/// The capacity asked for a pipe (`F_SETPIPE_SZ`): 64 page slots, so a
/// 64 KiB read fits even when it arrives as pieces smaller than a page. The
/// kernel refuses more than `fs.pipe-max-size` (1 MiB by default) to an
/// unprivileged process; a refusal keeps the default (16 slots).
pub const PIPE_SIZE: usize = 256 * 1024;

/// Both ends of a non-blocking, close-on-exec pipe, and what it holds.
///
/// ```
/// use sockloop::net::pipe::Pipe;
///
/// let pipe = Pipe::new()?;
/// assert!(pipe.is_empty());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes spliced in and not yet out.
    held: usize,
}

impl Pipe {
    /// A new empty pipe of [`PIPE_SIZE`] (or the system's default size,
    /// if that is refused). Fails off Linux, or out of descriptors.
    pub fn new() -> io::Result<Pipe> {
        let (read, write) = sys::pipe()?;
        if let Err(e) = sys::set_pipe_size(write.as_fd(), PIPE_SIZE) {
            log::debug!("pipe size {PIPE_SIZE}: {e}; keeping the default");
        }
        Ok(Pipe {
            read,
            write,
            held: 0,
        })
    }

    /// Nothing waits in the pipe.
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Bytes waiting in the pipe.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Splices up to `len` bytes from the stream socket `from` into the
    /// pipe; 0 is the socket's EOF.
    pub fn fill_from(&mut self, from: RawFd, len: usize) -> io::Result<usize> {
        let n = sys::splice(from, self.write.as_raw_fd(), len)?;
        self.held += n;
        Ok(n)
    }

    /// Splices up to `len` of the bytes held into the stream socket `to`.
    pub fn empty_into(&mut self, to: RawFd, len: usize) -> io::Result<usize> {
        let n = sys::splice(self.read.as_raw_fd(), to, len.min(self.held))?;
        self.held -= n;
        Ok(n)
    }

    /// Copies held bytes out into `buf` (a plain `read`): the way out for
    /// what a socket did not take.
    pub fn read_into(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len().min(self.held);
        let n = sys::read(self.read.as_fd(), &mut buf[..len])?;
        self.held -= n;
        Ok(n)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }

    #[test]
    fn bytes_go_socket_to_pipe_to_socket_and_the_rest_is_read_out() {
        let (mut client, server) = pair();
        server.set_nonblocking(true).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&data[..40_000]).unwrap();
        let mut pipe = Pipe::new().unwrap();
        let mut moved = 0;
        while moved < 40_000 {
            match pipe.fill_from(server.as_raw_fd(), 40_000 - moved) {
                Ok(n) => moved += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(pipe.held(), 40_000);
        assert_eq!(pipe.empty_into(server.as_raw_fd(), 30_000).unwrap(), 30_000);
        assert_eq!(pipe.held(), 10_000);
        let mut rest = vec![0; 20_000];
        assert_eq!(pipe.read_into(&mut rest).unwrap(), 10_000);
        assert!(pipe.is_empty());
        let mut echoed = vec![0; 30_000];
        client.read_exact(&mut echoed).unwrap();
        assert!(echoed == data[..30_000]);
        assert!(rest[..10_000] == data[30_000..40_000]);
    }

    #[test]
    fn an_empty_socket_would_block_and_a_closed_one_reads_eof() {
        let (client, server) = pair();
        server.set_nonblocking(true).unwrap();
        let mut pipe = Pipe::new().unwrap();
        let e = pipe.fill_from(server.as_raw_fd(), 1024).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(client);
        let mut eof = Err(io::ErrorKind::WouldBlock.into());
        for _ in 0..1000 {
            eof = pipe.fill_from(server.as_raw_fd(), 1024);
            if eof.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(eof.unwrap(), 0);
        assert!(pipe.is_empty());
    }

    #[test]
    fn a_descriptor_that_cannot_splice_is_refused() {
        // A pipe's own read end is no source for a splice into it.
        let mut pipe = Pipe::new().unwrap();
        let e = pipe.fill_from(pipe.read.as_raw_fd(), 10).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        assert!(pipe.is_empty());
    }
}
