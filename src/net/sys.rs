//! Thin syscall wrappers: the only `unsafe` code in the crate.
//!
//! Linux gets `recvmmsg`/`sendmmsg`; other Unix systems get a loop of one
//! datagram per syscall with the same semantics, so callers never need `cfg`.
//!
//! Batches are capped at [`MAX_BATCH`] so that the pointer arrays the kernel
//! wants (`mmsghdr`, `iovec`, `sockaddr_storage`) can live on the stack of each
//! call. That means no allocation per call *and* no raw pointers kept between
//! calls, so every type the safe layer holds stays `Send`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// Most datagrams moved by one `recvmmsg`/`sendmmsg` call. Bounds the stack
/// used per call (about 13 KiB on 64-bit Linux).
pub const MAX_BATCH: usize = 64;

/// What the kernel told us about one received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes written into the slot (never more than the slot size).
    pub len: usize,
    /// Source address. A UDP socket always reports an IPv4 or IPv6 source;
    /// anything else (impossible in practice) shows up as `0.0.0.0:0`.
    pub from: SocketAddr,
    /// The datagram was larger than its slot and the tail was discarded.
    pub truncated: bool,
}

impl Default for RecvMeta {
    fn default() -> Self {
        RecvMeta {
            len: 0,
            from: UNKNOWN_ADDR,
            truncated: false,
        }
    }
}

const UNKNOWN_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// Raises the `RLIMIT_NOFILE` soft limit to the hard limit and returns the
/// soft limit now in force (`u64::MAX` for "unlimited"). Never lowers it.
///
/// An unlimited hard limit is not a usable soft limit for descriptors
/// (Linux rejects values above `fs.nr_open`), so it is treated as 2^20; on
/// Apple platforms the soft limit is capped at `OPEN_MAX` (10240), above which
/// `setrlimit` fails with `EINVAL`.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let current = nofile_limit()?;
    let mut target = current.rlim_max;
    if target == libc::RLIM_INFINITY {
        target = 1 << 20;
    }
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    {
        target = target.min(10240);
    }
    if current.rlim_cur == libc::RLIM_INFINITY || current.rlim_cur >= target {
        return Ok(rlim_to_u64(current.rlim_cur));
    }
    let wanted = libc::rlimit {
        rlim_cur: target,
        rlim_max: current.rlim_max,
    };
    // SAFETY: setrlimit only reads the fully initialised struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rlim_to_u64(target))
}

fn nofile_limit() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct we own and pass by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

/// Pins the calling thread to the `n`th CPU (modulo their number) of those
/// it may run on now, and returns that CPU's number.
///
/// Linux only (`sched_setaffinity`); elsewhere it fails with
/// [`io::ErrorKind::Unsupported`] and the thread stays where the scheduler
/// puts it.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn pin_current_thread(n: usize) -> io::Result<usize> {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: cpu_set_t is a plain bit array, for which all-zero bytes are a
    // valid (empty) set.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the kernel writes at most `size`
    // bytes into the set we own and pass by pointer.
    if unsafe { libc::sched_getaffinity(0, size, &mut allowed) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, so CPU_ISSET reads inside the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &allowed) })
        .collect();
    let Some(&cpu) = cpus.get(n % cpus.len().max(1)) else {
        return Err(io::Error::other("no CPU in this thread's affinity mask"));
    };
    // SAFETY: as above, all-zero bytes are an empty set.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` came from the set, so it is below CPU_SETSIZE; then the
    // kernel only reads the `size` bytes of the set we pass.
    if unsafe {
        libc::CPU_SET(cpu, &mut one);
        libc::sched_setaffinity(0, size, &one)
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(cpu)
}

/// Pinning is Linux only: see the Linux version.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn pin_current_thread(_n: usize) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "pinning threads needs Linux's sched_setaffinity",
    ))
}

// rlim_t is u64 on Linux and Apple but i64 on FreeBSD.
#[allow(clippy::unnecessary_cast)]
fn rlim_to_u64(v: libc::rlim_t) -> u64 {
    if v == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        v as u64
    }
}

/// Caps the bytes a TCP socket's kernel send queue holds *unsent*
/// (`TCP_NOTSENT_LOWAT`, Linux): once that many wait, the socket reports
/// itself full and writes return `WouldBlock`, so further output waits in
/// the server's own buffer, where the output limits see it. A no-op
/// elsewhere.
pub fn set_notsent_lowat(fd: std::os::fd::BorrowedFd<'_>, bytes: u32) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: setsockopt only reads `size_of::<c_int>()` bytes from the
        // pointer, which points at `value`, alive for the whole call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (fd, bytes);
    Ok(())
}

/// A TCP socket's `TCP_NOTSENT_LOWAT` (Linux; `u32::MAX`, the kernel's
/// "no cap", elsewhere). Only the tests read it back.
#[cfg(test)]
pub fn notsent_lowat(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<u32> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes (the size of
        // `value`, which we own) and updates `len`, also ours.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                std::ptr::from_mut(&mut value).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(value as u32)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        Ok(u32::MAX)
    }
}

#[cfg(target_os = "linux")]
pub use linux::{recv_batch, send_batch};
#[cfg(all(unix, not(target_os = "linux")))]
pub use portable::{recv_batch, send_batch};

#[cfg(target_os = "linux")]
mod linux {
    use super::{RecvMeta, MAX_BATCH, UNKNOWN_ADDR};
    use std::io;
    use std::mem::{self, size_of};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::ptr;

    /// Receives up to `min(out.len(), buf.len() / slot_size)` datagrams without
    /// blocking. `buf` is split into consecutive `slot_size` slots; datagram `i`
    /// lands in slot `i` and is described by `out[i]`.
    ///
    /// Returns how many were received, or `WouldBlock` if none were waiting.
    /// `Ok(0)` only when there is no room for even one datagram. Requests
    /// larger than [`MAX_BATCH`] take one `recvmmsg` per `MAX_BATCH`, stopping
    /// as soon as one comes back short. `EINTR` is retried internally.
    ///
    /// # Panics
    /// If `slot_size` is 0.
    pub fn recv_batch(
        fd: BorrowedFd<'_>,
        buf: &mut [u8],
        slot_size: usize,
        out: &mut [RecvMeta],
    ) -> io::Result<usize> {
        assert!(slot_size > 0, "slot_size must be non-zero");
        let slots = out.len().min(buf.len() / slot_size);
        let mut done = 0;
        while done < slots {
            let want = (slots - done).min(MAX_BATCH);
            let chunk = &mut buf[done * slot_size..(done + want) * slot_size];
            match recv_chunk(fd, chunk, slot_size, &mut out[done..done + want]) {
                Ok(n) => {
                    done += n;
                    if n < want {
                        break;
                    }
                }
                // Datagrams already taken must be handed out; an error that
                // is not WouldBlock after a full chunk is lost, which for UDP
                // only means one asynchronous ICMP report.
                Err(_) if done > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn recv_chunk(
        fd: BorrowedFd<'_>,
        bufs: &mut [u8],
        slot_size: usize,
        out: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let n = out.len();
        debug_assert!(n > 0 && n <= MAX_BATCH && bufs.len() == n * slot_size);
        // SAFETY: these are plain C structs for which all-zero bytes are a
        // valid value (null pointers, zero lengths and flags).
        let (mut names, mut iovs, mut hdrs): (
            [libc::sockaddr_storage; MAX_BATCH],
            [libc::iovec; MAX_BATCH],
            [libc::mmsghdr; MAX_BATCH],
        ) = unsafe { mem::zeroed() };
        for (i, slot) in bufs.chunks_exact_mut(slot_size).enumerate() {
            iovs[i].iov_base = slot.as_mut_ptr().cast();
            iovs[i].iov_len = slot.len();
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = ptr::addr_of_mut!(names[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = ptr::addr_of_mut!(iovs[i]);
            h.msg_iovlen = 1;
        }
        let got = loop {
            // SAFETY: hdrs[..n] point at iovecs and sockaddr_storages on this
            // stack frame, which outlive the call. Each iovec covers a distinct
            // `slot_size` slot of `bufs`, which is exclusively borrowed, and the
            // kernel writes at most iov_len / msg_namelen bytes through them.
            // A null timeout means none; MSG_DONTWAIT makes it non-blocking.
            let rc = unsafe {
                libc::recvmmsg(
                    fd.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                    ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        };
        for (i, meta) in out.iter_mut().enumerate().take(got) {
            let h = &hdrs[i];
            *meta = RecvMeta {
                // Without MSG_TRUNC in the call flags msg_len is the copied
                // length; min() only guards against a kernel surprise.
                len: (h.msg_len as usize).min(slot_size),
                from: from_sockaddr(&names[i], h.msg_hdr.msg_namelen).unwrap_or(UNKNOWN_ADDR),
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            };
        }
        Ok(got)
    }

    /// Sends up to [`MAX_BATCH`] datagrams taken from `msgs` in one
    /// `sendmmsg`, without blocking; the rest of the iterator is not consumed.
    ///
    /// Mirrors `sendmmsg`: if the first datagram fails its error is returned
    /// (`WouldBlock` when the socket buffer is full); if a later one fails,
    /// the count sent so far is returned and retrying from there yields that
    /// datagram's error. `Ok(0)` only for an empty iterator. `EINTR` is
    /// retried internally.
    pub fn send_batch<'a, I>(fd: BorrowedFd<'_>, msgs: I) -> io::Result<usize>
    where
        I: IntoIterator<Item = (SocketAddr, &'a [u8])>,
    {
        // SAFETY: all-zero bytes are a valid value for these plain C structs.
        let (mut names, mut iovs, mut hdrs): (
            [libc::sockaddr_storage; MAX_BATCH],
            [libc::iovec; MAX_BATCH],
            [libc::mmsghdr; MAX_BATCH],
        ) = unsafe { mem::zeroed() };
        let mut n = 0;
        for (to, data) in msgs.into_iter().take(MAX_BATCH) {
            let namelen = to_sockaddr(&to, &mut names[n]);
            // The kernel only reads through iov_base for sends; the *mut is
            // just what the C struct is declared with.
            iovs[n].iov_base = data.as_ptr() as *mut libc::c_void;
            iovs[n].iov_len = data.len();
            let h = &mut hdrs[n].msg_hdr;
            h.msg_name = ptr::addr_of_mut!(names[n]).cast();
            h.msg_namelen = namelen;
            h.msg_iov = ptr::addr_of_mut!(iovs[n]);
            h.msg_iovlen = 1;
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        loop {
            // SAFETY: hdrs[..n] point at addresses and iovecs on this stack
            // frame; each iovec covers a `&'a [u8]` that outlives this call.
            // The kernel only reads them, and writes msg_len into hdrs.
            let rc = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                )
            };
            if rc >= 0 {
                return Ok(rc as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    fn from_sockaddr(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
        let len = len as usize;
        match s.ss_family as libc::c_int {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the kernel stored a sockaddr_in, and
                // sockaddr_storage is sized and aligned for every sockaddr type.
                let a =
                    unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                let ip = Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
                Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let a =
                    unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                // Like std, flowinfo and scope id pass through unswapped.
                let port = u16::from_be(a.sin6_port);
                Some(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id).into())
            }
            _ => None,
        }
    }

    /// Writes `addr` into a zeroed `storage`; returns the length to pass on.
    fn to_sockaddr(addr: &SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_storage is sized and aligned for sockaddr_in,
                // and we hold the only reference to it.
                let s = unsafe {
                    &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                s.sin_family = libc::AF_INET as libc::sa_family_t;
                s.sin_port = a.port().to_be();
                s.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                // SAFETY: as above, for sockaddr_in6.
                let s = unsafe {
                    &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                s.sin6_port = a.port().to_be();
                s.sin6_flowinfo = a.flowinfo();
                s.sin6_addr.s6_addr = a.ip().octets();
                s.sin6_scope_id = a.scope_id();
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }
}

/// One datagram per syscall, same contract as the Linux functions. Built on
/// Linux too (for tests) so it cannot rot unnoticed.
#[cfg(any(test, all(unix, not(target_os = "linux"))))]
mod portable {
    use super::{RecvMeta, MAX_BATCH, UNKNOWN_ADDR};
    use socket2::{MaybeUninitSlice, SockAddr, SockRef};
    use std::io;
    use std::mem::MaybeUninit;
    use std::net::SocketAddr;
    use std::os::fd::BorrowedFd;

    /// See the Linux `recv_batch`: same contract, one `recvmsg` per datagram.
    pub fn recv_batch(
        fd: BorrowedFd<'_>,
        buf: &mut [u8],
        slot_size: usize,
        out: &mut [RecvMeta],
    ) -> io::Result<usize> {
        assert!(slot_size > 0, "slot_size must be non-zero");
        let sock = SockRef::from(&fd);
        let mut done = 0;
        for (slot, meta) in buf.chunks_exact_mut(slot_size).zip(out.iter_mut()) {
            // SAFETY: recvmsg only ever writes initialised bytes, so viewing
            // initialised memory as MaybeUninit cannot de-initialise it.
            let slot = unsafe { &mut *(slot as *mut [u8] as *mut [MaybeUninit<u8>]) };
            let mut iov = [MaybeUninitSlice::new(slot)];
            // recvmsg (not recvfrom) because only it reports MSG_TRUNC.
            let res = loop {
                match sock.recv_from_vectored_with_flags(&mut iov, libc::MSG_DONTWAIT) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            };
            match res {
                Ok((len, flags, from)) => {
                    *meta = RecvMeta {
                        len: len.min(slot_size),
                        from: from.as_socket().unwrap_or(UNKNOWN_ADDR),
                        truncated: flags.is_truncated(),
                    };
                    done += 1;
                }
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(done)
    }

    /// See the Linux `send_batch`: same contract, one `sendto` per datagram.
    pub fn send_batch<'a, I>(fd: BorrowedFd<'_>, msgs: I) -> io::Result<usize>
    where
        I: IntoIterator<Item = (SocketAddr, &'a [u8])>,
    {
        let sock = SockRef::from(&fd);
        let mut sent = 0;
        for (to, data) in msgs.into_iter().take(MAX_BATCH) {
            let to = SockAddr::from(to);
            let res = loop {
                match sock.send_to_with_flags(data, &to, libc::MSG_DONTWAIT) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            };
            match res {
                Ok(_) => sent += 1,
                Err(e) if sent == 0 => return Err(e),
                // Like sendmmsg: report progress; the retry hits this again.
                Err(_) => break,
            }
        }
        Ok(sent)
    }
}

/// One `recv` on a stream socket, without blocking on a non-blocking one.
///
/// On Linux it is the raw `recvfrom` system call (`libc::syscall`), not
/// glibc's `recv`: that wrapper is a thread-cancellation point, which costs
/// two atomic updates of the thread's cancel state around every call in a
/// multi-threaded process, and sockloop never cancels threads. `EINTR` and
/// `EAGAIN` come back as errors, as from `read`.
pub(crate) fn recv(fd: std::os::fd::BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    #[cfg(target_os = "linux")]
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which
    // we borrow mutably for the call; null address pointers ask for no
    // source address.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
            0,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    #[cfg(not(target_os = "linux"))]
    // SAFETY: as above, through libc's `recv`.
    let rc = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) } as i64;
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// One `send` on a stream socket (`MSG_NOSIGNAL` where there is one: a
/// peer gone is an `EPIPE` error, not a signal), without the cancellation
/// wrapper on Linux, as [`recv`].
pub(crate) fn send(fd: std::os::fd::BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    #[cfg(target_os = "linux")]
    // SAFETY: the kernel reads at most `bytes.len()` bytes from `bytes`,
    // borrowed for the call; no destination address is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd.as_raw_fd(),
            bytes.as_ptr(),
            bytes.len(),
            libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    #[cfg(not(target_os = "linux"))]
    // SAFETY: as above, through libc's `send` (SIGPIPE is ignored by the
    // Rust runtime on these systems).
    let rc = unsafe { libc::send(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) } as i64;
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::{AsFd, BorrowedFd};
    use std::time::Duration;

    type RecvFn = fn(BorrowedFd<'_>, &mut [u8], usize, &mut [RecvMeta]) -> io::Result<usize>;
    type SendFn<'f> = &'f dyn Fn(BorrowedFd<'_>, &[(SocketAddr, &[u8])]) -> io::Result<usize>;

    #[test]
    fn raise_nofile_limit_never_lowers_and_reaches_hard() {
        let before = nofile_limit().unwrap();
        let now = raise_nofile_limit().unwrap();
        assert!(now >= rlim_to_u64(before.rlim_cur));
        let after = nofile_limit().unwrap();
        assert_eq!(now, rlim_to_u64(after.rlim_cur));
        if before.rlim_max != libc::RLIM_INFINITY && cfg!(target_os = "linux") {
            assert_eq!(after.rlim_cur, before.rlim_max);
        }
        // Idempotent.
        assert_eq!(raise_nofile_limit().unwrap(), now);
    }

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// Both implementations must share the sendmmsg contract exactly.
    fn check_send(send: SendFn<'_>) {
        let (tx, rx) = pair();
        let to = rx.local_addr().unwrap();
        let big = vec![0u8; 65508];
        let msgs: [(SocketAddr, &[u8]); 3] = [(to, b"a"), (to, &big), (to, b"c")];
        assert_eq!(send(tx.as_fd(), &msgs).unwrap(), 1);
        let err = send(tx.as_fd(), &msgs[1..]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE));
        assert_eq!(send(tx.as_fd(), &msgs[2..]).unwrap(), 1);
        assert_eq!(send(tx.as_fd(), &[]).unwrap(), 0);
        let mut buf = [0u8; 8];
        rx.set_nonblocking(false).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for want in [b"a", b"c"] {
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&want[..], tx.local_addr().unwrap()));
        }
    }

    fn check_recv(recv: RecvFn) {
        let (tx, rx) = pair();
        let to = rx.local_addr().unwrap();
        let mut buf = [0u8; 4 * 8];
        let mut meta = [RecvMeta::default(); 4];
        let err = recv(rx.as_fd(), &mut buf, 8, &mut meta).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        for d in [&b"12345"[..], b"0123456789abcdefghij", b"abcdefgh"] {
            tx.send_to(d, to).unwrap();
        }
        let mut got = 0;
        for _ in 0..5000 {
            match recv(rx.as_fd(), &mut buf[got * 8..], 8, &mut meta[got..]) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            if got == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got, 3);
        let from = tx.local_addr().unwrap();
        let m = |len, truncated| RecvMeta {
            len,
            from,
            truncated,
        };
        assert_eq!(meta[..3], [m(5, false), m(8, true), m(8, false)]);
        assert_eq!(&buf[..24], b"12345\0\0\x0001234567abcdefgh");
    }

    #[test]
    fn portable_fallback_send_and_recv() {
        check_send(&|fd, m| portable::send_batch(fd, m.iter().copied()));
        check_recv(portable::recv_batch);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn mmsg_send_and_recv() {
        check_send(&|fd, m| linux::send_batch(fd, m.iter().copied()));
        check_recv(linux::recv_batch);
    }
}
