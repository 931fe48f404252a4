//! Name and value checks: Kubernetes names, label keys and values, globs, quantities.

use globset::{Glob, GlobMatcher};

use super::validate::Cx;
use crate::webhook::quantity::Quantity;

impl Cx {
    pub(super) fn globs(&mut self, path: &str, patterns: &[String]) -> Vec<GlobMatcher> {
        patterns
            .iter()
            .enumerate()
            .filter_map(|(i, p)| self.glob(&format!("{path}[{i}]"), p))
            .collect()
    }

    pub(super) fn glob(&mut self, path: &str, pattern: &str) -> Option<GlobMatcher> {
        match Glob::new(pattern) {
            Ok(g) => Some(g.compile_matcher()),
            Err(e) => {
                self.problem(path, format!("bad glob: {e}"));
                None
            }
        }
    }

    pub(super) fn quantity(&mut self, path: &str, text: &str) -> Option<Quantity> {
        match Quantity::parse(text) {
            Ok(q) if q.is_negative() => {
                self.problem(path, format!("`{text}` is negative"));
                None
            }
            Ok(q) => Some(q),
            Err(e) => {
                self.problem(path, e.to_string());
                None
            }
        }
    }

    pub(super) fn resource_name(&mut self, path: &str, name: &str) {
        let standard = matches!(name, "cpu" | "memory" | "ephemeral-storage")
            || name.starts_with("hugepages-");
        let extended = name
            .split_once('/')
            .is_some_and(|(d, n)| is_dns_subdomain(d) && is_label_name(n));
        if !standard && !extended {
            self.problem(
                path,
                format!("unknown resource `{name}`: use cpu, memory, ephemeral-storage, hugepages-<size> or an extended resource such as nvidia.com/gpu"),
            );
        }
    }

    pub(super) fn label_key(&mut self, path: &str, key: &str) {
        let ok = match key.split_once('/') {
            Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
            None => is_label_name(key),
        };
        if !ok {
            self.problem(path, format!("`{key}` is not a valid label/annotation key"));
        }
    }

    pub(super) fn label_value(&mut self, path: &str, value: &str) {
        if !(value.is_empty() || is_label_name(value)) {
            self.problem(
                path,
                format!("`{value}` is not a valid label value (at most 63 letters, digits, `-`, `_`, `.`; alphanumeric at both ends)"),
            );
        }
    }
}

pub(super) fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

pub(super) fn is_profile_name(s: &str) -> bool {
    is_label_name(s)
}

pub(super) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

pub(super) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

pub(super) fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}
