//! Keeps a dead part from looking alive: the pollers (the fleet's task, see [`crate::fleet`],
//! which ends with an error naming the organisation whose poller ended) and the server run as
//! two tasks, and the process lives exactly as long as both do.
//!
//! Without supervision, a poller that ended (a panic, or a return) would leave `/metrics`
//! serving frozen figures with `qonto_up` at its last value and `/-/ready` at 200: nothing
//! would ever tell the orchestrator. So [`supervise`] races both tasks against the shutdown
//! signal. A task that ends before shutdown was asked is logged in one `error` line
//! ("poller stopped unexpectedly: <panic message or 'returned'>; exiting so the orchestrator
//! restarts the exporter"), the other task is told to stop, and the process exits non-zero.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};

/// How long the surviving task gets to stop once the other one died.
const DRAIN: Duration = Duration::from_secs(10);

/// How the exporter's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Shutdown was asked (SIGINT, SIGTERM) and both tasks stopped cleanly.
    Stopped,
    /// Shutdown was asked, and the server then failed.
    ServerFailed(String),
    /// A task ended before shutdown was asked: the exporter is no longer whole.
    Unexpected {
        /// `poller` or `server`.
        task: &'static str,
        /// The panic message, the server's error, or `returned`.
        why: String,
    },
}

impl Outcome {
    /// True when the process should exit with success.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Stopped)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Stopped => write!(f, "stopped"),
            Outcome::ServerFailed(e) => write!(f, "server failed: {e}"),
            Outcome::Unexpected { task, why } => write!(
                f,
                "{task} stopped unexpectedly: {why}; exiting so the orchestrator restarts the exporter"
            ),
        }
    }
}

/// Runs until `signal` resolves (then asks both tasks to stop through `shutdown` and waits for
/// them) or until either task ends on its own (then logs it, asks the other to stop, and waits
/// for it at most ten seconds). `poller` should only ever end after `shutdown` turns true.
pub async fn supervise<P: fmt::Display, E: fmt::Display>(
    mut poller: JoinHandle<Result<(), P>>,
    mut server: JoinHandle<Result<(), E>>,
    signal: impl Future<Output = ()>,
    shutdown: &watch::Sender<bool>,
) -> Outcome {
    let outcome = tokio::select! {
        _ = signal => None,
        ended = &mut poller => Some(Outcome::Unexpected {
            task: "poller",
            why: why(ended.map(|r| r.err().map(|e| e.to_string()))),
        }),
        ended = &mut server => Some(Outcome::Unexpected {
            task: "server",
            why: why(ended.map(|r| r.err().map(|e| e.to_string()))),
        }),
    };
    let _ = shutdown.send(true);
    match outcome {
        None => {
            tracing::info!("shutting down");
            // Neither handle has completed: the signal's branch won the race.
            let _ = poller.await;
            match server.await {
                Ok(Ok(())) => Outcome::Stopped,
                Ok(Err(e)) => Outcome::ServerFailed(e.to_string()),
                Err(e) => Outcome::ServerFailed(why(Err(e))),
            }
        }
        Some(outcome) => {
            tracing::error!("{outcome}");
            // The surviving task was told to stop; give it a moment (in-flight scrapes finish).
            let _ = match &outcome {
                Outcome::Unexpected { task: "poller", .. } => {
                    tokio::time::timeout(DRAIN, server).await.is_ok()
                }
                _ => tokio::time::timeout(DRAIN, poller).await.is_ok(),
            };
            outcome
        }
    }
}

/// A task's end in words: `returned`, the error it returned, or its panic message.
fn why(ended: Result<Option<String>, JoinError>) -> String {
    match ended {
        Ok(None) => "returned".to_owned(),
        Ok(Some(error)) => error,
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            format!("panicked: {message}")
        }
        Err(_) => "cancelled".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::stopped;

    /// A well-behaved task: runs until shutdown is asked.
    fn until_shutdown<T: Send + 'static>(mut rx: watch::Receiver<bool>, value: T) -> JoinHandle<T> {
        tokio::spawn(async move {
            stopped(&mut rx).await;
            value
        })
    }

    fn never() -> impl Future<Output = ()> {
        std::future::pending()
    }

    #[tokio::test]
    async fn a_panicking_poller_ends_the_process_with_its_message() {
        let (tx, rx) = watch::channel(false);
        let poller = tokio::spawn(async {
            tokio::task::yield_now().await;
            if true {
                panic!("overflow when adding duration to instant");
            }
            Ok::<(), String>(())
        });
        let server = until_shutdown(rx.clone(), Ok::<(), String>(()));
        let outcome = tokio::time::timeout(
            Duration::from_secs(5),
            supervise(poller, server, never(), &tx),
        )
        .await
        .expect("the supervisor notices the dead poller");
        assert_eq!(
            outcome.to_string(),
            "poller stopped unexpectedly: panicked: overflow when adding duration to instant; exiting so the orchestrator restarts the exporter"
        );
        assert!(!outcome.is_success());
        assert!(*rx.borrow(), "the server was told to stop");
    }

    #[tokio::test]
    async fn a_poller_that_returns_ends_the_process() {
        let (tx, rx) = watch::channel(false);
        let poller = tokio::spawn(async { Ok::<(), String>(()) });
        let server = until_shutdown(rx.clone(), Ok::<(), String>(()));
        let outcome = supervise(poller, server, never(), &tx).await;
        assert_eq!(
            outcome,
            Outcome::Unexpected {
                task: "poller",
                why: "returned".into()
            }
        );
        assert_eq!(
            outcome.to_string(),
            "poller stopped unexpectedly: returned; exiting so the orchestrator restarts the exporter"
        );
        assert!(!outcome.is_success());
    }

    #[tokio::test]
    async fn a_failed_server_ends_the_process_with_its_error() {
        let (tx, rx) = watch::channel(false);
        let poller = until_shutdown(rx.clone(), Ok::<(), String>(()));
        let server = tokio::spawn(async { Err::<(), _>("accept failed: too many open files") });
        let outcome = supervise(poller, server, never(), &tx).await;
        assert_eq!(
            outcome.to_string(),
            "server stopped unexpectedly: accept failed: too many open files; exiting so the orchestrator restarts the exporter"
        );
        assert!(*rx.borrow(), "the poller was told to stop");
    }

    #[tokio::test]
    async fn a_signal_stops_both_tasks_cleanly() {
        let (tx, rx) = watch::channel(false);
        let poller = until_shutdown(rx.clone(), Ok::<(), String>(()));
        let server = until_shutdown(rx.clone(), Ok::<(), String>(()));
        let outcome = supervise(poller, server, async {}, &tx).await;
        assert_eq!(outcome, Outcome::Stopped);
        assert!(outcome.is_success());
        let (tx, rx) = watch::channel(false);
        let poller = until_shutdown(rx.clone(), Ok::<(), String>(()));
        let server = until_shutdown(rx.clone(), Err::<(), _>("drain failed".to_owned()));
        let outcome = supervise(poller, server, async {}, &tx).await;
        assert_eq!(outcome, Outcome::ServerFailed("drain failed".into()));
        assert!(!outcome.is_success());
    }
}
