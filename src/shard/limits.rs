//! A connection's limits, converted once from the [`ServerConfig`] into
//! the units the per-event path compares against: buffer thresholds in
//! bytes, deadlines in milliseconds.
//!
//! Its own file because the connection (`conn/`) and its deadlines
//! (`deadline.rs`) both read it, and neither should import the other for
//! it. (Per-source limits, bans and rates are `crate::limit`.)

use crate::config::ServerConfig;
use crate::limit::Rate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnLimits {
    /// Bytes read per readiness event before the others get a turn.
    pub(crate) read_budget: usize,
    /// The most unconsumed input a connection may hold (the frame limit).
    pub(crate) max_read_buffer: usize,
    /// Pending output at which reading pauses (backpressure)...
    pub(crate) high_water: usize,
    /// ...and below which it resumes.
    pub(crate) low_water: usize,
    /// Pending output bytes that close the connection at once.
    pub(crate) output_hard: usize,
    /// Pending output bytes above which the soft-limit clock runs.
    pub(crate) output_soft: usize,
    /// Each deadline in milliseconds plus one (`None`: disabled): the
    /// instants they count from are truncated to milliseconds, so waiting
    /// one more keeps them from ever firing early.
    pub(crate) idle_ms: Option<u32>,
    pub(crate) frame_ms: Option<u32>,
    pub(crate) write_ms: Option<u32>,
    pub(crate) over_soft_ms: Option<u32>,
    pub(crate) linger_ms: Option<u32>,
    pub(crate) connect_ms: Option<u32>,
    pub(crate) message_rate: Option<Rate>,
}

impl ConnLimits {
    pub(crate) fn of(config: &ServerConfig) -> ConnLimits {
        // Validation caps timeouts at u32::MAX / 2 milliseconds.
        let ms = |t: Option<std::time::Duration>| t.map(|t| t.as_millis() as u32 + 1);
        ConnLimits {
            read_budget: config.read_budget,
            max_read_buffer: config.max_read_buffer,
            high_water: config.write_high_water,
            low_water: config.write_low_water,
            output_hard: config.output_hard_limit,
            output_soft: config.output_soft_limit,
            idle_ms: ms(config.idle_timeout),
            frame_ms: ms(config.frame_timeout),
            write_ms: ms(config.write_timeout),
            over_soft_ms: ms(config.output_soft_for),
            linger_ms: Some(config.close_linger.map_or(0, |t| t.as_millis() as u32 + 1)),
            connect_ms: ms(config.connect_timeout),
            message_rate: config.message_rate,
        }
    }
}
