//! The built-in services, and the names the CLI knows them by.

pub mod chat;
pub mod echo;
pub mod json;
pub mod rudp_echo;

pub use chat::Chat;
pub use echo::Echo;
pub use json::JsonEcho;
pub use rudp_echo::RudpEcho;
