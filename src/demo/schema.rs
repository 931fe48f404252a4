//! The demo's SQLite `task_instance` table: Airflow 3's columns that the scaler reads (and the
//! key), written with bound parameters.
//!
//! The full, dialect-aware Airflow fixture used by the tests and benchmarks lives in the test
//! kit (`crates/testkit`); the demo only needs this one table on SQLite.

use sqlx::{AssertSqlSafe, Sqlite, Transaction};

/// `CREATE TABLE` (Airflow 3: `id` primary key, the four key columns unique) and the index on
/// `state` the refresh query uses.
const SCHEMA: &[&str] = &[
    "DROP TABLE IF EXISTS task_instance",
    "CREATE TABLE task_instance (
    id VARCHAR(36) NOT NULL,
    task_id VARCHAR(250) NOT NULL,
    dag_id VARCHAR(250) NOT NULL,
    run_id VARCHAR(250) NOT NULL,
    map_index INTEGER NOT NULL DEFAULT -1,
    state VARCHAR(20),
    try_number INTEGER,
    hostname VARCHAR(1000),
    pool VARCHAR(256) NOT NULL,
    pool_slots INTEGER NOT NULL,
    queue VARCHAR(256),
    priority_weight INTEGER,
    executor VARCHAR(1000),
    CONSTRAINT task_instance_pkey PRIMARY KEY (id),
    CONSTRAINT task_instance_composite_pkey UNIQUE (dag_id, task_id, run_id, map_index)
)",
    "CREATE INDEX ti_state ON task_instance (state)",
];

/// One task instance of the synthetic workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub dag_id: String,
    pub task_id: String,
    pub run_id: String,
    pub map_index: i32,
    pub state: Option<String>,
    pub queue: String,
    /// `None` = the default executor.
    pub executor: Option<String>,
    pub hostname: String,
    pub pool: String,
}

/// (Re)creates the table.
pub async fn create(pool: &sqlx::SqlitePool) -> Result<(), sqlx::Error> {
    for stmt in SCHEMA {
        sqlx::raw_sql(AssertSqlSafe(*stmt)).execute(pool).await?;
    }
    Ok(())
}

/// Inserts `row` (its `id` is a fresh counter-based UUID-shaped string, unique per demo run).
pub async fn insert(
    tx: &mut Transaction<'_, Sqlite>,
    id: u64,
    row: &TaskRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO task_instance (id, dag_id, task_id, run_id, map_index, state, queue, \
         hostname, pool, pool_slots, priority_weight, try_number, executor) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 1, ?, ?)",
    )
    .bind(format!("00000000-0000-8000-8000-{id:012x}"))
    .bind(&row.dag_id)
    .bind(&row.task_id)
    .bind(&row.run_id)
    .bind(row.map_index)
    .bind(&row.state)
    .bind(&row.queue)
    .bind(&row.hostname)
    .bind(&row.pool)
    .bind(i32::from(row.state.as_deref() != Some("scheduled")))
    .bind(&row.executor)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Moves `row` to `state` on `hostname`.
pub async fn set_state(
    tx: &mut Transaction<'_, Sqlite>,
    row: &TaskRow,
    state: &str,
    hostname: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE task_instance SET state = ?, hostname = ? \
         WHERE dag_id = ? AND task_id = ? AND run_id = ? AND map_index = ?",
    )
    .bind(state)
    .bind(hostname)
    .bind(&row.dag_id)
    .bind(&row.task_id)
    .bind(&row.run_id)
    .bind(row.map_index)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
