//! Names a service keeps: connections and timers.

/// Identifies one connection for its whole life on a shard.
///
/// Ids are never reused while the connection is open, and a closed
/// connection's id is not handed out again until 2^32 more connections have
/// been accepted on that shard, so a service may key its per-connection
/// state by `ConnId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u64);

/// A service timer, for cancelling it. Cancelling one that already fired
/// is a harmless no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(pub(crate) crate::timer::TimerHandle);
