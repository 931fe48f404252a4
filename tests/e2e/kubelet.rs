//! A stand-in for the kubelet and kube-proxy, just enough to run a chart's Deployment as a local
//! process: the container's args and env as the API server holds them, its ConfigMap / Secret
//! volumes written to files (paths in args and env rewritten to them), and its listen addresses
//! `0.0.0.0:<containerPort>` rewritten to `<address>:<Service port>` — the Service's ClusterIP, or
//! for a headless Service the "pod IP" its DNS name resolves to.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Container, Secret, Service, Volume},
};
use kube::{Api, Client};

use crate::cluster::{eventually, run_dir};

/// The product's binary (the image's entrypoint).
pub const PRODUCT: &str = env!("CARGO_BIN_EXE_airflow-keda-scaler");

/// A running process; killed when dropped.
pub struct Process {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    /// The addresses it listens on (after rewriting).
    pub listen: Vec<SocketAddr>,
}

impl Process {
    /// The last `n` lines of its log.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops it (SIGKILL: the API server and KEDA see a vanished endpoint).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until every listen address accepts connections.
    pub async fn wait_listening(&mut self) {
        for addr in self.listen.clone() {
            let what = format!("{} listening on {addr}", self.name);
            eventually(&what, Duration::from_secs(30), || {
                let exited = self.child.try_wait().ok().flatten();
                let tail = self.tail(20);
                let what = what.clone();
                async move {
                    if let Some(status) = exited {
                        panic!("{what}: exited with {status}:\n{tail}");
                    }
                    tokio::net::TcpStream::connect(addr)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            })
            .await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the first container of Deployment `ns/name` (as stored in the API server), reachable
/// at `address` through `service` (its port mapping; `None`: container ports as they are).
pub async fn run_deployment(
    client: &Client,
    ns: &str,
    name: &str,
    address: &str,
    service: Option<&Service>,
) -> Process {
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Deployment {ns}/{name}: {e}"));
    let pod = deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod template");
    let container = pod.containers.first().expect("a container").clone();
    let dir = run_dir().join("pods").join(format!("{ns}.{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("pod directory");

    // Volumes -> directories; mount paths -> those directories.
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for volume in pod.volumes.unwrap_or_default() {
        let vdir = dir.join("volumes").join(&volume.name);
        write_volume(client, ns, &volume, &vdir).await;
        for m in container.volume_mounts.iter().flatten() {
            if m.name == volume.name {
                let mut target = vdir.clone();
                if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    target = target.join(sub);
                }
                mounts.push((m.mount_path.clone(), target));
            }
        }
    }
    mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let map_path = |s: &str| -> String {
        for (mount, local) in &mounts {
            if let Some(rest) = s.strip_prefix(mount.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{}{rest}", local.display());
            }
        }
        s.to_string()
    };

    let ports = port_map(&container, service);
    let mut listen = Vec::new();
    let args: Vec<String> = container
        .args
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            if let Some(port) = a.strip_prefix("0.0.0.0:") {
                let port: u16 = port.parse().expect("numeric port");
                let port = ports.get(&port).copied().unwrap_or(port);
                let addr: SocketAddr = format!("{address}:{port}").parse().expect("address");
                listen.push(addr);
                addr.to_string()
            } else {
                map_path(a)
            }
        })
        .collect();

    let mut command = Command::new(PRODUCT);
    command.args(&args).env_remove("RUST_LOG");
    for e in container.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            map_path(v)
        } else if let Some(from) = &e.value_from {
            if let Some(r) = &from.secret_key_ref {
                let secret = Api::<Secret>::namespaced(client.clone(), ns)
                    .get(&r.name)
                    .await
                    .expect("env Secret");
                let bytes = secret
                    .data
                    .and_then(|d| d.get(&r.key).cloned())
                    .expect("env Secret key");
                String::from_utf8(bytes.0).expect("UTF-8 env value")
            } else if let Some(r) = &from.config_map_key_ref {
                let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
                    .get(&r.name)
                    .await
                    .expect("env ConfigMap");
                cm.data
                    .and_then(|d| d.get(&r.key).cloned())
                    .expect("env ConfigMap key")
            } else {
                continue; // fieldRef / resourceFieldRef: nothing the product reads
            }
        } else {
            String::new()
        };
        command.env(&e.name, value);
    }
    let process_name = format!("{ns}.{name}");
    let log = run_dir().join("logs").join(format!("{process_name}.log"));
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start the product");
    Process {
        name: process_name,
        child,
        log,
        listen,
    }
}

/// containerPort -> Service port.
fn port_map(container: &Container, service: Option<&Service>) -> BTreeMap<u16, u16> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let mut map = BTreeMap::new();
    let Some(spec) = service.and_then(|s| s.spec.as_ref()) else {
        return map;
    };
    for p in spec.ports.iter().flatten() {
        let target = match &p.target_port {
            Some(IntOrString::Int(n)) => *n,
            Some(IntOrString::String(name)) => container
                .ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name))
                .map(|cp| cp.container_port)
                .unwrap_or(p.port),
            None => p.port,
        };
        map.insert(target as u16, p.port as u16);
    }
    map
}

/// (key, path) pairs of a volume source's `items`.
type Items = Vec<(String, String)>;

async fn write_volume(client: &Client, ns: &str, volume: &Volume, dir: &Path) {
    std::fs::create_dir_all(dir).expect("volume directory");
    let mut sources: Vec<(Option<String>, Option<String>, Option<Items>)> = Vec::new();
    let items = |i: &Option<Vec<k8s_openapi::api::core::v1::KeyToPath>>| {
        i.as_ref()
            .map(|v| v.iter().map(|k| (k.key.clone(), k.path.clone())).collect())
    };
    if let Some(p) = &volume.projected {
        for s in p.sources.iter().flatten() {
            if let Some(cm) = &s.config_map {
                sources.push((Some(cm.name.clone()), None, items(&cm.items)));
            }
            if let Some(sec) = &s.secret {
                sources.push((None, Some(sec.name.clone()), items(&sec.items)));
            }
        }
    }
    if let Some(cm) = &volume.config_map {
        sources.push((Some(cm.name.clone()), None, items(&cm.items)));
    }
    if let Some(sec) = &volume.secret {
        sources.push((None, sec.secret_name.clone(), items(&sec.items)));
    }
    for (cm, secret, items) in sources {
        let data: BTreeMap<String, Vec<u8>> = if let Some(name) = cm {
            let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get(&name)
                .await
                .unwrap_or_else(|e| panic!("ConfigMap {ns}/{name}: {e}"));
            cm.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect()
        } else if let Some(name) = secret {
            let s = Api::<Secret>::namespaced(client.clone(), ns)
                .get(&name)
                .await
                .unwrap_or_else(|e| panic!("Secret {ns}/{name}: {e}"));
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        } else {
            continue;
        };
        let files: Vec<(String, String)> =
            items.unwrap_or_else(|| data.keys().map(|k| (k.clone(), k.clone())).collect());
        for (key, path) in files {
            let bytes = data
                .get(&key)
                .unwrap_or_else(|| panic!("volume {}: key {key} missing", volume.name));
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("volume subdirectory");
            std::fs::write(&file, bytes).expect("volume file");
        }
    }
}

/// The Service's ClusterIP once the API server has allocated it.
pub async fn cluster_ip(client: &Client, ns: &str, name: &str) -> (Service, String) {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("ClusterIP of Service {ns}/{name}"),
        Duration::from_secs(10),
        || async {
            let svc = services.get(name).await.map_err(|e| e.to_string())?;
            let ip = svc
                .spec
                .as_ref()
                .and_then(|s| s.cluster_ip.clone())
                .ok_or("none yet")?;
            Ok((svc, ip))
        },
    )
    .await
}
