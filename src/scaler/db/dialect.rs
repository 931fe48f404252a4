//! The SQL this crate sends, one constant per dialect and operation.
//!
//! This is the only place where PostgreSQL, MySQL and SQLite differ. The code that runs these
//! statements and maps their rows (in [`super`]) is written once.
//!
//! Column order is part of the contract with the row mapping:
//! - schema detection returns one text column: the column names of `task_instance`;
//! - the refresh query returns `queue, state, host, count` or
//!   `queue, state, executor, host, count` (`host` is `''` except on running rows).

use std::fmt;

/// The SQL dialect of the metadata database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// PostgreSQL (Airflow's recommended backend).
    Postgres,
    /// MySQL 8 (and MariaDB, which speaks the same protocol).
    MySql,
    /// SQLite (Airflow's local development backend).
    Sqlite,
}

/// The statements of one dialect.
#[derive(Debug)]
pub struct DialectSql {
    /// Lists the column names of the `task_instance` table the refresh query will see (no row
    /// at all when there is no such table).
    pub detect_columns: &'static str,
    /// `queue, state, host, COUNT(*)` of scheduled, queued and running task instances
    /// (Airflow < 2.10). `host` is `task_instance.hostname` for running rows and `''` otherwise.
    pub counts: &'static str,
    /// `queue, state, executor, host, COUNT(*)` of the same rows (Airflow 2.10+).
    pub counts_with_executor: &'static str,
}

// One statement per refresh, whatever it reads: queued + running drive the formula, scheduled
// is the starvation signal, and running rows are split by the worker (`hostname`) that runs
// them, for the pod-deletion cost. `hostname` only splits running rows: scheduled and queued
// rows of a queue stay one group each. `WHERE state IN (...)` is on the bare column so that the
// `ti_state` index is used.

// PostgreSQL: `to_regclass` resolves the name through `search_path` exactly as the refresh
// query will, so `--database-schema` is honoured without naming the schema here.
const POSTGRES: DialectSql = DialectSql {
    detect_columns: "SELECT a.attname::text FROM pg_catalog.pg_attribute a \
         WHERE a.attrelid = to_regclass('task_instance') AND a.attnum > 0 AND NOT a.attisdropped",
    counts: "SELECT COALESCE(queue, '') AS queue, state, \
         CASE WHEN state = 'running' THEN COALESCE(hostname, '') ELSE '' END AS host, \
         COUNT(*) AS n FROM task_instance \
         WHERE state IN ('scheduled', 'queued', 'running') GROUP BY 1, 2, 3",
    counts_with_executor: "SELECT COALESCE(queue, '') AS queue, state, executor, \
         CASE WHEN state = 'running' THEN COALESCE(hostname, '') ELSE '' END AS host, \
         COUNT(*) AS n FROM task_instance \
         WHERE state IN ('scheduled', 'queued', 'running') GROUP BY 1, 2, 3, 4",
};

// MySQL and MariaDB: Airflow's text columns take the database's default collation, usually
// case- and accent-insensitive (`utf8mb4_0900_ai_ci`, `utf8mb4_unicode_ci`), under which
// `GROUP BY queue` would merge `ml` with `ML` or `café` with `cafe`. Even `utf8mb4_bin` is a
// PAD SPACE collation that merges `gpu` with `gpu ` (Celery routes them as two queues). So the
// inner query groups on the raw UTF-8 bytes (`CAST(CONVERT(.. USING utf8mb4) AS BINARY)`: a
// VARBINARY compares every byte, on MySQL 8 and MariaDB alike) and the outer one turns the bytes
// back into text. `information_schema` names can come back as binary strings on MySQL 8: cast
// them.
const MYSQL: DialectSql = DialectSql {
    detect_columns: "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = 'task_instance'",
    counts: "SELECT CONVERT(q USING utf8mb4) AS q, CONVERT(s USING utf8mb4) AS s, \
         CONVERT(h USING utf8mb4) AS h, n FROM (\
         SELECT CAST(CONVERT(COALESCE(queue, '') USING utf8mb4) AS BINARY) AS q, \
         CAST(CONVERT(state USING utf8mb4) AS BINARY) AS s, \
         CAST(CASE WHEN state = 'running' THEN CONVERT(COALESCE(hostname, '') USING utf8mb4) \
         ELSE '' END AS BINARY) AS h, COUNT(*) AS n \
         FROM task_instance WHERE state IN ('scheduled', 'queued', 'running') \
         GROUP BY q, s, h) AS grouped",
    counts_with_executor: "SELECT CONVERT(q USING utf8mb4) AS q, CONVERT(s USING utf8mb4) AS s, \
         CONVERT(e USING utf8mb4) AS e, CONVERT(h USING utf8mb4) AS h, n FROM (\
         SELECT CAST(CONVERT(COALESCE(queue, '') USING utf8mb4) AS BINARY) AS q, \
         CAST(CONVERT(state USING utf8mb4) AS BINARY) AS s, \
         CAST(CONVERT(executor USING utf8mb4) AS BINARY) AS e, \
         CAST(CASE WHEN state = 'running' THEN CONVERT(COALESCE(hostname, '') USING utf8mb4) \
         ELSE '' END AS BINARY) AS h, COUNT(*) AS n \
         FROM task_instance WHERE state IN ('scheduled', 'queued', 'running') \
         GROUP BY q, s, e, h) AS grouped",
};

const SQLITE: DialectSql = DialectSql {
    detect_columns: "SELECT name FROM pragma_table_info('task_instance')",
    counts: POSTGRES.counts,
    counts_with_executor: POSTGRES.counts_with_executor,
};

impl Dialect {
    /// The statements of this dialect.
    pub const fn sql(self) -> &'static DialectSql {
        match self {
            Self::Postgres => &POSTGRES,
            Self::MySql => &MYSQL,
            Self::Sqlite => &SQLITE,
        }
    }

    /// The refresh query for a table with (or without) the `executor` column.
    pub const fn counts_sql(self, with_executor: bool) -> &'static str {
        if with_executor {
            self.sql().counts_with_executor
        } else {
            self.sql().counts
        }
    }

    /// Lowercase name, as used in URLs and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
            Self::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_queries_filter_on_state_and_group_by_queue() {
        for d in [Dialect::Postgres, Dialect::MySql, Dialect::Sqlite] {
            for with_executor in [false, true] {
                let sql = d.counts_sql(with_executor);
                assert!(
                    sql.contains("WHERE state IN ('scheduled', 'queued', 'running')"),
                    "{d}: {sql}"
                );
                assert!(sql.contains("COALESCE(queue, '')"), "{d}: {sql}");
                assert!(sql.contains("COALESCE(hostname, '')"), "{d}: {sql}");
                // One statement: no `;` separating several.
                assert!(!sql.contains(';'), "{d}: {sql}");
                assert_eq!(sql.contains("executor"), with_executor, "{d}: {sql}");
            }
        }
    }
}
