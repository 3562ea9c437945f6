//! Batched UDP I/O for the event loop: [`RecvBatch`] drains many datagrams per
//! syscall into preallocated slots, [`SendQueue`] holds datagrams the socket
//! could not take yet and flushes them in batches on writable events.
//!
//! Both allocate once, in `new`, and never again, so memory per socket is
//! fixed no matter how much traffic passes through. Each lives in its own
//! file (`recv_batch.rs`, `send_queue.rs`); this module is their public
//! path, and holds the tests that use the two together.

pub use super::recv_batch::{Datagram, RecvBatch};
pub use super::send_queue::{FlushOutcome, QueueFull, SendQueue};

/// Loopback sockets and payloads for the tests of both halves.
#[cfg(test)]
pub(super) mod testing {
    use super::RecvBatch;
    use mio::net::UdpSocket;
    use std::io;
    use std::net::SocketAddr;
    use std::time::Duration;

    const MAX_WAIT_MS: u32 = 5000;

    pub(crate) fn bind(addr: &str) -> UdpSocket {
        UdpSocket::bind(addr.parse().unwrap()).unwrap()
    }

    pub(crate) fn addr(s: &UdpSocket) -> SocketAddr {
        s.local_addr().unwrap()
    }

    /// Receives until `want` datagrams arrived (or ~5 s passed, which fails
    /// the caller's count check). Returns them and the largest single batch.
    pub(crate) fn recv_n(
        batch: &mut RecvBatch,
        rx: &UdpSocket,
        want: usize,
    ) -> (Vec<(SocketAddr, Vec<u8>, bool)>, usize) {
        let mut got = Vec::new();
        let mut largest = 0;
        let mut waited = 0;
        while got.len() < want && waited < MAX_WAIT_MS {
            match batch.recv(rx) {
                Ok(n) => {
                    assert_eq!(n, batch.len());
                    largest = largest.max(n);
                    got.extend(batch.iter().map(|d| (d.from, d.data.to_vec(), d.truncated)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                    waited += 1;
                }
                Err(e) => panic!("recv failed: {e}"),
            }
        }
        (got, largest)
    }

    pub(crate) fn payload(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use mio::net::UdpSocket;

    #[test]
    fn public_types_are_send() {
        fn send<T: Send>() {}
        send::<RecvBatch>();
        send::<SendQueue>();
        send::<Datagram<'static>>();
        send::<FlushOutcome>();
        send::<QueueFull>();
    }

    #[test]
    fn ipv6_recv_and_send_queue() {
        let Ok(rx) = UdpSocket::bind("[::1]:0".parse().unwrap()) else {
            eprintln!("skipping: no IPv6 loopback");
            return;
        };
        let txs = [bind("[::1]:0"), bind("[::1]:0")];
        let mut expected = Vec::new();
        let mut q = SendQueue::new(16, 4096);
        for i in 0..6 {
            let data = payload(i, 100 + i);
            q.push(addr(&rx), &data).unwrap();
            expected.push((addr(&txs[0]), data.clone(), false));
            // The other sender goes through plain send_to for contrast.
            txs[1].send_to(&data, addr(&rx)).unwrap();
            expected.push((addr(&txs[1]), data, false));
        }
        let flushed = q.flush(&txs[0]);
        assert_eq!(
            flushed,
            FlushOutcome {
                sent: 6,
                dropped_errors: 0,
                would_block: false
            }
        );
        let mut batch = RecvBatch::new(16, 512);
        let (mut got, _) = recv_n(&mut batch, &rx, 12);
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn send_queue_memory_fixed_across_real_flushes() {
        let tx = bind("127.0.0.1:0");
        let rx = bind("127.0.0.1:0");
        let mut q = SendQueue::new(32, 4096);
        let cap = q.arena_capacity();
        let mut batch = RecvBatch::new(64, 512);
        for cycle in 0..200 {
            let mut n = 0;
            while q
                .push(addr(&rx), &payload(cycle + n, 50 + (n * 37) % 300))
                .is_ok()
            {
                n += 1;
            }
            assert_eq!(
                q.flush(&tx),
                FlushOutcome {
                    sent: n,
                    dropped_errors: 0,
                    would_block: false
                }
            );
            assert_eq!(recv_n(&mut batch, &rx, n).0.len(), n);
        }
        assert_eq!(q.arena_capacity(), cap);
    }
}
