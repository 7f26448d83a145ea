//! Helpers shared by the TCP tests: a node in its own thread, and a raw
//! protocol client that speaks frames directly.
#![allow(dead_code)]

use ockam_core::{async_trait, route, Message, Result, Routed, TransportMessage, Worker};
use ockam_node::{start_node, Context};
use ockam_transport_tcp::{internal::FrameDecoder, TcpOptions, TcpTransport};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Replies to every string with the same string.
pub struct Echoer;

#[async_trait]
impl Worker for Echoer {
    type Message = String;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        ctx.send(msg.return_route(), msg.body()).await
    }
}

/// A node running in its own thread with a TCP listener and an echoer;
/// stopped (gracefully) when dropped.
pub struct TestNode {
    pub addr: SocketAddr,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestNode {
    pub fn start() -> TestNode {
        Self::start_with(TcpOptions::default(), vec![])
    }

    /// Listens on a free port; connects to each of `connect_to` first.
    pub fn start_with(options: TcpOptions, connect_to: Vec<String>) -> TestNode {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let (ctx, mut executor) = start_node();
            executor
                .execute(async move {
                    let tcp = TcpTransport::create_with_options(&ctx, options).await?;
                    for peer in connect_to {
                        tcp.connect(peer).await?;
                    }
                    ctx.start_worker("echoer", Echoer).await?;
                    let addr = tcp.listen("127.0.0.1:0").await?;
                    addr_tx.send(addr).expect("test thread waits");
                    let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                    ctx.stop().await
                })
                .expect("test node");
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("test node started");
        TestNode {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Frames one transport message.
/// The frame of `msg`, as a hostile peer may write it: no limits checked.
pub fn frame(msg: &TransportMessage) -> Vec<u8> {
    let body = msg.encode().expect("encode");
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// A frame asking the node's echoer to echo `text` back to `client`.
pub fn echo_request(text: &str) -> Vec<u8> {
    frame(&TransportMessage::v1(
        route!["echoer"],
        route!["client"],
        text.to_string().encode().expect("encode"),
    ))
}

/// Reads one frame (blocking, with the socket's timeout).
pub fn read_frame(s: &mut TcpStream) -> std::io::Result<TransportMessage> {
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut buf = [0u8; 4096];
    loop {
        if let Some(f) = decoder
            .next_frame()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
        {
            return TransportMessage::decode(f)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        decoder.extend(&buf[..n]);
    }
}

/// Reads `n` frames (blocking, with the socket's timeout).
pub fn read_frames(s: &mut TcpStream, n: usize) -> std::io::Result<Vec<TransportMessage>> {
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut buf = [0u8; 4096];
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        while let Some(f) = decoder
            .next_frame()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
        {
            out.push(
                TransportMessage::decode(f)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            );
        }
        if out.len() >= n {
            break;
        }
        let k = s.read(&mut buf)?;
        if k == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        decoder.extend(&buf[..k]);
    }
    Ok(out)
}

/// One echo round trip over a fresh raw connection.
pub fn raw_echo(addr: SocketAddr, text: &str) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(&echo_request(text))?;
    let reply = read_frame(&mut s)?;
    assert_eq!(reply.onward_route, route!["client"]);
    assert_eq!(String::decode(&reply.payload).expect("a string"), text);
    Ok(())
}

/// Whether the server closes `s` (EOF or reset) within `within`.
pub fn closed_by_peer(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}
