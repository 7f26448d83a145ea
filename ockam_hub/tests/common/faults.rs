//! A fault-injecting TCP proxy between client nodes and a hub (issue 18):
//! the kernel here has no `netem`, so stalls, partitions, cuts mid-frame
//! and peers that vanish without a FIN are made here, on real sockets.
//!
//! Each connection to the proxy gets one to the upstream address; two
//! pumps pass chunks (up to 16 KiB) each way, applying the proxy's current
//! [`Fault`] to every chunk.

use rand::RngExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What happens to the bytes passing through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// They pass.
    None,
    /// Each chunk is held back for `min..max` with probability `percent`
    /// (a lossy, stalling link: TCP's retransmissions look like this from
    /// the ends).
    Stalls {
        percent: u32,
        min: Duration,
        max: Duration,
    },
    /// Nothing passes, either way, on any connection; connections stay
    /// open (a partition). What was held passes once the fault ends.
    Partition,
}

struct Shared {
    fault: Mutex<Fault>,
    /// Bumped by [`FaultProxy::cut_mid_frame`]: every pump passes half of
    /// its next chunk, then both sockets of its connection are closed.
    cuts: watch::Sender<u64>,
    /// Connections accepted so far.
    accepted: AtomicU64,
}

/// The proxy: listens on `address`, passes on to the upstream address.
pub struct FaultProxy {
    pub address: String,
    shared: Arc<Shared>,
    _runtime: tokio::runtime::Runtime,
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of `upstream`.
    pub fn start(upstream: &str) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (cuts, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::None),
            cuts,
            accepted: AtomicU64::new(0),
        });
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let upstream = upstream.to_string();
        let s = shared.clone();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                s.accepted.fetch_add(1, Ordering::AcqRel);
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue; // the client sees its connection close
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                // Set by a pump that cut the connection: the other ends too.
                let (closed, _) = watch::channel(false);
                let closed = Arc::new(closed);
                tokio::spawn(pump(cr, sw, s.clone(), closed.clone()));
                tokio::spawn(pump(sr, cw, s.clone(), closed));
            }
        });
        FaultProxy {
            address,
            shared,
            _runtime: runtime,
        }
    }

    /// From now on, `fault`.
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
    }

    /// Cuts every open connection in the middle of its next chunk: half of
    /// it passes, then both sockets close.
    pub fn cut_mid_frame(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::Acquire)
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: Arc<Shared>,
    closed: Arc<watch::Sender<bool>>,
) {
    let mut other_closed = closed.subscribe();
    let mut cuts = shared.cuts.subscribe();
    cuts.borrow_and_update();
    let mut cut_pending = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = cuts.changed(), if !cut_pending => {
                if changed.is_err() {
                    return;
                }
                cut_pending = true;
                continue;
            }
            _ = other_closed.wait_for(|c| *c) => return,
        };
        loop {
            let fault = *shared.fault.lock().unwrap();
            match fault {
                Fault::Partition => tokio::time::sleep(Duration::from_millis(20)).await,
                Fault::Stalls { percent, min, max } => {
                    let stall = rand::rng().random_range(0..100) < percent;
                    if stall {
                        let ms = rand::rng()
                            .random_range(min.as_millis() as u64..=max.as_millis() as u64);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    break;
                }
                Fault::None => break,
            }
        }
        if cut_pending {
            let _ = to.write_all(&buf[..n / 2]).await;
            closed.send_replace(true);
            return; // and the other pump: the connection closes
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
