//! Server configuration: every limit with its default, validated once.

use std::time::Duration;

use crate::limit::{IpLimits, Rate, Trusted};
use crate::net::socket::SocketOptions;
use crate::Error;

/// Everything a server's shards are tuned by. `Default` is what
/// `sockloop serve` runs with when given no flags, except for
/// [`udp_rate`](Self::udp_rate) (the CLI's is [`CLI_UDP_RATE`]) and
/// [`max_conns`](Self::max_conns) (the CLI's follows the open-files cap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Event loops, one thread each (default: the available cores).
    pub shards: usize,
    /// Pin shard `i` to core `i` (default off).
    pub pin_shards: bool,
    /// Options for listeners, accepted streams and UDP sockets.
    pub socket: SocketOptions,
    /// Size of one pooled buffer (16 KiB): the unit of write-buffer memory
    /// and of the input a connection keeps between reads. Reads themselves
    /// go into one shard-wide 64 KiB buffer while a connection holds
    /// nothing (`net::buffer::SCRATCH_SIZE`).
    pub buffer_size: usize,
    /// Free buffers a shard keeps for reuse (256, i.e. 4 MiB of 16 KiB
    /// buffers); returned buffers beyond that are freed.
    pub pool_max_free: usize,
    /// Bytes read from one connection per readiness event (64 KiB) before the
    /// others get their turn.
    pub read_budget: usize,
    /// Most unconsumed input a service may leave in a read buffer (64 KiB;
    /// at least [`MIN_FRAME`]): the largest frame a service can wait for.
    /// Reaching it closes the connection. Independent of `buffer_size`: a
    /// read may bring more, but what the service leaves is held to this.
    pub max_read_buffer: usize,
    /// Write-buffer bytes past which a connection stops being read (64 KiB).
    pub write_high_water: usize,
    /// Write-buffer bytes below which reading resumes (16 KiB).
    pub write_low_water: usize,
    /// Close a connection after this long with no bytes in either
    /// direction (300 s; `None` disables).
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose frame stays incomplete this long after its
    /// first byte, however slowly bytes trickle in: the anti-slowloris rule
    /// (10 s; `None` disables). A frame is open while the service leaves
    /// input unconsumed; a raw echo never has one.
    pub frame_timeout: Option<Duration>,
    /// Close a connection whose write buffer has made no progress this long:
    /// a peer that stopped reading (30 s; `None` disables).
    pub write_timeout: Option<Duration>,
    /// Pending output past which a connection is closed at once (1 MiB):
    /// a peer that does not keep up with what services push to it (a chat
    /// member under a busy room) must not hold unbounded memory.
    pub output_hard_limit: usize,
    /// Pending output that, held above for `output_soft_for`, closes the
    /// connection (256 KiB).
    pub output_soft_limit: usize,
    /// How long output may stay above the soft limit (10 s; `None`
    /// disables the soft limit).
    pub output_soft_for: Option<Duration>,
    /// How long a graceful shutdown waits for connections to flush (5 s).
    pub drain_timeout: Duration,
    /// How long a connection its service closed waits, after our FIN, for
    /// the peer's (2 s; `None`: close right after the FIN). Input is read
    /// and discarded meanwhile: closing a socket with unread input sends a
    /// reset, which can destroy the reply the peer has not read yet (the
    /// error explaining why it was closed).
    pub close_linger: Option<Duration>,
    /// How long an outbound connection (`ShardContext::connect`) may take
    /// to connect before it is given up, reported to its service as
    /// `TimedOut` (10 s; `None` disables).
    pub connect_timeout: Option<Duration>,
    /// Resolution of the timer wheel (1 ms): deadlines fire at most this
    /// much (plus the loop's own latency) after they pass.
    pub timer_tick: Duration,
    /// How long accepting pauses when descriptors run out and the reserve
    /// descriptor could not help (100 ms).
    pub accept_pause: Duration,
    /// Per-source limits, checked before a connection gets a slot: a cap
    /// per IP (256), a connect rate (50/s, burst 100), and bans after
    /// strikes (10 within 60 s ban for 60 s). See [`IpLimits`].
    pub sources: IpLimits,
    /// Networks whose connections and datagrams skip every per-source
    /// limit: the cap, the connect rate, the UDP rate, strikes and bans
    /// (default loopback, `127.0.0.0/8` and `::1/128`: a developer or a
    /// load generator on the server's own machine). The global cap,
    /// frame limits, deadlines and output limits still apply.
    pub trusted: Trusted,
    /// Peers allowed to open a TCP connection with a PROXY protocol
    /// header (v1 or v2), whose client address then stands for the
    /// connection's: in the per-source limits, bans, logs and
    /// `ConnContext::peer_addr` (default none). Their connections must
    /// send one, within the frame timeout; from anyone else a header is
    /// refused. See `crate::net::proxy_header`.
    pub proxy_from: Trusted,
    /// Messages a connection may send (`None`: no limit): services that
    /// frame messages ask [`ConnContext::take_message_token`] per message,
    /// and drop and strike what is over.
    ///
    /// [`ConnContext::take_message_token`]: crate::service::ConnContext::take_message_token
    pub message_rate: Option<Rate>,
    /// Datagrams per second from one source address on a UDP socket
    /// (`None`, the default: no limit; `sockloop serve` uses
    /// [`CLI_UDP_RATE`]); beyond, they are dropped and counted. The table
    /// of sources is bounded by `sources.max_sources`.
    pub udp_rate: Option<Rate>,
    /// Open connections across all shards beyond which new ones are
    /// refused (`None`: no cap; the CLI sets the open-files cap minus a
    /// reserve).
    pub max_conns: Option<usize>,
    /// Receive slots per UDP socket batch, all offered to one `recvmmsg` (64;
    /// at most 1,024): under load one call drains up to this many. Each slot
    /// holds `udp_max_datagram` bytes, touched only as datagrams fill it.
    pub udp_batch: usize,
    /// Largest datagram received (65,507, the IPv4 maximum); larger ones
    /// are dropped and counted.
    pub udp_max_datagram: usize,
    /// Receive batches per UDP socket per readiness event (8).
    pub udp_recv_batches: usize,
    /// Replies queued per UDP socket when the socket is full (1,024
    /// datagrams, 1 MiB); beyond either, replies are dropped and counted.
    pub udp_queue_datagrams: usize,
    /// See `udp_queue_datagrams`.
    pub udp_queue_bytes: usize,
    /// Readiness events taken per `poll` call (1,024).
    pub events_capacity: usize,
    /// Mail each shard's inbox holds (4,096): messages services post to
    /// other shards, and handed-off connections. Beyond it a post is
    /// refused: `Loop::post` drops and counts it (`mailbox_dropped`),
    /// `Loop::try_post` leaves it to its service (the chat keeps it and
    /// pauses the sender).
    pub mailbox_capacity: usize,
    /// Trace each loop turn's events and actions at this many lines per
    /// second per shard (`None`, the default: off). See
    /// [`Builder::trace`](crate::server::Builder::trace).
    pub trace: Option<u32>,
    /// Echo bulk input of plain TCP connections in the kernel with
    /// `splice(2)` (true, the default; Linux): see
    /// [`TcpService::echoes`](crate::service::TcpService::echoes).
    pub splice: bool,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin_shards: false,
            socket: SocketOptions::default(),
            buffer_size: 16 * 1024,
            pool_max_free: 256,
            read_budget: 64 * 1024,
            max_read_buffer: 64 * 1024,
            write_high_water: 64 * 1024,
            write_low_water: 16 * 1024,
            idle_timeout: Some(Duration::from_secs(300)),
            frame_timeout: Some(Duration::from_secs(10)),
            write_timeout: Some(Duration::from_secs(30)),
            output_hard_limit: 1024 * 1024,
            output_soft_limit: 256 * 1024,
            output_soft_for: Some(Duration::from_secs(10)),
            drain_timeout: Duration::from_secs(5),
            close_linger: Some(Duration::from_secs(2)),
            connect_timeout: Some(Duration::from_secs(10)),
            timer_tick: Duration::from_millis(1),
            accept_pause: Duration::from_millis(100),
            max_conns: None,
            sources: IpLimits::default(),
            trusted: Trusted::default(),
            proxy_from: Trusted::none(),
            message_rate: None,
            udp_rate: None,
            udp_batch: 64,
            udp_max_datagram: 65_507,
            udp_recv_batches: 8,
            udp_queue_datagrams: 1024,
            udp_queue_bytes: 1024 * 1024,
            events_capacity: 1024,
            mailbox_capacity: 4096,
            trace: None,
            splice: true,
        }
    }
}

impl ServerConfig {
    /// Checks that the limits are usable together.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |msg: &str| Err(Error::Config(msg.to_string()));
        if !(1..=1024).contains(&self.shards) {
            return fail("the shard count must be 1..=1024");
        }
        if self.mailbox_capacity == 0 {
            return fail("the mailbox capacity must be positive");
        }
        if self.buffer_size == 0 || self.read_budget == 0 {
            return fail("buffer size and read budget must be positive");
        }
        if self.max_read_buffer < MIN_FRAME {
            return Err(Error::Config(format!(
                "--max-frame (max_read_buffer) is {}; it must be at least {}",
                size(self.max_read_buffer),
                size(MIN_FRAME)
            )));
        }
        if self.write_low_water >= self.write_high_water {
            return fail("the write low-water mark must be below the high-water mark");
        }
        if !(1..=1024).contains(&self.udp_batch) || self.udp_recv_batches == 0 {
            return fail("the UDP batch must be 1..=1024 datagrams");
        }
        if !(1..=65_535).contains(&self.udp_max_datagram) {
            return fail("the UDP datagram maximum must be 1..=65535 bytes");
        }
        if self.udp_queue_datagrams == 0 || self.udp_queue_bytes < self.udp_max_datagram {
            return fail("the UDP send queue must hold at least one largest datagram");
        }
        let hard_floor = self.min_output_hard_limit();
        if self.output_hard_limit < hard_floor {
            return Err(Error::Config(format!(
                "--out-hard (output_hard_limit) is {} but must be above {}: the write \
                 high-water mark ({}) plus --max-frame ({}), what an echo may legitimately hold; \
                 raise --out-hard or lower --max-frame",
                size(self.output_hard_limit),
                size(hard_floor - 1),
                size(self.write_high_water),
                size(self.max_read_buffer),
            )));
        }
        if self.output_soft_limit > self.output_hard_limit {
            return Err(Error::Config(format!(
                "--out-soft (output_soft_limit, {}) must not be above --out-hard \
                 (output_hard_limit, {}); or turn the soft limit off with --out-soft-for 0",
                size(self.output_soft_limit),
                size(self.output_hard_limit),
            )));
        }
        // Deadlines are kept in wrapping 32-bit milliseconds.
        let longest = Duration::from_millis(u64::from(u32::MAX / 2));
        let timeouts = [
            self.idle_timeout,
            self.frame_timeout,
            self.write_timeout,
            self.output_soft_for,
            self.close_linger,
            self.connect_timeout,
        ];
        if timeouts.into_iter().flatten().any(|t| t > longest) {
            return fail("timeouts must be at most 24 days");
        }
        if self.timer_tick.is_zero() || self.timer_tick > Duration::from_secs(1) {
            return fail("the timer tick must be between 1ns and 1s");
        }
        if self.events_capacity == 0 || self.socket.backlog == 0 {
            return fail("the event capacity and listen backlog must be positive");
        }
        Ok(())
    }

    /// The smallest hard output limit that works: a backpressured echo
    /// legitimately holds up to the write high-water mark plus one
    /// read buffer's worth; only pushed output may go past that.
    pub fn min_output_hard_limit(&self) -> usize {
        self.write_high_water + self.max_read_buffer.max(self.buffer_size) + 1
    }

    /// The most buffer memory one connection can hold: a full read buffer,
    /// and a write buffer that passed the high-water mark by at most one
    /// read's worth of echo, or one splice step's leftover (allocation at
    /// most doubles what is held).
    pub fn max_conn_buffer_bytes(&self) -> usize {
        let read = self.max_read_buffer.max(self.buffer_size);
        let echo = match self.splice {
            true => read.max(self.splice_step()),
            false => read,
        };
        read + 2 * (self.write_high_water + echo)
    }

    /// The most one `splice` of a bulk echo moves: the read budget with
    /// spliced bytes weighing a quarter (they travel as page references,
    /// so 256 KiB cost the shard about what a 64 KiB `recv` does), within
    /// the pipe, and small enough that its leftover, copied into an empty
    /// write buffer, stays below the output hard limit as a read's echo
    /// does.
    pub fn splice_step(&self) -> usize {
        let below_hard = (self.output_hard_limit)
            .saturating_sub(self.write_high_water)
            .saturating_sub(1);
        (self.read_budget.saturating_mul(4))
            .min(crate::net::pipe::PIPE_SIZE)
            .min(below_hard)
            .max(1)
    }
}

/// The smallest `max_read_buffer` (`--max-frame`): 256 bytes.
pub const MIN_FRAME: usize = 256;

/// The per-source UDP rate `sockloop serve` applies (`--udp-rate`):
/// 10,000 datagrams a second with bursts of 20,000.
///
/// [`ServerConfig::default`] has none (`udp_rate: None`): an embedder's
/// UDP service, or a test, should not lose datagrams to a limit it never
/// asked for. A server started from the command line faces the network,
/// where one source flooding a socket must not take it from the others;
/// the rate is far above what one honest client sends.
///
/// ```
/// assert_eq!(sockloop::config::CLI_UDP_RATE.to_string(), "10000/s:20000");
/// ```
pub const CLI_UDP_RATE: Rate = Rate::per_second(10_000).with_burst(20_000);

/// A size as `parse_size` reads it: `64KiB`, `1MiB`, or bytes.
///
/// ```
/// use sockloop::config::size;
///
/// assert_eq!(size(65536).to_string(), "64KiB");
/// assert_eq!(size(1000).to_string(), "1000B");
/// assert_eq!(size(3 << 20).to_string(), "3MiB");
/// ```
pub fn size(bytes: usize) -> impl std::fmt::Display {
    struct Size(usize);
    impl std::fmt::Display for Size {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let n = self.0;
            for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
                if n >= 1 << shift && n.is_multiple_of(1 << shift) {
                    return write!(f, "{}{unit}", n >> shift);
                }
            }
            write!(f, "{n}B")
        }
    }
    Size(bytes)
}

/// A duration as [`parse_duration`] reads it: whole seconds as `300s`,
/// else milliseconds, microseconds or nanoseconds; zero as `0`. (Not
/// `5m`: a flag's default reads as the field documents it.)
///
/// ```
/// use std::time::Duration;
/// use sockloop::config::{duration, parse_duration};
///
/// assert_eq!(duration(Duration::from_secs(300)).to_string(), "300s");
/// assert_eq!(duration(Duration::from_millis(1500)).to_string(), "1500ms");
/// assert_eq!(duration(Duration::ZERO).to_string(), "0");
/// let odd = Duration::new(2, 7);
/// assert_eq!(parse_duration(&duration(odd).to_string()), Ok(odd));
/// ```
pub fn duration(d: Duration) -> impl std::fmt::Display {
    struct Written(Duration);
    impl std::fmt::Display for Written {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let nanos = self.0.as_nanos();
            if nanos == 0 {
                return f.write_str("0");
            }
            for (scale, unit) in [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")] {
                if nanos.is_multiple_of(scale) {
                    return write!(f, "{}{unit}", nanos / scale);
                }
            }
            write!(f, "{nanos}ns")
        }
    }
    Written(d)
}

/// A timeout as its flag reads it: [`duration`], and `0` for `None`
/// (disabled).
///
/// ```
/// use std::time::Duration;
/// use sockloop::config::timeout;
///
/// assert_eq!(timeout(Some(Duration::from_secs(10))).to_string(), "10s");
/// assert_eq!(timeout(None).to_string(), "0");
/// ```
pub fn timeout(t: Option<Duration>) -> impl std::fmt::Display {
    duration(t.unwrap_or(Duration::ZERO))
}

/// A rate limit as its flag reads it ([`parse_rate`]): the [`Rate`]'s
/// `50/s:100`, and `0` for `None` (no limit).
///
/// [`parse_rate`]: crate::limit::parse_rate
///
/// ```
/// use sockloop::config::rate;
/// use sockloop::limit::Rate;
///
/// assert_eq!(rate(Some(Rate::per_second(50).with_burst(100))).to_string(), "50/s:100");
/// assert_eq!(rate(None).to_string(), "0");
/// ```
pub fn rate(r: Option<Rate>) -> impl std::fmt::Display {
    struct Written(Option<Rate>);
    impl std::fmt::Display for Written {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self.0 {
                Some(rate) => rate.fmt(f),
                None => f.write_str("0"),
            }
        }
    }
    Written(r)
}

/// Parses a duration written `500ms`, `30s`, `5m`, `1h` or `0`: whole
/// numbers, each followed by a unit (`ns`, `us`, `ms`, `s`, `m`, `h`), and
/// several of them add up (`1m30s`, `1h 5m`).
///
/// ```
/// use std::time::Duration;
/// use sockloop::config::parse_duration;
///
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
/// assert!(parse_duration("5 parsecs").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("bad duration {text:?}: {why}");
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad("expected a number and a unit, like 500ms or 30s"));
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(rest.len());
        let (unit, after) = rest.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" | "sec" => 1_000_000_000,
            "m" | "min" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "" => return Err(bad("missing unit (ns, us, ms, s, m, h)")),
            _ => return Err(bad(&format!("unknown unit {unit:?} (ns, us, ms, s, m, h)"))),
        };
        // u64 * 3.6e12 stays far below u128::MAX; only the sum is checked.
        nanos += u128::from(number) * scale;
        rest = after.trim_start();
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad("too long"))?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Parses a size written `4096`, `64KiB`, `1MiB` or `1GiB` (also `KB`/`MB`
/// /`GB` for the same powers of two, and a `B` suffix).
///
/// ```
/// use sockloop::config::parse_size;
///
/// assert_eq!(parse_size("64KiB"), Ok(65536));
/// assert_eq!(parse_size("4096"), Ok(4096));
/// assert!(parse_size("-1").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<usize, String> {
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits);
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("bad size {text:?}: unknown unit {unit:?}")),
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("bad size {text:?}: expected a number like 4096 or 64KiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert!(ServerConfig::default().validate().is_ok());
    }

    #[test]
    fn inverted_water_marks_are_refused() {
        let config = ServerConfig {
            write_low_water: 64 * 1024,
            ..ServerConfig::default()
        };
        assert!(matches!(config.validate(), Err(Error::Config(_))));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2 kb"), Ok(2048));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("12parsecs").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn a_splice_step_is_four_read_budgets_within_the_pipe_and_the_hard_limit() {
        let defaults = ServerConfig::default();
        assert_eq!(defaults.splice_step(), 256 * 1024);
        let small_budget = ServerConfig {
            read_budget: 16 * 1024,
            ..ServerConfig::default()
        };
        assert_eq!(small_budget.splice_step(), 64 * 1024);
        let big_budget = ServerConfig {
            read_budget: 1024 * 1024,
            ..ServerConfig::default()
        };
        assert_eq!(big_budget.splice_step(), crate::net::pipe::PIPE_SIZE);
        let tight = ServerConfig {
            output_hard_limit: defaults.min_output_hard_limit(),
            ..ServerConfig::default()
        };
        // Its leftover in an empty write buffer stays below the hard limit.
        assert_eq!(tight.splice_step(), 64 * 1024);
        assert!(tight.splice_step() < tight.output_hard_limit - tight.write_high_water);
        let unspliced = ServerConfig {
            splice: false,
            ..ServerConfig::default()
        };
        assert!(unspliced.max_conn_buffer_bytes() < defaults.max_conn_buffer_bytes());
    }
}
