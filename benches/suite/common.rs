//! Shared pieces: run mode, statistics, the result table, throw-away databases, `/proc` reads.

use std::{fmt::Write as _, net::SocketAddr, time::Duration};

use airflow_keda_scaler::{scaler::config::DbConfig, scaler::db::Dialect};
use testkit::airflow::{self, AirflowVersion, FixtureRow};

/// How the suite runs.
#[derive(Debug, Clone)]
pub struct Mode {
    /// Tiny scale, every figure, < 60 s; targets reported, not judged.
    pub smoke: bool,
    /// Rebuild the 1 M-row data sets even if they exist.
    pub generate: bool,
    /// Only generate the data sets, run no figure.
    pub generate_only: bool,
    /// Figures to run (`P1` … `P6`); empty = all.
    pub only: Vec<String>,
    /// Repetitions of each timed load window (P1, P5).
    pub reps: usize,
    /// Length of one load window.
    pub window: Duration,
}

impl Mode {
    pub fn from_args() -> Self {
        let mut smoke = std::env::var("AKS_BENCH_SMOKE").is_ok_and(|v| !v.is_empty() && v != "0");
        let mut generate = false;
        let mut generate_only = false;
        let mut only = Vec::new();
        let mut reps = None;
        let mut window = None;
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--smoke" => smoke = true,
                "--generate" => generate = true,
                "--generate-only" => {
                    generate = true;
                    generate_only = true;
                }
                "--only" => {
                    if let Some(v) = args.next() {
                        only.extend(v.split(',').map(|s| s.trim().to_ascii_uppercase()));
                    }
                }
                "--reps" => reps = args.next().and_then(|v| v.parse().ok()),
                "--window-ms" => {
                    window = args
                        .next()
                        .and_then(|v| v.parse().ok())
                        .map(Duration::from_millis);
                }
                // `cargo bench` passes `--bench`; libtest-style filters are ignored too.
                _ => {}
            }
        }
        Self {
            smoke,
            generate,
            generate_only,
            only,
            reps: reps.unwrap_or(if smoke { 1 } else { 5 }).max(1),
            window: window.unwrap_or(if smoke {
                Duration::from_millis(400)
            } else {
                Duration::from_secs(3)
            }),
        }
    }

    pub fn runs(&self, figure: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|f| f == figure)
    }
}

/// Median of `v` (sorts it). 0 for an empty slice.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Verdict of one figure.
#[derive(Debug, Clone)]
pub enum Verdict {
    Met,
    Missed,
    /// Smoke mode, or a figure without a target.
    Reported,
    /// Could not be measured (why).
    NotRun(String),
}

/// One line of the result table.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub figure: String,
    pub result: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    pub verdict: Verdict,
}

impl Row {
    pub fn judged(smoke: bool, met: bool) -> Verdict {
        match (smoke, met) {
            (true, _) => Verdict::Reported,
            (false, true) => Verdict::Met,
            (false, false) => Verdict::Missed,
        }
    }

    pub fn not_run(id: &str, figure: &str, target: &str, why: String) -> Self {
        Self {
            id: id.into(),
            figure: figure.into(),
            result: "—".into(),
            baseline: "—".into(),
            ratio: "—".into(),
            target: target.into(),
            verdict: Verdict::NotRun(why),
        }
    }
}

/// The table as GitHub markdown.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| # | figure | result (median) | baseline, same run (median) | ratio | target | verdict |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for r in rows {
        let verdict = match &r.verdict {
            Verdict::Met => "met".to_string(),
            Verdict::Missed => "**missed**".to_string(),
            Verdict::Reported => "reported (smoke)".to_string(),
            Verdict::NotRun(why) => format!("not run: {why}"),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.id, r.figure, r.result, r.baseline, r.ratio, r.target, verdict
        );
    }
    out
}

/// Progress and details go to stderr; the table goes to stdout.
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { eprintln!($($t)*) };
}

/// Admin URL of a test server (same variables as the test suite).
pub fn admin_url(dialect: Dialect) -> String {
    let (env, default) = match dialect {
        Dialect::Postgres => (
            "AKS_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        ),
        _ => ("AKS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
    };
    std::env::var(env)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// `admin` with its database replaced by `name` and extra query parameters.
pub fn db_url(admin: &str, name: &str, params: &str) -> String {
    let mut url = url::Url::parse(admin).expect("admin URL");
    url.set_path(&format!("/{name}"));
    url.set_query(if params.is_empty() {
        None
    } else {
        Some(params)
    });
    url.to_string()
}

/// `name` made unique to this run (`name_<8 hex digits>`, random per process): runs sharing a
/// server (another checkout, a CI job next door) never drop each other's throw-away databases.
pub fn run_scoped(name: &str) -> String {
    static RUN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    format!("{name}_{:08x}", RUN.get_or_init(rand::random::<u32>))
}

/// A database on a test server, dropped with the value unless `keep`.
pub struct BenchDb {
    pub dialect: Dialect,
    pub admin: String,
    pub name: String,
    pub keep: bool,
}

impl BenchDb {
    /// Creates (or re-creates) database `name`.
    pub async fn create(dialect: Dialect, name: &str) -> Self {
        let admin = admin_url(dialect);
        let create = match dialect {
            Dialect::MySql => {
                format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            }
            _ => format!("CREATE DATABASE {name}"),
        };
        airflow::execute(&admin, &[drop_sql(dialect, name), create])
            .await
            .unwrap_or_else(|e| panic!("the {dialect} server is needed for the benchmarks: {e}"));
        Self {
            dialect,
            admin,
            name: name.to_string(),
            keep: false,
        }
    }

    /// An existing database (not dropped).
    pub fn existing(dialect: Dialect, name: &str) -> Self {
        Self {
            dialect,
            admin: admin_url(dialect),
            name: name.to_string(),
            keep: true,
        }
    }

    /// Plain URL of this database.
    pub fn url(&self) -> String {
        db_url(&self.admin, &self.name, "")
    }

    /// URL with TLS off (so a relay can read the PostgreSQL protocol) and another address.
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let mut url = url::Url::parse(&self.url()).expect("url");
        url.set_ip_host(addr.ip()).expect("host");
        url.set_port(Some(addr.port())).expect("port");
        if self.dialect == Dialect::Postgres {
            url.set_query(Some("sslmode=disable"));
        }
        url.to_string()
    }

    /// The server's address.
    pub fn server_addr(&self) -> SocketAddr {
        use std::net::ToSocketAddrs;
        let url = url::Url::parse(&self.admin).expect("url");
        let port = url.port().unwrap_or(match self.dialect {
            Dialect::MySql => 3306,
            _ => 5432,
        });
        (url.host_str().expect("host"), port)
            .to_socket_addrs()
            .expect("resolve")
            .next()
            .expect("address")
    }

    /// Creates `task_instance` of `version` and inserts `rows`.
    pub async fn create_table(&self, version: AirflowVersion, rows: &[FixtureRow]) {
        let mut statements = airflow::create_table_sql(self.dialect, version);
        statements.extend(airflow::insert_sql_chunked(self.dialect, version, rows));
        airflow::execute(&self.url(), &statements)
            .await
            .expect("create task_instance");
    }
}

fn drop_sql(dialect: Dialect, name: &str) -> String {
    match dialect {
        Dialect::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        _ => format!("DROP DATABASE IF EXISTS {name}"),
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let (admin, stmt) = (self.admin.clone(), drop_sql(self.dialect, &self.name));
        // Drop may run inside a runtime: do the async work on a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let _ = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), airflow::execute(&admin, &[stmt]))
                    .await
            });
        })
        .join();
    }
}

/// Database flags for the scaler.
pub fn db_args(url: &str) -> DbConfig {
    DbConfig {
        database_url: Some(url.to_string()),
        database_password_file: None,
        database_schema: None,
        pgbouncer: false,
        database_timeout: Duration::from_secs(5),
    }
}

/// The eight worker queues of the benchmarks (names as in a typical deployment).
pub const QUEUES: [&str; 8] = [
    "default",
    "etl",
    "ml",
    "reporting",
    "high-mem",
    "io-bound",
    "sensors",
    "critical",
];

/// A worker-queue file declaring [`QUEUES`].
pub fn worker_queues_yaml() -> String {
    let mut s = String::from("workerQueues:\n");
    for q in QUEUES {
        let _ = writeln!(
            s,
            "  - name: {q}\n    queues: [{q}]\n    maxTasksPerWorker: 16\n    minWorkers: 0\n    maxWorkers: 10"
        );
    }
    s
}

/// A few queued and running rows on every queue of [`QUEUES`], plus history.
pub fn small_rows() -> Vec<FixtureRow> {
    let mut rows = Vec::new();
    for (qi, q) in QUEUES.iter().enumerate() {
        for t in 0..(qi + 3) {
            let state = match t % 4 {
                0 => "queued",
                1 | 2 => "running",
                _ => "success",
            };
            rows.push(
                FixtureRow::new("small_dag", &format!("{q}_t{t}"), "run_1", Some(state), q)
                    .with_executor(if t % 5 == 0 {
                        Some("CeleryExecutor")
                    } else {
                        None
                    }),
            );
        }
    }
    rows
}

pub use testkit::process::free_port;

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A multi-thread runtime with `workers` threads, for servers under test.
pub fn server_runtime(name: &str, workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("server runtime")
}

/// What the machine is, for the README.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    format!("{cpus} × {model}, {mem_gib:.0} GiB RAM, Linux {kernel}")
}

/// Formats a duration in the most readable unit.
pub fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}
