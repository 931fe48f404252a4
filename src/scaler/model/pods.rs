//! Which worker pod runs which tasks, and the pod-deletion cost each worker pod should carry.
//!
//! Airflow records the worker of a running task in `task_instance.hostname`, from its
//! `[core] hostname_callable` (default `airflow.utils.net.getfqdn`). In a pod, `getfqdn()` gives
//! the pod's hostname, which the kubelet sets to the pod name (cut to 63 characters, trailing
//! `-` / `.` dropped), followed by a domain for pods with a subdomain (StatefulSet workers:
//! `airflow-worker-0.airflow-worker.airflow.svc.cluster.local`). Some installations set
//! `hostname_callable` to `airflow.utils.net.get_host_ip_address`: the pod IP. A Celery node
//! name (`celery@host`) is accepted too. So a hostname belongs to the pod whose name (as the
//! kubelet shortens it) equals its first DNS label, or whose IP equals it.
//!
//! The cost is the number of tasks running on the pod: the ReplicaSet controller removes pods
//! with a lower `controller.kubernetes.io/pod-deletion-cost` first, so idle workers go first.

use std::{collections::BTreeMap, net::IpAddr};

/// The annotation the ReplicaSet controller ranks pods by (int32, beta and on since 1.22).
pub const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Longest hostname the kubelet gives a pod (a DNS label).
const MAX_HOSTNAME: usize = 63;

/// What the scaler needs to know about one worker pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPod {
    pub name: String,
    /// `status.podIPs` (and `status.podIP`).
    pub ips: Vec<String>,
    /// The current value of [`DELETION_COST_ANNOTATION`], as written.
    pub deletion_cost: Option<String>,
    /// `Ready` condition true.
    pub ready: bool,
    /// `status.phase` (`Pending`, `Running`, ...).
    pub phase: String,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    /// The scheduler could not place it (`PodScheduled` false, reason `Unschedulable`): the
    /// condition's message.
    pub unschedulable: Option<String>,
}

/// The hostname the kubelet gives a pod named `pod`: the name cut to 63 characters, without
/// trailing `-` or `.`.
pub fn pod_hostname(pod: &str) -> &str {
    if pod.len() <= MAX_HOSTNAME {
        return pod;
    }
    let mut end = MAX_HOSTNAME;
    while !pod.is_char_boundary(end) {
        end -= 1;
    }
    pod[..end].trim_end_matches(['-', '.'])
}

/// How a `task_instance.hostname` value names a worker: a bare IP, or the first DNS label
/// (lowercase) of a host name. `None` for an empty value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKey {
    Ip(IpAddr),
    Name(String),
}

impl HostKey {
    pub fn parse(hostname: &str) -> Option<Self> {
        let host = hostname.trim();
        // A Celery node name, `celery@worker-0`.
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
            return Some(Self::Ip(ip));
        }
        let label = host.split('.').next().unwrap_or_default();
        (!label.is_empty()).then(|| Self::Name(label.to_ascii_lowercase()))
    }

    fn matches(&self, pod: &WorkerPod) -> bool {
        match self {
            Self::Ip(ip) => pod
                .ips
                .iter()
                .any(|p| p.parse::<IpAddr>().is_ok_and(|p| p == *ip)),
            Self::Name(label) => pod_hostname(&pod.name).eq_ignore_ascii_case(label),
        }
    }
}

/// Running tasks per pod: every hostname in `running_by_host` is matched to one of `pods`.
/// Returns the tasks of each pod (every pod listed, 0 when idle) and the tasks whose hostname
/// matched no pod (a worker outside this workload, or one already gone).
pub fn tasks_per_pod<'a>(
    pods: &'a [WorkerPod],
    running_by_host: &BTreeMap<&str, u64>,
) -> (BTreeMap<&'a str, u64>, u64) {
    let mut per_pod: BTreeMap<&str, u64> = pods.iter().map(|p| (p.name.as_str(), 0)).collect();
    let mut unmatched = 0u64;
    for (host, n) in running_by_host {
        let pod = HostKey::parse(host).and_then(|key| pods.iter().find(|p| key.matches(p)));
        match pod {
            Some(p) => {
                let slot = per_pod.entry(p.name.as_str()).or_default();
                *slot = slot.saturating_add(*n);
            }
            None => unmatched = unmatched.saturating_add(*n),
        }
    }
    (per_pod, unmatched)
}

/// The deletion cost for a pod running `tasks` tasks (the annotation is an int32).
pub fn cost_for(tasks: u64) -> i32 {
    i32::try_from(tasks).unwrap_or(i32::MAX)
}

/// One annotation to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostPatch {
    pub pod: String,
    pub cost: i32,
}

/// The patches that bring every pod's annotation to its task count, changed ones only. A pod
/// without the annotation counts as cost 0 (the controller's default), so idle pods that never
/// ran a task are not touched. Terminating pods are left alone. Busiest first: when the rate
/// bound holds some back, the pods that most need protection get it first.
pub fn cost_patches(pods: &[WorkerPod], per_pod: &BTreeMap<&str, u64>) -> Vec<CostPatch> {
    let mut out: Vec<CostPatch> = pods
        .iter()
        .filter(|p| !p.terminating)
        .filter_map(|p| {
            let cost = cost_for(per_pod.get(p.name.as_str()).copied().unwrap_or(0));
            let current = match p.deletion_cost.as_deref() {
                None => Some(0),
                Some(v) => v.trim().parse::<i32>().ok(),
            };
            (current != Some(cost)).then(|| CostPatch {
                pod: p.name.clone(),
                cost,
            })
        })
        .collect();
    out.sort_by(|a, b| b.cost.cmp(&a.cost).then_with(|| a.pod.cmp(&b.pod)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, cost: Option<&str>) -> WorkerPod {
        WorkerPod {
            name: name.into(),
            ips: vec![ip.into()],
            deletion_cost: cost.map(Into::into),
            ready: true,
            phase: "Running".into(),
            ..WorkerPod::default()
        }
    }

    #[test]
    fn hostnames_map_to_pods() {
        let long = format!("{}-7d9f8b6c5d-x2x4z", "w".repeat(62));
        // The kubelet cuts the hostname at 63 characters and drops the trailing '-'.
        let long_host = pod_hostname(&long).to_string();
        assert_eq!(long_host.len(), 62, "{long_host}");
        assert!(!long_host.ends_with('-'));
        let pods = [
            pod("airflow-worker-7d9f8b6c5d-abcde", "10.1.0.7", None),
            pod("airflow-worker-7d9f8b6c5d-fghij", "10.1.0.8", None),
            pod("airflow-worker-0", "fd00::9", None),
            pod(&long, "10.1.0.10", None),
        ];
        let cases: &[(&str, Option<&str>)] = &[
            // getfqdn() in a Deployment pod: the pod name.
            (
                "airflow-worker-7d9f8b6c5d-abcde",
                Some("airflow-worker-7d9f8b6c5d-abcde"),
            ),
            // With a search domain or a subdomain: the first label counts.
            (
                "airflow-worker-7d9f8b6c5d-fghij.airflow.svc.cluster.local",
                Some("airflow-worker-7d9f8b6c5d-fghij"),
            ),
            (
                "airflow-worker-0.airflow-worker.airflow.svc.cluster.local",
                Some("airflow-worker-0"),
            ),
            ("AIRFLOW-WORKER-0", Some("airflow-worker-0")),
            // hostname_callable = get_host_ip_address
            ("10.1.0.8", Some("airflow-worker-7d9f8b6c5d-fghij")),
            ("fd00::9", Some("airflow-worker-0")),
            // Celery node name.
            ("celery@airflow-worker-0", Some("airflow-worker-0")),
            (&long_host, Some(long.as_str())),
            ("airflow-worker-1", None),
            ("10.1.0.99", None),
            ("", None),
            // A prefix is not a match.
            ("airflow-worker", None),
        ];
        for (host, want) in cases {
            let got = HostKey::parse(host).and_then(|k| pods.iter().find(|p| k.matches(p)));
            assert_eq!(got.map(|p| p.name.as_str()), *want, "hostname {host:?}");
        }
    }

    #[test]
    fn tasks_are_summed_per_pod() {
        let pods = vec![pod("w-a", "10.0.0.1", None), pod("w-b", "10.0.0.2", None)];
        let running: BTreeMap<&str, u64> = [
            ("w-a", 2),
            ("w-a.airflow.svc.cluster.local", 1),
            ("10.0.0.2", 4),
            ("gone-worker", 5),
        ]
        .into_iter()
        .collect();
        let (per_pod, unmatched) = tasks_per_pod(&pods, &running);
        assert_eq!(
            per_pod.into_iter().collect::<Vec<_>>(),
            vec![("w-a", 3), ("w-b", 4)]
        );
        assert_eq!(unmatched, 5);
    }

    #[test]
    fn only_changed_costs_are_patched_busiest_first() {
        let mut terminating = pod("w-e", "10.0.0.5", Some("1"));
        terminating.terminating = true;
        let pods = vec![
            pod("w-a", "10.0.0.1", Some("3")), // unchanged
            pod("w-b", "10.0.0.2", None),      // idle, no annotation: nothing to do
            pod("w-c", "10.0.0.3", Some("2")), // finished its tasks: back to 0
            pod("w-d", "10.0.0.4", None),      // started 5 tasks
            pod("w-f", "10.0.0.6", Some("x")), // garbage is overwritten
            terminating,                       // on its way out: left alone
        ];
        let per_pod: BTreeMap<&str, u64> = [("w-a", 3), ("w-d", 5), ("w-e", 0), ("w-f", 1)]
            .into_iter()
            .collect();
        let patches = cost_patches(&pods, &per_pod);
        let got: Vec<_> = patches.iter().map(|p| (p.pod.as_str(), p.cost)).collect();
        assert_eq!(got, vec![("w-d", 5), ("w-f", 1), ("w-c", 0)]);
        assert_eq!(cost_for(u64::MAX), i32::MAX);
        assert_eq!(cost_for(7), 7);
    }
}
