//! Numbers through a typed stream between two processes over TCP, checked
//! in order at the receiving end. Used by the tests (1,000,000 messages).
//! Run: cargo run -p ockam-rs-rpc --example numbers -- receive 127.0.0.1:4200
//!      cargo run -p ockam-rs-rpc --example numbers -- send 127.0.0.1:4200 1000000

use ockam_core::{route, TCP};
use ockam_rpc::{call, make_sink, RpcServer, Sink, Source, Window};
use ockam_transport_tcp::TcpTransport;

fn main() -> ockam_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, addr) = (args[0].clone(), args[1].clone());
    let n: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
    let (ctx, mut executor) = ockam_node::start_node();
    executor.execute(async move {
        let tcp = TcpTransport::create(&ctx).await?;
        if mode == "receive" {
            let bound = tcp.listen(&addr).await?;
            RpcServer::new()
                .with_window(Window {
                    messages: 4096,
                    bytes: 1024 * 1024,
                })
                .handler("numbers", |_: u8, mut source: Source<u64>| async move {
                    tokio::spawn(async move {
                        let mut next = 0u64;
                        loop {
                            match source.recv().await {
                                Ok(Some(x)) if x == next => next += 1,
                                Ok(Some(x)) => {
                                    println!("OUT OF ORDER got {x} expected {next}");
                                    std::process::exit(1);
                                }
                                Ok(None) => {
                                    println!("END after {next}");
                                    break;
                                }
                                Err(e) => {
                                    println!("ERROR after {next}: {e}");
                                    break;
                                }
                            }
                        }
                    });
                    Ok(None::<Sink<u8>>)
                })
                .start(&ctx, "rpc")
                .await?;
            println!("LISTENING {bound}");
            std::future::pending::<()>().await;
            Ok(())
        } else {
            let mut sink: Sink<u64> = make_sink(&ctx).await?;
            let rpc = route![(TCP, addr.as_str()), "rpc"];
            let _ = call::<u8, u64, u8>(&ctx, rpc, "numbers", 0, &sink).await?;
            for x in 0..n {
                sink.send(x).await?;
            }
            sink.close().await?;
            println!("SENT {n}");
            ctx.stop().await
        }
    })
}
