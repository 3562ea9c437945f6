//! A client connection pool: eight threads share at most four pooled
//! connections to an in-process echo server, then the pool's counters.
//!
//! ```sh
//! cargo run --example pool
//! ```

use std::io::{Read, Write};
use std::time::Duration;

use sockloop::client::{Pool, PoolConfig, Pooled};
use sockloop::{services::Echo, Server};

/// Any error, from any thread.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let server = Server::builder()
        .tcp("127.0.0.1:0".parse().unwrap(), || Echo)
        .build()?;
    let addr = server.tcp_addrs()[0];
    let handle = server.handle();
    let running = std::thread::spawn(move || server.run());

    let pool = Pool::new(
        addr,
        PoolConfig {
            max_total: 4,
            max_idle: 4,
            ..PoolConfig::default()
        },
    );
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let pool = pool.clone();
            std::thread::spawn(move || -> Result<(), BoxError> {
                for request in 0..100 {
                    let mut conn = pool.get()?;
                    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
                    let message = format!("worker {worker} request {request}\n");
                    if let Err(error) = exchange(&mut conn, message.as_bytes()) {
                        conn.discard(); // its state is unknown: never reuse it
                        return Err(error.into());
                    }
                } // each `conn` goes back to the pool here
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker panicked")?;
    }

    let stats = pool.stats();
    println!(
        "echo server on {addr}; 800 requests over {} connections",
        stats.created
    );
    println!("{stats:#?}");

    handle.stop();
    running.join().expect("server panicked")?;
    Ok(())
}

/// One request and its echoed reply.
fn exchange(conn: &mut Pooled, message: &[u8]) -> std::io::Result<()> {
    conn.write_all(message)?;
    let mut reply = vec![0; message.len()];
    conn.read_exact(&mut reply)?;
    if reply != message {
        return Err(std::io::Error::other("the echo differs"));
    }
    Ok(())
}
