//! The built-in services, and the names the CLI knows them by
//! ([`registry`]).

#[cfg(feature = "services")]
pub mod chat;
pub mod echo;
#[cfg(feature = "services")]
pub mod json;
#[cfg(feature = "services")]
pub mod registry;
#[cfg(feature = "services")]
pub mod rudp_echo;

#[cfg(feature = "services")]
pub use chat::Chat;
pub use echo::Echo;
#[cfg(feature = "services")]
pub use json::JsonEcho;
#[cfg(feature = "services")]
pub use rudp_echo::RudpEcho;
