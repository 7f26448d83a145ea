//! The executor: the tokio runtime a node runs on, and the rules for when
//! a node's `main` is over.

use crate::context::Context;
use crate::router::{Router, SHUTDOWN_TIMEOUT};
use ockam_core::{Address, Error, ErrorKind, Result};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info};

/// The address of the context handed to a node's `main`.
pub const APP_ADDRESS: &str = "app";

/// How long the executor waits for `main` to return once the node stopped.
const MAIN_GRACE: Duration = Duration::from_secs(2);

/// Runs a node: made by [`start_node`], consumed by [`Executor::execute`].
pub struct Executor {
    runtime: Option<tokio::runtime::Runtime>,
    router: Arc<Router>,
}

/// Creates a node: its runtime, router and the `app` context for `main`.
///
/// ```
/// let (ctx, mut executor) = ockam_node::start_node();
/// executor
///     .execute(async move {
///         ctx.send("app", "hi".to_string()).await?;
///         ctx.stop().await
///     })
///     .unwrap();
/// ```
///
/// # Panics
/// If the operating system refuses to create the runtime's threads.
pub fn start_node() -> (Context, Executor) {
    start_node_with(|_| {})
}

/// [`start_node`], with `configure` given the node's tokio runtime builder
/// before the runtime is built: for a program that needs a hook on the
/// runtime's threads (`on_thread_park`, `on_thread_start`) or a number of
/// worker threads of its own. The builder comes multi-threaded, with every
/// driver enabled (I/O, time) and its threads named `ockam-node`; the node
/// needs both drivers, so `configure` must not take them away.
///
/// ```
/// let (ctx, mut executor) = ockam_node::start_node_with(|runtime| {
///     runtime.worker_threads(2);
/// });
/// executor.execute(async move { ctx.stop().await }).unwrap();
/// ```
///
/// # Panics
/// If the operating system refuses to create the runtime's threads.
pub fn start_node_with(
    configure: impl FnOnce(&mut tokio::runtime::Builder),
) -> (Context, Executor) {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("ockam-node");
    configure(&mut builder);
    let runtime = builder
        .build()
        .unwrap_or_else(|e| panic!("cannot start the node's tokio runtime: {e}"));
    let router = Router::new();
    let ctx = Context::new_registered(router.clone(), vec![Address::from(APP_ADDRESS)])
        .unwrap_or_else(|e| panic!("a fresh router refused the app context: {e}"));
    (
        ctx,
        Executor {
            runtime: Some(runtime),
            router,
        },
    )
}

enum Event<T> {
    MainReturned(std::result::Result<Result<T>, tokio::task::JoinError>),
    Stopped,
    Signal(&'static str),
}

impl Executor {
    /// Runs `main` on the node and returns when the node has stopped.
    ///
    /// - `main` returns `Ok`: the node keeps running until something calls
    ///   `ctx.stop()` (or SIGINT/SIGTERM arrives), then this returns `main`'s value.
    /// - `main` returns `Err`: the node is stopped and the error returned.
    /// - `main` panics: the node is stopped and the panic resumed.
    /// - SIGINT/SIGTERM: the node is stopped gracefully (every worker's
    ///   `shutdown` runs); if `main` had not returned yet, this returns what
    ///   it returns in the moment after, or else a [`ErrorKind::Shutdown`]
    ///   error.
    ///
    /// # Errors
    /// `main`'s error; [`ErrorKind::InvalidInput`] when this executor has
    /// already run; [`ErrorKind::Shutdown`] when `main` was cancelled, or the
    /// node stopped (or was interrupted) and `main` did not return within
    /// 2 seconds after.
    pub fn execute<F, T>(&mut self, main: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let runtime = self
            .runtime
            .take()
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "this executor has already run"))?;
        let router = self.router.clone();
        let result = runtime.block_on(async move {
            // Handlers first: a signal that arrives while main starts up
            // stops the node gracefully instead of killing the process.
            let mut signals = ShutdownSignals::install();
            let mut main = tokio::spawn(main);
            let mut stopped = router.stopped();
            let event = tokio::select! {
                r = &mut main => Event::MainReturned(r),
                _ = stopped.wait_for(|s| *s) => Event::Stopped,
                s = signals.next() => Event::Signal(s),
            };
            let returned = match event {
                Event::MainReturned(Ok(Ok(value))) => {
                    // A server's main returns and leaves its workers running.
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => {}
                        s = signals.next() => {
                            info!(signal = s, "stopping the node");
                            router.stop_node(None).await;
                        }
                    }
                    return Ok(value);
                }
                Event::MainReturned(Ok(Err(e))) => {
                    error!(error = %e, "the node's main returned an error; stopping the node");
                    router.stop_node(None).await;
                    return Err(e);
                }
                Event::MainReturned(Err(join)) => {
                    router.stop_node(None).await;
                    if join.is_panic() {
                        std::panic::resume_unwind(join.into_panic());
                    }
                    return Err(Error::new(
                        ErrorKind::Shutdown,
                        "the node's main was cancelled",
                    ));
                }
                Event::Stopped => None,
                Event::Signal(s) => {
                    info!(signal = s, "stopping the node");
                    router.stop_node(None).await;
                    Some(s)
                }
            };
            // The node stopped while main was still running: `ctx.stop()`
            // returns to main just before this, so give it a moment. A main
            // that finishes then (a signal that came as a server's main was
            // returning, say) gives its own result.
            match tokio::time::timeout(MAIN_GRACE, &mut main).await {
                Ok(Ok(r)) => r,
                Ok(Err(join)) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                _ => {
                    main.abort();
                    Err(Error::new(
                        ErrorKind::Shutdown,
                        match returned {
                            Some(s) => format!("interrupted by {s} before main finished"),
                            None => "the node stopped before main finished".to_string(),
                        },
                    ))
                }
            }
        });
        runtime.block_on(self.router.wait_workers_finished(SHUTDOWN_TIMEOUT));
        runtime.shutdown_timeout(Duration::from_millis(500));
        result
    }
}

/// SIGINT (Ctrl-C) and, on Unix, SIGTERM, listened to from `install` on.
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            // A handler that cannot be installed: that signal never arrives.
            ShutdownSignals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            ShutdownSignals {}
        }
    }

    /// Resolves with the signal's name when one arrives.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            async fn wait(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = wait(&mut self.interrupt) => "SIGINT",
                _ = wait(&mut self.terminate) => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// Installs a `tracing` subscriber writing to stderr, at INFO unless
/// `RUST_LOG` says otherwise. Does nothing if a subscriber is already set.
pub fn setup_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
