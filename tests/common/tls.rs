//! TLS test scaffolding: a self-signed certificate made on the spot and a
//! rustls client that trusts exactly it.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sockloop::net::tls::TlsConfig;

use super::connect;

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A self-signed certificate for `localhost`: the server's config and the
/// client's, which trusts exactly it.
pub fn certificates() -> (
    TlsConfig,
    Arc<rustls::ClientConfig>,
    rcgen::CertifiedKey<rcgen::KeyPair>,
) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert: CertificateDer<'static> = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    let server = TlsConfig::from_der(vec![cert.clone()], key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (server, Arc::new(client), made)
}

pub fn tls_connect(addr: SocketAddr, client: &Arc<rustls::ClientConfig>) -> TlsStream {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(client), name).unwrap();
    rustls::StreamOwned::new(conn, connect(addr))
}
