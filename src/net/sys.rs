//! Thin syscall wrappers: the only `unsafe` code in the crate.
//!
//! Linux gets `recvmmsg`/`sendmmsg`; other Unix systems get a loop of one
//! datagram per syscall with the same semantics, so callers never need `cfg`.
//!
//! Receiving keeps its pointer arrays (`mmsghdr`, `iovec`,
//! `sockaddr_storage`, one each per slot) in [`RecvSlots`], built once per
//! batch of slots and pointing into the slots' own buffer: a call resets only
//! the field the kernel overwrote (`msg_namelen` of the datagrams it
//! delivered), instead of zeroing and rebuilding 13 KiB of arrays per call.
//! Sending builds its arrays on the stack, capped at [`MAX_BATCH`], and
//! initialises only the entries it uses.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
#[cfg(target_os = "linux")]
use std::os::fd::FromRawFd;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// Most datagrams moved by one `sendmmsg` call. Bounds the stack used per
/// call (about 13 KiB on 64-bit Linux, never zeroed as a whole).
pub const MAX_BATCH: usize = 64;

/// Most datagrams one `recvmmsg` call asks for: the kernel's `UIO_MAXIOV`,
/// past which it would clamp the request anyway.
pub const MAX_RECV_BATCH: usize = 1024;

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

/// Asks the kernel to `SIGKILL` the calling process when the thread that
/// started it exits (Linux `PR_SET_PDEATHSIG`), so that a worker never
/// outlives its supervisor, nor a `bench hold` child its parent: each
/// spawns its children from the thread that lives as long as it does. A
/// parent that exited before the call is not noticed: compare
/// `std::os::unix::process::parent_id()` afterwards. Elsewhere it fails
/// with [`io::ErrorKind::Unsupported`].
#[cfg(any(target_os = "linux", target_os = "android"))]
#[cfg_attr(not(any(feature = "signals", feature = "client")), allow(dead_code))]
pub(crate) fn die_with_parent() -> io::Result<()> {
    let signal = libc::SIGKILL as libc::c_ulong;
    // SAFETY: PR_SET_PDEATHSIG takes the signal number by value and the
    // unused arguments as zeros; no memory of ours is passed.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The parent-death signal is Linux only: see the Linux version.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[cfg_attr(not(any(feature = "signals", feature = "client")), allow(dead_code))]
pub(crate) fn die_with_parent() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "a parent-death signal needs Linux's prctl(PR_SET_PDEATHSIG)",
    ))
}

/// Sends `signal` to the process `pid` (`kill(2)`). The caller makes sure
/// `pid` is a child it has not reaped yet, so the number cannot have been
/// reused by another process.
#[cfg(feature = "signals")]
pub(crate) fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&pid| pid > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a process id"))?;
    // SAFETY: kill takes two integers and touches no memory of ours; a
    // positive pid names one process, never a group.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lets `bind` to an address with port 0 leave the port to `connect`
/// (Linux `IP_BIND_ADDRESS_NO_PORT`), which picks one free for that
/// destination: no search of the address's whole port range at `bind`,
/// and one address reaches every port of every destination. A no-op
/// elsewhere.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
pub(crate) fn set_bind_address_no_port(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    set_int_option(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
    Ok(())
}

/// `setsockopt` with an `int` value, the shape of most socket options.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_int_option(
    fd: std::os::fd::BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt only reads `size_of::<c_int>()` bytes from the
    // pointer, which points at `value`, alive for the whole call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
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
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT, value)?;
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
pub use linux::{send_batch, RecvSlots};
#[cfg(all(unix, not(target_os = "linux")))]
pub use portable::{send_batch, RecvSlots};

/// Runs `call`, a syscall that returns -1 and sets errno on failure, again
/// while a signal interrupts it (`EINTR`).
#[cfg(target_os = "linux")]
#[inline(always)]
fn retry_interrupted(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let rc = call();
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{RecvMeta, MAX_BATCH, MAX_RECV_BATCH, UNKNOWN_ADDR};
    use std::io;
    use std::mem::{self, size_of, MaybeUninit};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::ptr;

    /// Receive slots with the headers `recvmmsg` reads, built once: slot
    /// `i` is `slot_size` bytes of one buffer, described by iovec `i` and
    /// named into sockaddr `i`, all three pointed at by header `i`.
    ///
    /// The four arrays are owned through raw pointers (from `Box`es, freed
    /// in `Drop`) because the kernel writes through pointers stored inside
    /// them: nothing here ever holds a `&mut` to memory those pointers
    /// reach while they are in use.
    #[derive(Debug)]
    pub struct RecvSlots {
        buf: *mut [u8],
        names: *mut [libc::sockaddr_storage],
        iovs: *mut [libc::iovec],
        hdrs: *mut [libc::mmsghdr],
        slot_size: usize,
    }

    // SAFETY: the raw pointers (the four fields and those stored in `iovs`
    // and `hdrs`) reach only the four heap allocations this value owns
    // alone; moving it to another thread moves their only owner, and no
    // shared reference gives access to them (`&self` methods only read).
    unsafe impl Send for RecvSlots {}

    /// A boxed slice of `n` all-zero `T`s, as a raw pointer.
    ///
    /// SAFETY (for callers): all-zero bytes must be a valid `T`.
    unsafe fn zeroed_slice<T>(n: usize) -> *mut [T] {
        // SAFETY: the caller promises all-zero bytes are a valid `T`.
        let boxed: Box<[T]> = (0..n).map(|_| unsafe { mem::zeroed() }).collect();
        Box::into_raw(boxed)
    }

    impl RecvSlots {
        /// `slots` slots of `slot_size` bytes, with their headers linked.
        ///
        /// # Panics
        /// If `slots` or `slot_size` is 0, or their product overflows.
        pub fn new(slots: usize, slot_size: usize) -> RecvSlots {
            assert!(slots > 0 && slot_size > 0, "RecvSlots needs room");
            let bytes = slots.checked_mul(slot_size).expect("RecvSlots too large");
            let buf = Box::into_raw(vec![0u8; bytes].into_boxed_slice());
            // SAFETY: these are plain C structs for which all-zero bytes are
            // a valid value (null pointers, zero lengths and flags).
            let (names, iovs, hdrs) = unsafe {
                (
                    zeroed_slice::<libc::sockaddr_storage>(slots),
                    zeroed_slice::<libc::iovec>(slots),
                    zeroed_slice::<libc::mmsghdr>(slots),
                )
            };
            for i in 0..slots {
                // SAFETY: `i < slots`, the length of the three arrays, and
                // `i * slot_size + slot_size <= bytes`, the buffer's; each
                // allocation was just made and is reached by nothing else.
                unsafe {
                    let iov = &mut (*iovs)[i];
                    iov.iov_base = buf.cast::<u8>().add(i * slot_size).cast();
                    iov.iov_len = slot_size;
                    let h = &mut (*hdrs)[i].msg_hdr;
                    h.msg_name = ptr::addr_of_mut!((*names)[i]).cast();
                    h.msg_namelen = NAME_LEN;
                    h.msg_iov = ptr::addr_of_mut!((*iovs)[i]);
                    h.msg_iovlen = 1;
                }
            }
            RecvSlots {
                buf,
                names,
                iovs,
                hdrs,
                slot_size,
            }
        }

        /// Number of slots.
        pub fn slots(&self) -> usize {
            self.hdrs.len()
        }

        /// Size of each slot.
        pub fn slot_size(&self) -> usize {
            self.slot_size
        }

        /// The first `len` bytes of slot `i`.
        ///
        /// # Panics
        /// If `i` is not a slot or `len` exceeds the slot size.
        pub fn slot(&self, i: usize, len: usize) -> &[u8] {
            assert!(i < self.slots() && len <= self.slot_size);
            // SAFETY: in bounds by the assert; the kernel writes the buffer
            // only inside `recv`, which takes `&mut self`, so no write can
            // happen while this borrow of `self` lives.
            unsafe {
                std::slice::from_raw_parts(self.buf.cast::<u8>().add(i * self.slot_size), len)
            }
        }

        /// Receives up to `min(self.slots(), out.len())` datagrams without
        /// blocking: datagram `i` lands in slot `i`, described by `out[i]`.
        /// One `recvmmsg` per [`MAX_RECV_BATCH`] slots, stopping as soon as
        /// one comes back short.
        ///
        /// Returns how many were received, or `WouldBlock` if none were
        /// waiting. `EINTR` is retried internally.
        pub fn recv(&mut self, fd: BorrowedFd<'_>, out: &mut [RecvMeta]) -> io::Result<usize> {
            let slots = out.len().min(self.slots());
            let mut done = 0;
            while done < slots {
                let want = (slots - done).min(MAX_RECV_BATCH);
                match self.recv_chunk(fd, done, want, &mut out[done..done + want]) {
                    Ok(n) => {
                        done += n;
                        if n < want {
                            break;
                        }
                    }
                    // Datagrams already taken must be handed out; an error
                    // that is not WouldBlock after a full chunk is lost,
                    // which for UDP only means one asynchronous ICMP report.
                    Err(_) if done > 0 => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(done)
        }

        /// One `recvmmsg` into slots `first..first + want`.
        fn recv_chunk(
            &mut self,
            fd: BorrowedFd<'_>,
            first: usize,
            want: usize,
            out: &mut [RecvMeta],
        ) -> io::Result<usize> {
            debug_assert!(want > 0 && want <= MAX_RECV_BATCH && first + want <= self.slots());
            // SAFETY: `first < slots`, so the pointer stays inside `hdrs`.
            let hdrs = unsafe { self.hdrs.cast::<libc::mmsghdr>().add(first) };
            let got = super::retry_interrupted(|| {
                // SAFETY: headers `first..first + want` are in bounds and
                // point at their own iovec and sockaddr_storage and, through
                // the iovec, at their own `slot_size` slot of `buf`; all
                // four allocations live as long as `self`, which is
                // exclusively borrowed, and the kernel writes at most
                // iov_len / msg_namelen bytes through them (plus msg_len,
                // msg_namelen and msg_flags of the headers it fills). A
                // null timeout means none; MSG_DONTWAIT makes it
                // non-blocking.
                unsafe {
                    libc::recvmmsg(
                        fd.as_raw_fd(),
                        hdrs,
                        want as libc::c_uint,
                        libc::MSG_DONTWAIT as _,
                        ptr::null_mut(),
                    ) as isize
                }
            })?;
            // The kernel fills at most `want` headers: `got <= want`.
            let got = got.min(want);
            // SAFETY: `first + got <= slots`: in bounds of `hdrs` and
            // `names`; the kernel is done with them (the call returned) and
            // `&mut self` excludes any other access.
            let (hdrs, names) = unsafe {
                (
                    &mut (&mut *self.hdrs)[first..first + got],
                    &(&*self.names)[first..first + got],
                )
            };
            for ((h, name), meta) in hdrs.iter_mut().zip(names).zip(out.iter_mut()) {
                *meta = RecvMeta {
                    // Without MSG_TRUNC in the call flags msg_len is the
                    // copied length; min() only guards against a surprise.
                    len: (h.msg_len as usize).min(self.slot_size),
                    from: from_sockaddr(name, h.msg_hdr.msg_namelen).unwrap_or(UNKNOWN_ADDR),
                    truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                };
                // The one input field the kernel overwrote: the next call
                // must offer the whole sockaddr_storage again. (msg_len and
                // msg_flags are outputs only.)
                h.msg_hdr.msg_namelen = NAME_LEN;
            }
            Ok(got)
        }
    }

    impl RecvSlots {
        /// Sends slots `first..first + sent.len()` back to the sources
        /// they were received from, each with the bytes `sent` (what `recv`
        /// reported for them) says it holds (never more than a slot), in
        /// one `sendmmsg` through the slots' own headers, at most
        /// [`MAX_RECV_BATCH`] of them: no address is converted and no
        /// payload copied.
        ///
        /// Results as [`send_batch`]. The slots are left as `recv` wants
        /// them.
        ///
        /// # Panics
        /// If the slots are out of range (before anything is changed).
        pub fn send_back(
            &mut self,
            fd: BorrowedFd<'_>,
            first: usize,
            sent: &[RecvMeta],
        ) -> io::Result<usize> {
            let n = sent.len().min(MAX_RECV_BATCH);
            if n == 0 {
                return Ok(0);
            }
            let range = first..first + n;
            assert!(
                range.end <= self.slots(),
                "slots {range:?} of {}",
                self.slots()
            );
            // SAFETY: `range` is in bounds of the three arrays (assert);
            // `&mut self` excludes any other access to them, and the kernel
            // holds none of their pointers between calls. These borrows end
            // before the call below hands the headers to the kernel.
            let (iovs, names, hdrs) = unsafe {
                (
                    &mut (&mut *self.iovs)[range.clone()],
                    &(&*self.names)[range.clone()],
                    &mut (&mut *self.hdrs)[range.clone()],
                )
            };
            for (((iov, name), hdr), meta) in
                iovs.iter_mut().zip(names).zip(hdrs.iter_mut()).zip(sent)
            {
                iov.iov_len = meta.len.min(self.slot_size);
                hdr.msg_hdr.msg_namelen = name_len(name.ss_family);
            }
            let result = super::retry_interrupted(|| {
                // SAFETY: headers `range` are in bounds and point at their
                // own sockaddr (as the kernel wrote it on receive, its length
                // just set) and iovec (covering at most `slot_size` bytes of
                // their slot); all live as long as `self`, exclusively
                // borrowed. The kernel reads those and writes only msg_len.
                unsafe {
                    libc::sendmmsg(
                        fd.as_raw_fd(),
                        self.hdrs.cast::<libc::mmsghdr>().add(first),
                        n as libc::c_uint,
                        libc::MSG_DONTWAIT as _,
                    ) as isize
                }
            });
            // SAFETY: as above; the kernel is done with the headers.
            let (iovs, hdrs) = unsafe {
                (
                    &mut (&mut *self.iovs)[range.clone()],
                    &mut (&mut *self.hdrs)[range],
                )
            };
            for (iov, hdr) in iovs.iter_mut().zip(hdrs) {
                iov.iov_len = self.slot_size;
                hdr.msg_hdr.msg_namelen = NAME_LEN;
            }
            result
        }
    }

    /// The length of the address the kernel stored in a receive's
    /// `sockaddr_storage` of this family (the whole storage for another,
    /// impossible for UDP, which a send then rejects).
    fn name_len(family: libc::sa_family_t) -> libc::socklen_t {
        if family == libc::AF_INET as libc::sa_family_t {
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        } else if family == libc::AF_INET6 as libc::sa_family_t {
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        } else {
            NAME_LEN
        }
    }

    impl Drop for RecvSlots {
        fn drop(&mut self) {
            // SAFETY: each pointer came from `Box::into_raw` in `new` and is
            // freed only here, once; the kernel holds none of them between
            // calls.
            unsafe {
                drop(Box::from_raw(self.hdrs));
                drop(Box::from_raw(self.iovs));
                drop(Box::from_raw(self.names));
                drop(Box::from_raw(self.buf));
            }
        }
    }

    /// The size of a `sockaddr_storage`: what each receive offers the
    /// kernel for the source address.
    const NAME_LEN: libc::socklen_t = size_of::<libc::sockaddr_storage>() as libc::socklen_t;

    /// A send header for one datagram of `data`: its iovec written into
    /// `iov`, no name, no control (the caller adds what it needs).
    pub(super) fn send_header(iov: &mut MaybeUninit<libc::iovec>, data: &[u8]) -> libc::mmsghdr {
        // The kernel only reads through iov_base for sends; the *mut is
        // just what the C struct is declared with.
        iov.write(libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        });
        // SAFETY: all-zero bytes are a valid mmsghdr (null pointers, zero
        // lengths and flags); the iovec is set below.
        let mut hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        hdr.msg_hdr.msg_iov = iov.as_mut_ptr();
        hdr.msg_hdr.msg_iovlen = 1;
        hdr
    }

    /// One non-blocking `sendmmsg` of the first `n` headers (`EINTR`
    /// retried): the count sent, or the first datagram's error.
    ///
    /// # Safety
    /// `hdrs[..n]` are written, and every pointer in them (names, iovecs,
    /// control, the bytes the iovecs cover) is valid for reads for the
    /// call.
    pub(super) unsafe fn send_headers(
        fd: BorrowedFd<'_>,
        hdrs: &mut [MaybeUninit<libc::mmsghdr>],
        n: usize,
    ) -> io::Result<usize> {
        debug_assert!(n <= hdrs.len());
        super::retry_interrupted(|| {
            // SAFETY: the caller's contract; the kernel reads only those n
            // entries, and writes msg_len into them.
            unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                ) as isize
            }
        })
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
        // Only the first `n` entries are written and handed to the kernel:
        // nothing is zeroed beyond them.
        let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; MAX_BATCH];
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
        let mut n = 0;
        for (to, data) in msgs.into_iter().take(MAX_BATCH) {
            let namelen = to_sockaddr(&to, &mut names[n]);
            let mut hdr = send_header(&mut iovs[n], data);
            hdr.msg_hdr.msg_name = names[n].as_mut_ptr().cast();
            hdr.msg_hdr.msg_namelen = namelen;
            hdrs[n].write(hdr);
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: hdrs[..n] were written above and point at addresses and
        // iovecs written above on this stack frame; each iovec covers a
        // `&'a [u8]` that outlives this call.
        unsafe { send_headers(fd, &mut hdrs, n) }
    }

    pub(super) fn from_sockaddr(
        s: &libc::sockaddr_storage,
        len: libc::socklen_t,
    ) -> Option<SocketAddr> {
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

    /// Writes `addr` into `storage` as a whole `sockaddr_in`/`sockaddr_in6`
    /// (padding zeroed); returns the length to pass on.
    pub(super) fn to_sockaddr(
        addr: &SocketAddr,
        storage: &mut MaybeUninit<libc::sockaddr_storage>,
    ) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(a) => {
                // SAFETY: all-zero bytes are a valid sockaddr_in.
                let mut s: libc::sockaddr_in = unsafe { mem::zeroed() };
                s.sin_family = libc::AF_INET as libc::sa_family_t;
                s.sin_port = a.port().to_be();
                s.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                // SAFETY: sockaddr_storage is sized and aligned for every
                // sockaddr type, and we hold the only reference to it.
                unsafe { storage.as_mut_ptr().cast::<libc::sockaddr_in>().write(s) };
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                // SAFETY: all-zero bytes are a valid sockaddr_in6.
                let mut s: libc::sockaddr_in6 = unsafe { mem::zeroed() };
                s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                s.sin6_port = a.port().to_be();
                s.sin6_flowinfo = a.flowinfo();
                s.sin6_addr.s6_addr = a.ip().octets();
                s.sin6_scope_id = a.scope_id();
                // SAFETY: as above, for sockaddr_in6.
                unsafe { storage.as_mut_ptr().cast::<libc::sockaddr_in6>().write(s) };
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }
}

/// What one [`recv_segments`] got: `len` bytes of one or more datagrams
/// from one source, back to back, each `segment` bytes but the last (which
/// may be shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    /// Bytes written into the buffer.
    pub len: usize,
    /// Source address.
    pub from: SocketAddr,
    /// The size of each coalesced datagram (`len` when the kernel reported
    /// none: a single datagram).
    pub segment: usize,
    /// The buffer was too small and the tail was discarded.
    pub truncated: bool,
}

#[cfg(target_os = "linux")]
pub use segments::{
    recv_segments, send_connected, send_segmented_batch, set_udp_gro, udp_segment_supported,
};
#[cfg(all(unix, not(target_os = "linux")))]
pub use segments_portable::{
    recv_segments, send_connected, send_segmented_batch, set_udp_gro, udp_segment_supported,
};

/// UDP generic segmentation (`UDP_SEGMENT`, Linux 4.18) and receive
/// offload (`UDP_GRO`, Linux 5.0): many datagrams per syscall to or from
/// one peer, as one buffer cut into equal segments.
#[cfg(target_os = "linux")]
mod segments {
    use super::linux::{from_sockaddr, send_header, send_headers, to_sockaddr};
    use super::{Segments, UNKNOWN_ADDR};
    use std::io;
    use std::mem::{self, size_of, MaybeUninit};
    use std::net::SocketAddr;
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::ptr;

    /// Room for one cmsg carrying a `c_int` (UDP_SEGMENT's u16 or
    /// UDP_GRO's int), 8-byte aligned as `cmsghdr` wants.
    #[repr(C, align(8))]
    struct CmsgSpace([u8; 32]);

    /// Turns `UDP_GRO` on or off: on, the kernel may hand several
    /// datagrams from one source to one receive, with their size in a cmsg.
    pub fn set_udp_gro(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
        super::set_int_option(fd, libc::SOL_UDP, libc::UDP_GRO, libc::c_int::from(on))
    }

    /// Whether the kernel knows `UDP_SEGMENT` (reading it back works).
    /// A device may still refuse a segmented send (`EIO`), which only a
    /// send shows.
    pub fn udp_segment_supported(fd: BorrowedFd<'_>) -> bool {
        let mut value: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`, which
        // we own, and updates `len`, also ours.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                ptr::from_mut(&mut value).cast(),
                &mut len,
            )
        };
        rc == 0
    }

    /// Sends up to [`MAX_BATCH`](super::MAX_BATCH) messages in one
    /// `sendmmsg`, each `(to, data, segment)` cut by the kernel into
    /// datagrams of `segment` bytes, the last possibly shorter (at most 64
    /// and 65,507 bytes per message; no cmsg, one plain datagram, when
    /// `data` is no longer than `segment`). The rest of the iterator is not
    /// consumed. Mirrors `sendmmsg`: the first message's error is
    /// returned; a later one's stops the count there. `EINTR` is retried.
    pub fn send_segmented_batch<'a, I>(fd: BorrowedFd<'_>, msgs: I) -> io::Result<usize>
    where
        I: IntoIterator<Item = (SocketAddr, &'a [u8], u16)>,
    {
        const N: usize = super::MAX_BATCH;
        // Only the first `n` entries are written and handed to the kernel:
        // nothing is zeroed beyond them (zeroing all 64 cost about 66
        // instructions per datagram at rudp's run lengths).
        let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; N];
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; N];
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; N];
        let mut controls = [const { MaybeUninit::<CmsgSpace>::uninit() }; N];
        let mut n = 0;
        for (to, data, segment) in msgs.into_iter().take(N) {
            let namelen = to_sockaddr(&to, &mut names[n]);
            let mut hdr = send_header(&mut iovs[n], data);
            let h = &mut hdr.msg_hdr;
            h.msg_name = names[n].as_mut_ptr().cast();
            h.msg_namelen = namelen;
            if data.len() > usize::from(segment) {
                put_segment(h, controls[n].write(CmsgSpace([0; 32])), segment);
            }
            hdrs[n].write(hdr);
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: hdrs[..n] were written above and point at addresses,
        // iovecs and control buffers written above on this stack frame;
        // each iovec covers a `&'a [u8]` that outlives the call.
        unsafe { send_headers(fd, &mut hdrs, n) }
    }

    /// Sends `data` on a connected UDP socket as datagrams of `size`
    /// bytes each (the last possibly shorter), naming no destination, so
    /// the kernel uses the socket's cached route instead of looking one up
    /// per datagram. `segmented`: all of `data` in one `sendmsg` cut by the
    /// kernel (`UDP_SEGMENT`; the caller keeps to 64 datagrams and 65,507
    /// bytes, and a refusal is `EIO` or `EINVAL`), all or nothing;
    /// otherwise up to [`MAX_BATCH`](super::MAX_BATCH) datagrams in one
    /// `sendmmsg`. Returns the datagrams sent; errors as
    /// [`send_batch`](super::send_batch). `EINTR` is retried.
    pub fn send_connected(
        fd: BorrowedFd<'_>,
        data: &[u8],
        size: usize,
        segmented: bool,
    ) -> io::Result<usize> {
        const N: usize = super::MAX_BATCH;
        let size = size.max(1);
        if data.is_empty() {
            return Ok(0);
        }
        if segmented {
            // SAFETY: all-zero bytes are a valid msghdr (no name, no
            // control until put_segment sets one).
            let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
            let mut iov = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            let mut control = CmsgSpace([0; 32]);
            hdr.msg_iov = ptr::addr_of_mut!(iov);
            hdr.msg_iovlen = 1;
            if data.len() > size {
                put_segment(
                    &mut hdr,
                    &mut control,
                    size.min(usize::from(u16::MAX)) as u16,
                );
            }
            super::retry_interrupted(|| {
                // SAFETY: hdr points at `iov` and `control` on this stack
                // frame and iov at `data`, borrowed for the call; the
                // kernel only reads them.
                unsafe { libc::sendmsg(fd.as_raw_fd(), &hdr, libc::MSG_DONTWAIT) }
            })?;
            return Ok(data.len().div_ceil(size));
        }
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; N];
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; N];
        let mut n = 0;
        for chunk in data.chunks(size).take(N) {
            hdrs[n].write(send_header(&mut iovs[n], chunk));
            n += 1;
        }
        // SAFETY: hdrs[..n] were written above and point at iovecs written
        // above on this stack frame, each covering part of `data`,
        // borrowed for the call.
        unsafe { send_headers(fd, &mut hdrs, n) }
    }

    /// Points `hdr` at `control`, holding one `UDP_SEGMENT` cmsg.
    fn put_segment(hdr: &mut libc::msghdr, control: &mut CmsgSpace, segment: u16) {
        // SAFETY: CMSG_SPACE is pure arithmetic on a small constant.
        let space = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
        debug_assert!(space <= control.0.len());
        hdr.msg_control = control.0.as_mut_ptr().cast();
        hdr.msg_controllen = space as _;
        // SAFETY: msg_control points at `control`, 8-byte aligned and at
        // least `space` bytes, so CMSG_FIRSTHDR returns its start (not
        // null) and CMSG_DATA stays inside it; the u16 is written
        // unaligned, as the layout promises no more than the header's
        // alignment.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(hdr);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
            ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
        }
    }

    /// Receives into `buf`: one datagram, or with `UDP_GRO` on, several
    /// from one source coalesced, with their size. Without `wait`, none
    /// waiting is `WouldBlock`; with it, the call blocks (up to the
    /// socket's read timeout, then `WouldBlock`). `EINTR` is retried.
    pub fn recv_segments(fd: BorrowedFd<'_>, buf: &mut [u8], wait: bool) -> io::Result<Segments> {
        let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
        // SAFETY: all-zero bytes are a valid value for these plain C structs.
        let (mut name, mut hdr): (libc::sockaddr_storage, libc::msghdr) = unsafe { mem::zeroed() };
        let mut control = CmsgSpace([0; 32]);
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        hdr.msg_name = ptr::addr_of_mut!(name).cast();
        hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_iov = ptr::addr_of_mut!(iov);
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.0.as_mut_ptr().cast();
        hdr.msg_controllen = control.0.len() as _;
        let len = super::retry_interrupted(|| {
            // SAFETY: hdr points at `name`, `iov` and `control` on this
            // stack frame and iov at `buf`, exclusively borrowed; the kernel
            // writes at most their stated lengths and updates hdr.
            unsafe { libc::recvmsg(fd.as_raw_fd(), &mut hdr, flags) }
        })?
        .min(buf.len());
        let mut segment = len;
        // SAFETY: hdr's control pointer and length were set by the kernel
        // within `control`; CMSG_FIRSTHDR/CMSG_NXTHDR only return headers
        // inside that range (or null), and CMSG_DATA of a UDP_GRO header
        // holds a c_int, read unaligned.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                    let size = ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                    segment = usize::try_from(size).unwrap_or(len);
                }
                cmsg = libc::CMSG_NXTHDR(&hdr, cmsg);
            }
        }
        Ok(Segments {
            len,
            from: from_sockaddr(&name, hdr.msg_namelen).unwrap_or(UNKNOWN_ADDR),
            segment: segment.max(1),
            truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
        })
    }
}

/// Without segmentation offload: GRO and GSO are refused, and a receive
/// is one datagram, so callers take their plain paths.
#[cfg(all(unix, not(target_os = "linux")))]
mod segments_portable {
    use super::{Segments, UNKNOWN_ADDR};
    use socket2::{MaybeUninitSlice, SockRef};
    use std::io;
    use std::mem::MaybeUninit;
    use std::net::SocketAddr;
    use std::os::fd::BorrowedFd;

    fn unsupported() -> io::Error {
        io::Error::new(io::ErrorKind::Unsupported, "UDP offload needs Linux")
    }

    /// Always refused.
    pub fn set_udp_gro(_fd: BorrowedFd<'_>, _on: bool) -> io::Result<()> {
        Err(unsupported())
    }

    /// Always false.
    pub fn udp_segment_supported(_fd: BorrowedFd<'_>) -> bool {
        false
    }

    /// Always refused.
    pub fn send_segmented_batch<'a, I>(_fd: BorrowedFd<'_>, _msgs: I) -> io::Result<usize>
    where
        I: IntoIterator<Item = (SocketAddr, &'a [u8], u16)>,
    {
        Err(unsupported())
    }

    pub use super::portable::send_connected;

    /// One datagram per call.
    pub fn recv_segments(fd: BorrowedFd<'_>, buf: &mut [u8], wait: bool) -> io::Result<Segments> {
        let sock = SockRef::from(&fd);
        // SAFETY: recvmsg only ever writes initialised bytes, so viewing
        // initialised memory as MaybeUninit cannot de-initialise it.
        let slot = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
        let mut iov = [MaybeUninitSlice::new(slot)];
        let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
        let (len, flags, from) = loop {
            match sock.recv_from_vectored_with_flags(&mut iov, flags) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        Ok(Segments {
            len,
            from: from.as_socket().unwrap_or(UNKNOWN_ADDR),
            segment: len.max(1),
            truncated: flags.is_truncated(),
        })
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

    /// See the Linux `RecvSlots`: the same API, one `recvmsg` per datagram.
    #[derive(Debug)]
    pub struct RecvSlots {
        buf: Box<[u8]>,
        slot_size: usize,
        /// Each slot's source, for `send_back`.
        sources: Box<[SocketAddr]>,
    }

    impl RecvSlots {
        /// See the Linux `RecvSlots::new`.
        pub fn new(slots: usize, slot_size: usize) -> RecvSlots {
            assert!(slots > 0 && slot_size > 0, "RecvSlots needs room");
            let bytes = slots.checked_mul(slot_size).expect("RecvSlots too large");
            RecvSlots {
                buf: vec![0; bytes].into_boxed_slice(),
                slot_size,
                sources: vec![UNKNOWN_ADDR; slots].into_boxed_slice(),
            }
        }

        /// Size of each slot.
        #[cfg(not(target_os = "linux"))]
        pub fn slot_size(&self) -> usize {
            self.slot_size
        }

        /// The first `len` bytes of slot `i`.
        pub fn slot(&self, i: usize, len: usize) -> &[u8] {
            assert!(len <= self.slot_size);
            &self.buf[i * self.slot_size..][..len]
        }

        /// See the Linux `RecvSlots::recv`.
        pub fn recv(&mut self, fd: BorrowedFd<'_>, out: &mut [RecvMeta]) -> io::Result<usize> {
            let n = recv_batch(fd, &mut self.buf, self.slot_size, out)?;
            for (source, meta) in self.sources.iter_mut().zip(&out[..n]) {
                *source = meta.from;
            }
            Ok(n)
        }

        /// See the Linux `RecvSlots::send_back`: [`send_batch`] to the
        /// slots' sources.
        pub fn send_back(
            &mut self,
            fd: BorrowedFd<'_>,
            first: usize,
            sent: &[RecvMeta],
        ) -> io::Result<usize> {
            let msgs = sent.iter().enumerate().map(|(k, meta)| {
                let i = first + k;
                (self.sources[i], self.slot(i, meta.len))
            });
            send_batch(fd, msgs)
        }
    }

    /// Up to `min(out.len(), buf.len() / slot_size)` datagrams into
    /// consecutive `slot_size` slots of `buf`, one `recvmsg` each.
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
        send_each(msgs, |(to, data)| {
            sock.send_to_with_flags(data, &SockAddr::from(to), libc::MSG_DONTWAIT)
        })
    }

    /// One `send` per datagram, never segmented: see the Linux
    /// `send_connected`.
    pub fn send_connected(
        fd: BorrowedFd<'_>,
        data: &[u8],
        size: usize,
        _segmented: bool,
    ) -> io::Result<usize> {
        let sock = SockRef::from(&fd);
        send_each(data.chunks(size.max(1)), |chunk| {
            sock.send_with_flags(chunk, libc::MSG_DONTWAIT)
        })
    }

    /// Sends up to [`MAX_BATCH`] datagrams one call each, as `sendmmsg`
    /// would: the first one's error, else the count sent before one failed
    /// (the retry hits that error again). `EINTR` is retried.
    fn send_each<T: Copy>(
        datagrams: impl IntoIterator<Item = T>,
        send: impl Fn(T) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut sent = 0;
        for datagram in datagrams.into_iter().take(MAX_BATCH) {
            let res = loop {
                match send(datagram) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            };
            match res {
                Ok(_) => sent += 1,
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(sent)
    }
}

/// One `recv` on a stream socket, without blocking on a non-blocking one.
///
/// On Linux it is the raw `recvfrom` system call, not glibc's `recv`: that
/// wrapper is a thread-cancellation point, which costs two atomic updates
/// of the thread's cancel state around every call in a multi-threaded
/// process, and sockloop never cancels threads. `EINTR` and `EAGAIN` come
/// back as errors, as from `read`.
///
/// The descriptor is raw: the caller keeps it beside the socket that owns
/// it, since getting it from mio's stream is a call that does not inline,
/// twice per echo. A closed or wrong descriptor is an error (`EBADF`,
/// `ENOTSOCK`), never memory unsafety.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which
    // we borrow mutably for the call; null address pointers ask for no
    // source address.
    return unsafe { stream_call(libc::SYS_recvfrom, fd, buf.as_mut_ptr(), buf.len(), 0) };
    #[cfg(not(target_os = "linux"))]
    // SAFETY: as above, through libc's `recv`.
    let rc = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    #[cfg(not(target_os = "linux"))]
    return match rc {
        rc if rc < 0 => Err(io::Error::last_os_error()),
        rc => Ok(rc as usize),
    };
}

/// One `send` on a stream socket (`MSG_NOSIGNAL` where there is one: a
/// peer gone is an `EPIPE` error, not a signal), without the cancellation
/// wrapper on Linux, as [`recv`] (whose note on the raw descriptor holds
/// here too).
pub(crate) fn send(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    // SAFETY: the kernel reads at most `bytes.len()` bytes from `bytes`,
    // borrowed for the call; no destination address is passed.
    return unsafe {
        stream_call(
            libc::SYS_sendto,
            fd,
            bytes.as_ptr().cast_mut(),
            bytes.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    #[cfg(not(target_os = "linux"))]
    // SAFETY: as above, through libc's `send` (SIGPIPE is ignored by the
    // Rust runtime on these systems).
    let rc = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), 0) };
    #[cfg(not(target_os = "linux"))]
    return match rc {
        rc if rc < 0 => Err(io::Error::last_os_error()),
        rc => Ok(rc as usize),
    };
}

/// A pipe, both ends non-blocking and close-on-exec: `(read end, write
/// end)`. Unsupported off Linux (where nothing splices).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    #[cfg(target_os = "linux")]
    {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `pipe2` writes two descriptors into the two-element array
        // it is given; on success both are new and ours alone to own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just created above, owned by nobody else.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }
    #[cfg(not(target_os = "linux"))]
    Err(io::ErrorKind::Unsupported.into())
}

/// Sets the capacity of the pipe `fd` (`F_SETPIPE_SZ`) and returns the
/// capacity in force, which the kernel rounds up to a power of two pages.
pub(crate) fn set_pipe_size(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fcntl` with `F_SETPIPE_SZ` takes an integer argument and
        // touches no memory of ours; a non-pipe `fd` is an error.
        let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, bytes);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Moves up to `len` bytes from `from` to `to` with `splice(2)`, one of them
/// a pipe, without blocking (`SPLICE_F_NONBLOCK`) and moving pages rather
/// than copying where the kernel can (`SPLICE_F_MOVE`): from a TCP socket
/// into a pipe the pipe takes references to the received pages, and from a
/// pipe into a TCP socket they are sent by reference. Returns the bytes
/// moved; 0 from a socket is its EOF. `EAGAIN` comes back as `WouldBlock`.
/// Descriptors are raw, as for [`recv`]: a wrong one is an error (`EBADF`,
/// `EINVAL`), never memory unsafety.
pub(crate) fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        let flags = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;
        // SAFETY: null offsets (both ends are streams); the kernel moves
        // data between the two descriptors and touches no memory of ours.
        let rc = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                flags,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (from, to, len);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Whether the stream socket `fd` has read up to TCP urgent data
/// (`SIOCATMARK`): where a `splice` stops, saying "would block" with bytes
/// still waiting, and only a `recv` reads on. A raw descriptor, as for
/// [`recv`]: a wrong one is an error, never memory unsafety.
pub(crate) fn at_urgent_mark(fd: RawFd) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        // <linux/sockios.h>; the libc crate defines it for Apple only.
        const SIOCATMARK: u32 = 0x8905;
        let mut at: libc::c_int = 0;
        // SAFETY: SIOCATMARK writes one int through the pointer, which
        // points at `at`, alive and writable for the call.
        let rc = unsafe { libc::ioctl(fd, SIOCATMARK as _, &mut at as *mut libc::c_int) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(at != 0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// One `read(2)` of `fd` into `buf` (a pipe's bytes, copied out).
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`,
    // borrowed mutably for the call.
    let rc = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// `recvfrom` or `sendto` (`call`) on a connected stream socket: `len`
/// bytes at `buf`, `flags`, and null address arguments.
///
/// On x86-64 it is the `syscall` instruction itself: `libc::syscall` is a
/// variadic C function that moves every argument one register over and
/// passes the sixth on the stack, about a dozen instructions per call on
/// the path every echo takes twice. Elsewhere it is `libc::syscall`.
///
/// # Safety
/// `buf` must be valid for `len` bytes: written by `recvfrom`, read by
/// `sendto`.
#[cfg(target_os = "linux")]
#[inline(always)]
unsafe fn stream_call(
    call: libc::c_long,
    fd: libc::c_int,
    buf: *mut u8,
    len: usize,
    flags: libc::c_int,
) -> io::Result<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        let rc: isize;
        // SAFETY: the Linux x86-64 system call convention: the number in
        // rax, arguments in rdi, rsi, rdx, r10, r8, r9; the kernel
        // clobbers rcx and r11 and returns in rax, touching no user stack.
        // Memory is the caller's promise (`buf` valid for `len` bytes).
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") call as isize => rc,
                in("rdi") fd as isize,
                in("rsi") buf,
                in("rdx") len,
                in("r10") flags as isize,
                in("r8") 0usize,
                in("r9") 0usize,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        // -4095..=-1 is an error number; anything else a byte count.
        if (-4095..0).contains(&rc) {
            return Err(io::Error::from_raw_os_error(-rc as i32));
        }
        Ok(rc as usize)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: as the caller promises; null address arguments.
        let rc = unsafe {
            libc::syscall(
                call,
                fd,
                buf,
                len,
                flags,
                std::ptr::null_mut::<libc::sockaddr>(),
                std::ptr::null_mut::<libc::socklen_t>(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::{AsFd, BorrowedFd};
    use std::time::Duration;

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

    /// Receives into `slots` (4 slots of 8 bytes) until 3 datagrams came,
    /// then checks what each slot and its metadata hold.
    fn check_recv<S>(
        mut slots: S,
        recv: fn(&mut S, BorrowedFd<'_>, &mut [RecvMeta]) -> io::Result<usize>,
        slot: fn(&S, usize, usize) -> &[u8],
    ) {
        let (tx, rx) = pair();
        let to = rx.local_addr().unwrap();
        let mut meta = [RecvMeta::default(); 4];
        let err = recv(&mut slots, rx.as_fd(), &mut meta).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        for d in [&b"12345"[..], b"0123456789abcdefghij", b"abcdefgh"] {
            tx.send_to(d, to).unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..5000 {
            match recv(&mut slots, rx.as_fd(), &mut meta) {
                Ok(n) => got.extend(
                    meta[..n]
                        .iter()
                        .enumerate()
                        .map(|(i, m)| (slot(&slots, i, m.len).to_vec(), *m)),
                ),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            if got.len() == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let from = tx.local_addr().unwrap();
        let m = |data: &[u8], truncated| {
            let meta = RecvMeta {
                len: data.len(),
                from,
                truncated,
            };
            (data.to_vec(), meta)
        };
        let want = [
            m(b"12345", false),
            m(b"01234567", true),
            m(b"abcdefgh", false),
        ];
        assert_eq!(got, want);
    }

    type SendBackFn<S> = fn(&mut S, BorrowedFd<'_>, usize, &[RecvMeta]) -> io::Result<usize>;

    /// Slots 1 and 2 of three received go back to their two sources, and
    /// the slots receive whole datagrams again afterwards (iovec lengths
    /// and address lengths restored).
    fn check_send_back<S>(
        mut slots: S,
        recv: fn(&mut S, BorrowedFd<'_>, &mut [RecvMeta]) -> io::Result<usize>,
        send_back: SendBackFn<S>,
    ) {
        let (a, rx) = pair();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
        }
        let to = rx.local_addr().unwrap();
        let mut meta = [RecvMeta::default(); 4];
        a.send_to(b"one", to).unwrap();
        b.send_to(b"two-two", to).unwrap();
        a.send_to(b"three", to).unwrap();
        // Loopback delivers within the send; the pause is only a margin.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(recv(&mut slots, rx.as_fd(), &mut meta).unwrap(), 3);
        assert_eq!(send_back(&mut slots, rx.as_fd(), 0, &[]).unwrap(), 0);
        assert_eq!(
            send_back(&mut slots, rx.as_fd(), 1, &meta[1..3]).unwrap(),
            2
        );
        let mut buf = [0u8; 32];
        let got = |s: &UdpSocket, buf: &mut [u8]| {
            let (n, from) = s.recv_from(buf).unwrap();
            (buf[..n].to_vec(), from)
        };
        assert_eq!(got(&b, &mut buf), (b"two-two".to_vec(), to));
        assert_eq!(got(&a, &mut buf), (b"three".to_vec(), to));
        assert!(a.recv_from(&mut buf).is_err(), "slot 0 was not sent back");
        // Slots 1 and 2 were sent with 7 and 5 bytes: full size again.
        for _ in 0..3 {
            a.send_to(&[7; 8], to).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(recv(&mut slots, rx.as_fd(), &mut meta).unwrap(), 3);
        let want = RecvMeta {
            len: 8,
            from: a.local_addr().unwrap(),
            truncated: false,
        };
        assert_eq!(meta[..3], [want; 3]);
        assert_eq!(send_back(&mut slots, rx.as_fd(), 0, &meta[..3]).unwrap(), 3);
        for _ in 0..3 {
            assert_eq!(got(&a, &mut buf), (vec![7; 8], to));
        }
    }

    #[test]
    fn portable_fallback_send_back() {
        check_send_back(
            portable::RecvSlots::new(4, 8),
            portable::RecvSlots::recv,
            portable::RecvSlots::send_back,
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn mmsg_send_back() {
        check_send_back(
            linux::RecvSlots::new(4, 8),
            linux::RecvSlots::recv,
            linux::RecvSlots::send_back,
        );
    }

    #[test]
    fn portable_fallback_send_and_recv() {
        check_send(&|fd, m| portable::send_batch(fd, m.iter().copied()));
        check_recv(
            portable::RecvSlots::new(4, 8),
            portable::RecvSlots::recv,
            portable::RecvSlots::slot,
        );
    }

    #[test]
    fn portable_fallback_sends_connected_datagrams_one_by_one() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let data: Vec<u8> = (0..25).collect();
        assert_eq!(
            portable::send_connected(tx.as_fd(), &data, 10, true).unwrap(),
            3
        );
        let mut buf = [0u8; 64];
        for want in data.chunks(10) {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
        }
        assert_eq!(
            portable::send_connected(tx.as_fd(), &[], 10, false).unwrap(),
            0
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn mmsg_send_and_recv() {
        check_send(&|fd, m| linux::send_batch(fd, m.iter().copied()));
        check_recv(
            linux::RecvSlots::new(4, 8),
            linux::RecvSlots::recv,
            linux::RecvSlots::slot,
        );
    }

    /// Headers built once serve call after call: lengths, truncation and
    /// sources reported exactly however the previous call left them.
    #[cfg(target_os = "linux")]
    #[test]
    fn recv_slots_are_reused_across_calls() {
        let (tx, rx) = pair();
        let to = rx.local_addr().unwrap();
        let mut slots = linux::RecvSlots::new(3, 16);
        let mut meta = [RecvMeta::default(); 3];
        let recv_all = |slots: &mut linux::RecvSlots, meta: &mut [RecvMeta], want: usize| {
            let mut got = Vec::new();
            for _ in 0..5000 {
                if let Ok(n) = slots.recv(rx.as_fd(), meta) {
                    got.extend((0..n).map(|i| (slots.slot(i, meta[i].len).to_vec(), meta[i])));
                }
                if got.len() >= want {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            got
        };
        for round in 0..50u8 {
            let data = [round; 20];
            tx.send_to(&data[..1 + round as usize % 20], to).unwrap();
            tx.send_to(&data, to).unwrap();
            let got = recv_all(&mut slots, &mut meta, 2);
            let from = tx.local_addr().unwrap();
            let len = 1 + round as usize % 20;
            let first = (
                data[..len.min(16)].to_vec(),
                RecvMeta {
                    len: len.min(16),
                    from,
                    truncated: len > 16,
                },
            );
            let second = (
                data[..16].to_vec(),
                RecvMeta {
                    len: 16,
                    from,
                    truncated: true,
                },
            );
            assert_eq!(got, [first, second], "round {round}");
        }
    }

    #[test]
    fn stream_recv_and_send_move_bytes_and_report_errors() {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        let closed = recv(-1, &mut buf).unwrap_err();
        assert_eq!(
            closed.raw_os_error(),
            Some(libc::EBADF),
            "a bad descriptor is an error"
        );
        let empty = recv(ours.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(send(ours.as_raw_fd(), b"ping").unwrap(), 4);
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        peer.write_all(b"pong!").unwrap();
        ours.set_nonblocking(false).unwrap();
        ours.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(recv(ours.as_raw_fd(), &mut buf[..3]).unwrap(), 3);
        assert_eq!(recv(ours.as_raw_fd(), &mut buf[3..]).unwrap(), 2);
        assert_eq!(&buf[..5], b"pong!");
        drop(peer);
        assert_eq!(recv(ours.as_raw_fd(), &mut buf).unwrap(), 0, "EOF");
        // The peer is gone: a send fails (EPIPE or ECONNRESET), never a signal.
        let gone = (0..100).find_map(|_| send(ours.as_raw_fd(), &[0; 1024]).err());
        let kind = gone.expect("a send to a closed peer fails").kind();
        assert!(
            matches!(
                kind,
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{kind:?}"
        );
    }
}
