//! The scaler behind a real PgBouncer in transaction pooling mode (Debian's `pgbouncer`, which
//! `.ci/run` installs; 1.18 has no prepared-statement support in transaction mode, like many
//! production deployments). Every refresh must work while three scalers share one server
//! connection, with and without `--pgbouncer`. (With sqlx's prepared statements this failed:
//! `prepared statement "sqlx_s_1" already exists` with the statement cache on, and rows of one
//! client's statement answered to another's — a panic inside sqlx — with it off. The scaler
//! therefore sends its constant queries with the simple query protocol.)

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use airflow_keda_scaler::{
    scaler::db::MetadataDb,
    scaler::snapshot::{Selector, Snapshot},
};
use testkit::airflow::{AirflowVersion, FixtureRow};
use testkit::{db::TestDb, scaler::create, scaler::db_config};

/// A PgBouncer process on a free loopback port, stopped on drop.
struct PgBouncer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

fn pgbouncer_binary() -> PathBuf {
    for p in ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("pgbouncer is not installed (apt-get install pgbouncer; .ci/run does it)");
}

impl PgBouncer {
    fn start(db: &TestDb) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let pg = db.addr();
        let config = format!(
            "[databases]\n\
             {name} = host={host} port={pgport} dbname={name} user=postgres\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = any\n\
             pool_mode = transaction\n\
             default_pool_size = 1\n\
             max_client_conn = 20\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {log}\n",
            name = db.name(),
            host = pg.ip(),
            pgport = pg.port(),
            log = dir.path().join("pgbouncer.log").display(),
        );
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(&ini, config).unwrap();
        // PgBouncer refuses to run as root; let it switch to `postgres` when we are root.
        let mut cmd = Command::new(pgbouncer_binary());
        if std::env::var("USER").as_deref() == Ok("root")
            || Command::new("id")
                .arg("-u")
                .output()
                .map(|o| o.stdout.starts_with(b"0"))
                .unwrap_or(false)
        {
            Command::new("chmod")
                .args(["-R", "a+rwx", dir.path().to_str().unwrap()])
                .status()
                .unwrap();
            cmd.args(["-u", "postgres"]);
        }
        let child = cmd.arg(&ini).spawn().unwrap();
        // Owned from here on: dropped (killed and reaped) whatever happens next.
        let bouncer = Self {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return bouncer;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pgbouncer did not start");
    }

    fn url(&self, db: &TestDb) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, db.name())
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn refreshes_work_behind_pgbouncer_transaction_pooling() {
    let db = TestDb::postgres().await;
    let rows: Vec<FixtureRow> = (0..7)
        .map(|i| FixtureRow::new("d", &format!("t{i}"), "r", Some("queued"), "default"))
        .collect();
    create(&db, AirflowVersion::V3, &rows).await;
    let bouncer = PgBouncer::start(&db);

    let selector = Selector {
        queues: vec!["default".into()],
        executor_names: vec!["CeleryExecutor".into()],
        celery_is_default: true,
    };
    let mut tasks = Vec::new();
    for pgbouncer in [true, false, true] {
        let mut args = db_config(&bouncer.url(&db));
        args.pgbouncer = pgbouncer;
        let db = MetadataDb::connect(&args).await.unwrap();
        let selector = selector.clone();
        tasks.push(tokio::spawn(async move {
            let mut totals = Vec::new();
            for _ in 0..40 {
                let schema = db.detect_schema().await.unwrap();
                let counts = db.read_counts(schema).await.unwrap();
                totals.push(Snapshot::new(schema, counts).demand(&selector).total());
            }
            totals
        }));
    }
    for t in tasks {
        let totals = t.await.unwrap();
        assert!(totals.iter().all(|&n| n == 7), "{totals:?}");
    }
}
