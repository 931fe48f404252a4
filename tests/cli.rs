//! The binary's user-visible paths other than serving: `explain`, `demo`, `--help` (every flag,
//! variable and default), exit codes and error messages, refusing a bad worker-queue file.

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
    let (code, err) = status(&[
        "serve",
        "--database-url",
        "sqlite:////nonexistent.db",
        "--worker-queues",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(3), "invalid configuration: {err}");
    assert!(
        err.contains("line 3") && err.contains("maxTasksPerWorker"),
        "{err}"
    );
}

/// Runs the binary; returns the exit code and stderr.
fn status(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
        .env_remove("AIRFLOW_KEDA_SCALER_DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every flag of every command is in that command's `--help` with its environment variable,
/// and with its default when it has one; the exit codes are there too.
#[test]
fn help_documents_every_flag_with_env_and_default() {
    use clap::CommandFactory;
    let cli = airflow_keda_scaler::cli::Cli::command();
    let mut checked = 0;
    for command in cli.get_subcommands() {
        let name = command.get_name();
        let (ok, out, err) = run(&[name, "--help"]);
        assert!(ok, "{name} --help: {err}");
        // Help text wraps; compare with whitespace folded.
        let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
        for arg in command.get_arguments().chain(cli.get_arguments()) {
            // Deprecated flags (`--pgbouncer`) are accepted but hidden on purpose.
            if matches!(arg.get_id().as_str(), "help" | "version") || arg.is_hide_set() {
                continue;
            }
            if let Some(long) = arg.get_long() {
                assert!(
                    out.contains(&format!("--{long}")),
                    "{name} --help lacks --{long}"
                );
            }
            let env = arg
                .get_env()
                .expect("every argument has a variable (naming rule)");
            let env = env.to_string_lossy();
            assert!(
                out.contains(&format!("[env: {env}")),
                "{name} --help lacks {env}"
            );
            // A switch (`--pgbouncer`) takes no value: clap shows no default for it.
            let defaults = if arg.get_action().takes_values() {
                arg.get_default_values()
            } else {
                &[]
            };
            for default in defaults {
                let default = default.to_string_lossy();
                assert!(
                    out.contains(&format!("[default: {default}]")),
                    "{name} --help lacks the default {default} of {:?}",
                    arg.get_id()
                );
            }
            checked += 1;
        }
        assert!(
            out.contains("Exit codes: 0 success"),
            "{name} --help lacks the exit codes"
        );
    }
    assert!(checked > 40, "{checked} flags checked");
}

/// README's exit codes, and errors that are one readable line with each cause once.
#[test]
fn exit_codes_tell_usage_invalid_unreadable_and_runtime_apart() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let missing = missing.to_str().unwrap();
    let sqlite = "sqlite:////nonexistent/airflow.db";

    // 2: usage.
    assert_eq!(status(&["serve", "--no-such-flag"]).0, Some(2));
    // 4: a file cannot be read; the OS error is said once.
    for args in [
        vec![
            "serve",
            "--database-url",
            sqlite,
            "--worker-queues",
            missing,
        ],
        vec!["validate-policy", missing],
        vec![
            "explain",
            "--database-url",
            sqlite,
            "--database-password-file",
            missing,
        ],
    ] {
        let (code, err) = status(&args);
        assert_eq!(code, Some(4), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert_eq!(err.matches("os error 2").count(), 1, "{args:?}: {err}");
    }
    // 3: invalid input or configuration.
    let bad_policy = dir.path().join("policy.yaml");
    std::fs::write(&bad_policy, "nodeTypes: 7\n").unwrap();
    for args in [
        vec!["--log", "=!=", "explain", "--database-url", sqlite],
        vec!["explain", "--database-url", "ftp://host/db"],
        vec!["validate-policy", bad_policy.to_str().unwrap()],
    ] {
        let (code, err) = status(&args);
        assert_eq!(code, Some(3), "{args:?}: {err}");
    }
    // 1: runtime; a port in use says what to do.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (code, err) = status(&[
        "serve",
        "--database-url",
        sqlite,
        "--grpc-addr",
        &port,
        "--probe-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("cannot listen on {port}")), "{err}");
    assert!(err.contains("another process listens there"), "{err}");
}

/// SQLAlchemy's `sqlite:///relative.db` is resolved from the working directory; when that file
/// is not there, the error says so and how to write an absolute path.
#[test]
fn relative_sqlite_path_fails_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["explain", "--database-url", "sqlite:///relative.db"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("relative.db is a relative path"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(err.contains("four slashes: sqlite:////"), "{err}");
}

/// The demo shows the whole loop: the `ml` worker queue (minWorkers 0) goes inactive and its
/// simulated workers reach 0, then tasks arrive, IsActive turns true and it scales up from zero.
/// Into a pipe: the banner once, no escape codes on stdout nor in the logs.
#[test]
fn demo_shows_scale_to_zero_then_activation_without_escape_codes() {
    use std::io::{BufRead, BufReader, Read};
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--duration",
            "120s",
            "--grpc-addr",
            "127.0.0.1:0",
            "--tick",
            "100ms",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let mut seen = Vec::new();
    let (mut at_zero, mut activated) = (false, false);
    while !activated {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no scale to zero then activation:\n{}", seen.join("\n")));
        // WORKER QUEUE, AIRFLOW QUEUES, QUEUED, RUNNING, KEDA METRIC, TARGET, ACTIVE, WORKERS,
        // DESIRED WORKERS (+ its range).
        let cells: Vec<&str> = line.split_whitespace().collect();
        if cells.first() == Some(&"ml") && cells.len() >= 9 {
            let (active, workers, desired) = (cells[6], cells[7], cells[8]);
            if active == "false" && workers == "0" && desired == "0" {
                at_zero = true;
            } else if at_zero && active == "true" && desired != "0" {
                activated = true;
            }
        }
        seen.push(line);
    }
    child.kill().unwrap();
    let _ = child.wait();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let out = seen.join("\n");
    assert!(out.starts_with("airflow-keda-scaler demo"), "{out}");
    assert_eq!(out.matches("grpcurl -plaintext").count(), 1, "banner once");
    assert!(out.contains("WORKERS  DESIRED WORKERS"), "{out}");
    assert!(!out.contains('\x1b'), "escape codes on a pipe:\n{out}");
    assert!(stderr.contains("starting scaler"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "colours in the logs of a pipe:\n{stderr}"
    );
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
    assert!(stdout.matches("tick ").count() >= 3, "{stdout}");
}

/// `--pgbouncer` has no effect any more: still accepted (old manifests keep working), no longer
/// advertised in `--help`.
#[test]
fn deprecated_pgbouncer_flag_is_accepted_but_hidden() {
    let (ok, out, _) = run(&["serve", "--help"]);
    assert!(ok);
    assert!(!out.contains("--pgbouncer"), "{out}");
    let (ok, _, err) = run(&["serve", "--pgbouncer", "--refresh-max-duty-cycle", "0"]);
    assert!(!ok);
    assert!(err.contains("out of range"), "{err}");
    assert!(
        !err.contains("unexpected argument"),
        "--pgbouncer refused: {err}"
    );
}
