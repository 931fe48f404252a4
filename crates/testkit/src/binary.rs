//! The real binary as a child process of an async test: a clean environment (no
//! `AIRFLOW_KEDA_SCALER_*` or `AIRFLOW__*` variables of the caller), stdout and stderr captured,
//! killed when dropped; and [`Serve`], the scaler's `serve` on free loopback ports.
//!
//! One copy for every test that runs the binary (proof_runtime, proof_secrets,
//! webhook_runtime); [`crate::process::Proc`] is the synchronous form the benchmarks use.

use std::{
    future::Future,
    net::SocketAddr,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use airflow_keda_scaler::scaler::grpc::proto::externalscaler::external_scaler_client::ExternalScalerClient;
use tokio::{io::AsyncReadExt as _, process::Command};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

use crate::{
    process::free_port,
    scaler::{WORKER_QUEUES, channel},
};

/// Bytes a pipe of the child wrote so far.
type Captured = Arc<Mutex<Vec<u8>>>;

/// Copies everything `pipe` gives into a buffer, in a task of its own.
fn capture(mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Captured {
    let buf = Captured::default();
    let sink = Arc::clone(&buf);
    tokio::spawn(async move {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

fn text(buf: &Captured) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// A command for `bin` with the caller's `AIRFLOW_KEDA_SCALER_*` / `AIRFLOW__*` variables
/// removed, stdin closed, stdout and stderr piped, killed on drop. With `nofile`, it runs under
/// `ulimit -n nofile` (through bash).
pub fn command(bin: &str, nofile: Option<u32>) -> Command {
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("bash");
            c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), bin]);
            c
        }
        None => Command::new(bin),
    };
    for (key, _) in std::env::vars() {
        if key.starts_with("AIRFLOW_KEDA_SCALER_") || key.starts_with("AIRFLOW__") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A running child with its output captured.
#[derive(Debug)]
pub struct Binary {
    child: tokio::process::Child,
    stdout: Captured,
    stderr: Captured,
}

impl Binary {
    /// Spawns `cmd` (normally from [`command`]); panics if it cannot start.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start the binary: {e}"));
        let stdout = child.stdout.take().map(capture).unwrap_or_default();
        let stderr = child.stderr.take().map(capture).unwrap_or_default();
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        text(&self.stderr)
    }

    /// What the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        text(&self.stdout)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process has exited")
    }

    /// Sends SIGTERM (what Kubernetes sends first).
    pub fn signal(&self) {
        let pid = self.pid().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for the child")
    }

    /// Waits at most `limit` for the exit (panics with stderr otherwise), then for the pipe
    /// readers to see the end of the output. Returns the status and how long the wait took.
    pub async fn exit_within(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for the child"),
            Err(_) => panic!("still running {limit:?} later:\n{}", self.stderr()),
        };
        let waited = started.elapsed();
        // The pipes close with the process; their readers finish right after.
        let drained = Instant::now();
        while Arc::strong_count(&self.stderr) > 1 || Arc::strong_count(&self.stdout) > 1 {
            if drained.elapsed() > Duration::from_secs(2) {
                break;
            }
            // Poll interval inside a 2 s deadline.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (status, waited)
    }

    /// CPU time (user + system) the process used so far.
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of stat(5) (utime, stime); `after_name` starts at field 3.
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        Duration::from_millis(ticks * 10)
    }

    /// The process's peak resident memory (`VmHWM`), KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }
}

/// Polls `condition` until it holds; panics after `limit` with `what` and `context()`.
pub async fn until<F, Fut>(
    what: &str,
    limit: Duration,
    context: impl Fn() -> String,
    mut condition: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}\n{}",
            context()
        );
        // Poll interval inside the deadline above.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `serve` on free loopback ports (gRPC, probe, admin) with the kit's worker-queue file.
#[derive(Debug)]
pub struct Serve {
    /// The process.
    pub process: Binary,
    /// The gRPC port.
    pub grpc: SocketAddr,
    /// The plaintext probe port.
    pub probe: SocketAddr,
    /// The admin HTTP port (`/livez`, `/readyz`, `/metrics`).
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Serve {
    /// Starts `bin serve` with the ports, `--worker-queues` and `--log debug`, then `args`
    /// (the database URL among them, or in `env`), and waits until `/livez` answers. A start
    /// that lost a port to another process meanwhile is retried on new ports.
    pub async fn start(
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
        nofile: Option<u32>,
    ) -> Self {
        for _ in 0..3 {
            if let Some(serve) = Self::try_start(bin, args, env, nofile).await {
                return serve;
            }
        }
        panic!("the scaler did not start on free ports three times");
    }

    async fn try_start(
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
        nofile: Option<u32>,
    ) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let queues = dir.path().join("worker-queues.yaml");
        std::fs::write(&queues, WORKER_QUEUES).expect("write the worker-queue file");
        let port = || SocketAddr::from(([127, 0, 0, 1], free_port()));
        let (grpc, probe, admin) = (port(), port(), port());
        let mut cmd = command(bin, nofile);
        cmd.args(["serve", "--log", "debug"])
            .args(["--grpc-addr", &grpc.to_string()])
            .args(["--probe-addr", &probe.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .arg("--worker-queues")
            .arg(&queues)
            .args(args)
            .envs(env.iter().copied());
        let mut serve = Self {
            process: Binary::spawn(cmd),
            grpc,
            probe,
            admin,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = serve.process.exited() {
                let (_, _) = serve.process.exit_within(Duration::from_secs(1)).await;
                let log = serve.stderr();
                assert!(
                    log.contains("cannot listen"),
                    "the scaler exited ({status}) at start:\n{log}"
                );
                return None;
            }
            if serve.get("/livez").await.is_some_and(|(s, _)| s == 200) {
                return Some(serve);
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "/livez did not answer within 15 s:\n{}",
                serve.stderr()
            );
            // Poll interval inside the 15 s deadline above.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// What `serve` wrote to stderr (its log) so far.
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    /// What `serve` wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.process.stdout()
    }

    /// `GET path` on the admin port: status and body, `None` if the connection failed.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        self.get_with(path, None).await.map(|(s, _, b)| (s, b))
    }

    /// `GET path` with an `Accept` header: status, content type, body.
    pub async fn get_with(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> Option<(u16, String, String)> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        let mut request = client.get(format!("http://{}{path}", self.admin));
        if let Some(a) = accept {
            request = request.header("accept", a);
        }
        let r = request.send().await.ok()?;
        let status = r.status().as_u16();
        let ctype = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Some((status, ctype, r.text().await.ok()?))
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.expect("/metrics answers").1
    }

    /// Waits (15 s at most) until a line of `/metrics` starts with `needle`; returns the text.
    pub async fn wait_metrics(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let text = self
                .get("/metrics")
                .await
                .map(|(_, t)| t)
                .unwrap_or_default();
            if text.lines().any(|l| l.starts_with(needle)) {
                return text;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "/metrics never showed {needle:?}:\n{text}\n{}",
                self.stderr()
            );
            // Poll interval inside the 15 s deadline above.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `condition` until it holds, at most `limit`; panics with the log otherwise.
    pub async fn until<F, Fut>(&self, what: &str, limit: Duration, condition: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        until(what, limit, || self.stderr(), condition).await;
    }

    /// An `ExternalScaler` client on the gRPC port.
    pub async fn client(&self) -> ExternalScalerClient<Channel> {
        ExternalScalerClient::new(channel(self.grpc).await)
    }

    /// A health client on the probe port.
    pub async fn probe(&self) -> HealthClient<Channel> {
        HealthClient::new(channel(self.probe).await)
    }

    /// Sends SIGTERM.
    pub fn signal(&self) {
        self.process.signal();
    }

    /// See [`Binary::exit_within`].
    pub async fn exit_within(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        self.process.exit_within(limit).await
    }
}
