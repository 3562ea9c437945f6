//! The supervisor's `GET /metrics`: it scrapes every worker's own endpoint
//! (each within [`SCRAPE_TIMEOUT`], all at once) and answers with one
//! merged text plus its own gauges and counters.
//!
//! One thread answers one request at a time: a client gets
//! [`SCRAPE_TIMEOUT`] to send its request head and to take the answer, so
//! a request costs at most about three times that.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::merge::merge;
use super::Board;
use crate::metrics::{request_line, Head};

/// How long a scrape waits for one worker; a worker that has not answered
/// by then is reported as `sockloop_worker_scrape_ok{worker="I"} 0`.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest request head accepted, and the most a worker's answer may
/// hold (its metrics are a few KiB per shard).
const MAX_REQUEST: usize = 8 * 1024;
const MAX_ANSWER: usize = 4 << 20;

/// The request the supervisor sends each worker.
pub(crate) const SCRAPE_REQUEST: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: sockloop\r\n\r\n";

/// Answers scrapes on `listener` from a thread named `sockloop-metrics`,
/// for the rest of the process.
pub(crate) fn spawn(listener: TcpListener, board: Arc<Mutex<Board>>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("sockloop-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &board) {
                            log::debug!("metrics request: {e}");
                        }
                    }
                    // Out of descriptors, say: let it pass rather than spin.
                    Err(e) => {
                        log::warn!("metrics endpoint: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(())
}

fn answer(mut stream: TcpStream, board: &Mutex<Board>) -> io::Result<()> {
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    let mut head = Vec::new();
    let mut chunk = [0; 1024];
    let line = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        match request_line(&head) {
            Head::Complete(line) => break line.to_vec(),
            Head::BareCr => return respond(&mut stream, "400 Bad Request", "bare CR\n"),
            Head::Partial if head.len() > MAX_REQUEST => {
                return respond(&mut stream, "431 Request Header Fields Too Large", "");
            }
            Head::Partial => {}
        }
    };
    let mut words = line.split(|&b| b == b' ');
    match (words.next(), words.next()) {
        (Some(b"GET"), Some(b"/metrics")) => {
            let snapshot = board.lock().unwrap_or_else(|e| e.into_inner()).clone();
            respond(&mut stream, "200 OK", &body(&snapshot))
        }
        (Some(b"GET"), Some(_)) => respond(&mut stream, "404 Not Found", "try /metrics\n"),
        (Some(_), Some(_)) => respond(&mut stream, "405 Method Not Allowed", "GET only\n"),
        _ => respond(&mut stream, "400 Bad Request", "not an HTTP request\n"),
    }
}

/// Every worker's metrics, scraped at once, merged, and the supervisor's.
fn body(board: &Board) -> String {
    let texts: Vec<Option<String>> = std::thread::scope(|scope| {
        let scrapes: Vec<_> = (board.workers.iter())
            .map(|w| w.metrics.filter(|_| w.up))
            .map(|addr| scope.spawn(move || addr.and_then(|addr| scrape(addr).ok())))
            .collect();
        (scrapes.into_iter())
            .map(|s| s.join().ok().flatten())
            .collect()
    });
    let answered: Vec<(usize, &str)> = (texts.iter().enumerate())
        .filter_map(|(i, text)| Some((i, text.as_deref()?)))
        .collect();
    let mut own = String::new();
    let mut family = |name: &str, kind: &str, help: &str, values: &[u64]| {
        own.push_str(&format!(
            "# HELP sockloop_{name} {help}\n# TYPE sockloop_{name} {kind}\n"
        ));
        for (worker, value) in values.iter().enumerate() {
            own.push_str(&format!("sockloop_{name}{{worker=\"{worker}\"}} {value}\n"));
        }
    };
    let per = |f: &dyn Fn(usize) -> u64| (0..board.workers.len()).map(f).collect::<Vec<u64>>();
    let w = &board.workers;
    family(
        "worker_up",
        "gauge",
        "1 while the worker process runs and has reported ready.",
        &per(&|i| u64::from(w[i].up)),
    );
    family(
        "worker_pid",
        "gauge",
        "The worker's process id (0 while none runs).",
        &per(&|i| u64::from(w[i].pid.unwrap_or(0))),
    );
    family(
        "worker_restarts_total",
        "counter",
        "Times the worker was started again after it died.",
        &per(&|i| w[i].restarts),
    );
    family(
        "worker_scrape_ok",
        "gauge",
        "1 if the worker's metrics answered this scrape within 1s; 0 if it did not (its \
         counters are missing from this answer).",
        &per(&|i| u64::from(texts[i].is_some())),
    );
    let up = w.iter().filter(|w| w.up).count();
    own.push_str(&format!(
        "# HELP sockloop_workers_up Worker processes running and ready.\n\
         # TYPE sockloop_workers_up gauge\nsockloop_workers_up {up}\n\
         # HELP sockloop_workers Worker processes asked for (--workers).\n\
         # TYPE sockloop_workers gauge\nsockloop_workers {}\n",
        w.len()
    ));
    merge(&answered, &own)
}

/// One worker's metrics text, or an error if it does not answer in full
/// within [`SCRAPE_TIMEOUT`].
fn scrape(addr: SocketAddr) -> io::Result<String> {
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "scrape timed out"))
    };
    let mut stream = TcpStream::connect_timeout(&addr, left()?)?;
    stream.set_write_timeout(Some(left()?))?;
    stream.write_all(SCRAPE_REQUEST)?;
    let mut answer = Vec::new();
    let mut chunk = [0; 16 * 1024];
    loop {
        stream.set_read_timeout(Some(left()?))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
        if answer.len() > MAX_ANSWER {
            return Err(io::Error::other("metrics answer too large"));
        }
    }
    let text = String::from_utf8(answer).map_err(io::Error::other)?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200 ") => Ok(body.to_string()),
        _ => Err(io::Error::other("not a 200 answer")),
    }
}

/// One answer, then the connection closes.
fn respond(stream: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}
