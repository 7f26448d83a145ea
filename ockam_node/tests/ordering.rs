//! Volume: a million messages between two local workers arrive complete
//! and in order.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_core::{async_trait, Result, Routed, Worker};
use ockam_node::{start_node, Context};

const COUNT: u64 = 1_000_000;

/// Sends COUNT numbered messages to "consumer" when told to start.
struct Producer;

#[async_trait]
impl Worker for Producer {
    type Message = String;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, _msg: Routed<String>) -> Result<()> {
        for n in 0..COUNT {
            ctx.send("consumer", n).await?;
        }
        Ok(())
    }
}

/// Checks that numbers arrive in order and reports the count to "app".
struct Consumer {
    next: u64,
}

#[async_trait]
impl Worker for Consumer {
    type Message = u64;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<u64>) -> Result<()> {
        assert_eq!(*msg, self.next, "message out of order");
        assert_eq!(msg.return_route().to_string(), "0#producer");
        self.next += 1;
        if self.next == COUNT {
            ctx.send("app", self.next).await?;
        }
        Ok(())
    }
}

#[test]
fn a_million_messages_arrive_complete_and_in_order() {
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            ctx.start_worker("consumer", Consumer { next: 0 }).await?;
            ctx.start_worker("producer", Producer).await?;
            ctx.send("producer", "go".to_string()).await?;
            let done = ctx
                .receive_duration::<u64>(std::time::Duration::from_secs(300))
                .await?;
            assert_eq!(*done, COUNT);
            ctx.stop().await
        })
        .unwrap();
}
