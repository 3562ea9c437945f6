//! Connection byte buffers and the per-shard pool they are lent from.
//!
//! A connection holds a buffer only while it has bytes in it: read buffers
//! go back to the pool once the service has consumed everything, write
//! buffers once the socket has taken everything. An idle connection therefore
//! costs no buffer memory, and a shard's buffer memory is bounded by the
//! number of *busy* connections, not open ones.

/// A byte buffer that is filled at the back and consumed from the front.
///
/// The bytes are `storage[start..end]`. The storage is always initialised
/// (zeroed once when allocated), so a socket can read straight into
/// [`Buffer::spare_mut`] without `unsafe`.
///
/// ```
/// use sockloop::net::buffer::Buffer;
///
/// let mut buf = Buffer::with_capacity(8);
/// buf.extend_from_slice(b"hello");
/// buf.consume(2);
/// assert_eq!(buf.as_slice(), b"llo");
/// ```
#[derive(Debug)]
pub struct Buffer {
    // A boxed slice and u32 offsets keep a connection's `Option<Buffer>` at
    // 24 bytes: it is paid for every connection, busy or idle.
    storage: Box<[u8]>,
    start: u32,
    end: u32,
}

impl Buffer {
    /// A zeroed buffer of `capacity` bytes.
    ///
    /// # Panics
    /// If `capacity` does not fit in a `u32`.
    pub fn with_capacity(capacity: usize) -> Buffer {
        assert!(
            u32::try_from(capacity).is_ok(),
            "buffers are limited to 4 GiB"
        );
        Buffer {
            storage: vec![0; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// True when no bytes are held.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Bytes of memory owned, held or not.
    pub fn capacity(&self) -> usize {
        self.storage.len()
    }

    /// The bytes held, oldest first.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start as usize..self.end as usize]
    }

    /// Drops `n` bytes from the front.
    ///
    /// # Panics
    /// If `n > self.len()`.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consume past the end of a buffer");
        self.start += n as u32;
        if self.start == self.end {
            // Empty: rewind for free instead of memmoving later.
            self.start = 0;
            self.end = 0;
        }
    }

    /// The free room at the back, moving held bytes to the front first when
    /// that makes room. Commit what was written with [`Buffer::commit`].
    pub fn spare_mut(&mut self) -> &mut [u8] {
        if self.start > 0 && self.end as usize == self.capacity() {
            self.compact();
        }
        &mut self.storage[self.end as usize..]
    }

    /// Marks `n` bytes written into [`Buffer::spare_mut`] as held.
    ///
    /// # Panics
    /// If `n` is more than the spare room.
    pub fn commit(&mut self, n: usize) {
        assert!(
            self.end as usize + n <= self.capacity(),
            "commit past capacity"
        );
        self.end += n as u32;
    }

    /// Appends `bytes`, growing the storage (at least doubling) if needed.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        if self.capacity() - (self.end as usize) < bytes.len() {
            self.compact();
            let needed = self.len() + bytes.len();
            if needed > self.capacity() {
                self.grow_to(needed.max(self.capacity() * 2));
            }
        }
        let end = self.end as usize;
        self.storage[end..end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len() as u32;
    }

    /// Grows the storage to `capacity` bytes (never shrinks).
    ///
    /// # Panics
    /// If `capacity` does not fit in a `u32`.
    pub fn grow_to(&mut self, capacity: usize) {
        if capacity > self.capacity() {
            let mut bigger = Buffer::with_capacity(capacity);
            bigger.extend_from_slice(self.as_slice());
            *self = bigger;
        }
    }

    fn compact(&mut self) {
        self.storage
            .copy_within(self.start as usize..self.end as usize, 0);
        self.end -= self.start;
        self.start = 0;
    }
}

/// Bytes of the shard-wide read buffer ([`Scratch`]): the most one read
/// of a connection asks the kernel for.
pub const SCRATCH_SIZE: usize = 64 * 1024;

/// A shard's one read buffer of [`SCRATCH_SIZE`] bytes, made on first use.
/// A connection with nothing held reads into it, its service is handed a
/// slice of it, and only what the service leaves unconsumed is copied into
/// a pooled buffer of the connection's own: one read takes whatever is
/// waiting, up to 64 KiB, while idle connections hold nothing. It is the
/// shard's, not a connection's, so no pool accounting counts it.
///
/// ```
/// use sockloop::net::buffer::{Scratch, SCRATCH_SIZE};
///
/// let mut scratch = Scratch::default();
/// let room = scratch.room();
/// assert_eq!(room.len(), SCRATCH_SIZE);
/// room[..5].copy_from_slice(b"hello");
/// assert_eq!(scratch.filled(5), b"hello");
/// ```
#[derive(Debug, Default)]
pub struct Scratch {
    /// Empty until the first read.
    storage: Box<[u8]>,
}

impl Scratch {
    /// All of it, to read into.
    #[inline(always)]
    pub fn room(&mut self) -> &mut [u8] {
        if self.storage.is_empty() {
            self.make();
        }
        &mut self.storage
    }

    /// The first `len` bytes, as read into [`Scratch::room`].
    ///
    /// # Panics
    /// If `len` is more than [`SCRATCH_SIZE`], or nothing was read yet.
    #[inline(always)]
    pub fn filled(&self, len: usize) -> &[u8] {
        &self.storage[..len]
    }

    #[cold]
    fn make(&mut self) {
        self.storage = vec![0; SCRATCH_SIZE].into_boxed_slice();
    }
}

/// A shard's stock of standard-size buffers, with accounting.
///
/// `take` hands out a pooled buffer or allocates one; `give` keeps the buffer
/// for reuse if it is standard-size and the stock is below `max_free`,
/// otherwise frees it, so the pool itself never holds more than
/// `max_free * buffer_size` bytes. Buffers that grew while lent (a write
/// buffer behind a slow reader) must report their growth through
/// [`BufferPool::note_growth`] so `bytes_lent` stays exact.
///
/// ```
/// use sockloop::net::buffer::BufferPool;
///
/// let mut pool = BufferPool::new(4096, 8);
/// let buf = pool.take();
/// assert_eq!(pool.bytes_lent(), 4096);
/// pool.give(buf);
/// assert_eq!(pool.bytes_lent(), 0);
/// ```
#[derive(Debug)]
pub struct BufferPool {
    free: Vec<Buffer>,
    buffer_size: usize,
    max_free: usize,
    bytes_lent: usize,
    peak_bytes_lent: usize,
}

impl BufferPool {
    /// A pool of `buffer_size`-byte buffers that keeps at most `max_free`.
    pub fn new(buffer_size: usize, max_free: usize) -> BufferPool {
        BufferPool {
            free: Vec::new(),
            buffer_size,
            max_free,
            bytes_lent: 0,
            peak_bytes_lent: 0,
        }
    }

    /// The size of a fresh buffer.
    pub fn buffer_size(&self) -> usize {
        self.buffer_size
    }

    /// An empty buffer of at least `buffer_size` bytes.
    pub fn take(&mut self) -> Buffer {
        let buf = self
            .free
            .pop()
            .unwrap_or_else(|| Buffer::with_capacity(self.buffer_size));
        self.lend(buf.capacity());
        buf
    }

    /// Returns a buffer; its contents are discarded.
    pub fn give(&mut self, mut buf: Buffer) {
        self.bytes_lent -= buf.capacity();
        if buf.capacity() == self.buffer_size && self.free.len() < self.max_free {
            buf.start = 0;
            buf.end = 0;
            self.free.push(buf);
        }
    }

    /// Accounts for a lent buffer whose capacity changed from `before`.
    pub fn note_growth(&mut self, before: usize, after: usize) {
        self.lend(after - before);
    }

    /// Bytes of buffer memory currently held by connections and sockets.
    pub fn bytes_lent(&self) -> usize {
        self.bytes_lent
    }

    /// The highest `bytes_lent` ever reached.
    pub fn peak_bytes_lent(&self) -> usize {
        self.peak_bytes_lent
    }

    /// Bytes parked in the pool for reuse.
    pub fn bytes_free(&self) -> usize {
        self.free.len() * self.buffer_size
    }

    fn lend(&mut self, bytes: usize) {
        self.bytes_lent += bytes;
        self.peak_bytes_lent = self.peak_bytes_lent.max(self.bytes_lent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_consume_cycle_rewinds_when_empty() {
        let mut buf = Buffer::with_capacity(4);
        buf.spare_mut()[..3].copy_from_slice(b"abc");
        buf.commit(3);
        buf.consume(3);
        assert!(buf.is_empty());
        assert_eq!(buf.spare_mut().len(), 4);
    }

    #[test]
    fn spare_compacts_when_the_back_is_full() {
        let mut buf = Buffer::with_capacity(4);
        buf.extend_from_slice(b"abcd");
        buf.consume(3);
        assert_eq!(buf.spare_mut().len(), 3);
        assert_eq!(buf.as_slice(), b"d");
    }

    #[test]
    fn extend_grows_at_least_double_and_keeps_order() {
        let mut buf = Buffer::with_capacity(4);
        buf.extend_from_slice(b"abc");
        buf.consume(1);
        buf.extend_from_slice(b"defgh");
        assert_eq!(buf.as_slice(), b"bcdefgh");
        assert_eq!(buf.capacity(), 8);
    }

    #[test]
    fn pool_reuses_standard_buffers_and_frees_grown_ones() {
        let mut pool = BufferPool::new(4, 1);
        let mut a = pool.take();
        let b = pool.take();
        a.extend_from_slice(b"0123456789");
        pool.note_growth(4, a.capacity());
        assert_eq!(pool.bytes_lent(), 4 + a.capacity());
        pool.give(a);
        pool.give(b);
        assert_eq!(pool.bytes_lent(), 0);
        assert_eq!(pool.bytes_free(), 4);
        assert_eq!(pool.peak_bytes_lent(), 4 + 10);
    }

    #[test]
    fn pool_keeps_at_most_max_free() {
        let mut pool = BufferPool::new(4, 2);
        let bufs: Vec<_> = (0..5).map(|_| pool.take()).collect();
        bufs.into_iter().for_each(|b| pool.give(b));
        assert_eq!(pool.bytes_free(), 8);
    }
}
