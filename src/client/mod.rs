//! Clients for sockloop's services.

pub mod bench;
pub mod chat;
pub mod lanchat;
pub mod pool;
pub mod rudp;

pub use pool::{Pool, PoolConfig, PoolError, PoolStats, Pooled};
