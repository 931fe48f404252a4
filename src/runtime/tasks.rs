//! Task supervision: every long-running task of a server is spawned here, so none is detached.
//!
//! A [`Supervisor`] wraps a [`TaskTracker`] and the process's shutdown [`CancellationToken`].
//! A *critical* task (a listener, the refresher, a reloader) is expected to run until shutdown:
//! if it ends before — returning, failing or panicking — the failure is recorded and shutdown
//! starts, so the process drains and exits non-zero instead of running half-alive. *Helper*
//! tasks (per-connection work, readiness trackers) are tracked and awaited, but their end is
//! not fatal.

use std::{
    fmt::Display,
    future::Future,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
};

use futures::FutureExt as _;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Why a supervised server stopped abnormally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// A critical task returned an error.
    #[error("{task} failed: {reason}")]
    Failed {
        /// The task's name.
        task: &'static str,
        /// Its error.
        reason: String,
    },
    /// A critical task ended before shutdown without an error.
    #[error("{task} stopped unexpectedly")]
    Ended {
        /// The task's name.
        task: &'static str,
    },
    /// A task panicked.
    #[error("{task} panicked")]
    Panicked {
        /// The task's name.
        task: &'static str,
    },
}

/// Spawns and tracks tasks; see the module documentation.
#[derive(Debug, Clone)]
pub struct Supervisor {
    tracker: TaskTracker,
    shutdown: CancellationToken,
    failure: Arc<Mutex<Option<TaskError>>>,
}

impl Supervisor {
    /// Supervises tasks that stop when `shutdown` fires.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            shutdown,
            failure: Arc::new(Mutex::new(None)),
        }
    }

    /// The shutdown token the tasks watch.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    fn fail(&self, error: TaskError) {
        tracing::error!(error = %error, "a critical task stopped; shutting down");
        let mut slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(error);
        drop(slot);
        self.shutdown.cancel();
    }

    /// Spawns a task that must run until shutdown. Ending earlier (or with an error, even
    /// during shutdown) records the failure and starts shutdown.
    pub fn critical<F, E>(&self, task: &'static str, future: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let this = self.clone();
        self.tracker.spawn(async move {
            match AssertUnwindSafe(future).catch_unwind().await {
                Ok(Ok(())) if this.shutdown.is_cancelled() => {}
                Ok(Ok(())) => this.fail(TaskError::Ended { task }),
                Ok(Err(e)) => this.fail(TaskError::Failed {
                    task,
                    reason: e.to_string(),
                }),
                Err(_) => this.fail(TaskError::Panicked { task }),
            }
        });
    }

    /// Spawns a tracked helper task: awaited by [`Supervisor::wait`], its end is not fatal (a
    /// panic is logged).
    pub fn helper<F>(&self, task: &'static str, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(async move {
            if AssertUnwindSafe(future).catch_unwind().await.is_err() {
                tracing::error!(task, "task panicked");
            }
        });
    }

    /// Waits until every task has ended (call after shutdown fired, or to wait for it); the
    /// first critical failure, if any.
    pub async fn wait(&self) -> Result<(), TaskError> {
        self.tracker.close();
        self.tracker.wait().await;
        self.failure()
    }

    /// The first critical failure so far.
    pub fn failure(&self) -> Result<(), TaskError> {
        match self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_critical_task_that_ends_early_starts_shutdown_and_is_reported() {
        let token = CancellationToken::new();
        let sup = Supervisor::new(token.clone());
        let t = token.clone();
        sup.helper("waits", async move { t.cancelled().await });
        sup.critical("listener", async { Err::<(), _>("port gone") });
        tokio::time::timeout(std::time::Duration::from_secs(5), token.cancelled())
            .await
            .unwrap();
        assert_eq!(
            sup.wait().await,
            Err(TaskError::Failed {
                task: "listener",
                reason: "port gone".into()
            })
        );
    }

    #[tokio::test]
    async fn panics_and_silent_exits_are_failures_clean_shutdown_is_not() {
        let token = CancellationToken::new();
        let sup = Supervisor::new(token.clone());
        sup.critical("panics", async {
            if token_is_never_set() {
                return Ok::<(), String>(());
            }
            panic!("boom")
        });
        assert_eq!(
            sup.wait().await,
            Err(TaskError::Panicked { task: "panics" })
        );

        let token = CancellationToken::new();
        let sup = Supervisor::new(token.clone());
        sup.critical("returns", async { Ok::<(), String>(()) });
        assert_eq!(sup.wait().await, Err(TaskError::Ended { task: "returns" }));

        let token = CancellationToken::new();
        let sup = Supervisor::new(token.clone());
        let t = token.clone();
        sup.critical("serves", async move {
            t.cancelled().await;
            Ok::<(), String>(())
        });
        token.cancel();
        assert_eq!(sup.wait().await, Ok(()));
    }

    fn token_is_never_set() -> bool {
        false
    }
}
