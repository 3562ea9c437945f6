//! TLS with rustls, driven sans-IO over the connection's bytes: the loop
//! reads ciphertext from the socket and hands it to rustls, takes
//! plaintext out for the service, and writes what rustls wants to send.
//! rustls never touches the socket itself.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// Plaintext rustls may hold for sending before it pushes back: beyond
/// it, output waits in the connection's own write buffer, where the output
/// limits see it.
const PLAINTEXT_LIMIT: usize = 16 * 1024;

/// Ciphertext read per call: rustls holds at most 16 KiB of decrypted
/// input, so no more than that is handed over before it is taken out.
pub(crate) const CIPHERTEXT_READ: usize = 16 * 1024;

/// A server certificate chain and key, ready for TLS listeners (TLS 1.2
/// and 1.3, ring as the crypto provider).
///
/// ```no_run
/// use std::path::Path;
/// use sockloop::net::tls::TlsConfig;
///
/// let tls = TlsConfig::from_pem_files(Path::new("cert.pem"), Path::new("key.pem"))?;
/// # Ok::<(), sockloop::Error>(())
/// ```
#[derive(Clone)]
pub struct TlsConfig(pub(crate) Arc<rustls::ServerConfig>);

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}

impl TlsConfig {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1). Every problem is an [`Error::Config`]
    /// naming the file.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsConfig, Error> {
        let bad = |path: &Path, what: String| Error::Config(format!("{}: {what}", path.display()));
        let certs = CertificateDer::pem_file_iter(cert)
            .map_err(|e| bad(cert, format!("cannot read certificates: {e}")))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(cert, format!("bad certificate: {e}")))?;
        if certs.is_empty() {
            return Err(bad(cert, "no certificate in the file".into()));
        }
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| bad(key, format!("no usable private key: {e}")))?;
        TlsConfig::from_der(certs, key_der).map_err(|e| bad(key, e.to_string()))
    }

    /// A configuration from DER certificates and key (e.g. generated in a
    /// test). Fails if the key does not fit the certificate or the
    /// provider cannot use it.
    pub fn from_der(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsConfig, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::Config(format!("TLS versions: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| Error::Config(format!("certificate and key: {e}")))?;
        config.max_early_data_size = 0;
        Ok(TlsConfig(Arc::new(config)))
    }
}

/// Why a connection's TLS failed: rustls's reason, and whether it was
/// still in its handshake (a client that does not speak TLS, or trusts
/// another certificate, fails there). Displayed as the log line's words.
#[derive(Debug)]
pub(crate) struct TlsFailure {
    pub(crate) reason: rustls::Error,
    pub(crate) handshake: bool,
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stage = if self.handshake {
            "handshake"
        } else {
            "session"
        };
        write!(f, "TLS {stage} failed: {}", self.reason)
    }
}

/// One connection's TLS state.
#[derive(Debug)]
pub(crate) struct TlsSession {
    conn: rustls::ServerConnection,
    /// The peer sent close_notify: its side is done, like a FIN.
    peer_closed: bool,
    /// We sent ours.
    notified: bool,
    /// Where the peer's ciphertext stands in its record framing.
    records: Records,
}

/// Follows the peer's TLS record framing (a 5-byte header whose last two
/// bytes are the body's length, then the body) over the ciphertext read,
/// to tell whether rustls holds part of a record: bytes that opened a
/// record no plaintext came of yet. Skips whole bodies by length, so it
/// costs a few steps per record, not per byte.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Records {
    /// Header bytes of the next record seen so far (0 to 4).
    header: u8,
    /// The high byte of its length, once seen.
    len_high: u8,
    /// Body bytes of the current record not yet seen.
    body_left: u16,
}

impl Records {
    /// Follows `ciphertext`, the next bytes from the peer.
    pub(crate) fn feed(&mut self, mut ciphertext: &[u8]) {
        while let Some((&byte, rest)) = ciphertext.split_first() {
            if self.body_left > 0 {
                let n = ciphertext.len().min(usize::from(self.body_left));
                self.body_left -= n as u16; // n <= body_left
                ciphertext = &ciphertext[n..];
                continue;
            }
            match self.header {
                3 => self.len_high = byte,
                4 => self.body_left = u16::from_be_bytes([self.len_high, byte]),
                _ => {}
            }
            self.header = (self.header + 1) % 5;
            ciphertext = rest;
        }
    }

    /// Part of a record has arrived, not all of it.
    pub(crate) fn incomplete(&self) -> bool {
        self.header > 0 || self.body_left > 0
    }
}

impl TlsSession {
    pub(crate) fn new(config: &TlsConfig) -> Result<TlsSession, rustls::Error> {
        let mut conn = rustls::ServerConnection::new(Arc::clone(&config.0))?;
        conn.set_buffer_limit(Some(PLAINTEXT_LIMIT));
        Ok(TlsSession {
            conn,
            peer_closed: false,
            notified: false,
            records: Records::default(),
        })
    }

    /// Takes ciphertext just read from the socket. On a protocol error
    /// rustls queues an alert (send it with `write_tls`, then close).
    pub(crate) fn receive(&mut self, mut ciphertext: &[u8]) -> Result<(), TlsFailure> {
        let handshake = self.conn.is_handshaking();
        let failed = |reason| TlsFailure { reason, handshake };
        self.records.feed(ciphertext);
        while !ciphertext.is_empty() {
            // read_tls takes at most what rustls can buffer; processing
            // frees room for the rest.
            match self.conn.read_tls(&mut ciphertext) {
                Ok(0) => return Ok(()), // after close_notify: the rest is ignored
                Ok(_) => {}
                Err(e) => return Err(failed(rustls::Error::General(e.to_string()))),
            }
            self.conn.process_new_packets().map_err(failed)?;
        }
        Ok(())
    }

    /// Moves decrypted bytes into `out`; returns how many (0: none now).
    pub(crate) fn read_plaintext(&mut self, out: &mut [u8]) -> usize {
        match self.conn.reader().read(out) {
            Ok(0) if !out.is_empty() => {
                self.peer_closed = true; // close_notify: a clean end
                0
            }
            Ok(n) => n,
            Err(_) => 0, // WouldBlock: nothing decrypted yet
        }
    }

    /// Whether the peer sent close_notify.
    pub(crate) fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Hands plaintext to rustls to encrypt; returns how much it took
    /// (less than all once its buffer limit is reached).
    pub(crate) fn write_plaintext(&mut self, bytes: &[u8]) -> usize {
        self.conn.writer().write(bytes).unwrap_or(0)
    }

    /// Writes pending records to `socket` until it is full or nothing is
    /// pending. Adds the bytes written to `sent`, also when it fails
    /// midway: the caller counts them.
    pub(crate) fn write_tls(
        &mut self,
        socket: &mut impl Write,
        sent: &mut usize,
    ) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(socket) {
                Ok(n) => *sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Records are waiting for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The peer sent part of a TLS record and not the rest: rustls holds
    /// ciphertext no plaintext came of yet, an open frame.
    pub(crate) fn record_incomplete(&self) -> bool {
        self.records.incomplete()
    }

    /// Queues close_notify, once.
    pub(crate) fn close_notify(&mut self) {
        if !self.notified {
            self.notified = true;
            self.conn.send_close_notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Records;

    /// A record: a header for `len` body bytes, and the body.
    fn record(len: u16) -> Vec<u8> {
        let mut bytes = vec![23, 3, 3];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend(std::iter::repeat_n(0xAA, usize::from(len)));
        bytes
    }

    #[test]
    fn a_record_is_incomplete_from_its_first_byte_to_its_last() {
        let wire = record(300);
        let mut records = Records::default();
        for (i, byte) in wire.iter().enumerate() {
            records.feed(std::slice::from_ref(byte));
            assert_eq!(records.incomplete(), i + 1 < wire.len(), "after byte {i}");
        }
    }

    #[test]
    fn records_split_anywhere_and_empty_bodies() {
        let mut wire = record(0);
        wire.extend(record(16_384));
        wire.extend(record(1));
        for split in [1, 4, 6, 7, 100, 16_389, 16_393, 16_395] {
            let mut records = Records::default();
            records.feed(&wire[..split]);
            assert!(records.incomplete(), "split at {split}");
            records.feed(&wire[split..]);
            assert!(!records.incomplete(), "split at {split}, then the rest");
        }
        let mut records = Records::default();
        records.feed(&wire[..5]);
        assert!(
            !records.incomplete(),
            "an empty record ends with its header"
        );
        records.feed(&wire[5..]);
        records.feed(&record(2)[..6]);
        assert!(records.incomplete());
    }
}
