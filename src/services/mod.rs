//! The built-in services, and the names the CLI knows them by
//! ([`registry`]).

pub mod chat;
pub mod echo;
pub mod json;
pub mod registry;
pub mod rudp_echo;

pub use chat::Chat;
pub use echo::Echo;
pub use json::JsonEcho;
pub use rudp_echo::RudpEcho;
