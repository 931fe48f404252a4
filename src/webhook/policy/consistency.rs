//! Checks across the pieces of a policy: combinations that parse but would break pods at run
//! time (a rule's node type that cannot hold a profile's pods, two node types a pod cannot tell
//! apart, temp storages that collide, a tmpfs larger than the memory limit).

use std::collections::BTreeMap;

use super::{NodeType, Resources, Rule, Settings, TempStorage, is_special_resource, validate::Cx};
use crate::webhook::quantity::Quantity;

/// Where the webhook places a pod with these resources that nothing else places: the default
/// node type, unless it lacks an extended resource (or hugepages) they request and another
/// node type (the first by name) offers enough of all of them (as
/// [`crate::webhook::matching::choose_node_type`] does).
pub(super) fn placement_for<'a>(
    resources: &Resources,
    default: &'a NodeType,
    node_types: &'a BTreeMap<String, NodeType>,
) -> &'a NodeType {
    let special: Vec<(&String, &Quantity)> = resources
        .requests
        .iter()
        .filter(|(r, q)| is_special_resource(r) && q.nanos() > 0)
        .collect();
    let has_all = |nt: &NodeType| {
        special
            .iter()
            .all(|(r, q)| nt.offers(r).is_some_and(|o| o >= **q))
    };
    if has_all(default) {
        return default;
    }
    node_types
        .values()
        .find(|nt| has_all(nt))
        .unwrap_or(default)
}

fn describe(t: &TempStorage) -> String {
    let mut s = t.path.clone();
    if let Some(q) = &t.size_limit {
        s.push_str(&format!(", {q}"));
    }
    if let Some(m) = &t.medium {
        s.push_str(&format!(", {m}"));
    }
    s
}

impl Cx {
    /// Two node types with the same nodeSelector: a pod's own selector cannot name one of them.
    pub(super) fn node_types_distinct(&mut self, node_types: &BTreeMap<String, NodeType>) {
        let all: Vec<&NodeType> = node_types.values().collect();
        for (i, nt) in all.iter().enumerate() {
            let twin = all[..i]
                .iter()
                .find(|o| !nt.node_selector.is_empty() && o.node_selector == nt.node_selector);
            if let Some(twin) = twin {
                self.problem(
                    format!("nodeTypes.{}.nodeSelector", nt.name),
                    format!(
                        "the same nodeSelector as node type `{}`: pods placed on one could land on the other; add the label that tells them apart",
                        twin.name
                    ),
                );
            }
        }
    }

    /// Rules win over profiles: a rule's node type must hold the pods of every profile (with
    /// the rule's own resources on top), and a rule's resources must fit the node type of every
    /// profile it leaves in place; a task with both would otherwise always be denied.
    pub(super) fn rules_against_profiles(
        &mut self,
        rules: &[Rule],
        rule_paths: &[String],
        profiles: &BTreeMap<String, Settings>,
        node_types: &BTreeMap<String, NodeType>,
    ) {
        for (rule, path) in rules.iter().zip(rule_paths) {
            let own = rule.settings.node_type.as_deref();
            for (name, profile) in profiles {
                let theirs = profile.node_type.as_deref();
                let same_place = own.is_none() || own == theirs;
                if same_place && rule.settings.resources.requests.is_empty() {
                    continue;
                }
                let Some(nt) = own.or(theirs).and_then(|n| node_types.get(n)) else {
                    continue;
                };
                let mut requests = profile.resources.requests.clone();
                requests.extend(rule.settings.resources.requests.clone());
                let too_much: Vec<String> = requests
                    .iter()
                    .filter_map(|(res, q)| {
                        let offer = nt.offers(res).filter(|o| q > o)?;
                        Some(format!(
                            "{} of {res} where it offers {}",
                            q.human(res),
                            if offer.nanos() == 0 {
                                "none".to_owned()
                            } else {
                                offer.human(res)
                            }
                        ))
                    })
                    .collect();
                if too_much.is_empty() {
                    continue;
                }
                let (at, what) = match own {
                    Some(_) => (
                        format!("{path}.nodeType"),
                        format!(
                            "rule `{}` moves tasks to node type `{}`",
                            rule.name, nt.name
                        ),
                    ),
                    None => (
                        format!("{path}.resources"),
                        format!(
                            "rule `{}` adds resources that profile `{name}`'s node type `{}` cannot hold",
                            rule.name, nt.name
                        ),
                    ),
                };
                self.problem(
                    at,
                    format!(
                        "{what}, but tasks with profile `{name}` (placed on {}) would ask {}: every one of them this rule matches would be denied; narrow the rule's match or make the two agree",
                        theirs.map_or("the default node type".to_owned(), |n| format!("`{n}`")),
                        too_much.join(" and ")
                    ),
                );
            }
        }
    }

    /// Temp storages that can meet on one pod (a profile and a rule, or two rules) merge by
    /// volume name: two different ones with one name would silently replace each other, and
    /// two volumes cannot be mounted at one path.
    pub(super) fn temp_storages_consistent(
        &mut self,
        rules: &[Rule],
        rule_paths: &[String],
        profiles: &BTreeMap<String, Settings>,
    ) {
        let mut earlier: Vec<(String, &TempStorage)> = profiles
            .iter()
            .filter_map(|(n, p)| Some((format!("profile `{n}`"), p.temp_storage.as_ref()?)))
            .collect();
        for (rule, path) in rules.iter().zip(rule_paths) {
            let Some(t) = &rule.settings.temp_storage else {
                continue;
            };
            for (who, other) in &earlier {
                let same_path = t.path.trim_end_matches('/') == other.path.trim_end_matches('/');
                if t.volume_name == other.volume_name && *t != **other {
                    self.problem(
                        format!("{path}.tempStorage.volumeName"),
                        format!(
                            "volume `{}` is also the temp storage of {who} ({}): a task with both would get only this one ({}) and lose the other, with whatever points at it (TMPDIR); give this one a volumeName of its own, or make them the same",
                            t.volume_name,
                            describe(other),
                            describe(t)
                        ),
                    );
                } else if t.volume_name != other.volume_name && same_path {
                    self.problem(
                        format!("{path}.tempStorage.path"),
                        format!(
                            "{} is also where {who} mounts its temp storage (volume `{}`): one path cannot hold two volumes; use another path or the same volumeName",
                            t.path, other.volume_name
                        ),
                    );
                }
            }
            earlier.push((format!("rule `{}`", rule.name), t));
        }
    }

    /// A `Memory` emptyDir counts against the container's memory limit: a size limit above it
    /// can never be used (the pod is OOM-killed first).
    pub(super) fn memory_temp_storage(
        &mut self,
        path: &str,
        settings: &Settings,
        defaults: &Resources,
    ) {
        let Some(t) = &settings.temp_storage else {
            return;
        };
        let (Some("Memory"), Some(size)) = (t.medium.as_deref(), &t.size_limit) else {
            return;
        };
        let (limit, from) = match settings.resources.limits.get("memory") {
            Some(l) => (l, "its own"),
            None => match defaults.limits.get("memory") {
                Some(l) => (l, "the defaults'"),
                None => return,
            },
        };
        if size > limit {
            self.problem(
                format!("{path}.tempStorage.sizeLimit"),
                format!(
                    "a Memory emptyDir of {size} counts against the memory limit, {limit} ({from}): the task would be OOM-killed before filling it; raise resources.limits.memory or lower the sizeLimit"
                ),
            );
        }
    }
}
