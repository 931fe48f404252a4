//! P6: the real binary as a child process: time from start to gRPC readiness SERVING
//! (database reachable), and resident memory idle and under the P1 / P5 loads.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use testkit::process::Proc;

use crate::{
    admission,
    common::{
        BenchDb, Mode, Row, fmt_dur, free_port, median, mib, rss_kib, server_runtime,
        worker_queues_yaml,
    },
    grpc::{self, wait_serving},
    say,
};

const BIN: &str = env!("CARGO_BIN_EXE_airflow-keda-scaler");

fn spawn(args: &[String]) -> Proc {
    Proc::spawn(
        Command::new(BIN)
            .args(args)
            .env_remove("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("spawn the airflow-keda-scaler binary")
}

struct ScalerProc {
    proc: Proc,
    grpc: SocketAddr,
    probe: SocketAddr,
}

fn spawn_scaler(url: &str, queues_file: &Path) -> ScalerProc {
    let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let probe: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let proc = spawn(&[
        "serve".into(),
        "--grpc-addr".into(),
        grpc.to_string(),
        "--probe-addr".into(),
        probe.to_string(),
        "--admin-addr".into(),
        admin,
        "--worker-queues".into(),
        queues_file.display().to_string(),
        "--database-url".into(),
        url.to_string(),
    ]);
    ScalerProc { proc, grpc, probe }
}

/// Samples `VmRSS` of `pid` every 50 ms until stopped; returns the peak seen.
fn sample_rss(pid: u32) -> (Arc<AtomicU64>, tokio_util::sync::CancellationToken) {
    let peak = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let (p, s) = (peak.clone(), stop.clone());
    tokio::spawn(async move {
        while !s.is_cancelled() {
            if let Some((rss, _)) = rss_kib(pid) {
                p.fetch_max(rss, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (peak, stop)
}

pub fn p6(mode: &Mode, pg: &BenchDb) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let queues_file = dir.path().join("worker-queues.yaml");
    std::fs::write(&queues_file, worker_queues_yaml()).unwrap();
    let url = pg.url();
    let rt = server_runtime("p6-client", 2);
    let starts = if mode.smoke { 2 } else { 9 };
    let idle_wait = if mode.smoke {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(3)
    };
    let load_window = mode.window * 2;
    let mut rows = Vec::new();

    // Start → SERVING, with the URL as given (sslmode `prefer`: TLS when the server offers it,
    // as this PostgreSQL does) and with TLS off. Interleaved.
    let plain = format!("{url}?sslmode=disable");
    let (mut tls_times, mut plain_times) = (Vec::new(), Vec::new());
    for _ in 0..starts {
        for (u, times) in [(&url, &mut tls_times), (&plain, &mut plain_times)] {
            let t0 = Instant::now();
            let child = spawn_scaler(u, &queues_file);
            let ready = rt
                .block_on(wait_serving(child.probe, Duration::from_secs(10)))
                .map(|_| t0.elapsed());
            match ready {
                Some(d) => times.push(d.as_secs_f64()),
                None => say!("  P6: scaler did not become ready within 10 s"),
            }
            drop(child);
        }
    }
    let mut sorted = tls_times.clone();
    let start_median = median(&mut tls_times);
    let plain_median = median(&mut plain_times);
    sorted.sort_by(f64::total_cmp);
    let start_max = sorted.last().copied().unwrap_or(f64::NAN);
    say!("  P6 start → SERVING (TLS to PostgreSQL): {sorted:?} s; without TLS: {plain_times:?} s");

    // Scaler RSS idle and under P1 load.
    let child = spawn_scaler(&url, &queues_file);
    let pid = child.proc.pid();
    let n = grpc::clients(mode);
    let (idle, loaded, peak, load) = rt.block_on(async {
        wait_serving(child.probe, Duration::from_secs(10))
            .await
            .expect("ready");
        tokio::time::sleep(idle_wait).await;
        let idle = rss_kib(pid).map_or(0, |r| r.0);
        let clients = grpc::connect(child.grpc, n).await;
        let (peak, stop) = sample_rss(pid);
        let load = grpc::load(&clients, load_window).await;
        stop.cancel();
        let loaded = rss_kib(pid).unwrap_or_default();
        (
            idle,
            loaded.0,
            peak.load(Ordering::Relaxed).max(loaded.1),
            load,
        )
    });
    drop(child);
    say!(
        "  P6 scaler: idle {:.1} MiB, under load {:.1} MiB (peak {:.1} MiB) at {:.0} calls/s",
        mib(idle),
        mib(loaded),
        mib(peak),
        load.rps
    );
    let worst = idle.max(peak);
    rows.push(Row {
        id: "P6".into(),
        figure: format!("scaler binary: RSS idle / under P1 load ({n} clients)"),
        result: format!(
            "{:.1} MiB idle, {:.1} MiB peak under load ({:.0} calls/s against the binary)",
            mib(idle),
            mib(peak),
            load.rps
        ),
        baseline: "—".into(),
        ratio: "—".into(),
        target: "≤ 30 MiB".into(),
        verdict: Row::judged(mode.smoke, worst <= 30 * 1024 && load.errors == 0),
    });
    rows.push(Row {
        id: "P6".into(),
        figure: "scaler binary: start → readiness SERVING (PostgreSQL reachable)".into(),
        result: format!(
            "{} median, {} max ({} starts; PostgreSQL over TLS, sslmode `prefer`); {} with `sslmode=disable`",
            fmt_dur(Duration::from_secs_f64(start_median)),
            fmt_dur(Duration::from_secs_f64(start_max)),
            sorted.len(),
            fmt_dur(Duration::from_secs_f64(plain_median))
        ),
        baseline: "—".into(),
        ratio: "—".into(),
        target: "≤ 200 ms".into(),
        verdict: Row::judged(mode.smoke, start_median <= 0.2 && !sorted.is_empty()),
    });

    // Webhook RSS idle and under P5 load.
    let has_webhook = Command::new(BIN)
        .args(["webhook", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_webhook {
        rows.push(Row::not_run(
            "P6",
            "webhook binary: RSS idle / under P5 load",
            "≤ 30 MiB",
            "the binary has no `webhook` subcommand yet".into(),
        ));
        rt.shutdown_timeout(Duration::from_secs(2));
        return rows;
    }
    let cert = admission::write_cert(dir.path());
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let t0 = Instant::now();
    let child = spawn(&[
        "webhook".into(),
        "--https-addr".into(),
        addr.to_string(),
        "--admin-addr".into(),
        admin.to_string(),
        "--tls-cert".into(),
        cert.cert.display().to_string(),
        "--tls-key".into(),
        cert.key.display().to_string(),
        "--policy".into(),
        admission::policy_path().display().to_string(),
    ]);
    let pid = child.pid();
    let n = admission::clients(mode);
    let result = rt.block_on(async {
        let http = reqwest::Client::new();
        let mut ready = None;
        for _ in 0..5000 {
            if let Ok(r) = http.get(format!("http://{admin}/readyz")).send().await
                && r.status() == 200
            {
                ready = Some(t0.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ready = ready?;
        tokio::time::sleep(idle_wait).await;
        let idle = rss_kib(pid).map_or(0, |r| r.0);
        let bodies = admission::bodies();
        let mut clients = Vec::new();
        for _ in 0..n {
            clients.push(admission::client(&cert, addr).await);
        }
        admission::check(&clients[0], &bodies).await;
        let (peak, stop) = sample_rss(pid);
        let load = admission::load(&clients, &bodies, load_window).await;
        stop.cancel();
        let loaded = rss_kib(pid).unwrap_or_default();
        Some((
            ready,
            idle,
            peak.load(Ordering::Relaxed).max(loaded.1),
            load,
        ))
    });
    drop(child);
    match result {
        Some((ready, idle, peak, load)) => {
            say!(
                "  P6 webhook: ready after {}, idle {:.1} MiB, peak {:.1} MiB at {:.0} reviews/s (binary, p99 {})",
                fmt_dur(ready),
                mib(idle),
                mib(peak),
                load.rps,
                fmt_dur(load.p99)
            );
            rows.push(Row {
                id: "P6".into(),
                figure: format!("webhook binary: RSS idle / under P5 load ({n} clients)"),
                result: format!(
                    "{:.1} MiB idle, {:.1} MiB peak under load ({:.0} reviews/s against the binary, p99 {}); ready after {}",
                    mib(idle),
                    mib(peak),
                    load.rps,
                    fmt_dur(load.p99),
                    fmt_dur(ready)
                ),
                baseline: "—".into(),
                ratio: "—".into(),
                target: "≤ 30 MiB".into(),
                verdict: Row::judged(mode.smoke, idle.max(peak) <= 30 * 1024 && load.errors == 0),
            });
        }
        None => rows.push(Row::not_run(
            "P6",
            "webhook binary: RSS idle / under P5 load",
            "≤ 30 MiB",
            "the webhook did not become ready".into(),
        )),
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    rows
}
