//! Receipts: a message sent with a `Receipt` learns when the application
//! took it (`Handled`) or that it never reached it (`NotHandled`).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_core::{
    async_trait, route, Delivery, LocalMessage, Message, Receipt, Result, Routed, TransportMessage,
    Worker,
};
use ockam_node::{start_node, Context};
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// A message for `to` whose receipt reports on `tell` as `tag`.
fn with_receipt(
    to: &str,
    body: &str,
    tag: &'static str,
    tell: &UnboundedSender<(&'static str, Delivery)>,
) -> LocalMessage {
    let tell = tell.clone();
    LocalMessage::new(TransportMessage::v1(
        route![to],
        route!["nobody"],
        body.to_string().encode().unwrap(),
    ))
    .with_receipt(Receipt::new(move |d| {
        let _ = tell.send((tag, d));
    }))
}

/// Holds each message until told to let it go.
struct Slow(UnboundedSender<&'static str>, UnboundedReceiver<()>);

/// The next thing told within `secs`, if any.
async fn next<T>(rx: &mut UnboundedReceiver<T>, secs: f64) -> Option<T> {
    tokio::time::timeout(Duration::from_secs_f64(secs), rx.recv())
        .await
        .ok()
        .flatten()
}

#[async_trait]
impl Worker for Slow {
    type Message = String;
    type Context = Context;
    async fn handle_message(&mut self, _ctx: &mut Context, _msg: Routed<String>) -> Result<()> {
        let _ = self.0.send("handling");
        let _ = self.1.recv().await;
        Ok(())
    }
}

#[test]
fn a_worker_takes_a_message_when_its_handler_returns() {
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let (tell, mut told) = unbounded_channel();
            let (handling_tx, mut handling) = unbounded_channel();
            let (go, go_rx) = unbounded_channel();
            ctx.start_worker("slow", Slow(handling_tx, go_rx)).await?;
            ctx.forward(with_receipt("slow", "a", "a", &tell)).await?;
            assert_eq!(next(&mut handling, 5.0).await, Some("handling"));
            // In the handler: not yet.
            assert_eq!(next(&mut told, 0.1).await, None);
            go.send(()).unwrap();
            assert_eq!(next(&mut told, 5.0).await, Some(("a", Delivery::Handled)));
            // A message that is not a String: the worker had its chance.
            let not_a_string =
                LocalMessage::new(TransportMessage::v1(route!["slow"], route![], vec![0xff]))
                    .with_receipt(Receipt::new({
                        let tell = tell.clone();
                        move |d| {
                            let _ = tell.send(("bad", d));
                        }
                    }));
            ctx.forward(not_a_string).await?;
            go.send(()).unwrap();
            assert_eq!(next(&mut told, 5.0).await, Some(("bad", Delivery::Handled)));
            // Nobody at the address: never taken.
            let _ = ctx.forward(with_receipt("missing", "b", "b", &tell)).await;
            assert_eq!(
                next(&mut told, 5.0).await,
                Some(("b", Delivery::NotHandled))
            );
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn a_context_takes_a_message_when_it_asks_for_the_next_or_acks() {
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let (tell, mut told) = unbounded_channel();
            let mut reader = ctx.new_context("reader").await?;
            ctx.forward(with_receipt("reader", "1", "1", &tell)).await?;
            ctx.forward(with_receipt("reader", "2", "2", &tell)).await?;
            ctx.forward(with_receipt("reader", "3", "3", &tell)).await?;
            assert_eq!(reader.receive::<String>().await?.body(), "1");
            // Returned, not taken yet.
            assert_eq!(next(&mut told, 0.1).await, None);
            assert_eq!(reader.receive::<String>().await?.body(), "2");
            assert_eq!(next(&mut told, 5.0).await, Some(("1", Delivery::Handled)));
            reader.ack();
            assert_eq!(next(&mut told, 5.0).await, Some(("2", Delivery::Handled)));
            // 3 was never returned: dropped with the context, not taken.
            drop(reader);
            assert_eq!(
                next(&mut told, 5.0).await,
                Some(("3", Delivery::NotHandled))
            );
            ctx.stop().await
        })
        .unwrap();
}
