//! A tiny key-value store whose data every shard shares.
//!
//! One command per line, one reply per line:
//!
//! ```text
//! SET key value    -> OK                  (the value is the rest of the line, spaces included)
//! GET key          -> VALUE value | NOT_FOUND
//! DEL key          -> DELETED | NOT_FOUND
//! STATS            -> SHARD i/n COMMANDS c KEYS k   (this connection's shard and commands)
//! QUIT             -> BYE, then the server closes
//! anything else    -> ERR why
//! ```
//!
//! ```sh
//! cargo run --example shared_state                    # 127.0.0.1:7102, 2 shards
//! cargo run --example shared_state -- 127.0.0.1:0 4   # any port, 4 shards
//! nc 127.0.0.1 7102                                   # then: SET a 1, GET a
//! ```
//!
//! It prints `listening ADDR` on stdout once bound; Ctrl-C drains and
//! exits, a second Ctrl-C stops at once.
//!
//! # Why the map is shared, and why a lock is fine here
//!
//! sockloop makes one service value per shard, and the kernel spreads
//! connections over the shards. A map kept as a plain field of the service
//! would be one map per shard: a `SET` on one connection and a `GET` on
//! another would answer `NOT_FOUND` whenever the two landed on different
//! shards. So the map lives behind an `Arc<Mutex<..>>` made once, and
//! every shard's service value holds a clone of the `Arc`.
//!
//! A shard thread must never block for long, since every connection of
//! the shard waits while it does. A `Mutex` is fine here because it is
//! held only for one hash-map operation on small, bounded keys and values
//! (well under a microsecond), never across I/O, so a shard waits at most
//! for the other shards' single operations. If profiling ever shows
//! contention: a `RwLock` for read-mostly loads, or N maps each behind its
//! own lock chosen by a hash of the key; and for state that must never be
//! locked, give each key an owner shard and reach it with
//! `ConnContext::post` (message passing, as the chat does across shards).
//!
//! State that belongs to one connection (here a command count) is the
//! opposite case: it is only ever touched by the connection's own shard,
//! so it lives in the service value, in a map keyed by `ConnId`, with no
//! lock at all.
//!
//! # Bounds
//!
//! Nothing grows with what clients send: at most `MAX_KEYS` keys of at most
//! `MAX_KEY` bytes with values of at most `MAX_VALUE` bytes (about 1.1 MB
//! in all). When the store is full, a `SET` of a new key is refused with
//! `ERR store full` (there is no eviction: a store that silently forgot
//! keys would surprise more); overwriting or deleting a key still works. A
//! line longer than a `SET` of the largest key and value cannot be a valid
//! command, and its end cannot be found without buffering without limit,
//! so it gets `ERR line too long` and the connection is closed.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use sockloop::codec::LineCodec;
use sockloop::service::{CloseReason, ConnContext, ConnId, ShardContext, TcpService};
use sockloop::{Server, ServerConfig};

/// Most keys the store holds.
const MAX_KEYS: usize = 1024;
/// Longest key, in bytes.
const MAX_KEY: usize = 64;
/// Longest value, in bytes.
const MAX_VALUE: usize = 1024;
/// Longest line: `SET`, a key, a value, two spaces and `\r\n`.
const MAX_LINE: usize = 3 + 1 + MAX_KEY + 1 + MAX_VALUE + 2;

/// The data every shard shares.
type Store = Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>;

/// One value of this per shard: a handle on the shared store, plus what
/// belongs to this shard's connections.
struct KeyValue {
    store: Store,
    /// Per-connection state: commands served on each open connection.
    /// Only this shard's connections are here, so no lock is needed.
    commands: HashMap<ConnId, u64>,
    codec: LineCodec,
}

impl KeyValue {
    fn new(store: Store) -> KeyValue {
        KeyValue {
            store,
            commands: HashMap::new(),
            codec: LineCodec::new(MAX_LINE),
        }
    }

    /// Appends the reply to one command line to `reply`; false when the
    /// connection should end after it.
    fn execute(&mut self, conn: &mut ConnContext<'_>, line: &[u8], reply: &mut Vec<u8>) -> bool {
        let count = self.commands.entry(conn.id()).or_default();
        *count += 1;
        let count = *count;
        // Split off the command and the key; for SET the rest is the value.
        let mut parts = line.splitn(3, |&b| b == b' ');
        let command = parts.next().unwrap_or_default();
        let key = parts.next();
        let value = parts.next();
        // A poisoned lock means another shard panicked mid-operation, and
        // a shard that panics stops the whole server anyway; each
        // operation below leaves the map consistent, so carry on.
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        let answer: Vec<u8> = match (command, key, value) {
            (b"SET", Some(key), Some(value)) => {
                if let Some(error) = bad_key(key) {
                    error.into()
                } else if value.len() > MAX_VALUE {
                    format!("ERR value too long (at most {MAX_VALUE} bytes)").into()
                } else if store.len() >= MAX_KEYS && !store.contains_key(key) {
                    format!("ERR store full ({MAX_KEYS} keys): DEL one first").into()
                } else {
                    store.insert(key.to_vec(), value.to_vec());
                    b"OK".to_vec()
                }
            }
            (b"GET", Some(key), None) => match bad_key(key) {
                Some(error) => error.into(),
                None => match store.get(key) {
                    Some(value) => [&b"VALUE "[..], value].concat(),
                    None => b"NOT_FOUND".to_vec(),
                },
            },
            (b"DEL", Some(key), None) => match bad_key(key) {
                Some(error) => error.into(),
                None => match store.remove(key) {
                    Some(_) => b"DELETED".to_vec(),
                    None => b"NOT_FOUND".to_vec(),
                },
            },
            (b"STATS", None, None) => {
                let (shard, shards) = (conn.shard(), conn.shards());
                let keys = store.len();
                format!("SHARD {shard}/{shards} COMMANDS {count} KEYS {keys}").into()
            }
            (b"QUIT", None, None) => {
                LineCodec::encode(b"BYE", reply);
                return false;
            }
            _ => b"ERR unknown command (SET key value, GET key, DEL key, STATS, QUIT)".to_vec(),
        };
        drop(store); // never hold the lock longer than the map operation
        LineCodec::encode(&answer, reply);
        true
    }
}

/// Why `key` cannot be a key, if it cannot.
fn bad_key(key: &[u8]) -> Option<String> {
    if key.is_empty() {
        Some("ERR empty key".into())
    } else if key.len() > MAX_KEY {
        Some(format!("ERR key too long (at most {MAX_KEY} bytes)"))
    } else {
        None
    }
}

impl TcpService for KeyValue {
    fn on_open(&mut self, conn: &mut ConnContext<'_>) {
        self.commands.insert(conn.id(), 0);
    }

    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        let mut consumed = 0;
        // Every reply of this read goes out in one `send`: one write for a
        // client that sent many commands at once.
        let mut replies = Vec::new();
        loop {
            match self.codec.decode(&data[consumed..]) {
                Ok(Some((line, used))) => {
                    consumed += used;
                    if !self.execute(conn, line, &mut replies) {
                        conn.close();
                        break;
                    }
                }
                // A partial line: leave it unconsumed, the core hands it
                // back with the rest.
                Ok(None) => break,
                Err(e) => {
                    LineCodec::encode(format!("ERR line too long: {e}").as_bytes(), &mut replies);
                    conn.close();
                    consumed = data.len();
                    break;
                }
            }
        }
        conn.send(&replies);
        consumed
    }

    fn on_close(&mut self, _shard: &mut ShardContext<'_>, id: ConnId, _reason: CloseReason) {
        // Forget the connection's state with it: the map stays as small as
        // the number of open connections.
        self.commands.remove(&id);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7102".into());
    let shards = args.next().unwrap_or_else(|| "2".into());
    let (Ok(addr), Ok(shards)) = (addr.parse::<SocketAddr>(), shards.parse::<usize>()) else {
        eprintln!("usage: shared_state [ADDR [SHARDS]]   e.g. 127.0.0.1:7102 2");
        std::process::exit(2);
    };
    if let Err(e) = run(addr, shards) {
        eprintln!("shared_state: {e}");
        std::process::exit(1);
    }
}

fn run(addr: SocketAddr, shards: usize) -> Result<(), sockloop::Error> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // Made once; each shard's service gets a clone of the handle.
    let store: Store = Arc::new(Mutex::new(HashMap::new()));
    let config = ServerConfig {
        shards,
        ..ServerConfig::default()
    };
    let server = Server::builder()
        .config(config)
        .tcp(addr, move || KeyValue::new(Arc::clone(&store)))
        .build()?;
    // The real address (port 0 asks for any), for people and for tests.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening {}", server.tcp_addrs()[0])?;
    stdout.flush()?;
    server.handle().stop_on_signals()?;
    server.run()
}
