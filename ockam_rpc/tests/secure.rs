//! A typed stream over a secure channel over two TCP hops (client → middle
//! node → server), three nodes with real sockets.

use ockam_channel::SecureChannel;
use ockam_core::{route, TCP};
use ockam_node::start_node;
mod common;

use common::server_thread;
use ockam_rpc::{call, make_sink, RpcError, Sink, Source};
use ockam_transport_tcp::TcpTransport;
use ockam_vault::Vault;
use std::sync::mpsc;

/// A node in a thread running `f` (its result: a value sent back), until
/// `stop` is dropped.
fn node_thread<F, Fut>(f: F) -> (String, mpsc::Sender<()>, std::thread::JoinHandle<()>)
where
    F: FnOnce(ockam_node::Context) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ockam_core::Result<(ockam_node::Context, String)>>
        + Send
        + 'static,
{
    let (up, up_rx) = mpsc::channel();
    let (stop, stop_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let (ctx, what) = f(ctx).await?;
                up.send(what).unwrap();
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                ctx.stop().await
            })
            .expect("node");
    });
    (up_rx.recv().unwrap(), stop, t)
}

/// Sends back each number doubled.
async fn double(_: u8, mut source: Source<u64>) -> Result<Option<Sink<u64>>, RpcError> {
    let sink: Sink<u64> = source.make_sink().await?;
    let mut out = sink.clone();
    tokio::spawn(async move {
        while let Ok(Some(n)) = source.recv().await {
            if out.send(n * 2).await.is_err() {
                return;
            }
        }
        let _ = out.close().await;
    });
    Ok(Some(sink))
}

#[test]
fn a_typed_stream_over_a_secure_channel_over_two_tcp_hops() {
    let (server, stop_server, t1) = server_thread(
        |s| s.handler("double", double),
        |ctx| async move {
            let vault = Vault::create(&ctx)?;
            SecureChannel::create_listener(&ctx, "secure_channel_listener", &vault).await?;
            Ok(())
        },
    );
    let server_for_middle = server.clone();
    let (middle, stop_middle, t2) = node_thread(move |ctx| async move {
        let tcp = TcpTransport::create(&ctx).await?;
        tcp.connect(&server_for_middle).await?;
        let addr = tcp.listen("127.0.0.1:0").await?;
        Ok((ctx, addr.to_string()))
    });

    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let vault = Vault::create(&ctx)?;
            let channel = SecureChannel::create(
                &ctx,
                route![
                    (TCP, middle.as_str()),
                    (TCP, server.as_str()),
                    "secure_channel_listener"
                ],
                &vault,
            )
            .await?;
            let rpc = route![channel.address(), "rpc"];
            let mut sink: Sink<u64> = make_sink(&ctx).await?;
            let mut back: Source<u64> = call(&ctx, rpc, "double", 0u8, &sink).await?.unwrap();
            let writer = tokio::spawn(async move {
                for n in 0..10_000u64 {
                    sink.send(n).await?;
                }
                sink.close().await
            });
            for n in 0..10_000u64 {
                assert_eq!(back.recv().await?, Some(n * 2));
            }
            writer.await.unwrap()?;
            assert_eq!(back.recv().await?, None);
            ctx.stop().await
        })
        .unwrap();
    drop(stop_middle);
    drop(stop_server);
    t2.join().unwrap();
    t1.join().unwrap();
}
