//! `Echoer`: replies to every message with the same message.

use ockam::{Context, Result, Routed, Worker};

/// Sends every `String` it receives back along its return route.
pub struct Echoer;

#[ockam::worker]
impl Worker for Echoer {
    type Context = Context;
    type Message = String;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        println!("Address: {}, Received: {}", ctx.address(), msg);
        // Echo the message body back on its return route.
        ctx.send(msg.return_route(), msg.body()).await
    }
}
