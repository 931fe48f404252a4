//! Pod-override admission webhook for Airflow KubernetesExecutor task pods.
//!
//! Cluster admins describe in a policy file what task pods get (default resources, profiles a
//! task opts into, rules by namespace / dag / task, worker node types, temp storage) and what
//! is refused (requests above the node type, limits below requests, sidecars). The webhook
//! applies it to every KubernetesExecutor pod at creation as a minimal, idempotent JSONPatch.
//! See `docs/webhook.md` for the user-facing reference.
//!
//! Layers, each with its own error type where it can fail:
//! - [`quantity`]: Kubernetes quantities, exact.
//! - [`policy`]: the policy file, its model and validation.
//! - [`matching`]: which pods are Airflow task pods, which profile and rules apply.
//! - [`placement`]: which worker node type a pod runs on.
//! - [`mutate`]: applying settings to a pod (pure).
//! - [`guard`]: guard rails on the mutated pod.
//! - [`warning`]: what is warned about, by kind, and where warnings go.
//! - [`review`]: one AdmissionReview in, one response out (pure), with the JSONPatch.
//! - [`metrics`], [`server`]: Prometheus metrics, the HTTPS server and the admin view (over
//!   [`crate::runtime`]'s TLS acceptor, reloading and admin server).
//! - [`commands`]: the offline admin commands (`validate-policy`, `mutate`).

pub mod commands;
pub mod guard;
pub mod matching;
pub mod metrics;
pub mod mutate;
pub mod placement;
pub mod policy;
pub mod quantity;
pub mod review;
pub mod server;
pub mod warning;

pub use server::{WebhookConfig, run};
