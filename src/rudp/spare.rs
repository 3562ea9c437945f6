//! Payload buffers kept for reuse: a packet's buffer, once its data is
//! acknowledged (or a delivered message's, handed back), holds the next
//! packet sent or received, so a busy connection allocates nothing per
//! packet.
//!
//! Bounded: at most `max` buffers, each of at most one packet's payload
//! (larger ones are freed), and all of them freed when the connection
//! goes quiet.

/// A bounded stack of empty buffers.
#[derive(Debug)]
pub(crate) struct Spare {
    buffers: Vec<Vec<u8>>,
    max: usize,
    /// The largest buffer kept, in bytes of capacity.
    size: usize,
}

impl Spare {
    /// Keeps up to `max` buffers of at most `size` bytes each.
    pub(crate) fn new(max: usize, size: usize) -> Spare {
        Spare {
            buffers: Vec::new(),
            max,
            size,
        }
    }

    /// A buffer holding a copy of `bytes`: a kept one if any.
    pub(crate) fn copy_of(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut buffer = self.buffers.pop().unwrap_or_default();
        buffer.extend_from_slice(bytes);
        buffer
    }

    /// Keeps `buffer` for reuse, if there is room and it is not too large.
    pub(crate) fn give(&mut self, mut buffer: Vec<u8>) {
        let fits = (1..=self.size).contains(&buffer.capacity());
        if fits && self.buffers.len() < self.max {
            buffer.clear();
            self.buffers.push(buffer);
        }
    }

    /// Frees every buffer kept.
    pub(crate) fn release(&mut self) {
        self.buffers = Vec::new();
    }

    /// Buffers kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buffers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_within_the_bounds() {
        let mut spare = Spare::new(2, 16);
        let a = spare.copy_of(b"hello");
        assert_eq!(a, b"hello");
        let at = a.as_ptr();
        spare.give(a);
        let b = spare.copy_of(b"hi");
        assert_eq!(
            (b.as_slice(), b.as_ptr()),
            (&b"hi"[..], at),
            "the same buffer, refilled"
        );
        spare.give(b);
        spare.give(Vec::with_capacity(8));
        spare.give(Vec::with_capacity(8)); // a third: over `max`, freed
        assert_eq!(spare.len(), 2);
        spare.release();
        spare.give(Vec::with_capacity(17)); // over `size`: freed
        spare.give(Vec::new()); // nothing to keep
        assert_eq!(spare.len(), 0);
    }
}
