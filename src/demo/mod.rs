//! `demo`: the scaler on an embedded SQLite database with a synthetic Airflow workload.
//!
//! A writer moves task instances through queued → running → success on three worker queues
//! (with some KubernetesExecutor tasks the scaler must ignore); the real scaler reads the same
//! file; every tick the demo asks the scaler over gRPC, exactly as KEDA would, and prints the
//! answers next to the simulated workers, which follow the desired count one tick later, so the
//! table shows the loop closing. The workload repeats a 30-tick cycle: busy, idle (queues drain,
//! `IsActive` turns false, `ml` scales to zero) and wake-up (tasks again: activation from zero).

use std::{
    collections::{BTreeMap, VecDeque},
    io::IsTerminal,
    path::PathBuf,
    time::Duration,
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::scaler::{
    Scaler, ScalerConfig, ScalerError,
    config::DbConfig,
    grpc::{
        GrpcOptions,
        proto::externalscaler::{
            GetMetricsRequest, ScaledObjectRef, external_scaler_client::ExternalScalerClient,
        },
    },
    metrics::Metrics,
    model::{
        parallelism::{ParallelismMode, QueueSize, recommend},
        sizing::{desired_workers, render_table},
        worker_queue::{WorkerQueue, WorkerQueues},
    },
};

pub mod schema;

use self::schema::TaskRow;

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Address of the demo's gRPC server.
    pub grpc_addr: std::net::SocketAddr,
    /// SQLite file to use (created if missing); `None`: a new file in a temporary directory.
    pub db_file: Option<PathBuf>,
    /// How often the workload moves tasks and the table is printed.
    pub tick: Duration,
    /// Stop by itself after this long (`None`: run until Ctrl-C).
    pub duration: Option<Duration>,
    /// Seed of the synthetic workload.
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo database: {0}")]
    Sqlite(#[from] sqlx::Error),
    #[error(transparent)]
    Scaler(#[from] ScalerError),
    #[error("cannot connect to the demo's gRPC server: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("the scaler answered an error: {0}")]
    Rpc(#[from] tonic::Status),
}

/// The demo's worker queues.
pub fn demo_worker_queues() -> WorkerQueues {
    let wq = |name: &str, queues: &[&str], per: u32, min: u32, max: u32| WorkerQueue {
        name: Some(name.to_string()),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        max_tasks_per_worker: per,
        min_workers: min,
        max_workers: max,
        ..WorkerQueue::default()
    };
    WorkerQueues::from_list(vec![
        wq("default", &["default"], 16, 1, 10),
        wq("ml", &["ml"], 4, 0, 5),
        wq("etl", &["etl", "reporting"], 8, 1, 4),
    ])
}

#[derive(Debug, Clone)]
struct Task {
    row: TaskRow,
    finishes_at: u64,
}

/// Ticks per workload cycle, and where its phases start (1-based tick within the cycle).
const CYCLE: u64 = 30;
const IDLE_FROM: u64 = 13;
const WAKE_FROM: u64 = 25;

/// The part of the cycle a tick is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Busy,
    Idle,
    Wake,
}

impl Phase {
    fn of(tick: u64) -> Self {
        match (tick.max(1) - 1) % CYCLE + 1 {
            t if t < IDLE_FROM => Self::Busy,
            t if t < WAKE_FROM => Self::Idle,
            _ => Self::Wake,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Busy => {
                "busy: tasks arrive on every queue; WORKERS follow DESIRED WORKERS a tick later"
            }
            Self::Idle => {
                "idle: no new tasks; queues drain, ACTIVE turns false, ml (minWorkers 0) scales to zero"
            }
            Self::Wake => {
                "wake-up: tasks on ml and default again; ACTIVE turns true, ml scales up from zero"
            }
        }
    }
}

/// The synthetic workload: what a scheduler and Celery workers would do to `task_instance`.
struct Workload {
    rng: StdRng,
    tick: u64,
    next_run: u64,
    /// Rows inserted so far (their `id`s).
    inserted: u64,
    queued: BTreeMap<&'static str, VecDeque<Task>>,
    running: BTreeMap<&'static str, Vec<Task>>,
    /// Simulated workers per worker queue: what KEDA asked for on the previous tick.
    workers: BTreeMap<&'static str, u32>,
    declared: WorkerQueues,
}

const WORKER_QUEUES: [(&str, &[&str]); 3] = [
    ("default", &["default"]),
    ("ml", &["ml"]),
    ("etl", &["etl", "reporting"]),
];

impl Workload {
    fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            tick: 0,
            next_run: 0,
            inserted: 0,
            queued: BTreeMap::new(),
            running: BTreeMap::new(),
            workers: WORKER_QUEUES.iter().map(|(w, _)| (*w, 1)).collect(),
            declared: demo_worker_queues(),
        }
    }

    /// How many tasks arrive on each worker queue this tick. Busy: a load on `default` that
    /// needs several workers, a burst on `ml`, a trickle on `etl`. Idle: nothing. Wake-up: a few
    /// tasks on `ml` and `default` (`etl` stays idle: ACTIVE false, held at its minWorkers 1).
    fn arrivals(&mut self, worker_queue: &str) -> u32 {
        let in_cycle = (self.tick.max(1) - 1) % CYCLE + 1;
        match (Phase::of(self.tick), worker_queue) {
            (Phase::Busy, "default") => 10 + self.rng.random_range(0..10),
            (Phase::Busy, "ml") if in_cycle <= 3 => 6,
            (Phase::Busy, "etl") => 1 + self.rng.random_range(0..2),
            (Phase::Wake, "ml") if in_cycle < WAKE_FROM + 3 => 2,
            (Phase::Wake, "default") if in_cycle == WAKE_FROM + 1 => 3,
            _ => 0,
        }
    }

    fn new_row(&mut self, queue: &str, executor: Option<&str>) -> TaskRow {
        self.next_run += 1;
        TaskRow {
            dag_id: format!("demo_{queue}"),
            task_id: format!("task_{}", self.next_run % 7),
            run_id: format!("scheduled__{:08}", self.next_run),
            map_index: -1,
            state: Some("queued".into()),
            queue: queue.into(),
            executor: executor.map(String::from),
            hostname: String::new(),
            pool: "default_pool".into(),
        }
    }

    /// One tick: arrivals, finished tasks, and workers picking up queued tasks.
    async fn step(&mut self, pool: &SqlitePool) -> Result<(), sqlx::Error> {
        self.tick += 1;
        let mut inserts = Vec::new();
        let mut updates: Vec<(TaskRow, &'static str, String)> = Vec::new();
        for (wq, queues) in WORKER_QUEUES {
            for _ in 0..self.arrivals(wq) {
                let queue = queues[self.rng.random_range(0..queues.len())];
                let executor = if self.rng.random_bool(0.5) {
                    None
                } else {
                    Some("CeleryExecutor")
                };
                let row = self.new_row(queue, executor);
                inserts.push(row.clone());
                self.queued.entry(wq).or_default().push_back(Task {
                    row,
                    finishes_at: 0,
                });
            }
        }
        // KubernetesExecutor tasks on the default queue: in the database, never in the metric.
        if Phase::of(self.tick) == Phase::Busy && self.tick.is_multiple_of(5) {
            let mut row = self.new_row("default", Some("KubernetesExecutor"));
            row.state = Some("running".into());
            inserts.push(row);
        }
        // Finish what is due.
        for tasks in self.running.values_mut() {
            let (done, still): (Vec<Task>, Vec<Task>) =
                tasks.drain(..).partition(|t| t.finishes_at <= self.tick);
            *tasks = still;
            updates.extend(done.into_iter().map(|t| (t.row, "success", String::new())));
        }
        // Workers take queued tasks up to their capacity.
        for (wq, _) in WORKER_QUEUES {
            let per = self.declared.get(wq).map_or(1, |w| w.max_tasks_per_worker);
            let workers = self.workers.get(wq).copied().unwrap_or(0);
            let capacity = (workers * per) as usize;
            let running = self.running.entry(wq).or_default();
            let queued = self.queued.entry(wq).or_default();
            while running.len() < capacity {
                let Some(mut task) = queued.pop_front() else {
                    break;
                };
                task.finishes_at = self.tick + self.rng.random_range(2..6);
                let host = format!("{wq}-worker-{}", running.len() / per.max(1) as usize);
                updates.push((task.row.clone(), "running", host));
                running.push(task);
            }
        }
        let mut tx = pool.begin().await?;
        for row in &inserts {
            self.inserted += 1;
            schema::insert(&mut tx, self.inserted, row).await?;
        }
        for (row, state, host) in updates {
            schema::set_state(&mut tx, &row, state, &host).await?;
        }
        tx.commit().await
    }

    fn counts(&self, wq: &str) -> (usize, usize) {
        (
            self.queued.get(wq).map_or(0, VecDeque::len),
            self.running.get(wq).map_or(0, Vec::len),
        )
    }
}

fn metadata_for(wq: &str) -> ScaledObjectRef {
    ScaledObjectRef {
        name: format!("airflow-worker-{wq}"),
        namespace: "airflow".into(),
        scaler_metadata: [("workerQueue".to_string(), wq.to_string())].into(),
    }
}

/// Asks the scaler, as KEDA does, and renders the answers with the workload's own counts.
async fn render(
    client: &mut ExternalScalerClient<Channel>,
    workload: &mut Workload,
    declared: &WorkerQueues,
) -> Result<String, DemoError> {
    let mut rows = vec![
        [
            "WORKER QUEUE",
            "AIRFLOW QUEUES",
            "QUEUED",
            "RUNNING",
            "KEDA METRIC",
            "TARGET",
            "ACTIVE",
            "WORKERS",
            "DESIRED WORKERS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut sizing = Vec::new();
    for wq in declared.iter() {
        let name = wq.name.clone().unwrap_or_default();
        let r = metadata_for(&name);
        let spec = client.get_metric_spec(r.clone()).await?.into_inner();
        let metrics = client
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(r.clone()),
                metric_name: wq.metric_name(),
            })
            .await?
            .into_inner();
        let active = client.is_active(r).await?.into_inner().result;
        let value = metrics.metric_values.first().map_or(0, |m| m.metric_value);
        let target = spec.metric_specs.first().map_or(1, |s| s.target_size);
        let desired = desired_workers(
            u64::try_from(value).unwrap_or(0),
            u32::try_from(target).unwrap_or(1),
            wq.min_workers,
            wq.max_workers,
        );
        let key = WORKER_QUEUES
            .iter()
            .map(|(k, _)| *k)
            .find(|k| *k == name)
            .unwrap_or("default");
        // The simulated workers scale to what KEDA asked for, taking effect next tick.
        let current = workload.workers.insert(key, desired).unwrap_or(0);
        let (queued, running) = workload.counts(key);
        sizing.push(QueueSize {
            max_tasks_per_worker: wq.max_tasks_per_worker,
            max_workers: wq.max_workers,
            ready_workers: Some(current),
            desired_workers: desired,
        });
        rows.push(vec![
            name,
            wq.queues.join(","),
            queued.to_string(),
            running.to_string(),
            value.to_string(),
            target.to_string(),
            active.to_string(),
            current.to_string(),
            format!("{desired} ({}-{})", wq.min_workers, wq.max_workers),
        ]);
    }
    let mut out = render_table(&rows);
    let p = recommend(ParallelismMode::Max, &sizing);
    out.push_str(&format!(
        "{}\nset AIRFLOW__CORE__PARALLELISM={}\n",
        p.line(),
        p.value
    ));
    Ok(out)
}

/// Where the demo is and how to ask it.
fn banner(path: &std::path::Path, addr: std::net::SocketAddr) -> String {
    format!(
        "airflow-keda-scaler demo\n  \
         database: {} (Airflow 3 task_instance, SQLite)\n  \
         gRPC:     {addr} (externalscaler.ExternalScaler, grpc.health.v1, reflection)\n  \
         try:      grpcurl -plaintext -d '{{\"scaledObjectRef\":{{\"scalerMetadata\":{{\"workerQueue\":\"default\"}}}}}}' {addr} externalscaler.ExternalScaler/GetMetrics\n  \
         columns:  KEDA METRIC, TARGET, ACTIVE = what KEDA is told; WORKERS = simulated workers now; DESIRED = what KEDA asks for\n  \
         stop:     Ctrl-C\n",
        path.display()
    )
}

fn demo_db_path(args: &DemoConfig) -> (PathBuf, bool) {
    match &args.db_file {
        Some(p) => (p.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "airflow-keda-scaler-demo-{}.db",
                std::process::id()
            )),
            true,
        ),
    }
}

/// Runs the demo until Ctrl-C (or `--duration`).
pub async fn run(args: DemoConfig) -> Result<(), DemoError> {
    let (path, temporary) = demo_db_path(&args);
    let result = run_on(&args, &path).await;
    if temporary {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    result
}

async fn run_on(args: &DemoConfig, path: &std::path::Path) -> Result<(), DemoError> {
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal),
        )
        .await?;
    schema::create(&writer).await?;

    let declared = demo_worker_queues();
    let token = CancellationToken::new();
    let config = ScalerConfig {
        grpc: GrpcOptions {
            grpc_addr: args.grpc_addr,
            probe_addr: None,
            max_staleness: Duration::from_secs(30),
            tls: None,
            metrics: Metrics::new(),
            limits: Default::default(),
        },
        admin_addr: None,
        declared: declared.clone(),
        refresh_interval: (args.tick / 2).max(Duration::from_millis(100)),
        refresh_max_duty_cycle: 1.0,
        db: DbConfig::url(format!("sqlite:///{}", path.display())),
    };
    let scaler = Scaler::start(config, token.clone()).await?;
    let addr = scaler.grpc_addr;
    let banner = banner(path, addr);
    // On a terminal the screen is redrawn every tick, banner first; into a file or a pipe the
    // banner is written once and every tick appended, without escape codes.
    let tty = std::io::stdout().is_terminal();
    if !tty {
        println!("{banner}");
    }

    // Wait for the first snapshot (readiness) before asking.
    let mut rx = scaler.store.subscribe();
    while rx.borrow_and_update().latest.is_none() {
        if rx.changed().await.is_err() {
            break;
        }
    }
    let mut client = ExternalScalerClient::connect(format!("http://{addr}")).await?;
    let mut workload = Workload::new(args.seed);
    let mut ticker = tokio::time::interval(args.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let outcome = loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => break Ok(()),
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break Ok(());
        }
        if let Err(e) = workload.step(&writer).await {
            break Err(DemoError::from(e));
        }
        // Give the refresher a moment to see the write, as KEDA's next poll would.
        tokio::time::sleep((args.tick / 2).min(Duration::from_millis(600))).await;
        match render(&mut client, &mut workload, &declared).await {
            Ok(table) => {
                if tty {
                    print!("\x1b[H\x1b[2J{banner}\n");
                }
                println!(
                    "tick {}  {}",
                    workload.tick,
                    Phase::of(workload.tick).describe()
                );
                println!("{table}");
            }
            Err(e) => break Err(e),
        }
    };
    println!("stopping…");
    scaler.stop().await?;
    writer.close().await;
    outcome
}
