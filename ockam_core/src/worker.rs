//! The `Worker` trait: what a node runs.

use crate::error::Result;
use crate::message::Message;
use crate::routed::Routed;

/// A worker: a piece of state at one or more addresses that handles the
/// messages sent there, one at a time.
///
/// Implement it with `#[ockam::worker]` (or `#[async_worker]`, or
/// `#[async_trait]`) on the `impl` block:
///
/// ```ignore
/// struct Echoer;
///
/// #[ockam::worker]
/// impl Worker for Echoer {
///     type Message = String;
///     type Context = Context;
///
///     async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
///         ctx.send(msg.return_route(), msg.body()).await
///     }
/// }
/// ```
///
/// A message that does not decode as [`Worker::Message`] is dropped with a log
/// line; an error returned from `handle_message` is logged and the worker
/// keeps running; a panic stops the worker.
#[async_trait::async_trait]
pub trait Worker: Send + 'static {
    /// The type of the messages this worker handles.
    type Message: Message;
    /// The node context type (`ockam_node::Context`).
    type Context: Send + 'static;

    /// Runs once, before the first message.
    ///
    /// # Errors
    /// Whatever the implementation returns (the default never fails). The
    /// node logs an error and stops the worker without running
    /// [`Worker::shutdown`] or handling any message.
    async fn initialize(&mut self, _context: &mut Self::Context) -> Result<()> {
        Ok(())
    }

    /// Runs once, when the worker is stopped (`stop_worker` or the node stopping).
    ///
    /// # Errors
    /// Whatever the implementation returns (the default never fails). The
    /// node logs it as a warning; the worker stops all the same.
    async fn shutdown(&mut self, _context: &mut Self::Context) -> Result<()> {
        Ok(())
    }

    /// Handles one message.
    ///
    /// # Errors
    /// Whatever the implementation returns (the default never fails). The
    /// node logs it and the worker keeps running; the message counts as
    /// handled.
    async fn handle_message(
        &mut self,
        _context: &mut Self::Context,
        _msg: Routed<Self::Message>,
    ) -> Result<()> {
        Ok(())
    }
}
