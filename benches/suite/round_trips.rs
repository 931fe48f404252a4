//! P2: database round trips per minute for 8 worker queues under KEDA-like traffic, measured on
//! the wire, against the Airflow chart's approach (the `postgresql` trigger runs its query per
//! trigger per call).
//!
//! Both sides talk to PostgreSQL through a relay that reads the frontend protocol and counts
//! what the server is asked to do: round trips (`Sync` and simple `Query` messages: each one
//! waits for a `ReadyForQuery`), statements (`Execute` and `Query`), and which statement it was
//! (the SQL text of the prepared statement an `Execute` runs). `pg_stat_database.xact_commit`
//! of each side's own database is read before and after as a cross-check.
//!
//! KEDA's traffic per ScaledObject: every `pollingInterval` (10 s) and every HPA sync (15 s),
//! `GetMetricSpec` + `GetMetrics` + `IsActive`, on one HTTP/2 connection. The chart's trigger:
//! one query per poll and per HPA sync, on its own connection (KEDA keeps one `sql.DB` per
//! trigger).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use airflow_keda_scaler::{
    scaler::Scaler, scaler::db::Dialect,
    scaler::grpc::proto::externalscaler::external_scaler_client::ExternalScalerClient,
    scaler::metrics::Metrics, scaler::model::worker_queue::WorkerQueues,
    scaler::snapshot::SnapshotStore,
};
use sqlx::{AssertSqlSafe, Connection, postgres::PgConnection};
use testkit::airflow::{self, AirflowVersion};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{
    common::{BenchDb, Mode, QUEUES, Row, server_runtime, small_rows, worker_queues_yaml},
    grpc::{metrics_request, start_scaler, trigger},
    say,
};

/// What the relay saw, client → server.
#[derive(Debug, Default)]
pub struct Wire {
    pub connections: AtomicU64,
    /// `Sync` + simple `Query`: each is one request/response exchange.
    pub round_trips: AtomicU64,
    /// `Execute` + simple `Query`.
    pub statements: AtomicU64,
    /// Statements reading `task_instance`.
    pub on_task_instance: AtomicU64,
    /// Statements reading the catalog (schema detection).
    pub on_catalog: AtomicU64,
    /// TLS or something else the relay cannot read.
    pub unreadable: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WireSnap {
    pub connections: u64,
    pub round_trips: u64,
    pub statements: u64,
    pub on_task_instance: u64,
    pub on_catalog: u64,
    pub unreadable: u64,
}

impl Wire {
    pub fn snap(&self) -> WireSnap {
        WireSnap {
            connections: self.connections.load(Ordering::Relaxed),
            round_trips: self.round_trips.load(Ordering::Relaxed),
            statements: self.statements.load(Ordering::Relaxed),
            on_task_instance: self.on_task_instance.load(Ordering::Relaxed),
            on_catalog: self.on_catalog.load(Ordering::Relaxed),
            unreadable: self.unreadable.load(Ordering::Relaxed),
        }
    }

    fn statement(&self, sql: &str) {
        self.statements.fetch_add(1, Ordering::Relaxed);
        let lower = sql.to_ascii_lowercase();
        if lower.contains("task_instance") && !lower.contains("pg_attribute") {
            self.on_task_instance.fetch_add(1, Ordering::Relaxed);
        } else if lower.contains("pg_attribute") || lower.contains("information_schema") {
            self.on_catalog.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl std::ops::Sub for WireSnap {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self {
            connections: self.connections - o.connections,
            round_trips: self.round_trips - o.round_trips,
            statements: self.statements - o.statements,
            on_task_instance: self.on_task_instance - o.on_task_instance,
            on_catalog: self.on_catalog - o.on_catalog,
            unreadable: self.unreadable - o.unreadable,
        }
    }
}

/// A TCP relay to PostgreSQL that counts frontend messages.
pub struct Relay {
    pub addr: SocketAddr,
    pub wire: Arc<Wire>,
    stop: CancellationToken,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let wire = Arc::new(Wire::default());
        let stop = CancellationToken::new();
        let (w, s) = (wire.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = s.cancelled() => break,
                    a = listener.accept() => a,
                };
                let Ok((inbound, _)) = accepted else { continue };
                w.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(relay_one(inbound, target, w.clone(), s.clone()));
            }
        });
        Self { addr, wire, stop }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn relay_one(
    inbound: TcpStream,
    target: SocketAddr,
    wire: Arc<Wire>,
    stop: CancellationToken,
) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut cr, mut cw) = inbound.into_split();
    let (mut sr, mut sw) = outbound.into_split();
    let up = async {
        let mut parser = Parser::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            parser.feed(&buf[..n], &wire);
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::select! {
        () = stop.cancelled() => {}
        _ = futures::future::join(up, down) => {}
    }
}

/// PostgreSQL frontend protocol reader (v3).
#[derive(Default)]
struct Parser {
    buf: Vec<u8>,
    typed: bool,
    opaque: bool,
    /// Prepared statement name → SQL.
    prepared: HashMap<String, String>,
    /// Statement of the last `Bind`.
    bound: Option<String>,
}

fn cstr(b: &[u8]) -> (&str, &[u8]) {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    (
        std::str::from_utf8(&b[..end]).unwrap_or(""),
        b.get(end + 1..).unwrap_or(&[]),
    )
}

impl Parser {
    fn feed(&mut self, data: &[u8], wire: &Wire) {
        if self.opaque {
            return;
        }
        self.buf.extend_from_slice(data);
        loop {
            if !self.typed {
                if self.buf.len() < 8 {
                    return;
                }
                let len = u32::from_be_bytes(self.buf[0..4].try_into().unwrap()) as usize;
                let code = u32::from_be_bytes(self.buf[4..8].try_into().unwrap());
                if code == 80_877_103 || code == 80_877_104 {
                    // SSLRequest / GSSENCRequest: what follows may be encrypted.
                    wire.unreadable.fetch_add(1, Ordering::Relaxed);
                    self.opaque = true;
                    return;
                }
                if self.buf.len() < len {
                    return;
                }
                self.buf.drain(..len);
                self.typed = true;
                continue;
            }
            if self.buf.len() < 5 {
                return;
            }
            let kind = self.buf[0];
            let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
            if self.buf.len() < 1 + len {
                return;
            }
            let body: Vec<u8> = self.buf[5..1 + len].to_vec();
            self.buf.drain(..1 + len);
            match kind {
                b'Q' => {
                    wire.round_trips.fetch_add(1, Ordering::Relaxed);
                    wire.statement(cstr(&body).0);
                }
                b'S' => {
                    wire.round_trips.fetch_add(1, Ordering::Relaxed);
                }
                b'P' => {
                    let (name, rest) = cstr(&body);
                    let (sql, _) = cstr(rest);
                    self.prepared.insert(name.to_string(), sql.to_string());
                }
                b'B' => {
                    let (_portal, rest) = cstr(&body);
                    let (stmt, _) = cstr(rest);
                    self.bound = self.prepared.get(stmt).cloned();
                }
                b'E' => {
                    let sql = self.bound.clone().unwrap_or_default();
                    wire.statement(&sql);
                }
                _ => {}
            }
        }
    }
}

/// `xact_commit` of database `name` (read from the admin database).
async fn xact_commit(admin: &str, name: &str) -> i64 {
    let mut conn = PgConnection::connect(admin).await.unwrap();
    // Wait until every backend of that database has exited (stats are flushed at exit).
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let v: i64 = sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    v
}

/// The chart's query for one worker queue (PostgreSQL), worker_concurrency 16.
pub fn chart_sql_pg(queue: &str) -> String {
    format!(
        "SELECT ceil(COUNT(*)::decimal / 16) FROM task_instance \
         WHERE (state='running' OR state='queued') AND queue IN ({})",
        airflow::literal(Dialect::Postgres, queue)
    )
}

/// KEDA's cadence, compressed by `speed`.
#[derive(Debug, Clone, Copy)]
struct Cadence {
    poll: Duration,
    hpa: Duration,
    refresh: Duration,
    window: Duration,
    /// Simulated minutes in `window`.
    minutes: f64,
}

impl Cadence {
    fn new(speed: f64, simulated: Duration) -> Self {
        let s = |d: f64| Duration::from_secs_f64(d / speed);
        Self {
            poll: s(10.0),
            hpa: s(15.0),
            refresh: s(1.0),
            window: s(simulated.as_secs_f64()),
            minutes: simulated.as_secs_f64() / 60.0,
        }
    }
}

/// Runs `call` every `every`, first after a random phase, until `end`.
async fn every<F, Fut>(every: Duration, end: Instant, seed: u64, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let phase = every.mul_f64((seed % 1000) as f64 / 1000.0);
    let mut next = Instant::now() + phase;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        call().await;
        next += every;
    }
}

/// What one side did in the window.
#[derive(Debug, Clone, Copy, Default)]
struct Side {
    wire: WireSnap,
    whole: WireSnap,
    xact: i64,
    rpcs: u64,
    refreshes: u64,
}

fn refresh_count(metrics: &Metrics, store: &SnapshotStore, declared: &WorkerQueues) -> u64 {
    let text = metrics.encode(store, declared, Duration::from_secs(30));
    text.lines()
        .find_map(|l| l.strip_prefix("airflow_keda_scaler_refresh_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The scaler with `objects` ScaledObjects polling it.
async fn scaler_side(objects: usize, c: Cadence) -> Side {
    let db = BenchDb::create(
        Dialect::Postgres,
        &crate::common::run_scoped(&format!("aks_bench_p2s_{objects}")),
    )
    .await;
    db.create_table(AirflowVersion::V3, &small_rows()).await;
    let before = xact_commit(&db.admin, &db.name).await;
    let relay = Relay::start(db.server_addr()).await;
    let metrics = Metrics::new();
    let scaler: Scaler = start_scaler(&db.url_via(relay.addr), c.refresh, metrics.clone()).await;
    let declared = WorkerQueues::parse(&worker_queues_yaml()).unwrap();
    let channel: Channel = Channel::from_shared(format!("http://{}", scaler.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = ExternalScalerClient::new(channel);
    let rpcs = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));

    let w0 = relay.wire.snap();
    let r0 = refresh_count(&metrics, &scaler.store, &declared);
    let end = Instant::now() + c.window;
    let mut tasks = Vec::new();
    for i in 0..objects {
        for (period, seed) in [
            (c.poll, 7919 * i as u64 + 13),
            (c.hpa, 104_729 * i as u64 + 7),
        ] {
            let (client, rpcs, errors) = (client.clone(), rpcs.clone(), errors.clone());
            tasks.push(tokio::spawn(every(period, end, seed, move || {
                let (mut client, rpcs, errors) = (client.clone(), rpcs.clone(), errors.clone());
                async move {
                    let r = async {
                        client.get_metric_spec(trigger(i)).await?;
                        client.get_metrics(metrics_request(i)).await?;
                        client.is_active(trigger(i)).await?;
                        Ok::<_, tonic::Status>(())
                    }
                    .await;
                    rpcs.fetch_add(3, Ordering::Relaxed);
                    if r.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let w1 = relay.wire.snap();
    let r1 = refresh_count(&metrics, &scaler.store, &declared);
    let _ = scaler.stop().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let whole = relay.wire.snap();
    drop(relay);
    let after = xact_commit(&db.admin, &db.name).await;
    assert_eq!(errors.load(Ordering::Relaxed), 0, "scaler RPCs failed");
    Side {
        wire: w1 - w0,
        whole,
        xact: after - before,
        rpcs: rpcs.load(Ordering::Relaxed),
        refreshes: r1 - r0,
    }
}

/// The chart's `postgresql` triggers, one per ScaledObject.
async fn chart_side(objects: usize, c: Cadence) -> Side {
    let db = BenchDb::create(
        Dialect::Postgres,
        &crate::common::run_scoped(&format!("aks_bench_p2c_{objects}")),
    )
    .await;
    db.create_table(AirflowVersion::V3, &small_rows()).await;
    let before = xact_commit(&db.admin, &db.name).await;
    let relay = Relay::start(db.server_addr()).await;
    let url = db.url_via(relay.addr);
    let mut conns = Vec::new();
    for _ in 0..objects {
        // KEDA's trigger connects (and pings) when the ScaledObject is reconciled.
        let mut conn = PgConnection::connect(&url).await.unwrap();
        conn.ping().await.unwrap();
        conns.push(Arc::new(tokio::sync::Mutex::new(conn)));
    }
    let w0 = relay.wire.snap();
    let end = Instant::now() + c.window;
    let calls = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, conn) in conns.iter().enumerate() {
        let sql = chart_sql_pg(QUEUES[i % QUEUES.len()]);
        for (period, seed) in [
            (c.poll, 7919 * i as u64 + 13),
            (c.hpa, 104_729 * i as u64 + 7),
        ] {
            let (conn, sql, calls) = (conn.clone(), sql.clone(), calls.clone());
            tasks.push(tokio::spawn(every(period, end, seed, move || {
                let (conn, sql, calls) = (conn.clone(), sql.clone(), calls.clone());
                async move {
                    let mut conn = conn.lock().await;
                    // lib/pq and pgx without arguments: one simple-protocol query.
                    sqlx::raw_sql(AssertSqlSafe(sql))
                        .fetch_all(&mut *conn)
                        .await
                        .unwrap();
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let w1 = relay.wire.snap();
    for conn in conns {
        if let Ok(m) = Arc::try_unwrap(conn) {
            let _ = m.into_inner().close().await;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let whole = relay.wire.snap();
    drop(relay);
    let after = xact_commit(&db.admin, &db.name).await;
    Side {
        wire: w1 - w0,
        whole,
        xact: after - before,
        rpcs: calls.load(Ordering::Relaxed),
        refreshes: 0,
    }
}

/// P2.
pub fn p2(mode: &Mode) -> Vec<Row> {
    // Full: real time at KEDA's and the scaler's defaults, one minute. Smoke: 20× faster.
    let (speed, simulated) = if mode.smoke {
        (20.0, Duration::from_secs(60))
    } else {
        // 62 s: the scaler re-detects the schema once a minute (at ~61 s after start); the
        // window must contain one such check.
        (1.0, Duration::from_secs(62))
    };
    let c = Cadence::new(speed, simulated);
    say!(
        "  P2: {:.0} simulated minute(s) in {:.1} s (speed ×{speed}); refresh {:?}, poll {:?}, HPA sync {:?}",
        c.minutes,
        c.window.as_secs_f64(),
        c.refresh,
        c.poll,
        c.hpa
    );
    // The chart side holds one connection per ScaledObject. Smoke: 2 and 4 ScaledObjects, one
    // side after the other, so the run needs a handful of connections on a shared server.
    let (few, many) = if mode.smoke { (2, 4) } else { (8, 50) };
    let rt = server_runtime("p2", 2);
    let sides = rt.block_on(async {
        if mode.smoke {
            let (s_few, c_few) = (scaler_side(few, c).await, chart_side(few, c).await);
            let (s_many, c_many) = (scaler_side(many, c).await, chart_side(many, c).await);
            [(few, s_few, c_few), (many, s_many, c_many)]
        } else {
            let (s_few, c_few, s_many, c_many) = tokio::join!(
                scaler_side(few, c),
                chart_side(few, c),
                scaler_side(many, c),
                chart_side(many, c)
            );
            [(few, s_few, c_few), (many, s_many, c_many)]
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));

    let per_min = |v: u64| v as f64 / c.minutes;
    let mut rows = Vec::new();
    for (objects, s, ch) in sides {
        let per_refresh = s.wire.on_task_instance as f64 / s.refreshes.max(1) as f64;
        say!(
            "  P2 {objects} ScaledObjects — scaler: {} refreshes, wire {:?}, {} RPCs; whole phase: {} connections, wire statements {} vs xact_commit Δ {}",
            s.refreshes,
            s.wire,
            s.rpcs,
            s.whole.connections,
            s.whole.statements,
            s.xact
        );
        say!(
            "  P2 {objects} ScaledObjects — chart: {} trigger calls, wire {:?}; whole phase: wire statements {} vs xact_commit Δ {}",
            ch.rpcs,
            ch.wire,
            ch.whole.statements,
            ch.xact
        );
        let unreadable = s.wire.unreadable + ch.wire.unreadable;
        let ratio = per_min(ch.wire.statements) / per_min(s.wire.statements).max(1e-9);
        rows.push(Row {
            id: if objects == few { "P2".into() } else { "P2′".into() },
            figure: format!(
                "DB load, 8 worker queues, {objects} ScaledObjects, poll 10 s + HPA 15 s (measured on the wire, per minute)"
            ),
            result: format!(
                "{:.0} statements/min ({:.0} refresh + {:.0} schema check), {:.0} round trips/min ({:.1} per refresh); {per_refresh:.2} query per refresh; {:.0} RPCs/min served",
                per_min(s.wire.statements),
                per_min(s.wire.on_task_instance),
                per_min(s.wire.on_catalog),
                per_min(s.wire.round_trips),
                s.wire.round_trips as f64 / s.refreshes.max(1) as f64,
                per_min(s.rpcs)
            ),
            baseline: format!(
                "chart `postgresql` trigger: {:.0} statements/min, {:.0} round trips/min",
                per_min(ch.wire.statements),
                per_min(ch.wire.round_trips)
            ),
            ratio: format!("{ratio:.2}× fewer statements"),
            target: "1 query per refresh, whatever the number of queues and ScaledObjects".into(),
            verdict: if unreadable > 0 {
                crate::common::Verdict::NotRun("relay could not read the protocol (TLS?)".into())
            } else {
                Row::judged(mode.smoke, (per_refresh - 1.0).abs() < 0.02)
            },
        });
    }
    rows
}
