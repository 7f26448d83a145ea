//! The addresses [`Stream::connect`](crate::Stream::connect) returns.

use ockam_core::{Address, Message, Result, Route, RouteBuilder, Routed};
use ockam_node::Context;

/// Where `connect` put the outgoing stream: route messages through it with
/// `route![sender.clone(), "worker-on-the-other-side"]`, or
/// `sender.to_route().append("worker-on-the-other-side")` (as the 2021
/// guides write it).
///
/// Derefs to its [`Address`] and displays as it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderAddress(pub(crate) Address);

impl SenderAddress {
    /// A route into the outgoing stream, as a builder: append the
    /// worker on the other side, or pass it as it is wherever a route goes.
    pub fn to_route(&self) -> RouteBuilder {
        Route::new().append(self.0.clone())
    }

    /// The producer's address.
    pub fn address(&self) -> Address {
        self.0.clone()
    }
}

impl std::ops::Deref for SenderAddress {
    type Target = Address;

    fn deref(&self) -> &Address {
        &self.0
    }
}

impl std::fmt::Display for SenderAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<SenderAddress> for Address {
    fn from(s: SenderAddress) -> Address {
        s.0
    }
}

impl From<&SenderAddress> for Address {
    fn from(s: &SenderAddress) -> Address {
        s.0.clone()
    }
}

impl From<SenderAddress> for Route {
    fn from(s: SenderAddress) -> Route {
        s.to_route().into()
    }
}

impl From<&SenderAddress> for Route {
    fn from(s: &SenderAddress) -> Route {
        s.to_route().into()
    }
}

/// Where incoming stream messages without another destination arrive.
///
/// A message counts as taken by the application (so the consumer may save
/// its read position past it) once the application asks for the next one
/// with [`next`](Self::next), or acknowledges it with
/// [`ack`](Self::ack), or drops the receiver. A message returned by `next`
/// when the process dies (before any of these) is delivered again to this
/// client id's next consumer.
pub struct ReceiverAddress {
    pub(crate) ctx: Context,
}

impl ReceiverAddress {
    /// The receiving address.
    pub fn address(&self) -> Address {
        self.ctx.address()
    }

    /// The next incoming message of type `T` (waits as long as it takes);
    /// acknowledges the one returned before.
    ///
    /// # Errors
    /// [`ockam_core::ErrorKind::Shutdown`] once the node stopped. A message
    /// that is not a `T` is logged and skipped (and counts as taken).
    ///
    /// # Cancel safety
    /// Cancel safe: a message is only taken when it is returned (as
    /// [`Context::receive_block`](ockam_node::Context::receive_block)).
    pub async fn next<T: Message>(&mut self) -> Result<Routed<T>> {
        self.ctx.receive_block::<T>().await
    }

    /// Acknowledges the message `next` returned last: the application has
    /// handled it, and the consumer may save its read position past it
    /// without waiting for the next call to `next`.
    pub fn ack(&self) {
        self.ctx.ack();
    }
}

impl std::fmt::Debug for ReceiverAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiverAddress({})", self.ctx.address())
    }
}
