//! # sockloop
//!
//! A TCP + UDP server core written directly on `mio` readiness polling:
//! one single-threaded event loop per shard, connections in a `slab`,
//! hand-managed read and write buffers lent from a per-shard pool, batched
//! UDP (`recvmmsg`/`sendmmsg` on Linux), and services that never see a
//! socket.
//!
//! ```text
//!             CLI (main.rs)                     sockloop serve | chat | rudp | bench
//!             client/                           clients on their own sockets: chat, rudp,
//!                                               the load generator, a connection pool
//!                   |
//!             supervisor/                       serve --workers N: worker processes on shared
//!                   |                           ports, restarts, signals, merged /metrics
//!             Server (server.rs)                builds shards, runs, stops
//!                   |
//!             Shard (shard/)                    owns Poll, the slab, listeners,
//!                   |                           UDP sockets, buffers, mailbox
//!             metrics/                          counters per shard, GET /metrics
//!                   |  service/: the API (callbacks, contexts, Loop) -- no sockets below
//!             services/                         echo, json, chat, rudp echo, the registry
//!                   |
//!             protocol/                         wire formats shared by services and clients:
//!                   |                           the chat's messages, encodings, prompt, clock;
//!                   |                           the NATS client protocol
//!             bus/                              the NATS client and the chat over it, sans-IO
//!                   |                           (the chat drives it on an outbound connection)
//!             timer/  codec/  rudp/  limit/     timer wheel, frame decoders, reliable UDP,
//!                                               rates, caps and bans (pure: bytes and time in,
//!                                               bytes, decisions and deadlines out)
//!             net/                              socket2 setup, buffers, batched UDP, TLS,
//!                                               sys.rs: the only `unsafe`
//! ```
//!
//! New to event loops? `docs/tour.md` (in the repository) walks the
//! chapters of the Go tutorial "Mastering TCP and UDP in Golang" in order,
//! each with an example in `examples/`, the module that does the work,
//! and the path one byte takes through the loop, with the commands to
//! watch it happen.
//!
//! Every Cargo feature is on by default; with `default-features = false`
//! this is the core alone (mio, slab, socket2, log, libc), and `signals`,
//! `tls`, `rudp`, `services`, `client` and `cli` add the rest back (see
//! the README's "Cargo features").
//!
//! ```no_run
//! use sockloop::{services::Echo, Server};
//!
//! let server = Server::builder()
//!     .tcp("127.0.0.1:7000".parse().unwrap(), || Echo)
//!     .udp("127.0.0.1:7000".parse().unwrap(), || Echo)
//!     .build()?;
//! println!("echo on {:?}", server.tcp_addrs());
//! server.run()?;
//! # Ok::<(), sockloop::Error>(())
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "services")]
pub mod bus;
#[cfg(feature = "client")]
pub mod client;
pub mod codec;
pub mod config;
mod error;
pub mod limit;
pub mod metrics;
pub mod net;
#[cfg(feature = "services")]
pub mod proto;
#[cfg(feature = "services")]
pub mod protocol;
#[doc(hidden)]
pub mod rng;
#[cfg(feature = "rudp")]
pub mod rudp;
mod server;
pub mod service;
pub mod services;
mod shard;
#[cfg(all(feature = "signals", unix))]
pub mod supervisor;
pub mod timer;

pub use config::ServerConfig;
pub use error::Error;
pub use metrics::Stats;
pub use server::{Builder, Handle, Listener, Server};
pub use shard::trace::{TraceLimit, TraceLines, DEFAULT_TRACE_RATE, TRACE_TARGET};
