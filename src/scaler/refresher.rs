//! The background refresh: one grouped query per interval, published into the
//! [`SnapshotStore`] that every RPC reads.
//!
//! - The schema is detected before the first query, again after any failed refresh (the
//!   database may have been migrated, e.g. an Airflow upgrade while the scaler runs) and every
//!   [`SCHEMA_RECHECK`] (an added `executor` column does not make the old query fail).
//! - A failure is recorded in the store (secret-free), the last good snapshot stays until it
//!   goes stale. One warning is logged when refreshes start failing (and when the kind of
//!   error changes), one info line when they recover: never one line per tick.
//! - The password file (`--database-password-file`) is read again before every refresh; when
//!   it holds a new password (a rotated Secret) the pool is rebuilt with it, no restart needed.
//! - The pause between refreshes keeps the refresh's duty cycle (time spent querying / wall
//!   time) under a bound ([`Pace`]): a query that takes longer than `max_duty_cycle` of the
//!   interval stretches the interval to `duration / max_duty_cycle`, and the interval comes back
//!   as soon as the query is fast again. Only successful queries stretch it (a failure is
//!   retried at `interval`), and never beyond a ceiling (half of `--max-staleness`), so the
//!   bound cannot make the data stale. The effective interval is exported; the price is push
//!   latency (a new queued task is seen one effective interval later at worst).

use std::{
    panic::AssertUnwindSafe,
    time::{Duration, Instant},
};

use futures::FutureExt;

use tokio_util::sync::CancellationToken;

use crate::{
    scaler::db::{DbError, MetadataDb},
    scaler::snapshot::{AirflowSchema, Snapshot, SnapshotStore},
};

/// How often the schema is detected again while refreshes succeed.
pub const SCHEMA_RECHECK: Duration = Duration::from_secs(60);

/// When the next refresh starts: every `interval`, stretched (up to `ceiling`) so that
/// successful queries take at most `max_duty_cycle` of the wall time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub interval: Duration,
    /// Share of wall time the refresh may spend querying, in (0, 1].
    pub max_duty_cycle: f64,
    /// Longest stretched interval (never below `interval`).
    pub ceiling: Duration,
}

impl Pace {
    /// A pace of `interval` bounded by `max_duty_cycle` (clamped to (0, 1]), no ceiling.
    pub fn new(interval: Duration, max_duty_cycle: f64) -> Self {
        let max_duty_cycle = if max_duty_cycle.is_finite() && max_duty_cycle > 0.0 {
            max_duty_cycle.min(1.0)
        } else {
            1.0
        };
        Self {
            interval: interval.max(Duration::from_millis(1)),
            max_duty_cycle,
            ceiling: Duration::MAX,
        }
    }

    /// The same pace, never stretched beyond `ceiling`.
    pub fn with_ceiling(self, ceiling: Duration) -> Self {
        Self { ceiling, ..self }
    }

    /// Start-to-start time after a successful refresh that took `took`.
    pub fn period(&self, took: Duration) -> Duration {
        let stretched = Duration::try_from_secs_f64(took.as_secs_f64() / self.max_duty_cycle)
            .unwrap_or(Duration::MAX);
        stretched.min(self.ceiling).max(self.interval)
    }
}

/// What one refresh did, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshStats {
    /// Wall time of the refresh (schema detection included when it ran).
    pub duration: Duration,
    /// `None` on success, else [`DbError::kind`].
    pub error_kind: Option<&'static str>,
    /// Rows of the refresh query (0 on failure).
    pub rows: usize,
    /// The effective interval: start-to-start time until the next refresh.
    pub next_in: Duration,
}

/// Detects the schema and reads the counts once (used by `explain`).
pub async fn refresh_once(db: &MetadataDb) -> Result<Snapshot, DbError> {
    let schema = db.detect_schema().await?;
    let counts = db.read_counts(schema).await?;
    Ok(Snapshot::new(schema, counts))
}

/// Refreshes at `pace` until `shutdown` fires.
pub async fn run(db: MetadataDb, store: SnapshotStore, pace: Pace, shutdown: CancellationToken) {
    run_observed(db, store, pace, shutdown, |_| {}).await;
}

/// [`run`], calling `observe` after every refresh (e.g. to feed Prometheus).
pub async fn run_observed(
    mut db: MetadataDb,
    store: SnapshotStore,
    pace: Pace,
    shutdown: CancellationToken,
    mut observe: impl FnMut(&RefreshStats) + Send,
) {
    let mut state = Refresher::default();
    let mut next = tokio::time::Instant::now();
    let mut stretched = false;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(next) => {}
        }
        // Fault injection for the proofs (feature `failpoints`; nothing in other builds).
        fail::fail_point!("refresher-loop");
        // A rotated Secret: the file changed (checked every tick, it is tiny), or it changed
        // after an authentication failure. Connect with the new password, no restart needed.
        if db.password_file_changed() {
            match db.rebuild() {
                Ok(new) => {
                    tracing::info!(
                        database = %db.redacted_url(),
                        "database password file changed; reconnecting with the new password"
                    );
                    db = new;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot use the changed database password file")
                }
            }
        }
        let started = Instant::now();
        let result = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            // A panic inside the driver (e.g. on a protocol answer it did not expect) must not
            // end the refresher: that would leave the scaler stale until restarted.
            r = AssertUnwindSafe(state.refresh(&db)).catch_unwind() => r.unwrap_or_else(|_| {
                Err(DbError::Query {
                    url: db.redacted_url().to_string(),
                    reason: "the database driver failed unexpectedly (panic); retrying".into(),
                })
            }),
        };
        let duration = started.elapsed();
        // A failure (often a timeout) says nothing about the query's cost: retry at the interval.
        let next_in = if result.is_ok() {
            pace.period(duration)
        } else {
            pace.interval
        };
        next = tokio::time::Instant::from_std(started) + next_in;
        if (next_in > pace.interval) != stretched {
            stretched = !stretched;
            if stretched {
                tracing::info!(
                    query = ?duration,
                    effective_interval = ?next_in,
                    "refresh interval stretched to keep the query under --refresh-max-duty-cycle"
                );
            } else {
                tracing::info!(interval = ?pace.interval, "refresh interval back to --refresh-interval");
            }
        }
        let stats = RefreshStats {
            duration,
            error_kind: result.as_ref().err().map(DbError::kind),
            rows: result.as_ref().map_or(0, |s| s.counts.len()),
            next_in,
        };
        match result {
            Ok(snapshot) => {
                state.succeeded(&db, &snapshot);
                store.publish(snapshot);
            }
            Err(e) => {
                state.failed(&db, &e, store.current().latest.is_some());
                store.record_error(e.to_string());
            }
        }
        observe(&stats);
    }
    tracing::debug!("refresher stopped");
}

/// What the loop remembers between ticks.
#[derive(Debug, Default)]
struct Refresher {
    /// The detected schema and when it was detected; `None` = detect before the next query.
    schema: Option<(AirflowSchema, Instant)>,
    /// The schema of the last published snapshot (to log changes).
    published_schema: Option<AirflowSchema>,
    /// Failures since the last success, and the kind of error last logged.
    failures: u64,
    logged: Option<&'static str>,
}

impl Refresher {
    async fn refresh(&mut self, db: &MetadataDb) -> Result<Snapshot, DbError> {
        let schema = match self.schema {
            Some((schema, at)) if at.elapsed() < SCHEMA_RECHECK => schema,
            _ => {
                let schema = db.detect_schema().await?;
                self.schema = Some((schema, Instant::now()));
                schema
            }
        };
        let counts = db.read_counts(schema).await?;
        Ok(Snapshot::new(schema, counts))
    }

    fn succeeded(&mut self, db: &MetadataDb, snapshot: &Snapshot) {
        if self.failures > 0 {
            tracing::info!(
                database = %db.redacted_url(),
                failed_refreshes = self.failures,
                "refresh of the Airflow metadata database recovered"
            );
        }
        if self.published_schema != Some(snapshot.schema) {
            tracing::info!(
                database = %db.redacted_url(),
                schema = snapshot.schema.describe(),
                "Airflow metadata schema detected"
            );
            self.published_schema = Some(snapshot.schema);
        }
        self.failures = 0;
        self.logged = None;
    }

    fn failed(&mut self, db: &MetadataDb, e: &DbError, have_snapshot: bool) {
        // Detect again next time: the failure may come from a migration.
        self.schema = None;
        self.failures += 1;
        if self.logged != Some(e.kind()) {
            if have_snapshot {
                tracing::warn!(
                    database = %db.redacted_url(),
                    kind = e.kind(),
                    error = %e,
                    "refresh of the Airflow metadata database failed; serving the last snapshot \
                     until it is stale"
                );
            } else {
                tracing::warn!(
                    database = %db.redacted_url(),
                    kind = e.kind(),
                    error = %e,
                    "refresh of the Airflow metadata database failed; no snapshot yet, every \
                     RPC answers UNAVAILABLE until a refresh succeeds"
                );
            }
            self.logged = Some(e.kind());
        } else {
            tracing::debug!(failures = self.failures, error = %e, "refresh still failing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_query_stretches_the_interval_and_a_fast_one_restores_it() {
        let pace = Pace::new(Duration::from_secs(1), 0.02);
        assert_eq!(
            pace.period(Duration::from_millis(5)),
            Duration::from_secs(1)
        );
        assert_eq!(
            pace.period(Duration::from_millis(20)),
            Duration::from_secs(1)
        );
        assert_eq!(
            pace.period(Duration::from_millis(600)),
            Duration::from_secs(30)
        );
        assert_eq!(
            pace.period(Duration::from_millis(5)),
            Duration::from_secs(1)
        );
        // Never beyond the ceiling (half of --max-staleness), never below the interval.
        let capped = pace.with_ceiling(Duration::from_secs(15));
        assert_eq!(
            capped.period(Duration::from_secs(2)),
            Duration::from_secs(15)
        );
        let low = Pace::new(Duration::from_secs(1), 0.02).with_ceiling(Duration::from_millis(10));
        assert_eq!(
            low.period(Duration::from_millis(600)),
            Duration::from_secs(1)
        );
        // Out-of-range bounds mean "no bound".
        assert_eq!(
            Pace::new(Duration::from_secs(1), 0.0).period(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }
}
