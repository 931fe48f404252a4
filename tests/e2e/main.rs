//! End-to-end scenarios against a real control plane: etcd, kube-apiserver,
//! kube-controller-manager, the KEDA operator and KEDA's metrics apiserver, built from their Go
//! modules and started by `.ci/e2e` inside a network namespace (README, "Tested against a real
//! control plane"). Every test is `#[ignore]`d: plain `cargo test` has no cluster; `.ci/e2e`
//! runs each one with `--ignored --exact` and prints `e2e <ID> <name>: ok | FAILED <why>`.
//! All API calls go through the `kube` client.

mod bootstrap;
mod chart;
mod cluster;
mod kubelet;
mod scaling;
mod webhook;
mod workers;

/// Not a scenario: KEDA's CRDs, namespace, Services and APIService, before KEDA starts.
#[tokio::test]
#[ignore = "needs the control plane: run .ci/e2e"]
async fn e0_bootstrap() {
    bootstrap::run().await;
}

/// Not a scenario: KEDA's certificates from its Secret to files (what a Secret volume does).
#[tokio::test]
#[ignore = "needs the control plane: run .ci/e2e"]
async fn e0_keda_certs() {
    bootstrap::mount_keda_certs().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run .ci/e2e"]
async fn e1_chart_install_upgrade_uninstall() {
    chart::install_upgrade_uninstall().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run .ci/e2e"]
async fn e2_keda_drives_hpa_external() {
    scaling::keda_drives_hpa("external", "e2-external", "10.244.0.20").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run .ci/e2e"]
async fn e2_keda_drives_hpa_external_push() {
    scaling::keda_drives_hpa("external-push", "e2-external-push", "10.244.0.21").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run .ci/e2e"]
async fn e3_mtls_trigger_authentication() {
    scaling::mtls().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run .ci/e2e"]
async fn e3_wrong_client_cert_refused() {
    scaling::wrong_client_cert().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run .ci/e2e"]
async fn e4_db_outage_keeps_replicas() {
    scaling::db_outage(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run .ci/e2e"]
async fn e4_db_outage_fallback_replicas() {
    scaling::db_outage(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run .ci/e2e"]
async fn e5_webhook_mutates_airflow_pods() {
    webhook::mutates_airflow_pods().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run .ci/e2e"]
async fn e5_webhook_refuses_oversize_pod() {
    webhook::refuses_oversize_pod().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run .ci/e2e"]
async fn e5_webhook_down_fails_open() {
    webhook::down_fails_open().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run .ci/e2e"]
async fn e5_webhook_reinvocation() {
    webhook::reinvocation().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run .ci/e2e"]
async fn e6_idle_workers_go_first() {
    workers::idle_workers_go_first().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run .ci/e2e"]
async fn e7_drift_names_its_cause() {
    workers::drift_names_its_cause().await;
}
