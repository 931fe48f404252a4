//! P3: the refresh query on a 1 M-row `task_instance` (≈ 10 k queued/running over 8 queues, the
//! rest mostly terminal), PostgreSQL and MariaDB, against the chart's single-queue query on the
//! same table, and against 8 of them (one per queue).
//!
//! The data set is generated with `testkit::airflow`'s DDL and bulk `INSERT`s (1 000 rows per
//! statement), deterministically (row `i` is a pure function of `i`). It is kept between runs
//! in databases `aks_bench_1m` (a marker table records the generator version); `--generate`
//! rebuilds it.

use std::time::{Duration, Instant};

use airflow_keda_scaler::scaler::{
    db::{Dialect, MetadataDb},
    snapshot::TaskState,
};
use sqlx::{AssertSqlSafe, Connection, Row as _, mysql::MySqlConnection, postgres::PgConnection};
use testkit::airflow::{self, AirflowVersion, FixtureRow};

use crate::{
    common::{BenchDb, Mode, QUEUES, Row, Verdict, db_args, fmt_dur, median, server_runtime},
    say,
};

/// Bump when the generated rows change.
const GEN_VERSION: i64 = 1;
/// Share of rows in recent DAG runs (where every non-terminal task is).
const RECENT_PERCENT: usize = 4;

const CELERY_PATH: &str = "airflow.providers.celery.executors.celery_executor.CeleryExecutor";
const DAG_KINDS: [&str; 8] = [
    "etl_orders",
    "reporting_daily",
    "ml_train",
    "ingest_events",
    "sync_crm",
    "export_finance",
    "quality_checks",
    "sensor_partner",
];
const QUEUE_WEIGHTS: [u64; 8] = [35, 15, 10, 10, 8, 8, 8, 6];

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn weighted_queue(h: u64) -> &'static str {
    let mut r = h % QUEUE_WEIGHTS.iter().sum::<u64>();
    for (q, w) in QUEUES.iter().zip(QUEUE_WEIGHTS) {
        if r < w {
            return q;
        }
        r -= w;
    }
    QUEUES[0]
}

/// Day `d` (0-based) of 2024 as `MM-DD`.
fn month_day(d: usize) -> (usize, usize) {
    const DAYS: [usize; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut d = d % 366;
    for (m, len) in DAYS.iter().enumerate() {
        if d < *len {
            return (m + 1, d + 1);
        }
        d -= len;
    }
    (12, 31)
}

/// Row `i` of a data set of `total` rows.
pub fn row(i: usize, total: usize) -> FixtureRow {
    const TASKS_PER_RUN: usize = 25;
    const DAGS: usize = 200;
    let k = i / TASKS_PER_RUN;
    let (dag, run, task) = (k % DAGS, k / DAGS, i % TASKS_PER_RUN);
    let h = mix(i as u64);
    let dag_h = mix(dag as u64 ^ 0xdead_beef);
    let dag_id = format!("{}_{dag:03}", DAG_KINDS[dag % DAG_KINDS.len()]);
    let task_id = format!("task_{task:02}");
    let (month, day) = month_day(run / 24);
    let run_id = format!(
        "scheduled__2024-{month:02}-{day:02}T{:02}:00:00+00:00",
        run % 24
    );
    // A DAG's tasks run on its queue; one task in ten picks another one.
    let queue = if h.is_multiple_of(10) {
        weighted_queue(h >> 8)
    } else {
        weighted_queue(dag_h)
    };
    let executor = match (h >> 16) % 100 {
        0..78 => None,
        78..88 => Some("CeleryExecutor"),
        88..95 => Some("KubernetesExecutor"),
        _ => Some(CELERY_PATH),
    };
    let recent = i >= total - total * RECENT_PERCENT / 100;
    let s = (h >> 24) % 1000;
    let state: Option<&str> = if recent {
        match s {
            0..75 => Some("queued"),
            75..250 => Some("running"),
            250..330 => Some("scheduled"),
            330..380 => None,
            380..410 => Some("deferred"),
            410..425 => Some("up_for_reschedule"),
            425..440 => Some("up_for_retry"),
            440..445 => Some("restarting"),
            445..460 => Some("failed"),
            460..470 => Some("skipped"),
            _ => Some("success"),
        }
    } else {
        match s {
            0..880 => Some("success"),
            880..930 => Some("skipped"),
            930..960 => Some("failed"),
            960..980 => Some("upstream_failed"),
            980..990 => Some("removed"),
            _ => Some("success"),
        }
    };
    let ran = !matches!(
        state,
        None | Some("queued" | "scheduled" | "skipped" | "upstream_failed" | "removed")
    );
    let hostname = match (ran, executor) {
        (false, _) => String::new(),
        (true, Some("KubernetesExecutor")) => {
            format!("{}-{task_id}-{:08x}", dag_id.replace('_', "-"), h as u32)
        }
        (true, _) => format!(
            "airflow-worker-{}-{}.airflow-worker.airflow.svc.cluster.local",
            queue,
            (h >> 40) % 10
        ),
    };
    let mut r = FixtureRow::new(&dag_id, &task_id, &run_id, state, queue).with_executor(executor);
    r.hostname = hostname;
    if (h >> 48).is_multiple_of(10) {
        r.pool = "db_pool".into();
    }
    r
}

async fn scalar(dialect: Dialect, url: &str, sql: &str) -> Result<i64, sqlx::Error> {
    let sql = AssertSqlSafe(sql.to_string());
    match dialect {
        Dialect::Postgres => {
            let mut c = PgConnection::connect(url).await?;
            let v: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await?;
            let _ = c.close().await;
            Ok(v)
        }
        _ => {
            let mut c = MySqlConnection::connect(url).await?;
            let v: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await?;
            let _ = c.close().await;
            Ok(v)
        }
    }
}

/// Database name of the data set: the 1 M-row one is kept and shared between runs; the smoke one
/// belongs to this run.
pub fn dataset_name(smoke: bool) -> String {
    if smoke {
        crate::common::run_scoped("aks_bench_smoke")
    } else {
        "aks_bench_1m".into()
    }
}

pub fn dataset_rows(smoke: bool) -> usize {
    if smoke { 20_000 } else { 1_000_000 }
}

/// Makes sure the data set exists on `dialect`'s server; returns it.
pub async fn ensure(dialect: Dialect, mode: &Mode) -> BenchDb {
    let name = dataset_name(mode.smoke);
    let total = dataset_rows(mode.smoke);
    let existing = BenchDb::existing(dialect, &name);
    if !mode.generate && !mode.smoke {
        let sql = match dialect {
            Dialect::Postgres => {
                "SELECT COALESCE(MAX(version * 1000000000000 + total_rows), 0)::bigint FROM aks_bench_meta"
            }
            _ => {
                "SELECT CAST(COALESCE(MAX(version * 1000000000000 + total_rows), 0) AS SIGNED) FROM aks_bench_meta"
            }
        };
        let have = scalar(dialect, &existing.url(), sql).await.ok();
        if have == Some(GEN_VERSION * 1_000_000_000_000 + total as i64) {
            say!("  P3: reusing {dialect} data set {name} ({total} rows)");
            return existing;
        }
    }
    generate(dialect, &name, total).await
}

/// (Re)creates the data set: table, bulk inserts on two connections, indexes, ANALYZE.
pub async fn generate(dialect: Dialect, name: &str, total: usize) -> BenchDb {
    let started = Instant::now();
    let mut db = BenchDb::create(dialect, name).await;
    db.keep = true;
    let url = db.url();
    let ddl = airflow::create_table_sql(dialect, AirflowVersion::V3);
    // Table first, indexes after the load (as a restore would do; much faster).
    airflow::execute(&url, &ddl[..1]).await.unwrap();
    let session: Vec<String> = match dialect {
        Dialect::Postgres => vec!["SET synchronous_commit = off".into()],
        _ => vec![
            "SET unique_checks = 0".into(),
            "SET foreign_key_checks = 0".into(),
        ],
    };
    const CHUNKS_PER_BATCH: usize = 25;
    let chunk = airflow::INSERT_CHUNK;
    let chunks = total.div_ceil(chunk);
    // Two loaders on PostgreSQL; one on MariaDB, where two concurrent bulk inserts into the
    // same table can deadlock (error 1213, seen in CI) and a retried batch would duplicate rows.
    let workers = if dialect == Dialect::Postgres { 2 } else { 1 };
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (url, session) = (url.clone(), session.clone());
        tasks.push(tokio::spawn(async move {
            let mine: Vec<usize> = (0..chunks).filter(|c| c % workers == w).collect();
            for batch in mine.chunks(CHUNKS_PER_BATCH) {
                let mut statements = session.clone();
                for &c in batch {
                    let rows: Vec<FixtureRow> = (c * chunk..((c + 1) * chunk).min(total))
                        .map(|i| row(i, total))
                        .collect();
                    statements.push(airflow::insert_sql(dialect, AirflowVersion::V3, &rows));
                }
                airflow::execute(&url, &statements).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let loaded = started.elapsed();
    let mut post: Vec<String> = ddl[1..].to_vec();
    post.push(match dialect {
        Dialect::Postgres => "ANALYZE task_instance".into(),
        _ => "ANALYZE TABLE task_instance".into(),
    });
    post.push("CREATE TABLE aks_bench_meta (version BIGINT, total_rows BIGINT)".into());
    post.push(format!(
        "INSERT INTO aks_bench_meta VALUES ({GEN_VERSION}, {total})"
    ));
    airflow::execute(&url, &post).await.unwrap();
    say!(
        "  P3: generated {dialect} data set {name}: {total} rows in {:.1} s (load {:.1} s, indexes + ANALYZE {:.1} s)",
        started.elapsed().as_secs_f64(),
        loaded.as_secs_f64(),
        (started.elapsed() - loaded).as_secs_f64()
    );
    db
}

/// The chart's single-queue query. On MySQL the chart keeps PostgreSQL's `::decimal` cast,
/// which MySQL / MariaDB reject; the closest valid MySQL form is used there.
pub fn chart_sql(dialect: Dialect, queue: &str) -> String {
    let q = airflow::literal(dialect, queue);
    match dialect {
        Dialect::Postgres => format!(
            "SELECT ceil(COUNT(*)::decimal / 16) FROM task_instance \
             WHERE (state='running' OR state='queued') AND queue IN ({q})"
        ),
        _ => format!(
            "SELECT CEIL(COUNT(*) / 16) FROM task_instance \
             WHERE (state='running' OR state='queued') AND queue IN ({q})"
        ),
    }
}

enum Conn {
    Pg(PgConnection),
    My(MySqlConnection),
}

impl Conn {
    async fn open(dialect: Dialect, url: &str) -> Self {
        match dialect {
            Dialect::Postgres => Self::Pg(PgConnection::connect(url).await.unwrap()),
            _ => Self::My(MySqlConnection::connect(url).await.unwrap()),
        }
    }

    /// Runs `sql` (simple protocol, as KEDA's drivers do without arguments).
    async fn run(&mut self, sql: &str) -> Result<usize, sqlx::Error> {
        let q = sqlx::raw_sql(AssertSqlSafe(sql.to_string()));
        match self {
            Self::Pg(c) => q.fetch_all(c).await.map(|r| r.len()),
            Self::My(c) => q.fetch_all(c).await.map(|r| r.len()),
        }
    }

    /// The plan of `sql`, one line per row.
    async fn explain(&mut self, sql: &str) -> Vec<String> {
        match self {
            Self::Pg(c) => {
                let q = format!("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) {sql}");
                sqlx::raw_sql(AssertSqlSafe(q))
                    .fetch_all(c)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.try_get::<String, _>(0).unwrap_or_default())
                    .collect()
            }
            Self::My(c) => {
                let q = format!("EXPLAIN {sql}");
                sqlx::raw_sql(AssertSqlSafe(q))
                    .fetch_all(c)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| {
                        let s = |name: &str| {
                            r.try_get::<Option<String>, _>(name)
                                .ok()
                                .flatten()
                                .unwrap_or_else(|| "NULL".into())
                        };
                        let rows = r
                            .try_get::<Option<i64>, _>("rows")
                            .ok()
                            .flatten()
                            .map(|v| v.to_string())
                            .or_else(|| r.try_get::<Option<String>, _>("rows").ok().flatten())
                            .unwrap_or_default();
                        format!(
                            "table={} type={} possible_keys={} key={} rows={} Extra={}",
                            s("table"),
                            s("type"),
                            s("possible_keys"),
                            s("key"),
                            rows,
                            s("Extra")
                        )
                    })
                    .collect()
            }
        }
    }

    async fn close(self) {
        match self {
            Self::Pg(c) => {
                let _ = c.close().await;
            }
            Self::My(c) => {
                let _ = c.close().await;
            }
        }
    }
}

/// P3 for one dialect.
async fn p3_one(dialect: Dialect, mode: &Mode) -> (Row, Vec<String>) {
    let db = ensure(dialect, mode).await;
    let url = db.url();
    let total = dataset_rows(mode.smoke);
    let scaler_db = MetadataDb::connect(&db_args(&url)).await.unwrap();
    let schema = scaler_db.detect_schema().await.unwrap();
    let mut chart = Conn::open(dialect, &url).await;

    let mut notes = Vec::new();
    if dialect != Dialect::Postgres {
        let literal = chart_sql(Dialect::Postgres, "default");
        if let Err(e) = chart.run(&literal).await {
            let msg = e.to_string();
            notes.push(format!(
                "  {dialect}: the chart's query as written (with `::decimal`) fails: {}",
                msg.chars().take(140).collect::<String>()
            ));
        }
    }

    let counts = scaler_db.read_counts(schema).await.unwrap();
    // The refresh query also reads `scheduled` rows (for the first-hour forecast); the chart's
    // query, and the worker count, are about queued + running only.
    let active: u64 = counts
        .iter()
        .filter(|c| matches!(c.state, TaskState::Queued | TaskState::Running))
        .map(|c| c.count)
        .sum();
    let mut chart_total = 0i64;
    for q in QUEUES {
        let sql = format!(
            "SELECT COUNT(*) FROM task_instance WHERE (state='running' OR state='queued') AND queue IN ({})",
            airflow::literal(dialect, q)
        );
        chart_total += scalar(dialect, &url, &sql).await.unwrap();
    }
    assert_eq!(
        active, chart_total as u64,
        "scaler and chart count the same rows"
    );

    // Up to 31 interleaved repetitions, at least 7, within about a minute per server.
    let (reps, min_reps, budget) = if mode.smoke {
        (5, 5, Duration::from_secs(10))
    } else {
        (31, 7, Duration::from_secs(60))
    };
    let warmup = 2;
    let started = Instant::now();
    let (mut ts, mut t1, mut t8) = (Vec::new(), Vec::new(), Vec::new());
    for it in 0..reps + warmup {
        if ts.len() >= min_reps && started.elapsed() > budget {
            break;
        }
        let t = Instant::now();
        scaler_db.read_counts(schema).await.unwrap();
        let scaler = t.elapsed();
        let t = Instant::now();
        chart
            .run(&chart_sql(dialect, QUEUES[it % QUEUES.len()]))
            .await
            .unwrap();
        let one = t.elapsed();
        let t = Instant::now();
        for q in QUEUES {
            chart.run(&chart_sql(dialect, q)).await.unwrap();
        }
        let eight = t.elapsed();
        if it >= warmup {
            ts.push(scaler.as_secs_f64());
            t1.push(one.as_secs_f64());
            t8.push(eight.as_secs_f64());
        }
    }
    let n = ts.len();
    let (s, o, e) = (median(&mut ts), median(&mut t1), median(&mut t8));
    let ratio = s / o;

    let sql = dialect.counts_sql(schema.has_executor_column());
    let plan = chart.explain(sql).await;
    let chart_plan = chart.explain(&chart_sql(dialect, "default")).await;
    let uses_index = plan.iter().any(|l| l.contains("ti_state"));
    notes.push(format!("  {dialect} EXPLAIN of the refresh query:"));
    notes.extend(plan.iter().map(|l| format!("    {l}")));
    notes.push(format!(
        "  {dialect} EXPLAIN of the chart's query (queue `default`):"
    ));
    notes.extend(chart_plan.iter().map(|l| format!("    {l}")));
    chart.close().await;
    scaler_db.close().await;

    let name = match dialect {
        Dialect::Postgres => "PostgreSQL",
        _ => "MariaDB",
    };
    let row = Row {
        id: "P3".into(),
        figure: format!(
            "refresh query, {name}, {}k rows, {active} queued/running over 8 queues ({n} runs)",
            total / 1000
        ),
        result: format!(
            "{} (all 8 queues, one query); plan uses `ti_state`: {}",
            fmt_dur(Duration::from_secs_f64(s)),
            if uses_index { "yes" } else { "**no**" }
        ),
        baseline: format!(
            "chart, 1 queue: {}; chart × 8 queues: {}",
            fmt_dur(Duration::from_secs_f64(o)),
            fmt_dur(Duration::from_secs_f64(e))
        ),
        ratio: format!("{ratio:.2}× one chart query; {:.2}× the 8", s / e),
        target: "≤ 1.2× one chart query; `state` index".into(),
        verdict: Row::judged(mode.smoke, ratio <= 1.2 && uses_index),
    };
    (row, notes)
}

/// P3 on both servers. Also used by `--generate`.
pub fn p3(mode: &Mode) -> (Vec<Row>, Vec<String>) {
    let rt = server_runtime("p3", 2);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for dialect in [Dialect::Postgres, Dialect::MySql] {
        let result = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(900), p3_one(dialect, mode)).await
        });
        match result {
            Ok((row, n)) => {
                rows.push(row);
                notes.extend(n);
            }
            Err(_) => rows.push(Row {
                verdict: Verdict::NotRun("timed out".into()),
                ..Row::not_run(
                    "P3",
                    &format!("refresh query, {dialect}"),
                    "",
                    String::new(),
                )
            }),
        }
    }
    if mode.smoke {
        for dialect in [Dialect::Postgres, Dialect::MySql] {
            let mut db = BenchDb::existing(dialect, &dataset_name(true));
            db.keep = false;
            drop(db);
        }
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    (rows, notes)
}

/// `--generate`: rebuild both data sets.
pub fn generate_all(mode: &Mode) {
    let rt = server_runtime("gen", 2);
    let total = dataset_rows(mode.smoke);
    for dialect in [Dialect::Postgres, Dialect::MySql] {
        rt.block_on(generate(dialect, &dataset_name(mode.smoke), total));
    }
    rt.shutdown_timeout(Duration::from_secs(2));
}
