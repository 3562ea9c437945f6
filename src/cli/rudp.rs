//! `sockloop rudp`: reliable round trips to a rudp echo, measured.

use std::time::{Duration, Instant};

use clap::Args;

use sockloop::client::rudp::Client as RudpClient;
use sockloop::config::{parse_duration, parse_size};
use sockloop::{rudp, Error};

use super::addr::HostPort;
use crate::Failure;

/// The longest the handshake is waited for, whatever `--timeout` says: a
/// rudp server answers a hello within a round trip.
const HANDSHAKE_MAX: Duration = Duration::from_secs(5);

#[derive(Args)]
pub(crate) struct RudpArgs {
    /// The server's rudp socket, HOST:PORT (a name: its first address).
    #[arg(value_name = "ADDR")]
    addr: HostPort,
    /// Messages to send.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Bytes per message (at least 8; over 1200 they are fragmented).
    #[arg(long, value_parser = parse_size, default_value = "100", value_name = "BYTES")]
    size: usize,
    /// Ordered but not reliable: gaps are skipped, nothing is resent.
    #[arg(long)]
    unreliable: bool,
    /// Give up after this long, the handshake included (which waits at most 5 s).
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    timeout: Duration,
    /// Print what the client's loop does: a line per datagram sent and
    /// received, timer fired (with the retransmissions so far) and the
    /// handshake's end, under the log target `sockloop::trace`.
    #[arg(long)]
    trace: bool,
    /// Trace lines per second; beyond it lines are held back and one line
    /// counts them when the second ends.
    #[arg(long, value_name = "N", default_value_t = sockloop::DEFAULT_TRACE_RATE)]
    trace_rate: u32,
}

/// `sockloop rudp`: numbered messages out, echoes back, checked in order.
pub(crate) fn rudp_client(args: RudpArgs) -> Result<(), Failure> {
    let size = args.size.max(8);
    let mode = match args.unreliable {
        true => rudp::Mode::Unreliable,
        false => rudp::Mode::Reliable,
    };
    let config = rudp::Config {
        mode,
        ..rudp::Config::default()
    };
    if size > config.max_message {
        let max = config.max_message;
        return Err(Error::Config(format!("--size is over the {max}-byte maximum")).into());
    }
    let deadline = Instant::now() + args.timeout;
    let handshake = args.timeout.min(HANDSHAKE_MAX);
    let trace = sockloop::TraceLines::new("rudp client", args.trace.then_some(args.trace_rate));
    let server = args.addr.first();
    let mut client = RudpClient::connect_traced(server, config, handshake, trace).map_err(|e| {
        match e.kind() {
            std::io::ErrorKind::TimedOut => std::io::Error::new(
                e.kind(),
                format!(
                    "no answer to the rudp handshake from {} within {handshake:?}: is it a rudp port (serve --udp ADDR=rudp)?",
                    args.addr
                ),
            ),
            _ => e,
        }
    })?;
    // Message `n` is its number, then `n % 251` in every other byte.
    let message = |buffer: &mut Vec<u8>, n: u64| {
        buffer.clear();
        buffer.resize(size, (n % 251) as u8);
        buffer[..8].copy_from_slice(&n.to_be_bytes());
    };
    // Echoes' buffers, rewritten as the next messages, which then leave
    // from their own buffers, not copied. Each echo adds one and each
    // message sent takes one; a buffer is made only when none is here, so
    // they are no more than the connection's windows held at once. Once
    // all are sent, echoes go back to the client instead.
    let mut free: Vec<Vec<u8>> = Vec::new();
    // Message `next`, written but refused for want of room.
    let mut refused: Option<Vec<u8>> = None;
    let start = Instant::now(); // rates count from the handshake's end
    let mut sent_at = Vec::with_capacity(args.count as usize);
    // Round trips in microseconds, into the histogram after the clock stops.
    let mut rtt_us: Vec<u32> = Vec::with_capacity(args.count as usize);
    let (mut next, mut delivered, mut expected) = (0, 0u64, 0u64);
    // The clock is read once per round that queues something (what one
    // round queues leaves together) and once per echo received (the
    // client's own read time), never per message otherwise.
    let mut past_deadline = false;
    while delivered < args.count && !past_deadline {
        let mut now = None;
        while next < args.count {
            let buffer = refused.take().unwrap_or_else(|| {
                let mut buffer = free.pop().unwrap_or_default();
                message(&mut buffer, next);
                buffer
            });
            if let Some(buffer) = client.try_queue_vec(buffer)? {
                refused = Some(buffer);
                break;
            }
            sent_at.push(*now.get_or_insert_with(Instant::now));
            next += 1;
        }
        let Some((at, echo)) = client.recv_at(Duration::from_millis(10))? else {
            past_deadline = Instant::now() >= deadline;
            continue;
        };
        past_deadline = at >= deadline;
        // Reliable: exactly the next one. Unreliable: a later one may skip a gap.
        let n = echo.get(..8).map_or(u64::MAX, |b| {
            u64::from_be_bytes(b.try_into().unwrap_or_default())
        });
        let in_order = n == expected || (args.unreliable && n > expected);
        // Every byte after the number is `n % 251`: or-ing each byte's
        // difference compiles to wide vector instructions, a few dozen for
        // 1,200 bytes (64-byte memcmp calls cost about ten times that).
        let fill = (n % 251) as u8;
        let intact =
            echo.len() == size && echo[8..].iter().fold(0, |diff, &b| diff | (b ^ fill)) == 0;
        if !in_order || n >= next || !intact {
            let error = format!("echo {n} out of order or damaged (expected {expected})");
            return Err(std::io::Error::other(error).into());
        }
        let rtt = at.saturating_duration_since(sent_at[n as usize]);
        rtt_us.push(rtt.as_micros().min(u32::MAX.into()) as u32);
        expected = n + 1;
        delivered += 1;
        match next < args.count {
            true => free.push(echo),
            false => client.recycle(echo),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut rtts = hdrhistogram::Histogram::<u64>::new(3).expect("3 significant digits are valid");
    for &us in &rtt_us {
        let _ = rtts.record(us.into());
    }
    let stats = client.stats();
    println!(
        "delivered {delivered}/{} messages of {size} B in {elapsed:.3} s ({:.0} msg/s, {:.2} MB/s)",
        args.count,
        delivered as f64 / elapsed,
        (delivered * size as u64) as f64 / elapsed / 1e6
    );
    println!(
        "retransmissions {}, timeouts {}, duplicates {}, skipped {}",
        stats.retransmissions, stats.timeouts, stats.receive.duplicates, stats.receive.skipped
    );
    let p = |q: f64| rtts.value_at_quantile(q);
    println!(
        "rtt us: min {} p50 {} p90 {} p99 {} max {}",
        rtts.min(),
        p(0.5),
        p(0.9),
        p(0.99),
        rtts.max()
    );
    let _ = client.close();
    if delivered < args.count && !args.unreliable {
        let missing = args.count - delivered;
        let error = format!("{missing} echoes missing after {:?}", args.timeout);
        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, error).into());
    }
    Ok(())
}
