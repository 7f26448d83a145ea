//! What the typed-stream tests share: a server node in a thread and an
//! echo handler.
#![allow(dead_code)]

pub mod stall;

use ockam_core::Message;
use ockam_node::start_node;
use ockam_rpc::{RpcError, RpcServer, Sink, Source};
use ockam_transport_tcp::TcpTransport;
use std::sync::mpsc;

/// A node in a thread listening on a free 127.0.0.1 port, with the
/// server `configure` makes at "rpc" (after `extra` set up more). Returns
/// its address, a stop (drop it) and the thread.
pub fn server_thread<C, E, Fut>(
    configure: C,
    extra: E,
) -> (String, mpsc::Sender<()>, std::thread::JoinHandle<()>)
where
    C: FnOnce(RpcServer) -> RpcServer + Send + 'static,
    E: FnOnce(std::sync::Arc<ockam_node::Context>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ockam_core::Result<()>> + Send,
{
    let (up, up_rx) = mpsc::channel();
    let (stop, stop_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let tcp = TcpTransport::create(&ctx).await?;
                let addr = tcp.listen("127.0.0.1:0").await?;
                let ctx = std::sync::Arc::new(ctx);
                extra(ctx.clone()).await?;
                configure(RpcServer::new()).start(&ctx, "rpc").await?;
                up.send(addr.to_string()).unwrap();
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                ctx.stop().await
            })
            .expect("server node");
    });
    (up_rx.recv().unwrap(), stop, t)
}

/// Nothing more to set up.
pub async fn nothing(_: std::sync::Arc<ockam_node::Context>) -> ockam_core::Result<()> {
    Ok(())
}

/// A handler that sends back what it reads, ends cleanly when its source
/// does, and aborts (saying why) when its source ends otherwise.
pub async fn echo<T: Message>(_: u8, mut source: Source<T>) -> Result<Option<Sink<T>>, RpcError> {
    let sink: Sink<T> = source.make_sink().await?;
    let mut out = sink.clone();
    tokio::spawn(async move {
        loop {
            match source.recv().await {
                Ok(Some(m)) => {
                    if out.send(m).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    let _ = out.close().await;
                    return;
                }
                Err(e) => return out.abort(&format!("source: {e}")),
            }
        }
    });
    Ok(Some(sink))
}
