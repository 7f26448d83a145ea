//! Passing messages on synchronously with `Onward`.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_core::{route, Message, Route};
use ockam_node::start_node;

#[test]
fn a_message_in_parts_to_a_local_address_arrives_built() {
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let bytes = "hello in parts".to_string().encode()?;
            let (a, b) = bytes.split_at(5);
            let back: Route = route!["somewhere", "else"];
            let mut onward = ctx.onward();
            onward.forward_parts(&route![ctx.address()], &back, a, b.to_vec())?;
            ctx.settle(onward).await?;
            let msg = ctx.receive::<String>().await?;
            assert_eq!(msg.return_route(), back);
            assert_eq!(msg.take(), "hello in parts");
            // An unknown next hop is the sender's error.
            let mut onward = ctx.onward();
            assert!(onward
                .forward_parts(&route!["nobody"], &back, b"x", vec![])
                .is_err());
            assert!(onward
                .forward_parts(&route![], &back, b"x", vec![])
                .is_err());
            ctx.stop().await
        })
        .unwrap();
}
