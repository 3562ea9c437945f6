//! The built-in services, and the names the CLI knows them by.

pub mod echo;

pub use echo::Echo;
