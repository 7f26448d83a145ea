//! What the channel tests share.
#![allow(dead_code)] // each test uses part of it

use ockam_core::{async_trait, Result, Routed, Worker};
use ockam_node::Context;

/// Sends every string it gets back where it came from.
pub struct Echoer;

#[async_trait]
impl Worker for Echoer {
    type Message = String;
    type Context = Context;
    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        ctx.send(msg.return_route(), msg.body()).await
    }
}

/// A node on its own thread with a TCP listener, a secure channel
/// listener at `"listener"` and an [`Echoer`] at `"echoer"`; the test asks
/// it how many addresses it has. Stops when dropped.
pub struct ListenerNode {
    /// Its TCP listening address.
    pub addr: String,
    ask: Option<std::sync::mpsc::Sender<()>>,
    counts: std::sync::mpsc::Receiver<Vec<String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ListenerNode {
    /// Starts the node; its channel listener has `options`.
    pub fn start(options: ockam_channel::ListenerOptions) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (ask_tx, ask_rx) = std::sync::mpsc::channel::<()>();
        let (count_tx, counts) = std::sync::mpsc::channel::<Vec<String>>();
        let thread = std::thread::spawn(move || {
            let (ctx, mut executor) = ockam_node::start_node();
            executor
                .execute(async move {
                    let tcp = ockam_transport_tcp::TcpTransport::create(&ctx).await?;
                    let vault = ockam_vault::Vault::create(&ctx)?;
                    ockam_channel::SecureChannel::create_listener_with_options(
                        &ctx, "listener", &vault, options,
                    )
                    .await?;
                    ctx.start_worker("echoer", Echoer).await?;
                    addr_tx.send(tcp.listen("127.0.0.1:0").await?).unwrap();
                    let ask_rx = std::sync::Arc::new(std::sync::Mutex::new(ask_rx));
                    loop {
                        let rx = ask_rx.clone();
                        let asked = tokio::task::spawn_blocking(move || rx.lock().unwrap().recv())
                            .await
                            .unwrap();
                        if asked.is_err() {
                            break;
                        }
                        let all = ctx.list_addresses().iter().map(|a| a.to_string()).collect();
                        count_tx.send(all).unwrap();
                    }
                    ctx.stop().await
                })
                .unwrap();
        });
        ListenerNode {
            addr: addr_rx.recv().unwrap().to_string(),
            ask: Some(ask_tx),
            counts,
            thread: Some(thread),
        }
    }

    /// How many addresses (workers and contexts) the node has now.
    pub fn workers(&self) -> usize {
        self.addresses().len()
    }

    /// The node's addresses (workers and contexts) now, sorted.
    pub fn addresses(&self) -> Vec<String> {
        self.ask.as_ref().unwrap().send(()).unwrap();
        self.counts.recv().unwrap()
    }

    /// Waits up to `within` for the node's address count to be `n`;
    /// returns the last count seen.
    pub fn wait_for_workers(&self, n: usize, within: std::time::Duration) -> usize {
        let until = std::time::Instant::now() + within;
        loop {
            let now = self.workers();
            if now == n || std::time::Instant::now() > until {
                return now;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for ListenerNode {
    fn drop(&mut self) {
        self.ask.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
