//! Built without the `tls` feature: the names the loop uses for TLS, as
//! types with no values. A connection's transport can then never be TLS,
//! and every TLS branch of the loop compiles to nothing, with no `cfg` in
//! the loop itself.

use std::io::{self, Write};

/// Kept equal to the real module's, as the loop sizes its reads by it.
pub(crate) const CIPHERTEXT_READ: usize = 16 * 1024;

/// No TLS configuration can exist without the `tls` feature.
#[derive(Debug, Clone)]
pub(crate) enum TlsConfig {}

/// No TLS failure can happen without the `tls` feature.
#[derive(Debug)]
pub(crate) enum TlsFailure {}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

/// No TLS session can exist without the `tls` feature.
#[derive(Debug)]
pub(crate) enum TlsSession {}

impl TlsSession {
    pub(crate) fn new(config: &TlsConfig) -> Result<TlsSession, TlsFailure> {
        match *config {}
    }

    pub(crate) fn receive(&mut self, _: &[u8]) -> Result<(), TlsFailure> {
        match *self {}
    }

    pub(crate) fn read_plaintext(&mut self, _: &mut [u8]) -> usize {
        match *self {}
    }

    pub(crate) fn peer_closed(&self) -> bool {
        match *self {}
    }

    pub(crate) fn write_plaintext(&mut self, _: &[u8]) -> usize {
        match *self {}
    }

    pub(crate) fn write_tls(&mut self, _: &mut impl Write, _: &mut usize) -> io::Result<()> {
        match *self {}
    }

    pub(crate) fn wants_write(&self) -> bool {
        match *self {}
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        match *self {}
    }

    pub(crate) fn record_incomplete(&self) -> bool {
        match *self {}
    }

    pub(crate) fn close_notify(&mut self) {
        match *self {}
    }
}
