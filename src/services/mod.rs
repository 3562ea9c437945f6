//! The built-in services, and the names the CLI knows them by.

pub mod chat;
pub mod echo;
pub mod json;

pub use chat::Chat;
pub use echo::Echo;
pub use json::JsonEcho;
