//! The snapshot: what one refresh read from `task_instance`, published immutably for every RPC.
//!
//! One background refresh (see [`super::refresher`]) runs a single grouped query and publishes a
//! [`Snapshot`] into the [`SnapshotStore`]. Every gRPC call reads the latest snapshot and filters
//! it in memory ([`Snapshot::demand`]); no RPC touches the database.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::watch;

/// The task-instance states the refresh reads: `queued` and `running` hold (or are about to
/// hold) a Celery worker slot; `scheduled` waits for the scheduler to queue it (the starvation
/// signal when `[core] parallelism` is reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Scheduled,
    Queued,
    Running,
}

impl TaskState {
    /// Parses the value of `task_instance.state` as returned by the refresh query.
    pub fn from_db(s: &str) -> Option<Self> {
        match s {
            "scheduled" => Some(Self::Scheduled),
            "queued" => Some(Self::Queued),
            "running" => Some(Self::Running),
            _ => None,
        }
    }
}

/// Which shape of `task_instance` the metadata database has (detected at start-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum AirflowSchema {
    /// Airflow 2.x before 2.10: no `executor` column; every row is the (single) executor's.
    Airflow2,
    /// Airflow 2.10+: `executor` column (NULL = the default executor).
    Airflow2WithExecutor,
    /// Airflow 3.x: `id` UUID primary key, `executor` column.
    Airflow3,
}

impl AirflowSchema {
    pub fn has_executor_column(self) -> bool {
        !matches!(self, Self::Airflow2)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Airflow2 => "Airflow 2.x (< 2.10, no executor column)",
            Self::Airflow2WithExecutor => "Airflow 2.10+ (executor column)",
            Self::Airflow3 => "Airflow 3.x (id primary key, executor column)",
        }
    }
}

/// One row of the refresh query: `COUNT(*)` grouped by queue, state (executor) and, for
/// running rows only, the worker's hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueCount {
    /// `task_instance.queue` (NULL is read as the empty string).
    pub queue: String,
    pub state: TaskState,
    /// `task_instance.executor`; always `None` on [`AirflowSchema::Airflow2`].
    pub executor: Option<String>,
    /// `task_instance.hostname` of running rows (Airflow's `hostname_callable` on the worker);
    /// `None` for other states and for an empty hostname.
    pub hostname: Option<String>,
    pub count: u64,
}

impl QueueCount {
    /// A row without a hostname.
    pub fn new(queue: &str, state: TaskState, executor: Option<&str>, count: u64) -> Self {
        Self {
            queue: queue.to_string(),
            state,
            executor: executor.map(str::to_string),
            hostname: None,
            count,
        }
    }

    /// The same row, run by `hostname`.
    pub fn on_host(mut self, hostname: &str) -> Self {
        self.hostname = Some(hostname.to_string()).filter(|h| !h.is_empty());
        self
    }
}

/// Which rows of a snapshot belong to one Celery worker queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// Airflow queue names the worker consumes.
    pub queues: Vec<String>,
    /// Values of `task_instance.executor` that mean Celery.
    pub executor_names: Vec<String>,
    /// Celery is the first `[core] executor`: rows with a NULL executor are Celery's.
    pub celery_is_default: bool,
}

impl Selector {
    fn matches(&self, schema: AirflowSchema, row: &QueueCount) -> bool {
        if !self.queues.contains(&row.queue) {
            return false;
        }
        if !schema.has_executor_column() {
            return true;
        }
        match &row.executor {
            None => self.celery_is_default,
            Some(e) => self.executor_names.iter().any(|n| n == e),
        }
    }
}

/// Queued and running (and scheduled) task instances of one worker queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Demand {
    pub queued: u64,
    pub running: u64,
    /// Waiting for the scheduler; not demand for workers yet.
    pub scheduled: u64,
}

impl Demand {
    /// `queued + running`: what the formula sizes the workers for.
    pub fn total(self) -> u64 {
        self.queued.saturating_add(self.running)
    }
}

/// An immutable result of one refresh.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Monotonic time the query returned (for staleness).
    pub taken_at: Instant,
    /// Wall-clock time the query returned (for display).
    pub taken_at_wall: SystemTime,
    pub schema: AirflowSchema,
    pub counts: Vec<QueueCount>,
}

impl Snapshot {
    pub fn new(schema: AirflowSchema, counts: Vec<QueueCount>) -> Self {
        Self {
            taken_at: Instant::now(),
            taken_at_wall: SystemTime::now(),
            schema,
            counts,
        }
    }

    /// Queued and running task instances that `selector` covers.
    pub fn demand(&self, selector: &Selector) -> Demand {
        self.counts
            .iter()
            .filter(|row| selector.matches(self.schema, row))
            .fold(Demand::default(), |mut d, row| {
                match row.state {
                    TaskState::Scheduled => d.scheduled = d.scheduled.saturating_add(row.count),
                    TaskState::Queued => d.queued = d.queued.saturating_add(row.count),
                    TaskState::Running => d.running = d.running.saturating_add(row.count),
                }
                d
            })
    }

    /// Running task instances that `selector` covers, by worker hostname (rows without a
    /// hostname are left out).
    pub fn running_by_host(&self, selector: &Selector) -> BTreeMap<&str, u64> {
        let mut out = BTreeMap::new();
        for row in &self.counts {
            if row.state != TaskState::Running || !selector.matches(self.schema, row) {
                continue;
            }
            if let Some(host) = row.hostname.as_deref() {
                let n: &mut u64 = out.entry(host).or_default();
                *n = n.saturating_add(row.count);
            }
        }
        out
    }

    /// Queued + running task instances of every queue and executor: what Airflow's
    /// `[core] parallelism` bounds (BaseExecutor's open slots), plus the scheduled ones.
    pub fn totals(&self) -> Demand {
        self.counts.iter().fold(Demand::default(), |mut d, row| {
            match row.state {
                TaskState::Scheduled => d.scheduled = d.scheduled.saturating_add(row.count),
                TaskState::Queued => d.queued = d.queued.saturating_add(row.count),
                TaskState::Running => d.running = d.running.saturating_add(row.count),
            }
            d
        })
    }

    pub fn age(&self) -> Duration {
        self.taken_at.elapsed()
    }
}

/// What the refresher has published so far.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The latest successful snapshot, if any.
    pub latest: Option<Arc<Snapshot>>,
    /// Why the most recent refresh failed; cleared by the next success. Never holds a secret.
    pub last_error: Option<Arc<str>>,
    /// Count of successful refreshes (lets watchers notice a new snapshot).
    pub generation: u64,
}

/// Why no snapshot can be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StaleError {
    #[error("no snapshot of the Airflow metadata database yet: {reason}")]
    NoSnapshot { reason: String },
    #[error(
        "the latest snapshot of the Airflow metadata database is {age_secs:.1}s old \
         (limit --max-staleness {limit_secs:.1}s): {reason}"
    )]
    Stale {
        age_secs: f64,
        limit_secs: f64,
        reason: String,
    },
}

impl Published {
    /// The latest snapshot if it is younger than `max_staleness`, else why not.
    pub fn fresh(&self, max_staleness: Duration) -> Result<Arc<Snapshot>, StaleError> {
        // Say what is true: a failure if the latest refresh failed; otherwise no refresh has
        // finished since the latest snapshot (a query still running, up to --database-timeout).
        let reason = || match (&self.last_error, &self.latest) {
            (Some(e), _) => e.to_string(),
            (None, None) => "the first refresh has not finished".to_string(),
            (None, Some(_)) => "no refresh has finished since (the query still running may take \
                                up to --database-timeout)"
                .to_string(),
        };
        match &self.latest {
            None => Err(StaleError::NoSnapshot { reason: reason() }),
            Some(s) if s.age() > max_staleness => Err(StaleError::Stale {
                age_secs: s.age().as_secs_f64(),
                limit_secs: max_staleness.as_secs_f64(),
                reason: reason(),
            }),
            Some(s) => Ok(Arc::clone(s)),
        }
    }
}

/// Single-writer, many-reader holder of the latest snapshot (a `watch` channel underneath).
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    tx: Arc<watch::Sender<Published>>,
}

impl Default for SnapshotStore {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotStore {
    pub fn new() -> Self {
        let (tx, _rx) = watch::channel(Published::default());
        Self { tx: Arc::new(tx) }
    }

    /// Publishes a successful refresh and clears the last error.
    pub fn publish(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        self.tx.send_modify(|p| {
            p.latest = Some(snapshot);
            p.last_error = None;
            p.generation = p.generation.wrapping_add(1);
        });
    }

    /// Records a failed refresh. The last good snapshot stays until it goes stale.
    /// `reason` must already be free of secrets.
    pub fn record_error(&self, reason: impl Into<Arc<str>>) {
        let reason = reason.into();
        self.tx.send_modify(|p| p.last_error = Some(reason));
    }

    /// The current state (cheap: clones two `Arc`s).
    pub fn current(&self) -> Published {
        self.tx.borrow().clone()
    }

    /// A receiver that is woken on every publish or error.
    pub fn subscribe(&self) -> watch::Receiver<Published> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(queue: &str, state: TaskState, executor: Option<&str>, count: u64) -> QueueCount {
        QueueCount::new(queue, state, executor, count)
    }

    fn selector(queues: &[&str], default: bool) -> Selector {
        Selector {
            queues: queues.iter().map(|q| q.to_string()).collect(),
            executor_names: vec![
                "CeleryExecutor".into(),
                "airflow.providers.celery.executors.celery_executor.CeleryExecutor".into(),
            ],
            celery_is_default: default,
        }
    }

    fn sample(schema: AirflowSchema) -> Snapshot {
        use TaskState::*;
        Snapshot::new(
            schema,
            vec![
                row("default", Queued, None, 3),
                row("default", Running, Some("CeleryExecutor"), 5),
                row("default", Running, Some("KubernetesExecutor"), 7),
                row(
                    "default",
                    Queued,
                    Some("airflow.providers.celery.executors.celery_executor.CeleryExecutor"),
                    1,
                ),
                row("ml", Queued, None, 11),
                row("kubernetes", Queued, None, 13),
            ],
        )
    }

    #[test]
    fn demand_filters_by_queue_and_executor() {
        let with_exec = sample(AirflowSchema::Airflow3);
        let no_exec_counts: Vec<_> = with_exec
            .counts
            .iter()
            .map(|r| QueueCount {
                executor: None,
                ..r.clone()
            })
            .collect();
        let legacy = Snapshot::new(AirflowSchema::Airflow2, no_exec_counts);
        let cases: &[(&Snapshot, &[&str], bool, u64, u64)] = &[
            // NULL executor counts only when Celery is the default executor.
            (&with_exec, &["default"], true, 4, 5),
            (&with_exec, &["default"], false, 1, 5),
            (&with_exec, &["default", "ml"], true, 15, 5),
            (&with_exec, &["nope"], true, 0, 0),
            // Without the column every row of the queue is Celery's.
            (&legacy, &["default"], false, 4, 12),
            (&legacy, &["kubernetes"], true, 13, 0),
        ];
        for (snap, queues, default, queued, running) in cases {
            let d = snap.demand(&selector(queues, *default));
            assert_eq!(
                (d.queued, d.running),
                (*queued, *running),
                "queues {queues:?} default {default}"
            );
        }
    }

    #[test]
    fn scheduled_and_running_by_host() {
        use TaskState::*;
        let snap = Snapshot::new(
            AirflowSchema::Airflow3,
            vec![
                row("default", Scheduled, None, 4),
                row("default", Running, None, 2).on_host("worker-a"),
                row("default", Running, Some("CeleryExecutor"), 1).on_host("worker-a"),
                row("default", Running, None, 3).on_host("worker-b"),
                row("default", Running, Some("KubernetesExecutor"), 9).on_host("k8s-pod"),
                row("default", Running, None, 5),
                row("ml", Running, None, 6).on_host("worker-a"),
            ],
        );
        let sel = selector(&["default"], true);
        let d = snap.demand(&sel);
        assert_eq!((d.scheduled, d.queued, d.running), (4, 0, 11));
        // Scheduled tasks are not worker demand.
        assert_eq!(d.total(), 11);
        let by_host: Vec<_> = snap.running_by_host(&sel).into_iter().collect();
        assert_eq!(by_host, vec![("worker-a", 3), ("worker-b", 3)]);
        let all = snap.totals();
        assert_eq!((all.scheduled, all.queued, all.running), (4, 0, 26));
        assert_eq!(row("q", Running, None, 1).on_host("").hostname, None);
    }

    #[test]
    fn a_stale_snapshot_after_good_refreshes_does_not_claim_the_first_refresh_is_pending() {
        let store = SnapshotStore::new();
        store.publish(sample(AirflowSchema::Airflow3));
        let err = store
            .current()
            .fresh(Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("first refresh"), "{err}");
        assert!(err.contains("no refresh has finished since"), "{err}");
        assert!(err.contains("--database-timeout"), "{err}");
    }

    #[test]
    fn staleness_reports_reason() {
        let store = SnapshotStore::new();
        let err = store.current().fresh(Duration::from_secs(30)).unwrap_err();
        assert!(matches!(err, StaleError::NoSnapshot { .. }));
        store.record_error("connection refused");
        let err = store.current().fresh(Duration::from_secs(30)).unwrap_err();
        assert!(err.to_string().contains("connection refused"));
        store.publish(sample(AirflowSchema::Airflow3));
        assert!(store.current().fresh(Duration::from_secs(30)).is_ok());
        store.record_error("timeout");
        // Still fresh: the last good snapshot is served while the error is remembered.
        assert!(store.current().fresh(Duration::from_secs(30)).is_ok());
        let err = store.current().fresh(Duration::ZERO).unwrap_err();
        assert!(matches!(err, StaleError::Stale { .. }));
        assert!(err.to_string().contains("timeout"));
    }
}
