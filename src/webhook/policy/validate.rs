//! The validator: turns raw pieces into the compiled model, collecting every problem.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Toleration;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::{
    Action, AirflowPodSelector, GuardRails, NodeType, Policy, Problem, Resources, Rule, RuleMatch,
    Settings,
    consistency::placement_for,
    names::is_profile_name,
    raw::*,
    yaml::{self, Node},
};

fn join(prefix: &str, inner: &str) -> String {
    if inner == "." || inner.is_empty() {
        prefix.to_owned()
    } else if prefix == "." || prefix.is_empty() {
        inner.to_owned()
    } else if inner.starts_with('[') {
        format!("{prefix}{inner}")
    } else {
        format!("{prefix}.{inner}")
    }
}

/// Validation context: collects problems.
#[derive(Default)]
pub(super) struct Cx {
    pub(super) problems: Vec<Problem>,
}

impl Cx {
    pub(super) fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// One piece of the file as JSON; keys that are not scalars are problems.
    fn json(&mut self, path: &str, node: &Node) -> Value {
        let mut bad = Vec::new();
        let value = node.to_json(&mut |inner| bad.push(join(path, inner)));
        for at in bad {
            self.problem(at, "keys must be strings, numbers or booleans");
        }
        value
    }

    /// Deserializes one piece of the file, recording the error with its full path.
    fn piece<T: DeserializeOwned>(&mut self, path: &str, node: &Node) -> Option<T> {
        let value = self.json(path, node);
        self.piece_of(path, value)
    }

    fn piece_of<T: DeserializeOwned>(&mut self, path: &str, value: Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let msg = e.into_inner().to_string();
                self.problem(join(path, &inner), msg);
                None
            }
        }
    }

    /// Reads and checks the policy text; every problem found names its line.
    pub(super) fn policy(&mut self, text: &str) -> Option<Policy> {
        let root = match yaml::parse(text) {
            Ok(root) => root,
            Err(e) => {
                self.problem(".", format!("not valid YAML: {e}"));
                return None;
            }
        };
        let policy = self.policy_of(&root);
        self.add_lines(&root);
        policy
    }

    /// Appends the line each problem's path is written on (or the closest enclosing one).
    fn add_lines(&mut self, root: &Spanned<Node>) {
        for p in &mut self.problems {
            if let Some(at) = yaml::locate(root, &p.path) {
                p.message = format!("{} (line {})", p.message, at.line());
            }
        }
    }

    fn policy_of(&mut self, root: &Spanned<Node>) -> Option<Policy> {
        let entries: &[(Node, Spanned<Node>)] = match &root.value {
            Node::Map(entries) => entries,
            Node::Null => &[],
            _ => {
                self.problem(".", "a policy is a YAML mapping (airflowPods, defaults, nodeTypes, defaultNodeType, profiles, rules, guardRails)");
                return None;
            }
        };
        for (key, _) in entries {
            match key.key_text() {
                Some(k) if TOP_LEVEL_KEYS.contains(&k.as_str()) => {}
                Some(k) => self.problem(
                    k,
                    format!("unknown key; expected one of {}", TOP_LEVEL_KEYS.join(", ")),
                ),
                None => self.problem(".", "keys must be strings"),
            }
        }
        let take = |k: &str| {
            entries
                .iter()
                .find(|(key, _)| matches!(key, Node::Str(s) if s == k))
                .map(|(_, v)| &v.value)
                .filter(|v| !v.is_null())
        };

        let airflow_pods = match take("airflowPods") {
            Some(v) => self
                .piece::<SelectorSpec>("airflowPods", v)
                .map(|s| self.selector(s))
                .unwrap_or_default(),
            None => AirflowPodSelector::default(),
        };

        let defaults_raw = take("defaults").and_then(|v| self.piece::<DefaultsSpec>("defaults", v));
        let node_types_raw = self.named_pieces::<NodeTypeSpec>("nodeTypes", take("nodeTypes"));
        let default_node_type =
            take("defaultNodeType").and_then(|v| self.piece::<String>("defaultNodeType", v));
        let profiles_raw = self.named_pieces::<SettingsSpec>("profiles", take("profiles"));
        let rules_value = take("rules");
        let guard_value = take("guardRails");

        let mut node_types = BTreeMap::new();
        for (name, spec) in node_types_raw {
            let nt = self.node_type(&format!("nodeTypes.{name}"), &name, spec);
            node_types.insert(name, nt);
        }
        let names: BTreeSet<String> = node_types.keys().cloned().collect();
        if let Some(d) = &default_node_type {
            self.node_type_ref("defaultNodeType", d, &names);
        }

        let defaults = match defaults_raw.and_then(|d| d.resources) {
            Some(r) => self.resources("defaults.resources", r),
            None => Resources::builtin_defaults(),
        };
        self.limits_not_below_requests("defaults.resources", &defaults);
        if let Some(nt) = default_node_type.as_deref().and_then(|d| node_types.get(d)) {
            self.fits("defaults.resources", &defaults, nt);
        }

        let mut profiles = BTreeMap::new();
        for (name, spec) in profiles_raw {
            let path = format!("profiles.{name}");
            if !is_profile_name(&name) {
                self.problem(
                    &path,
                    "profile names use letters, digits, `-`, `_` and `.` (at most 63)",
                );
            }
            let s = self.settings(&path, spec, &names);
            // A profile placed on no node type of its own runs on the default node type (or,
            // when it asks for an extended resource the default lacks, where the webhook would
            // place it).
            let nt = match &s.node_type {
                Some(n) => node_types.get(n),
                None => default_node_type
                    .as_deref()
                    .and_then(|d| node_types.get(d))
                    .map(|d| placement_for(&s.resources, d, &node_types)),
            };
            if let Some(nt) = nt {
                self.fits(&format!("{path}.resources"), &s.resources, nt);
            }
            profiles.insert(name, s);
        }

        let mut rules = Vec::new();
        let mut rule_paths = Vec::new();
        if let Some(v) = rules_value {
            match v {
                Node::Seq(items) => {
                    let mut seen = BTreeSet::new();
                    for (i, item) in items.iter().enumerate() {
                        if let Some(r) = self.rule(&format!("rules[{i}]"), &item.value, &names) {
                            if let Some(nt) = r
                                .settings
                                .node_type
                                .as_deref()
                                .and_then(|n| node_types.get(n))
                            {
                                self.fits(
                                    &format!("rules[{i}].resources"),
                                    &r.settings.resources,
                                    nt,
                                );
                            }
                            if !seen.insert(r.name.clone()) {
                                self.problem(
                                    format!("rules[{i}].name"),
                                    format!("duplicate rule name `{}`", r.name),
                                );
                            }
                            rules.push(r);
                            rule_paths.push(format!("rules[{i}]"));
                        }
                    }
                }
                _ => self.problem("rules", "expected a list of rules"),
            }
        }

        let guard_raw = guard_value.and_then(|v| self.piece::<GuardRailsSpec>("guardRails", v));
        let guard_rails = match guard_raw {
            Some(g) => {
                let allowed_sidecars =
                    self.globs("guardRails.allowedSidecars", &g.allowed_sidecars);
                GuardRails {
                    sidecars: g.sidecars.unwrap_or(Action::Warn),
                    allowed_sidecars,
                    unknown_profile: g.unknown_profile.unwrap_or(Action::Deny),
                }
            }
            None => GuardRails::default(),
        };

        self.node_types_distinct(&node_types);
        self.rules_against_profiles(&rules, &rule_paths, &profiles, &node_types);
        self.temp_storages_consistent(&rules, &rule_paths, &profiles);
        let mut blocks: Vec<(String, &Settings)> = profiles
            .iter()
            .map(|(n, p)| (format!("profiles.{n}"), p))
            .collect();
        blocks.extend(
            rule_paths
                .iter()
                .cloned()
                .zip(rules.iter().map(|r| &r.settings)),
        );
        for (path, settings) in blocks {
            self.memory_temp_storage(&path, settings, &defaults);
        }

        Some(Policy {
            airflow_pods,
            defaults,
            node_types,
            default_node_type,
            profiles,
            rules,
            guard_rails,
        })
    }

    /// A mapping of name → piece, each deserialized on its own.
    fn named_pieces<T: DeserializeOwned>(
        &mut self,
        path: &str,
        value: Option<&Node>,
    ) -> Vec<(String, T)> {
        let Some(value) = value else {
            return Vec::new();
        };
        let Node::Map(map) = value else {
            self.problem(path, "expected a mapping of name: settings");
            return Vec::new();
        };
        let empty = Node::Map(Vec::new());
        let mut out = Vec::new();
        for (k, v) in map {
            let Some(name) = k.key_text() else {
                self.problem(path, "names must be strings");
                continue;
            };
            if name.trim().is_empty() {
                self.problem(path, "empty name");
                continue;
            }
            let item_path = format!("{path}.{name}");
            let v = if v.value.is_null() { &empty } else { &v.value };
            if let Some(t) = self.piece::<T>(&item_path, v) {
                out.push((name, t));
            }
        }
        out
    }

    fn selector(&mut self, s: SelectorSpec) -> AirflowPodSelector {
        let labels: BTreeMap<String, String> =
            s.labels.into_iter().map(|(k, v)| (k, v.0)).collect();
        for (k, v) in &labels {
            self.label_key(&format!("airflowPods.labels.{k}"), k);
            self.label_value(&format!("airflowPods.labels.{k}"), v);
        }
        for (i, k) in s.label_keys.iter().enumerate() {
            self.label_key(&format!("airflowPods.labelKeys[{i}]"), k);
        }
        for (i, k) in s.annotation_keys.iter().enumerate() {
            self.label_key(&format!("airflowPods.annotationKeys[{i}]"), k);
        }
        if labels.is_empty() && s.label_keys.is_empty() && s.annotation_keys.is_empty() {
            self.problem(
                "airflowPods",
                "no condition: set labels, labelKeys or annotationKeys (or remove airflowPods to use the built-in selector)",
            );
        }
        AirflowPodSelector {
            labels,
            label_keys: s.label_keys,
            annotation_keys: s.annotation_keys,
        }
    }

    fn node_type(&mut self, path: &str, name: &str, spec: NodeTypeSpec) -> NodeType {
        let mut allocatable = BTreeMap::new();
        for (res, q) in spec.allocatable {
            let p = format!("{path}.allocatable.{res}");
            self.resource_name(&p, &res);
            if let Some(q) = self.quantity(&p, &q.0) {
                allocatable.insert(res, q);
            }
        }
        let mut node_selector = BTreeMap::new();
        for (k, v) in spec.node_selector {
            let p = format!("{path}.nodeSelector.{k}");
            self.label_key(&p, &k);
            self.label_value(&p, &v.0);
            node_selector.insert(k, v.0);
        }
        for (i, t) in spec.tolerations.iter().enumerate() {
            self.toleration(&format!("{path}.tolerations[{i}]"), t);
        }
        if allocatable.is_empty() {
            self.problem(
                format!("{path}.allocatable"),
                "missing: without allocatable (at least cpu and memory, from `kubectl describe node`) no request can be checked against this node type",
            );
        }
        NodeType {
            name: name.to_owned(),
            allocatable,
            node_selector,
            tolerations: spec.tolerations,
        }
    }

    fn toleration(&mut self, path: &str, t: &Toleration) {
        let op = t.operator.as_deref().unwrap_or("Equal");
        match op {
            "Equal" => {
                if t.key.as_deref().unwrap_or("").is_empty() {
                    self.problem(format!("{path}.key"), "operator Equal needs a key");
                }
            }
            "Exists" => {
                if !t.value.as_deref().unwrap_or("").is_empty() {
                    self.problem(format!("{path}.value"), "operator Exists takes no value");
                }
            }
            other => self.problem(
                format!("{path}.operator"),
                format!("`{other}`: use Equal or Exists"),
            ),
        }
        if let Some(k) = t.key.as_deref().filter(|k| !k.is_empty()) {
            self.label_key(&format!("{path}.key"), k);
        }
        let effect = t.effect.as_deref().unwrap_or("");
        if !matches!(effect, "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            self.problem(
                format!("{path}.effect"),
                format!("`{effect}`: use NoSchedule, PreferNoSchedule or NoExecute"),
            );
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            self.problem(
                format!("{path}.tolerationSeconds"),
                "only valid with effect NoExecute",
            );
        }
    }

    pub(super) fn node_type_ref(&mut self, path: &str, name: &str, known: &BTreeSet<String>) {
        if !known.contains(name) {
            let list = if known.is_empty() {
                "none is defined under nodeTypes".to_owned()
            } else {
                format!(
                    "known: {}",
                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            self.problem(path, format!("unknown node type `{name}` ({list})"));
        }
    }

    fn rule(&mut self, path: &str, item: &Node, node_types: &BTreeSet<String>) -> Option<Rule> {
        let mut map = match self.json(path, item) {
            Value::Object(map) => map,
            _ => {
                self.problem(path, "a rule is a mapping with name, match and settings");
                return None;
            }
        };
        let name = match map.remove("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s,
            _ => {
                self.problem(format!("{path}.name"), "every rule needs a name");
                format!("#{}", path.trim_start_matches("rules"))
            }
        };
        let matcher = match map.remove("match").filter(|v| !v.is_null()) {
            Some(v) => self
                .piece_of::<MatchSpec>(&format!("{path}.match"), v)
                .map(|m| self.rule_match(&format!("{path}.match"), m))
                .unwrap_or_default(),
            None => RuleMatch::default(),
        };
        let settings = self
            .piece_of::<SettingsSpec>(path, Value::Object(map))
            .map(|s| self.settings(path, s, node_types))
            .unwrap_or_default();
        Some(Rule {
            name,
            matcher,
            settings,
        })
    }

    fn rule_match(&mut self, path: &str, m: MatchSpec) -> RuleMatch {
        let mut labels = Vec::new();
        for (k, v) in m.labels {
            let p = format!("{path}.labels.{k}");
            self.label_key(&p, &k);
            if let Some(g) = self.glob(&p, &v.0) {
                labels.push((k, g));
            }
        }
        RuleMatch {
            namespaces: self.globs(&format!("{path}.namespaces"), &m.namespaces),
            dag_ids: self.globs(&format!("{path}.dagIds"), &m.dag_ids),
            task_ids: self.globs(&format!("{path}.taskIds"), &m.task_ids),
            labels,
        }
    }
}
