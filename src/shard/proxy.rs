//! The PROXY protocol on accepted connections (`ServerConfig::proxy_from`).
//!
//! A connection from a `proxy_from` peer is admitted under `max_conns`
//! only, and its service is not told of it, until its header is read:
//! then it is counted against the client the header names (the per-IP
//! cap, connect rate and bans, refused as at accept), its peer address
//! becomes the client's, and its service's `on_open` runs. Over TLS the
//! header comes first, read raw, and the bytes after it go to the TLS
//! session. A malformed or oversized header closes it; no header within
//! the frame timeout closes it as a frame timeout (`proxy_timeouts`).
//!
//! A connection from anyone else on a server that takes headers is
//! checked once, on its first input: bytes that begin a PROXY header
//! (its first 6 or 12 bytes) close it (`proxy_untrusted`): a balancer
//! outside `proxy_from` is a misconfiguration to be seen, and a client
//! must not think it chose its own address.

use std::io;

use super::conn::{Flags, Input, ReadOutcome};
use super::context::ConnContext;
use super::Shard;
use crate::limit::Source;
use crate::net::buffer::Scratch;
use crate::net::proxy_header::{begins_header, parse, Parsed, ProxyHeader};

impl Shard {
    /// Handles `input` of connection `key` (read into `scratch`, unless
    /// it is the connection's own) while a PROXY check is due:
    /// `None` to read on (the header taken, or no header coming),
    /// `Some` to stop as `State::delivered` says.
    pub(super) fn check_proxy(
        &mut self,
        key: usize,
        input: Input,
        scratch: &Scratch,
        budget: usize,
    ) -> Option<ReadOutcome> {
        let conn = &mut self.conns[key];
        let peer = conn.state.peer.get();
        // From a proxy_from peer a header is due; from anyone else, none
        // may come.
        if !self.config.proxy_from.contains(peer.ip()) {
            // Judged on the first input alone: a blank line ("\r\n", the
            // start of the v2 signature) must not wait for more, and a
            // balancer writes its header at once.
            return match begins_header(input.bytes(scratch)) {
                None | Some(false) => {
                    conn.state.flags.clear(Flags::PROXY_PENDING);
                    let env = &mut self.res.env();
                    conn.state.requeue(&conn.transport, input, scratch, 0, env);
                    None
                }
                Some(true) => {
                    self.res.stats.proxy_untrusted.incr();
                    let what = format_args!(
                        "PROXY header from a peer outside --proxy-from; connection closed"
                    );
                    self.refuse_header(key, input, scratch, budget, what)
                }
            };
        }
        let (header, len) = match parse(input.bytes(scratch)) {
            Ok(Parsed::Incomplete) => {
                let env = &mut self.res.env();
                return conn
                    .state
                    .delivered(&conn.transport, input, scratch, 0, budget, env);
            }
            Err(e) => {
                self.res.stats.proxy_malformed.incr();
                let what = format_args!("{e}; connection closed");
                return self.refuse_header(key, input, scratch, budget, what);
            }
            Ok(Parsed::Complete { header, len }) => (header, len),
        };
        let client = match header {
            ProxyHeader::Proxied { source, .. } => source,
            ProxyHeader::Local => peer, // a health check: the proxy's own
        };
        self.res.stats.proxy_headers.incr();
        let (service, place) = (conn.service, conn.listener);
        conn.state.flags.clear(Flags::PROXY_PENDING);
        let pass = conn.state.take_pass().expect("an open connection's pass");
        conn.state.peer = client.into();
        let now = self.res.timers.now();
        match self.res.gate.readmit(pass, client.ip(), now) {
            Ok(pass) => {
                if pass.is_trusted() {
                    self.res.stats.conns_trusted.incr();
                }
                self.conns[key].state.hold_pass(pass);
            }
            Err(reason) => {
                let tls = self.conns[key].transport.handshaking();
                let message = self.refusal(service, place, tls, client, reason);
                let conn = &mut self.conns[key];
                let env = &mut self.res.env();
                if let Some(message) = message {
                    conn.state.send(&mut conn.transport, &message, env);
                }
                conn.state.flags.set(Flags::CLOSE_REQUESTED);
                // Its service never heard of it: closed as if at accept
                // (`close` knows it by the flag and the proxy's address).
                conn.state.flags.set(Flags::PROXY_PENDING);
                conn.state.peer = peer.into();
                let all = input.bytes(scratch).len();
                return conn
                    .state
                    .delivered(&conn.transport, input, scratch, all, budget, env);
            }
        }
        let conn = &mut self.conns[key];
        let mut sent = 0;
        let rest = &input.bytes(scratch)[len..];
        let consumed = match conn.transport.take_ciphertext(rest, &mut sent) {
            Ok(Ok(true)) => input.bytes(scratch).len(),
            Ok(Ok(false)) => len,
            Ok(Err(failure)) => {
                self.res.stats.tls_errors.incr();
                let failure = io::Error::other(failure.to_string());
                conn.state.fail(&failure);
                input.bytes(scratch).len()
            }
            Err(e) => {
                conn.state.fail(&e);
                input.bytes(scratch).len()
            }
        };
        self.res.stats.tcp_bytes_out.add(sent as u64);
        conn.state.requeue(
            &conn.transport,
            input,
            scratch,
            consumed,
            &mut self.res.env(),
        );
        let mut cx = ConnContext::new(key, &mut self.conns, &mut self.res);
        self.services[usize::from(service)].on_open(&mut cx);
        None
    }

    /// Closes connection `key` for its PROXY header, logged per source.
    fn refuse_header(
        &mut self,
        key: usize,
        input: Input,
        scratch: &Scratch,
        budget: usize,
        what: std::fmt::Arguments<'_>,
    ) -> Option<ReadOutcome> {
        let peer = self.conns[key].state.peer.get();
        super::warn_suspicious(&mut self.res, Source::from(peer.ip()), what);
        let conn = &mut self.conns[key];
        conn.state.fail(&io::Error::other("PROXY header refused"));
        let all = input.bytes(scratch).len();
        let env = &mut self.res.env();
        conn.state
            .delivered(&conn.transport, input, scratch, all, budget, env)
    }
}
