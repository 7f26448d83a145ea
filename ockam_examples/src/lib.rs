//! Helper workers of the guides' examples, published as `ockam_get_started`
//! (the guides write `use ockam_get_started::Echoer;`).
//!
//! ```
//! use ockam::{Context, Result};
//! use ockam_get_started::Echoer;
//!
//! #[ockam::node]
//! async fn main(mut ctx: Context) -> Result<()> {
//!     ctx.start_worker("echoer", Echoer).await?;
//!     ctx.send(route!["echoer"], "Hello Ockam!".to_string()).await?;
//!     let reply = ctx.receive::<String>().await?;
//!     assert_eq!(*reply, "Hello Ockam!");
//!     ctx.stop().await
//! }
//! ```
#![deny(missing_docs)]

mod closed_hub;
mod echoer;
mod hop;

pub use closed_hub::channel_to_closed_hub;
pub use echoer::Echoer;
pub use hop::Hop;

// The README's examples run as doc tests too, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
