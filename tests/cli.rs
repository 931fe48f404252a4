//! The binary's user-visible paths other than `serve`: `explain`, `demo`, `--help`, and
//! refusing a bad worker-queue file.

use std::process::Command;

use testkit::airflow::{AirflowVersion, FixtureRow};
use testkit::{db::TestDb, scaler::create};

const BIN: &str = env!("CARGO_BIN_EXE_airflow-keda-scaler");

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
        .env_remove("AIRFLOW_KEDA_SCALER_DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn seeded() -> TestDb {
    let db = TestDb::postgres().await;
    let mut rows = Vec::new();
    for i in 0..20 {
        rows.push(FixtureRow::new(
            "d",
            &format!("q{i}"),
            "r",
            Some("queued"),
            "default",
        ));
    }
    for i in 0..13 {
        rows.push(FixtureRow::new(
            "d",
            &format!("r{i}"),
            "r",
            Some("running"),
            "default",
        ));
    }
    for i in 0..5 {
        rows.push(FixtureRow::new(
            "d",
            &format!("m{i}"),
            "r",
            Some("queued"),
            "ml",
        ));
    }
    rows.push(FixtureRow::new("d", "done", "r", Some("success"), "ml"));
    create(&db, AirflowVersion::V3, &rows).await;
    db
}

#[tokio::test]
async fn explain_prints_table_and_json() {
    let db = seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wq.yaml");
    std::fs::write(
        &file,
        "workerQueues:\n  - name: default\n  - name: ml\n    queues: [ml]\n    maxTasksPerWorker: 2\n    minWorkers: 0\n    maxWorkers: 2\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();

    let (ok, out, err) = run(&[
        "explain",
        "--database-url",
        db.url(),
        "--worker-queues",
        file,
        "--kubernetes",
        "off",
    ]);
    assert!(ok, "{err}");
    // default: 33 tasks / 16 → 3 workers; ml: 5 / 2 → 3, clamped to 2. Parallelism to set
    // (Astro's definition): (10 + 2) max workers × (16 + 2) = 216.
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{out}"))
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    // SCHEDULED, QUEUED, RUNNING
    assert_eq!(
        line("default")[2..5],
        ["0".to_string(), "20".to_string(), "13".to_string()]
    );
    assert_eq!(line("default")[7], "3");
    assert_eq!(line("ml")[7], "2");
    assert!(
        out.contains("parallelism (max) = 12 max workers x 18 tasks per worker (sum) = 216"),
        "{out}"
    );
    assert!(
        out.contains("set AIRFLOW__CORE__PARALLELISM=216\n"),
        "{out}"
    );
    assert!(out.contains("kubernetes: not watched"), "{out}");
    assert!(out.contains("Airflow 3"), "{out}");

    let (ok, out, err) = run(&[
        "explain",
        "--database-url",
        db.url(),
        "--worker-queues",
        file,
        "--output",
        "json",
        "--kubernetes",
        "off",
        "--airflow-parallelism",
        "32",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["parallelism"]["value"], 216);
    assert_eq!(v["airflowParallelism"], 32);
    // 32 caps `default` (10 × 16) at 2 workers; 33 queued + running at 32+ and nothing
    // scheduled: not starved.
    assert_eq!(v["workerQueues"][0]["parallelismCap"], 2);
    assert_eq!(v["starved"], false);
    assert_eq!(v["workerQueues"][0]["workerQueue"], "default");
    assert_eq!(v["workerQueues"][0]["queued"], 20);
    assert_eq!(v["workerQueues"][0]["desiredWorkers"], 3);
    assert_eq!(v["schema"], "Airflow3");

    // No file: one line per Airflow queue with work, default settings.
    let (ok, out, _) = run(&["explain", "--database-url", db.url(), "--kubernetes", "off"]);
    assert!(ok);
    assert!(out.lines().any(|l| l.starts_with("ml ")), "{out}");
}

#[test]
fn explain_reports_unreachable_database_without_the_password() {
    let (ok, _, err) = run(&[
        "explain",
        "--database-url",
        "postgresql+psycopg2://airflow:pa55-w0rd@127.0.0.1:1/airflow",
        "--database-timeout",
        "1s",
    ]);
    assert!(!ok);
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("pa55-w0rd"), "{err}");
}

#[test]
fn invalid_worker_queue_file_stops_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wq.yaml");
    std::fs::write(
        &file,
        "workerQueues:\n  - name: default\n  - name: ml\n    maxTasksPerWorker: 0\n",
    )
    .unwrap();
    let (ok, _, err) = run(&[
        "serve",
        "--database-url",
        "sqlite:////nonexistent.db",
        "--worker-queues",
        file.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("line 3") && err.contains("maxTasksPerWorker"),
        "{err}"
    );
}

#[test]
fn help_documents_every_flag_with_env_and_default() {
    let (ok, out, _) = run(&["serve", "--help"]);
    assert!(ok);
    // Help text wraps; compare with whitespace folded.
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in [
        "--grpc-addr",
        "[env: AIRFLOW_KEDA_SCALER_GRPC_ADDR=] [default: 0.0.0.0:9090]",
        "--worker-queues",
        "--refresh-interval",
        "[default: 1s]",
        "--max-staleness",
        "[default: 30s]",
        "--database-url",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "--database-password-file",
        "--pgbouncer",
        "--tls-client-ca",
        "--admin-addr",
        "--probe-addr",
        "--shutdown-grace",
        "--log-format",
    ] {
        assert!(out.contains(needle), "serve --help lacks {needle}:\n{out}");
    }
}

#[test]
fn demo_runs_and_stops_by_itself() {
    let out = Command::new(BIN)
        .args([
            "demo",
            "--duration",
            "4s",
            "--grpc-addr",
            "127.0.0.1:0",
            "--tick",
            "500ms",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("grpcurl -plaintext"), "{stdout}");
    assert!(stdout.contains("DESIRED WORKERS"), "{stdout}");
    assert!(
        stdout.contains("set AIRFLOW__CORE__PARALLELISM="),
        "{stdout}"
    );
    assert!(stdout.contains("READY WORKERS"), "{stdout}");
    assert!(stdout.matches("tick ").count() >= 3, "{stdout}");
}
