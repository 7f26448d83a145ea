//! `Hop`: forwards any message one step further along its onward route.

use ockam::{Any, Context, Result, Routed, Worker};

/// Forwards any message unchanged to the next address of its onward route,
/// adding itself to the return route so that replies come back through it.
pub struct Hop;

#[ockam::worker]
impl Worker for Hop {
    type Context = Context;
    type Message = Any;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        println!("Address: {}, Received: {}", ctx.address(), msg);
        // Some type conversion
        let mut message = msg.into_local_message();
        let transport_message = message.transport_mut();
        // Remove my address from the onward_route
        transport_message.onward_route.step()?;
        // Insert my address at the beginning of return_route
        transport_message
            .return_route
            .modify()
            .prepend(ctx.address());
        // Send the message on its onward_route
        ctx.forward(message).await
    }
}
