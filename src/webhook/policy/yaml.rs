//! The policy's YAML, read with serde-saphyr into a tree that keeps where every value is.
//!
//! The validator splits the tree into pieces (each node type, profile and rule on its own),
//! deserializes each piece from JSON (serde_json's `Value`, so that one bad piece does not hide
//! the problems of the others) and names the line of every problem through [`locate`].
//! Scalars are read as YAML 1.2 (`yes` and `0755` stay text), as `serde_yaml` did and as the
//! worker-queue file is read.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::{Location, Spanned};

/// One YAML value, its children with their position.
#[derive(Debug)]
pub(super) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    /// Entries in file order; keys are scalars (or null) without a position of their own.
    Map(Vec<(Node, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
                Ok(Node::UInt(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl Node {
    pub(super) fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// A mapping key as text: strings, and numbers and booleans as written (Kubernetes reads
    /// YAML keys the same way); `None` for null, lists and mappings.
    pub(super) fn key_text(&self) -> Option<String> {
        match self {
            Self::Str(s) => Some(s.clone()),
            Self::Int(n) => Some(n.to_string()),
            Self::UInt(n) => Some(n.to_string()),
            Self::Float(n) => Some(n.to_string()),
            Self::Bool(b) => Some(b.to_string()),
            Self::Null | Self::Seq(_) | Self::Map(_) => None,
        }
    }

    /// The value as JSON, for serde; a key that is not a scalar is reported to `bad_key` with
    /// the path of its mapping (relative to this node) and left out.
    pub(super) fn to_json(&self, bad_key: &mut dyn FnMut(&str)) -> Value {
        self.to_json_at(String::new(), bad_key)
    }

    fn to_json_at(&self, path: String, bad_key: &mut dyn FnMut(&str)) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Int(n) => Value::from(*n),
            Self::UInt(n) => Value::from(*n),
            Self::Float(n) => Number::from_f64(*n).map_or(Value::Null, Value::Number),
            Self::Str(s) => Value::String(s.clone()),
            Self::Seq(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| item.value.to_json_at(format!("{path}[{i}]"), bad_key))
                    .collect(),
            ),
            Self::Map(entries) => {
                let mut map = Map::new();
                for (key, value) in entries {
                    let Some(key) = key.key_text() else {
                        bad_key(&path);
                        continue;
                    };
                    let inner = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    map.insert(key, value.value.to_json_at(inner, bad_key));
                }
                Value::Object(map)
            }
        }
    }
}

/// Reads the policy text; an empty document (or one with only comments) is `null`.
pub(super) fn parse(text: &str) -> Result<Spanned<Node>, serde_saphyr::Error> {
    let root: Option<Spanned<Node>> =
        serde_saphyr::from_str_with_options(text, crate::runtime::yaml::options())?;
    Ok(root.unwrap_or(Spanned {
        value: Node::Null,
        referenced: Location::UNKNOWN,
        defined: Location::UNKNOWN,
    }))
}

/// Where the value at `path` (`rules[2].match.dagIds[0]`, `nodeTypes.m5.xlarge.allocatable`)
/// is written, or the closest enclosing value that is; keys may contain dots, the longest key
/// that fits wins. `None` when not even the first step is in the file.
pub(super) fn locate(root: &Spanned<Node>, path: &str) -> Option<Location> {
    let mut node = root;
    let mut rest = path;
    let mut found = None;
    loop {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        if rest.is_empty() {
            break;
        }
        let next = match &node.value {
            Node::Seq(items) => rest
                .strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .and_then(|(i, r)| Some((items.get(i.parse::<usize>().ok()?)?, r))),
            Node::Map(entries) => entries
                .iter()
                .filter_map(|(key, value)| {
                    let key = key.key_text()?;
                    let after = rest.strip_prefix(key.as_str())?;
                    (after.is_empty() || after.starts_with(['.', '['])).then_some((
                        key.len(),
                        value,
                        after,
                    ))
                })
                .max_by_key(|(len, ..)| *len)
                .map(|(_, value, after)| (value, after)),
            _ => None,
        };
        let Some((child, after)) = next else {
            break;
        };
        node = child;
        rest = after;
        if node.referenced.line() > 0 {
            found = Some(node.referenced);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_yaml_1_2_and_keys_keep_their_order() {
        let root = parse("b: yes\na: 0755\nc: [1, -2, 1.5, true, ~]\n").unwrap();
        let json = root.value.to_json(&mut |_| panic!("no bad key"));
        assert_eq!(
            json,
            serde_json::json!({"b": "yes", "a": "0755", "c": [1, -2, 1.5, true, null]})
        );
        let Node::Map(entries) = &root.value else {
            panic!("a mapping")
        };
        let keys: Vec<_> = entries.iter().filter_map(|(k, _)| k.key_text()).collect();
        assert_eq!(keys, ["b", "a", "c"]);
    }

    #[test]
    fn empty_text_is_null_and_merge_keys_are_expanded() {
        assert!(parse("").unwrap().value.is_null());
        assert!(parse("# only a comment\n").unwrap().value.is_null());
        let root = parse("base: &b {cpu: 1}\nbig:\n  <<: *b\n  memory: 2Gi\n").unwrap();
        let json = root.value.to_json(&mut |_| panic!("no bad key"));
        assert_eq!(json["big"], serde_json::json!({"cpu": 1, "memory": "2Gi"}));
    }

    #[test]
    fn locate_follows_dotted_keys_and_indexes() {
        let text = "nodeTypes:\n  m5.xlarge:\n    allocatable:\n      nvidia.com/gpu: 1\nrules:\n  - name: a\n  - name: b\n    match: {dagIds: [x, y]}\n";
        let root = parse(text).unwrap();
        let line = |p: &str| locate(&root, p).map(|l| l.line());
        assert_eq!(
            line("nodeTypes.m5.xlarge.allocatable.nvidia.com/gpu"),
            Some(4)
        );
        assert_eq!(line("rules[1].match.dagIds[1]"), Some(8));
        assert_eq!(line("rules[1].name"), Some(7));
        // Not in the file: the closest enclosing value.
        assert_eq!(line("rules[0].tempStorage.path"), Some(6));
        assert_eq!(line("surprise"), None);
        assert_eq!(line("."), None);
    }

    #[test]
    fn keys_that_are_not_scalars_are_reported() {
        let root = parse("a:\n  ? [1, 2]\n  : x\n  b: {? {c: 1} : y}\n").unwrap();
        let mut bad = Vec::new();
        let json = root.value.to_json(&mut |p| bad.push(p.to_owned()));
        assert_eq!(bad, ["a", "a.b"]);
        assert_eq!(json, serde_json::json!({"a": {"b": {}}}));
    }
}
