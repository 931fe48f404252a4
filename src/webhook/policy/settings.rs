//! Checks of a settings block (a profile or a rule): resources, node type, temp storage, env,
//! labels, annotations, priority class.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    AIRFLOW_ANNOTATIONS, AIRFLOW_LABELS, AIRFLOW_POD_ENV, APPLIED_ANNOTATION, DEFAULT_TEMP_VOLUME,
    NodeType, PROFILE_ANNOTATION, Resources, Settings, TempStorage, WARNINGS_ANNOTATION,
    WORKLOAD_MOUNT_PATH, WORKLOAD_VOLUME,
    names::{is_dns_label, is_dns_subdomain, is_env_name},
    raw::{ResourcesSpec, SettingsSpec, TempStorageSpec},
    validate::Cx,
};

impl Cx {
    pub(super) fn resources(&mut self, path: &str, r: ResourcesSpec) -> Resources {
        let mut out = Resources::default();
        for (kind, src, dst) in [
            ("requests", r.requests, &mut out.requests),
            ("limits", r.limits, &mut out.limits),
        ] {
            for (res, q) in src {
                let p = format!("{path}.{kind}.{res}");
                self.resource_name(&p, &res);
                if let Some(q) = self.quantity(&p, &q.0) {
                    dst.insert(res, q);
                }
            }
        }
        for (res, req) in &out.requests {
            let extended = res.contains('/') || res.starts_with("hugepages-");
            if let Some(lim) = out.limits.get(res).filter(|l| extended && *l != req) {
                self.problem(
                    format!("{path}.limits.{res}"),
                    format!("{res} cannot be overcommitted: its limit ({lim}) must equal its request ({req})"),
                );
            }
        }
        out
    }

    pub(super) fn limits_not_below_requests(&mut self, path: &str, r: &Resources) {
        for (res, req) in &r.requests {
            if let Some(lim) = r.limits.get(res).filter(|l| *l < req) {
                self.problem(
                    format!("{path}.limits.{res}"),
                    format!("limit {lim} is below the request {req}"),
                );
            }
        }
    }

    pub(super) fn fits(&mut self, path: &str, r: &Resources, nt: &NodeType) {
        for (res, req) in &r.requests {
            let Some(offer) = nt.offers(res).filter(|o| req > o) else {
                continue;
            };
            let what = if offer.nanos() == 0 {
                format!(
                    "{} of {res}, but node type `{}` offers none",
                    req.human(res),
                    nt.name
                )
            } else {
                format!(
                    "{} is more than node type `{}` offers ({})",
                    req.human(res),
                    nt.name,
                    offer.human(res)
                )
            };
            self.problem(
                format!("{path}.requests.{res}"),
                format!("{what}: every pod given it would be denied"),
            );
        }
    }

    pub(super) fn settings(
        &mut self,
        path: &str,
        s: SettingsSpec,
        node_types: &BTreeSet<String>,
    ) -> Settings {
        let resources = match s.resources {
            Some(r) => self.resources(&format!("{path}.resources"), r),
            None => Resources::default(),
        };
        self.limits_not_below_requests(&format!("{path}.resources"), &resources);
        if let Some(nt) = &s.node_type {
            self.node_type_ref(&format!("{path}.nodeType"), nt, node_types);
        }
        let temp_storage = s
            .temp_storage
            .map(|t| self.temp_storage(&format!("{path}.tempStorage"), t));
        let mut env = BTreeMap::new();
        for (k, v) in s.env {
            let p = format!("{path}.env.{k}");
            if !is_env_name(&k) {
                self.problem(&p, "environment variable names use letters, digits, `_`, `-` and `.`, and do not start with a digit");
            }
            if k == AIRFLOW_POD_ENV {
                self.problem(
                    &p,
                    format!("{AIRFLOW_POD_ENV} is set by Airflow and must not be changed"),
                );
            }
            env.insert(k, v.0);
        }
        let mut labels = BTreeMap::new();
        for (k, v) in s.labels {
            let p = format!("{path}.labels.{k}");
            self.label_key(&p, &k);
            self.label_value(&p, &v.0);
            if AIRFLOW_LABELS.contains(&k.as_str()) {
                self.problem(&p, "this label is set by Airflow's executor, which finds its pods by it: do not change it");
            }
            labels.insert(k, v.0);
        }
        let mut annotations = BTreeMap::new();
        for (k, v) in s.annotations {
            let p = format!("{path}.annotations.{k}");
            self.label_key(&p, &k);
            if AIRFLOW_ANNOTATIONS.contains(&k.as_str()) {
                self.problem(
                    &p,
                    "this annotation is set by Airflow's executor: do not change it",
                );
            }
            if [PROFILE_ANNOTATION, APPLIED_ANNOTATION, WARNINGS_ANNOTATION].contains(&k.as_str()) {
                self.problem(&p, "this annotation belongs to the webhook itself");
            }
            annotations.insert(k, v.0);
        }
        if let Some(pc) = &s.priority_class_name
            && !is_dns_subdomain(pc)
        {
            self.problem(
                format!("{path}.priorityClassName"),
                "a PriorityClass name is a DNS subdomain (lowercase letters, digits, `-`, `.`)",
            );
        }
        Settings {
            resources,
            node_type: s.node_type,
            temp_storage,
            env,
            labels,
            annotations,
            priority_class_name: s.priority_class_name,
        }
    }

    fn temp_storage(&mut self, path: &str, t: TempStorageSpec) -> TempStorage {
        if !t.path.starts_with('/') {
            self.problem(format!("{path}.path"), "the mount path must be absolute");
        }
        if t.path.split('/').any(|c| c == "..") {
            self.problem(
                format!("{path}.path"),
                "the mount path must not contain `..`",
            );
        }
        let norm = t.path.trim_end_matches('/');
        let workload = WORKLOAD_MOUNT_PATH;
        if norm == workload
            || norm.starts_with(&format!("{workload}/"))
            || workload.starts_with(&format!("{norm}/"))
            || norm.is_empty()
        {
            self.problem(
                format!("{path}.path"),
                format!("overlaps Airflow 3's workload mount {workload}: pick another path"),
            );
        }
        let size_limit = t
            .size_limit
            .and_then(|q| self.quantity(&format!("{path}.sizeLimit"), &q.0));
        let medium = t.medium.filter(|m| !m.is_empty());
        if let Some(m) = medium.as_deref()
            && m != "Memory"
        {
            self.problem(
                format!("{path}.medium"),
                format!("`{m}`: use `Memory` (tmpfs) or leave it out (node disk)"),
            );
        }
        let volume_name = t
            .volume_name
            .unwrap_or_else(|| DEFAULT_TEMP_VOLUME.to_owned());
        if !is_dns_label(&volume_name) {
            self.problem(
                format!("{path}.volumeName"),
                "a volume name is a DNS label (lowercase letters, digits and `-`, at most 63)",
            );
        }
        if volume_name == WORKLOAD_VOLUME {
            self.problem(
                format!("{path}.volumeName"),
                format!("`{WORKLOAD_VOLUME}` is Airflow 3's workload volume"),
            );
        }
        TempStorage {
            path: t.path,
            size_limit,
            medium,
            volume_name,
        }
    }
}
