//! The commands of the `sockloop` binary, one file each.

pub(crate) mod addr;
pub(crate) mod bench;
pub(crate) mod chat;
pub(crate) mod rudp;
pub(crate) mod serve;
