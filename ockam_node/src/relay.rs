//! The task that runs one worker: it feeds the worker its mailbox, one
//! message at a time, and keeps one worker's failures away from the rest of
//! the node.

use crate::context::Context;
use crate::router::{StopMode, WorkerRecord};
use futures_util::FutureExt;
use ockam_core::{Message, Routed, Worker};
use std::panic::AssertUnwindSafe;
use tokio::sync::watch;
use tracing::{debug, error, warn};

/// Starts the task of `worker`, whose context is already registered.
pub(crate) fn spawn<W>(worker: W, ctx: Context, transport: bool)
where
    W: Worker<Context = Context>,
{
    let (stop_tx, stop_rx) = watch::channel(StopMode::Run);
    let (done_tx, done_rx) = watch::channel(false);
    ctx.router().add_worker(
        ctx.id(),
        WorkerRecord {
            addresses: ctx.addresses().to_vec(),
            stop: stop_tx,
            done: done_rx,
            transport,
        },
    );
    tokio::spawn(run(worker, ctx, stop_rx, done_tx));
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

async fn run<W>(
    mut worker: W,
    mut ctx: Context,
    mut stop: watch::Receiver<StopMode>,
    done: watch::Sender<bool>,
) where
    W: Worker<Context = Context>,
{
    let address = ctx.address();
    debug!(%address, "worker starting");
    let mut healthy = match AssertUnwindSafe(worker.initialize(&mut ctx))
        .catch_unwind()
        .await
    {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            error!(%address, error = %e, "worker failed to initialize; stopping it");
            false
        }
        Err(p) => {
            error!(%address, panic = %panic_message(p.as_ref()), "worker panicked in initialize; stopping it");
            false
        }
    };

    // Messages still to handle after a draining stop request.
    let mut draining: Option<usize> = None;
    while healthy {
        // Only wait on the stop signal when idle: while messages are
        // queued, a non-blocking check between them is enough (and cheaper).
        // (`has_changed` is one atomic load; it fails once the router
        // dropped the record, which only happens after this loop.)
        if stop.has_changed().unwrap_or(true) {
            match *stop.borrow_and_update() {
                StopMode::Run => {}
                StopMode::Drain => {
                    draining.get_or_insert_with(|| ctx.pending_messages());
                }
                StopMode::Now => break,
            }
        }
        if draining == Some(0) {
            break;
        }
        let mut local = match ctx.try_next_message() {
            Some(m) => {
                if let Some(n) = draining.as_mut() {
                    *n -= 1;
                }
                m
            }
            None if draining.is_some() => break,
            None => tokio::select! {
                biased;
                changed = stop.changed() => match changed {
                    // Something may have arrived just now: look again.
                    Ok(()) => {
                        stop.mark_changed();
                        continue;
                    }
                    Err(_) => break,
                },
                m = ctx.next_message() => match m {
                    Some(m) => m,
                    None => break,
                },
            },
        };
        // Told once the worker has had the message (see `Receipt`).
        let receipt = local.take_receipt();
        let body = match W::Message::decode(&local.transport().payload) {
            Ok(body) => body,
            Err(e) => {
                // Given its chance: a message it cannot decode never will be.
                if let Some(r) = receipt {
                    r.handled();
                }
                warn!(
                    %address,
                    from = ?local.transport().return_route,
                    error = %e,
                    dropped = 1,
                    "dropped a message that is not a {}",
                    std::any::type_name::<W::Message>()
                );
                continue;
            }
        };
        let routed = Routed::new(body, local);
        let handled = AssertUnwindSafe(worker.handle_message(&mut ctx, routed))
            .catch_unwind()
            .await;
        // Returned (with whatever result): taken. A panic is no return:
        // the receipt is dropped with it (not taken).
        if let (Ok(_), Some(r)) = (&handled, receipt) {
            r.handled();
        }
        match handled {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(%address, error = %e, "worker failed to handle a message"),
            Err(p) => {
                error!(%address, panic = %panic_message(p.as_ref()), "worker panicked; stopping it");
                healthy = false;
            }
        }
    }

    // A worker that panicked may be in any state: its shutdown is not run.
    if healthy {
        match AssertUnwindSafe(worker.shutdown(&mut ctx))
            .catch_unwind()
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(%address, error = %e, "worker shutdown failed"),
            Err(p) => {
                error!(%address, panic = %panic_message(p.as_ref()), "worker panicked in shutdown")
            }
        }
    }
    // No more messages from now on: then count what is left.
    ctx.deregister();
    let dropped = ctx.pending_messages();
    if dropped > 0 {
        warn!(%address, dropped, "worker stopped with messages still in its mailbox; they are dropped");
    }
    debug!(%address, "worker stopped");
    ctx.router().remove_worker(ctx.id());
    drop(ctx);
    done.send_replace(true);
}
