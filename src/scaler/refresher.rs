//! The background refresh: one grouped query per interval, published into the
//! [`SnapshotStore`] that every RPC reads.
//!
//! - The schema is detected before the first query, again after any failed refresh (the
//!   database may have been migrated, e.g. an Airflow upgrade while the scaler runs) and every
//!   [`SCHEMA_RECHECK`] (an added `executor` column does not make the old query fail).
//! - A failure is recorded in the store (secret-free), the last good snapshot stays until it
//!   goes stale. One warning is logged when refreshes start failing (and when the kind of
//!   error changes), one info line when they recover: never one line per tick.
//! - Ticks missed while a query is slow are skipped, not bursted.

use std::{
    panic::AssertUnwindSafe,
    time::{Duration, Instant},
};

use futures::FutureExt;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::{
    scaler::db::{DbError, MetadataDb},
    scaler::snapshot::{AirflowSchema, Snapshot, SnapshotStore},
};

/// How often the schema is detected again while refreshes succeed.
pub const SCHEMA_RECHECK: Duration = Duration::from_secs(60);

/// What one refresh did, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshStats {
    /// Wall time of the refresh (schema detection included when it ran).
    pub duration: Duration,
    /// `None` on success, else [`DbError::kind`].
    pub error_kind: Option<&'static str>,
    /// Rows of the refresh query (0 on failure).
    pub rows: usize,
}

/// Detects the schema and reads the counts once (used by `explain`).
pub async fn refresh_once(db: &MetadataDb) -> Result<Snapshot, DbError> {
    let schema = db.detect_schema().await?;
    let counts = db.read_counts(schema).await?;
    Ok(Snapshot::new(schema, counts))
}

/// Refreshes every `interval` until `shutdown` fires.
pub async fn run(
    db: MetadataDb,
    store: SnapshotStore,
    interval: Duration,
    shutdown: CancellationToken,
) {
    run_observed(db, store, interval, shutdown, |_| {}).await;
}

/// [`run`], calling `observe` after every refresh (e.g. to feed Prometheus).
pub async fn run_observed(
    db: MetadataDb,
    store: SnapshotStore,
    interval: Duration,
    shutdown: CancellationToken,
    mut observe: impl FnMut(&RefreshStats) + Send,
) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut state = Refresher::default();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
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
        let stats = RefreshStats {
            duration: started.elapsed(),
            error_kind: result.as_ref().err().map(DbError::kind),
            rows: result.as_ref().map_or(0, |s| s.counts.len()),
        };
        match result {
            Ok(snapshot) => {
                state.succeeded(&db, &snapshot);
                store.publish(snapshot);
            }
            Err(e) => {
                state.failed(&db, &e);
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

    fn failed(&mut self, db: &MetadataDb, e: &DbError) {
        // Detect again next time: the failure may come from a migration.
        self.schema = None;
        self.failures += 1;
        if self.logged != Some(e.kind()) {
            tracing::warn!(
                database = %db.redacted_url(),
                kind = e.kind(),
                error = %e,
                "refresh of the Airflow metadata database failed; serving the last snapshot \
                 until it is stale"
            );
            self.logged = Some(e.kind());
        } else {
            tracing::debug!(failures = self.failures, error = %e, "refresh still failing");
        }
    }
}
