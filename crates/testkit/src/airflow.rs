//! An Airflow-shaped `task_instance` table for the tests and benchmarks, and [`execute`] to
//! write it. The scaler itself never writes to a database.
//!
//! The DDL follows Airflow's `TaskInstance` model (`airflow/models/taskinstance.py` and its
//! migrations) for the columns and indexes that matter to a scaler: Airflow 2 keys the table by
//! `(dag_id, task_id, run_id, map_index)`; Airflow 2.10 adds the nullable `executor` column;
//! Airflow 3 adds an `id` UUID primary key (native `uuid` on PostgreSQL, `VARCHAR(36)`
//! elsewhere), keeps the four columns as a unique constraint and drops `job_id`. The indexes
//! `ti_state`, `ti_pool`, `ti_dag_state`, `ti_dag_run` and `ti_state_lkp` are Airflow's; there
//! is no index on `queue` or `executor`, as in Airflow. Foreign keys to `dag_run`, `trigger` and
//! `dag_version` are left out (those tables are not created).
//!
//! Generators are pure (same input, same SQL). [`insert_sql`] writes one multi-row `INSERT`
//! with every value as an escaped literal; callers chunk at about [`INSERT_CHUNK`] rows
//! ([`insert_sql_chunked`] does it).

use std::fmt::Write as _;

use std::str::FromStr as _;

use airflow_keda_scaler::scaler::db::Dialect;
use sqlx::{
    AssertSqlSafe, ConnectOptions as _, Connection, Executor, mysql::MySqlConnectOptions,
    postgres::PgConnectOptions, sqlite::SqliteConnectOptions,
};

/// Rows per `INSERT` statement that [`insert_sql_chunked`] writes.
pub const INSERT_CHUNK: usize = 1000;

/// Every value `task_instance.state` takes in Airflow 2 and 3 (`None` = NULL, a task instance
/// the scheduler has created but not scheduled yet).
pub const ALL_STATES: [Option<&str>; 13] = [
    None,
    Some("scheduled"),
    Some("queued"),
    Some("running"),
    Some("success"),
    Some("failed"),
    Some("up_for_retry"),
    Some("up_for_reschedule"),
    Some("deferred"),
    Some("restarting"),
    Some("removed"),
    Some("skipped"),
    Some("upstream_failed"),
];

/// Which Airflow release's `task_instance` to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AirflowVersion {
    /// Airflow 2.9: no `executor` column.
    V2_9,
    /// Airflow 2.10: nullable `executor` column.
    V2_10,
    /// Airflow 3.x: `id` UUID primary key, `executor` column, no `job_id`.
    V3,
}

impl AirflowVersion {
    /// All versions, oldest first.
    pub const ALL: [Self; 3] = [Self::V2_9, Self::V2_10, Self::V3];

    /// Whether `task_instance` has the `executor` column.
    pub fn has_executor(self) -> bool {
        !matches!(self, Self::V2_9)
    }
}

/// One task instance to insert. Columns not listed get Airflow-like defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureRow {
    /// `dag_id`.
    pub dag_id: String,
    /// `task_id`.
    pub task_id: String,
    /// `run_id`.
    pub run_id: String,
    /// `map_index` (-1 = not mapped).
    pub map_index: i32,
    /// `state` (`None` = NULL).
    pub state: Option<String>,
    /// `queue`.
    pub queue: String,
    /// `executor` (`None` = NULL = the default executor); ignored for [`AirflowVersion::V2_9`].
    pub executor: Option<String>,
    /// `hostname` (the worker running the task; empty before that).
    pub hostname: String,
    /// `pool`.
    pub pool: String,
}

impl FixtureRow {
    /// An unmapped task instance in `default_pool`, on no host yet, default executor.
    pub fn new(
        dag_id: &str,
        task_id: &str,
        run_id: &str,
        state: Option<&str>,
        queue: &str,
    ) -> Self {
        Self {
            dag_id: dag_id.into(),
            task_id: task_id.into(),
            run_id: run_id.into(),
            map_index: -1,
            state: state.map(Into::into),
            queue: queue.into(),
            executor: None,
            hostname: String::new(),
            pool: "default_pool".into(),
        }
    }

    /// Sets `executor`.
    pub fn with_executor(mut self, executor: Option<&str>) -> Self {
        self.executor = executor.map(Into::into);
        self
    }
}

/// Column types that differ between dialects.
struct Types {
    /// Airflow's `StringID` (dag_id, task_id, run_id): binary collation on MySQL.
    id: &'static str,
    /// `UtcDateTime`.
    ts: &'static str,
    /// Naive `DateTime`.
    dt: &'static str,
    float: &'static str,
    blob: &'static str,
    json: &'static str,
    uuid: &'static str,
}

const fn types(dialect: Dialect) -> Types {
    match dialect {
        Dialect::Postgres => Types {
            id: "VARCHAR(250)",
            ts: "TIMESTAMP WITH TIME ZONE",
            dt: "TIMESTAMP WITHOUT TIME ZONE",
            float: "DOUBLE PRECISION",
            blob: "BYTEA",
            json: "JSON",
            uuid: "UUID",
        },
        Dialect::MySql => Types {
            id: "VARCHAR(250) COLLATE utf8mb3_bin",
            ts: "TIMESTAMP(6) NULL",
            dt: "DATETIME",
            float: "FLOAT",
            blob: "BLOB",
            json: "JSON",
            uuid: "VARCHAR(36)",
        },
        Dialect::Sqlite => Types {
            id: "VARCHAR(250)",
            ts: "DATETIME",
            dt: "DATETIME",
            float: "FLOAT",
            blob: "BLOB",
            json: "TEXT",
            uuid: "VARCHAR(36)",
        },
    }
}

/// `CREATE TABLE task_instance` and its indexes, one statement per element.
pub fn create_table_sql(dialect: Dialect, version: AirflowVersion) -> Vec<String> {
    let t = types(dialect);
    let v3 = version == AirflowVersion::V3;
    let mut cols: Vec<String> = Vec::new();
    if v3 {
        cols.push(format!("id {} NOT NULL", t.uuid));
    }
    cols.extend([
        format!("task_id {} NOT NULL", t.id),
        format!("dag_id {} NOT NULL", t.id),
        format!("run_id {} NOT NULL", t.id),
        "map_index INTEGER NOT NULL DEFAULT -1".into(),
        format!("start_date {}", t.ts),
        format!("end_date {}", t.ts),
        format!("duration {}", t.float),
        "state VARCHAR(20)".into(),
        "try_number INTEGER".into(),
        "max_tries INTEGER DEFAULT -1".into(),
        "hostname VARCHAR(1000)".into(),
        "unixname VARCHAR(1000)".into(),
    ]);
    if !v3 {
        cols.push("job_id INTEGER".into());
    }
    cols.extend([
        "pool VARCHAR(256) NOT NULL".into(),
        "pool_slots INTEGER NOT NULL".into(),
        "queue VARCHAR(256)".into(),
        "priority_weight INTEGER".into(),
        "operator VARCHAR(1000)".into(),
        "custom_operator_name VARCHAR(1000)".into(),
        format!("queued_dttm {}", t.ts),
        "queued_by_job_id INTEGER".into(),
        "pid INTEGER".into(),
    ]);
    if version.has_executor() {
        cols.push("executor VARCHAR(1000)".into());
    }
    cols.extend([
        format!("executor_config {}", t.blob),
        format!("updated_at {}", t.ts),
        "rendered_map_index VARCHAR(250)".into(),
        format!("external_executor_id {}", t.id),
        "trigger_id INTEGER".into(),
        format!("trigger_timeout {}", t.dt),
        "next_method VARCHAR(1000)".into(),
        format!("next_kwargs {}", t.json),
        "task_display_name VARCHAR(2000)".into(),
    ]);
    if v3 {
        cols.extend([
            format!("scheduled_dttm {}", t.ts),
            format!("last_heartbeat_at {}", t.ts),
            format!("dag_version_id {}", t.uuid),
            format!("context_carrier {}", t.json),
            "span_status VARCHAR(250) NOT NULL DEFAULT 'not_started'".into(),
        ]);
        cols.push("CONSTRAINT task_instance_pkey PRIMARY KEY (id)".into());
        cols.push(
            "CONSTRAINT task_instance_composite_pkey UNIQUE (dag_id, task_id, run_id, map_index)"
                .into(),
        );
    } else {
        cols.push(
            "CONSTRAINT task_instance_pkey PRIMARY KEY (dag_id, task_id, run_id, map_index)".into(),
        );
    }
    let mut out = vec![format!(
        "CREATE TABLE task_instance (\n    {}\n)",
        cols.join(",\n    ")
    )];
    let mut indexes = vec![
        ("ti_dag_state", "dag_id, state"),
        ("ti_dag_run", "dag_id, run_id"),
        ("ti_state", "state"),
        ("ti_state_lkp", "dag_id, task_id, run_id, state"),
        ("ti_pool", "pool, state, priority_weight"),
        ("ti_trigger_id", "trigger_id"),
    ];
    if v3 {
        indexes.push(("ti_heartbeat", "last_heartbeat_at"));
    } else {
        indexes.push(("ti_job_id", "job_id"));
    }
    out.extend(
        indexes
            .into_iter()
            .map(|(name, cols)| format!("CREATE INDEX {name} ON task_instance ({cols})")),
    );
    out
}

/// Drops `task_instance` (and with it its indexes) if it exists.
pub fn drop_table_sql(_dialect: Dialect) -> Vec<String> {
    vec!["DROP TABLE IF EXISTS task_instance".to_string()]
}

/// One multi-row `INSERT` of `rows` (an empty string when `rows` is empty). Every value is a
/// literal escaped for `dialect`: quotes, backslashes, semicolons and any Unicode are data.
/// On Airflow 3 the `id` is a UUID derived from the row's four key columns (deterministic).
pub fn insert_sql(dialect: Dialect, version: AirflowVersion, rows: &[FixtureRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut cols = vec![
        "dag_id",
        "task_id",
        "run_id",
        "map_index",
        "state",
        "queue",
        "hostname",
        "pool",
        "pool_slots",
        "priority_weight",
        "try_number",
        "max_tries",
    ];
    if version.has_executor() {
        cols.push("executor");
    }
    if version == AirflowVersion::V3 {
        cols.push("id");
    }
    let mut sql = format!("INSERT INTO task_instance ({}) VALUES", cols.join(", "));
    for (i, row) in rows.iter().enumerate() {
        sql.push_str(if i == 0 { "\n(" } else { ",\n(" });
        let state = row.state.as_deref();
        let try_number = i32::from(!matches!(state, None | Some("scheduled")));
        let _ = write!(
            sql,
            "{}, {}, {}, {}, {}, {}, {}, {}, 1, 1, {try_number}, 0",
            literal(dialect, &row.dag_id),
            literal(dialect, &row.task_id),
            literal(dialect, &row.run_id),
            row.map_index,
            optional(dialect, state),
            literal(dialect, &row.queue),
            literal(dialect, &row.hostname),
            literal(dialect, &row.pool),
        );
        if version.has_executor() {
            sql.push_str(", ");
            sql.push_str(&optional(dialect, row.executor.as_deref()));
        }
        if version == AirflowVersion::V3 {
            sql.push_str(", ");
            sql.push_str(&literal(dialect, &row_uuid(row)));
        }
        sql.push(')');
    }
    sql
}

/// [`insert_sql`] in chunks of [`INSERT_CHUNK`] rows.
pub fn insert_sql_chunked(
    dialect: Dialect,
    version: AirflowVersion,
    rows: &[FixtureRow],
) -> Vec<String> {
    rows.chunks(INSERT_CHUNK)
        .map(|chunk| insert_sql(dialect, version, chunk))
        .collect()
}

/// A string literal for `dialect`.
pub fn literal(dialect: Dialect, s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    match dialect {
        // With `standard_conforming_strings` (the default since 9.1) only quotes are special;
        // a value with a backslash uses an escape string, which is right under either setting.
        Dialect::Postgres if s.contains('\\') => {
            out.push_str("E'");
            for c in s.chars() {
                match c {
                    '\'' => out.push_str("''"),
                    '\\' => out.push_str("\\\\"),
                    c => out.push(c),
                }
            }
        }
        Dialect::Postgres | Dialect::Sqlite => {
            out.push('\'');
            out.push_str(&s.replace('\'', "''"));
        }
        // MySQL treats backslash as an escape character in every string literal (unless the
        // server runs with NO_BACKSLASH_ESCAPES, which Airflow does not use).
        Dialect::MySql => {
            out.push('\'');
            for c in s.chars() {
                match c {
                    '\'' => out.push_str("\\'"),
                    '\\' => out.push_str("\\\\"),
                    '\0' => out.push_str("\\0"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\x1a' => out.push_str("\\Z"),
                    c => out.push(c),
                }
            }
        }
    }
    out.push('\'');
    out
}

fn optional(dialect: Dialect, s: Option<&str>) -> String {
    s.map_or_else(|| "NULL".to_string(), |s| literal(dialect, s))
}

/// A stable UUID (version 8, "custom") from the row's key: unique wherever the key is.
fn row_uuid(row: &FixtureRow) -> String {
    fn fnv(seed: u64, parts: &[&[u8]]) -> u64 {
        let mut h = seed;
        for part in parts {
            for b in part.iter().chain(&[0xff]) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
    let map_index = row.map_index.to_le_bytes();
    let parts: [&[u8]; 4] = [
        row.dag_id.as_bytes(),
        row.task_id.as_bytes(),
        row.run_id.as_bytes(),
        &map_index,
    ];
    let hi = fnv(0xcbf2_9ce4_8422_2325, &parts);
    let lo = fnv(0x6c62_272e_07bb_0142, &parts);
    let hi = (hi & !0xf000) | 0x8000; // version 8
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// Runs `statements` in order on one new connection to `url` and closes it. Empty statements
/// are skipped. URLs: `postgres://` / `postgresql://` (also `postgresql+driver://`),
/// `mysql://` / `mariadb://` (also `mysql+driver://`), and SQLite as `sqlite:////abs/path`
/// (SQLAlchemy's absolute form) or `sqlite://path`; the SQLite file is created if missing.
pub async fn execute(url: &str, statements: &[String]) -> Result<(), sqlx::Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| sqlx::Error::Configuration(format!("not a URL: {url}").into()))?;
    let scheme = scheme.split('+').next().unwrap_or(scheme);
    match scheme {
        "postgres" | "postgresql" => {
            let options = PgConnectOptions::from_str(&format!("postgres://{rest}"))?;
            run_all(options.connect().await?, statements).await
        }
        "mysql" | "mariadb" => {
            let options = MySqlConnectOptions::from_str(&format!("mysql://{rest}"))?;
            run_all(options.connect().await?, statements).await
        }
        "sqlite" => {
            let path = rest.strip_prefix('/').unwrap_or(rest);
            let path = path.split('?').next().unwrap_or(path);
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true);
            run_all(options.connect().await?, statements).await
        }
        other => Err(sqlx::Error::Configuration(
            format!("unsupported scheme {other}").into(),
        )),
    }
}

async fn run_all<C>(mut conn: C, statements: &[String]) -> Result<(), sqlx::Error>
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
{
    let mut result = Ok(());
    for stmt in statements.iter().filter(|s| !s.trim().is_empty()) {
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(stmt.clone()))
            .execute(&mut conn)
            .await
        {
            result = Err(e);
            break;
        }
    }
    let _ = conn.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_per_dialect() {
        let cases = [
            (Dialect::Postgres, "it's", "'it''s'"),
            (Dialect::Postgres, r"a\b'c", r"E'a\\b''c'"),
            (Dialect::Sqlite, r"a\b'c", r"'a\b''c'"),
            (Dialect::MySql, r"a\b'c", r"'a\\b\'c'"),
            (Dialect::MySql, "x\0y\nz", r"'x\0y\nz'"),
            (Dialect::Postgres, "kø-🚀", "'kø-🚀'"),
        ];
        for (d, input, expected) in cases {
            assert_eq!(literal(d, input), expected, "{d} {input:?}");
        }
    }

    #[test]
    fn ddl_shape_per_version() {
        for d in [Dialect::Postgres, Dialect::MySql, Dialect::Sqlite] {
            for v in AirflowVersion::ALL {
                let ddl = create_table_sql(d, v).join(";\n");
                assert!(ddl.contains("CREATE INDEX ti_state ON task_instance (state)"));
                assert!(ddl.contains("ti_pool ON task_instance (pool, state, priority_weight)"));
                assert_eq!(
                    ddl.contains("executor VARCHAR(1000)"),
                    v.has_executor(),
                    "{d} {v:?}"
                );
                assert_eq!(
                    ddl.contains("\n    job_id INTEGER,"),
                    v != AirflowVersion::V3
                );
                assert_eq!(ddl.contains("PRIMARY KEY (id)"), v == AirflowVersion::V3);
                assert!(
                    !ddl.contains("INDEX ti_queue"),
                    "no index on queue, as in Airflow"
                );
            }
        }
        let pg3 = create_table_sql(Dialect::Postgres, AirflowVersion::V3).join("\n");
        assert!(pg3.contains("id UUID NOT NULL"));
        let my3 = create_table_sql(Dialect::MySql, AirflowVersion::V3).join("\n");
        assert!(my3.contains("id VARCHAR(36) NOT NULL"));
    }

    #[test]
    fn insert_is_one_statement_with_stable_ids() {
        let rows = vec![
            FixtureRow::new("d", "t1", "r", Some("queued"), "default"),
            FixtureRow::new("d", "t2", "r", None, "it's; DROP TABLE x --")
                .with_executor(Some("CeleryExecutor")),
        ];
        let v29 = insert_sql(Dialect::Sqlite, AirflowVersion::V2_9, &rows);
        assert_eq!(v29.matches("INSERT").count(), 1);
        assert!(
            !v29.contains("CeleryExecutor"),
            "2.9 has no executor column"
        );
        let v3 = insert_sql(Dialect::Postgres, AirflowVersion::V3, &rows);
        assert!(v3.contains("'CeleryExecutor'"));
        assert!(v3.contains("'it''s; DROP TABLE x --'"));
        assert_eq!(v3, insert_sql(Dialect::Postgres, AirflowVersion::V3, &rows));
        let (a, b) = (row_uuid(&rows[0]), row_uuid(&rows[1]));
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
        assert!(insert_sql(Dialect::MySql, AirflowVersion::V3, &[]).is_empty());
        let many: Vec<_> = (0..2500)
            .map(|i| FixtureRow::new("d", &format!("t{i}"), "r", Some("queued"), "q"))
            .collect();
        assert_eq!(
            insert_sql_chunked(Dialect::Sqlite, AirflowVersion::V3, &many).len(),
            3
        );
    }
}
