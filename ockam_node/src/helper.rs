//! Tasks that run beside a worker and end with it: [`HelperTask`], made by
//! [`Context::spawn_helper`](crate::Context::spawn_helper) and
//! [`Context::spawn_after`](crate::Context::spawn_after).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::task::JoinHandle;

/// A task running beside a worker (a watcher, a deadline, a connection's
/// reader or writer, a janitor), aborted when this handle is dropped or
/// [`abort`](HelperTask::abort)ed: a worker that keeps it in a field stops
/// it by dropping it (in `shutdown`, or as the worker itself is dropped),
/// so no helper outlives its worker.
///
/// Awaiting the handle waits for the task's end: `Some(output)`, or `None`
/// when it was aborted or panicked (a panic is printed by the panic hook,
/// as any panic is).
/// Awaiting is cancel safe: dropping the `await` (for example in a
/// `timeout`) leaves the task running until the handle itself is dropped.
#[must_use = "dropping a HelperTask aborts its task"]
#[derive(Debug)]
pub struct HelperTask<T = ()> {
    handle: JoinHandle<T>,
}

impl<T> HelperTask<T> {
    /// Stops the task at its next `.await` (it may have ended already).
    pub fn abort(&self) {
        self.handle.abort();
    }

    /// Whether the task has ended (by itself, aborted, or by a panic).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

impl<T> Drop for HelperTask<T> {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl<T> Future for HelperTask<T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<T>> {
        Pin::new(&mut self.handle).poll(cx).map(Result::ok)
    }
}

pub(crate) fn spawn<F>(task: F) -> HelperTask<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    HelperTask {
        handle: tokio::spawn(task),
    }
}

pub(crate) fn spawn_after<F>(delay: Duration, task: F) -> HelperTask<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    spawn(async move {
        tokio::time::sleep(delay).await;
        task.await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_dropped_helper_is_aborted_and_an_awaited_one_gives_its_output() {
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let deadline = spawn_after(Duration::from_millis(50), async move {
            r.store(true, Ordering::SeqCst);
        });
        drop(deadline);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!ran.load(Ordering::SeqCst), "a dropped helper still ran");

        assert_eq!(spawn(async { 7 }).await, Some(7));
        let forever = spawn(std::future::pending::<()>());
        forever.abort();
        assert_eq!(forever.await, None);
    }
}
