//! Serving and graceful shutdown.
//!
//! On SIGTERM or SIGINT, within `shutdown.timeout`: readiness turns 503 at once, the listener keeps
//! accepting for `shutdown.drain_delay` (so load balancers stop sending first) and then closes, the
//! in-flight requests drain, and telemetry flushes. The process exits 0 when everything drained in
//! time, and 1 when the timeout cut the drain short.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::config::Config;

/// How a run of the server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every in-flight request finished within the shutdown timeout.
    Drained,
    /// The shutdown timeout ended the drain with requests still in flight.
    TimedOut,
}

/// How the server stopped, and by when everything after it (storage, DLQ, telemetry) must be done.
#[derive(Debug, Clone, Copy)]
pub struct Stopped {
    /// Whether the drain finished.
    pub exit: Exit,
    /// The end of the `shutdown.timeout` budget, counted from the signal.
    pub deadline: Instant,
}

/// Serves `app` until SIGTERM or SIGINT, then shuts down in order.
pub async fn serve(app: App, config: &Config) -> anyhow::Result<Stopped> {
    let addr = config.server.addr;
    let shutdown_config = config.shutdown.clone();
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("could not listen on {addr} (server.addr)"))?;
    let local = listener.local_addr()?;
    let admin = if app
        .served
        .iter()
        .any(|(_, path)| path.starts_with("/admin"))
    {
        "on"
    } else {
        "off"
    };
    // The signal handlers are in place before the listening line: a SIGTERM sent as soon as
    // the line is seen is a graceful shutdown, not the default action (death by signal).
    let signals = Signals::register();
    tracing::info!(addr = %local, admin, "mainstay-api listening on http://{local}");

    let health = app.health.clone();
    let (signalled_tx, mut signalled_rx) = watch::channel(false);
    tokio::spawn(async move {
        signals.wait().await;
        let _ = signalled_tx.send(true);
    });

    let drain_health = health.clone();
    let mut drain_rx = signalled_rx.clone();
    let drain_delay = shutdown_config.drain_delay;
    let graceful = async move {
        let _ = drain_rx.wait_for(|signalled| *signalled).await;
        drain_health.begin_shutdown();
        tracing::info!(drain_delay = ?drain_delay, "shutdown: readiness is 503; still accepting during the drain delay");
        tokio::time::sleep(drain_delay).await;
        tracing::info!("shutdown: listener closed; draining in-flight requests");
    };
    let server = axum::serve(
        listener,
        app.router
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(graceful);
    let mut server = tokio::spawn(async move { server.await });
    health.mark_started();

    tokio::select! {
        result = &mut server => {
            result.context("the server task failed")?.context("the server failed")?;
            let deadline = Instant::now() + shutdown_config.timeout;
            return Ok(Stopped { exit: Exit::Drained, deadline });
        }
        _ = signalled_rx.wait_for(|signalled| *signalled) => {}
    }
    let started = Instant::now();
    let deadline = started + shutdown_config.timeout;
    // Keep a little of the budget for flushing telemetry after the drain.
    let drain_budget = shutdown_config
        .timeout
        .saturating_sub(flush_reserve(shutdown_config.timeout));
    match tokio::time::timeout(drain_budget, &mut server).await {
        Ok(result) => {
            result
                .context("the server task failed")?
                .context("the server failed")?;
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "shutdown: every in-flight request finished"
            );
            Ok(Stopped {
                exit: Exit::Drained,
                deadline,
            })
        }
        Err(_) => {
            server.abort();
            tracing::warn!(timeout = ?shutdown_config.timeout, "shutdown: timeout reached with requests still in flight; abandoning them");
            Ok(Stopped {
                exit: Exit::TimedOut,
                deadline,
            })
        }
    }
}

/// The part of the shutdown budget kept for flushing storage, the DLQ and telemetry after the
/// drain: a fifth, at most 5 s.
#[must_use]
pub fn flush_reserve(timeout: Duration) -> Duration {
    (timeout / 5).min(Duration::from_secs(5))
}

/// SIGINT and SIGTERM, registered when made (so a signal that arrives before anyone waits is
/// not lost to the default action).
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            let Self {
                interrupt,
                terminate,
            } = self;
            let received = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = received(interrupt) => tracing::info!(signal = "SIGINT", "shutdown: signal received"),
                () = received(terminate) => tracing::info!(signal = "SIGTERM", "shutdown: signal received"),
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!(signal = "SIGINT", "shutdown: signal received");
            } else {
                std::future::pending::<()>().await;
            }
        }
    }
}
