//! The benchmark suite: every figure of the performance issue against its baseline measured in
//! the same run, printed as one table (stdout, markdown); progress and details on stderr.
//!
//! ```sh
//! cargo bench --bench suite                    # full run (< 10 min; builds the 1 M-row data sets once)
//! cargo bench --bench suite -- --smoke         # CI: every figure at tiny scale, < 60 s, exits 0
//! cargo bench --bench suite -- --generate      # rebuild the 1 M-row data sets, then run
//! cargo bench --bench suite -- --only P1,P5    # some figures
//! cargo bench --bench suite -- --reviews 2000  # only 2000 in-process reviews (for callgrind)
//! ```
//!
//! Needs the project's PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306) servers, or
//! `AKS_TEST_POSTGRES_URL` / `AKS_TEST_MYSQL_URL`. Method and results: docs/performance.md.

mod admission;
mod common;
mod dataset;
mod grpc;
mod process;
mod push;
mod round_trips;

use std::{panic::AssertUnwindSafe, process::ExitCode, sync::Mutex, time::Instant};

use airflow_keda_scaler::scaler::db::Dialect;
use common::{BenchDb, Mode, Row, machine, run_scoped, server_runtime, small_rows, table};
use testkit::airflow::AirflowVersion;

/// The first panic message since the last [`take_panic`]: the cause of a failed figure (later
/// panics are consequences, such as a `JoinError` unwrapped by the caller).
static FIRST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// A failure is reported as one line (figure, message, where), not as the default hook's report
/// with a backtrace per panicking thread.
fn record_panics_quietly() {
    std::panic::set_hook(Box::new(|info| {
        let message = info.payload_as_str().unwrap_or("panic");
        let at = info
            .location()
            .map(|l| format!(" (at {}:{})", l.file(), l.line()))
            .unwrap_or_default();
        let mut first = FIRST_PANIC.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(|| format!("{message}{at}"));
    }));
}

fn take_panic() -> String {
    FIRST_PANIC
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .map_or_else(|| "failed".into(), |m| m.replace('\n', " "))
}

/// Runs `f`; a panic becomes `Err(one line)`.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    take_panic();
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| take_panic())
}

fn main() -> ExitCode {
    let mode = Mode::from_args();
    let started = Instant::now();
    record_panics_quietly();
    if mode.generate_only {
        return match guarded(|| dataset::generate_all(&mode)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: generating the data sets failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(n) = admission::reviews_arg() {
        admission::run_reviews(n);
        return ExitCode::SUCCESS;
    }
    say!(
        "airflow-keda-scaler benchmark suite ({}), {}",
        if mode.smoke { "smoke" } else { "full" },
        machine()
    );
    say!(
        "repetitions {} × {:?} per load window; medians and same-run ratios",
        mode.reps,
        mode.window
    );

    // A small Airflow 3 task_instance for the figures that need a live database.
    let pg = match guarded(|| {
        let rt = server_runtime("setup", 1);
        let pg = rt.block_on(async {
            let db = BenchDb::create(Dialect::Postgres, &run_scoped("aks_bench_small")).await;
            db.create_table(AirflowVersion::V3, &small_rows()).await;
            db
        });
        rt.shutdown_timeout(std::time::Duration::from_secs(1));
        pg
    }) {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("error: benchmark setup failed: {e}");
            return ExitCode::FAILURE;
        }
    };

    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut step = |name: &str, f: &mut dyn FnMut() -> Vec<Row>| {
        if mode.runs(name) {
            let t = Instant::now();
            say!("{name} …");
            match guarded(&mut *f) {
                Ok(r) => {
                    say!("{name} done in {:.1} s", t.elapsed().as_secs_f64());
                    rows.extend(r);
                }
                Err(e) => {
                    say!(
                        "{name} failed after {:.1} s: {e}",
                        t.elapsed().as_secs_f64()
                    );
                    rows.push(Row::not_run(name, "(failed)", "", e.clone()));
                    failures.push(format!("{name}: {e}"));
                }
            }
        }
    };
    step("P1", &mut || vec![grpc::p1(&mode, &pg)]);
    step("P2", &mut || round_trips::p2(&mode));
    step("P3", &mut || {
        let (r, n) = dataset::p3(&mode);
        notes.extend(n);
        r
    });
    step("P4", &mut || vec![push::p4(&mode)]);
    step("P5", &mut || vec![admission::p5(&mode)]);
    step("P6", &mut || process::p6(&mode, &pg));
    drop(pg);

    if !notes.is_empty() {
        say!("\nQuery plans and notes:");
        for n in &notes {
            say!("{n}");
        }
    }
    println!(
        "\n## airflow-keda-scaler performance ({} run, {:.0} s)\n\nMachine: {}\n",
        if mode.smoke { "smoke" } else { "full" },
        started.elapsed().as_secs_f64(),
        machine()
    );
    println!("{}", table(&rows));
    if failures.is_empty() {
        return ExitCode::SUCCESS;
    }
    for f in &failures {
        eprintln!("error: benchmark {f}");
    }
    ExitCode::FAILURE
}
