//! Fleet targets and edge selectors, wire-identical to AEGIS's externally
//! tagged serde JSON (protocol.md §8.3), plus the pure matching rule a
//! resolver applies to each connected edge.
//!
//! Invariant: serializing a parsed target gives back the same JSON shape, so
//! group selectors stored by AEGIS and by this relay stay interchangeable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a fleet call addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EdgeTarget {
    /// Every connected edge of the caller's tenant (`"All"`).
    All,
    /// One edge by node id (`{"Node":"<uuid>"}`).
    Node(Uuid),
    /// A stored edge group by id (`{"Group":"<uuid>"}`).
    Group(Uuid),
    /// Every connected edge that matches (`{"Selector":{...}}`).
    Selector(EdgeSelector),
}

/// A conjunction of predicates over an edge's facts; an empty selector
/// matches every edge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeSelector {
    /// Exact operating system (`linux`), or any when absent.
    #[serde(default)]
    pub os: Option<String>,
    /// Exact CPU architecture (`x86_64`), or any when absent.
    #[serde(default)]
    pub arch: Option<String>,
    /// Tools the edge must run locally, all of them.
    pub tools: Vec<String>,
    /// Predicates over the edge's custom labels, all of them.
    pub labels: Vec<LabelMatch>,
    /// Predicates over the edge's server-side tags, all of them.
    pub tags: Vec<TagMatch>,
}

/// A predicate over an edge's custom labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LabelMatch {
    /// Label `key` is set to exactly `value` (`{"Equals":["k","v"]}`).
    Equals(String, String),
    /// Label `key` is set to any value (`{"Exists":"k"}`).
    Exists(String),
    /// Label `key` is set to one of the values (`{"In":["k",["v1","v2"]]}`).
    In(String, Vec<String>),
}

/// A predicate over an edge's server-side tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TagMatch {
    /// The edge carries this tag (`{"Has":"t"}`).
    Has(String),
    /// The edge carries at least one of these tags; an empty list never matches.
    AnyOf(Vec<String>),
    /// The edge carries every one of these tags; an empty list always matches.
    AllOf(Vec<String>),
    /// The edge carries none of these tags; an empty list always matches.
    NoneOf(Vec<String>),
}

/// What a selector is matched against: one edge's reported and stored facts.
#[derive(Debug, Clone, Copy)]
pub struct EdgeFacts<'a> {
    /// Operating system the daemon reported.
    pub os: &'a str,
    /// CPU architecture the daemon reported.
    pub arch: &'a str,
    /// Tools the daemon can run locally.
    pub local_tools: &'a [String],
    /// Labels from the daemon's configuration.
    pub custom_labels: &'a BTreeMap<String, String>,
    /// Tags set on the server (REST PATCH), not by the daemon.
    pub tags: &'a [String],
}

impl EdgeSelector {
    /// Tells whether the edge satisfies every predicate of this selector.
    pub fn matches(&self, edge: &EdgeFacts<'_>) -> bool {
        let os_ok = self.os.as_deref().is_none_or(|os| os == edge.os);
        let arch_ok = self.arch.as_deref().is_none_or(|arch| arch == edge.arch);
        os_ok
            && arch_ok
            && self
                .tools
                .iter()
                .all(|tool| edge.local_tools.contains(tool))
            && self
                .labels
                .iter()
                .all(|label| label.matches(edge.custom_labels))
            && self.tags.iter().all(|tag| tag.matches(edge.tags))
    }
}

impl LabelMatch {
    /// Tells whether the labels satisfy this predicate.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Equals(key, value) => labels.get(key) == Some(value),
            Self::Exists(key) => labels.contains_key(key),
            Self::In(key, values) => labels.get(key).is_some_and(|got| values.contains(got)),
        }
    }
}

impl TagMatch {
    /// Tells whether the tags satisfy this predicate.
    pub fn matches(&self, tags: &[String]) -> bool {
        match self {
            Self::Has(tag) => tags.contains(tag),
            Self::AnyOf(wanted) => wanted.iter().any(|tag| tags.contains(tag)),
            Self::AllOf(wanted) => wanted.iter().all(|tag| tags.contains(tag)),
            Self::NoneOf(unwanted) => !unwanted.iter().any(|tag| tags.contains(tag)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    /// Parses `wire`, checks it equals `expected`, and checks it serializes back to `wire`.
    fn round_trip<T>(wire: Value, expected: &T) -> TestResult
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let parsed: T = serde_json::from_value(wire.clone())?;
        assert_eq!(&parsed, expected);
        assert_eq!(serde_json::to_value(&parsed)?, wire);
        Ok(())
    }

    #[test]
    fn target_variants_round_trip() -> TestResult {
        let id = Uuid::parse_str("6f1c2c9e-5b8a-4c7d-9e0f-123456789abc")?;
        round_trip(json!("All"), &EdgeTarget::All)?;
        round_trip(json!({"Node": id.to_string()}), &EdgeTarget::Node(id))?;
        round_trip(json!({"Group": id.to_string()}), &EdgeTarget::Group(id))?;
        round_trip(
            json!({"Selector": {"os": null, "arch": null, "tools": [], "labels": [], "tags": []}}),
            &EdgeTarget::Selector(EdgeSelector::default()),
        )
    }

    #[test]
    fn full_selector_round_trips() -> TestResult {
        let wire = json!({
            "os": "linux",
            "arch": "x86_64",
            "tools": ["cmd.run"],
            "labels": [
                {"Equals": ["env", "prod"]},
                {"Exists": "rack"},
                {"In": ["zone", ["a", "b"]]}
            ],
            "tags": [
                {"Has": "db"},
                {"AnyOf": ["eu", "us"]},
                {"AllOf": ["primary", "ssd"]},
                {"NoneOf": ["retired"]}
            ]
        });
        let expected = EdgeSelector {
            os: Some("linux".to_owned()),
            arch: Some("x86_64".to_owned()),
            tools: strings(&["cmd.run"]),
            labels: vec![
                LabelMatch::Equals("env".to_owned(), "prod".to_owned()),
                LabelMatch::Exists("rack".to_owned()),
                LabelMatch::In("zone".to_owned(), strings(&["a", "b"])),
            ],
            tags: vec![
                TagMatch::Has("db".to_owned()),
                TagMatch::AnyOf(strings(&["eu", "us"])),
                TagMatch::AllOf(strings(&["primary", "ssd"])),
                TagMatch::NoneOf(strings(&["retired"])),
            ],
        };
        round_trip(wire, &expected)
    }

    #[test]
    fn os_and_arch_may_be_omitted_but_lists_are_required() -> TestResult {
        let omitted: EdgeSelector =
            serde_json::from_value(json!({"tools": [], "labels": [], "tags": []}))?;
        assert_eq!(omitted, EdgeSelector::default());
        for missing in ["tools", "labels", "tags"] {
            let mut wire = json!({"tools": [], "labels": [], "tags": []});
            if let Some(object) = wire.as_object_mut() {
                object.remove(missing);
            }
            let err = serde_json::from_value::<EdgeSelector>(wire)
                .err()
                .ok_or("a selector without a list key must be refused")?;
            assert!(err.to_string().contains(missing), "{err}");
        }
        Ok(())
    }

    #[test]
    fn malformed_targets_are_refused() {
        for wire in [
            json!("all"),
            json!({"Node": "not-a-uuid"}),
            json!({"Nodes": "6f1c2c9e-5b8a-4c7d-9e0f-123456789abc"}),
            json!({"Selector": {"os": "linux"}}),
            json!({"Selector": {"tools": [], "labels": [{"Equals": "k"}], "tags": []}}),
        ] {
            assert!(
                serde_json::from_value::<EdgeTarget>(wire.clone()).is_err(),
                "{wire} parsed"
            );
        }
    }

    struct Edge {
        tools: Vec<String>,
        labels: BTreeMap<String, String>,
        tags: Vec<String>,
    }

    impl Edge {
        fn new() -> Self {
            Self {
                tools: strings(&["cmd.run"]),
                labels: [("env", "prod"), ("zone", "a")]
                    .into_iter()
                    .map(|(key, value)| (key.to_owned(), value.to_owned()))
                    .collect(),
                tags: strings(&["db", "eu"]),
            }
        }

        fn facts(&self) -> EdgeFacts<'_> {
            EdgeFacts {
                os: "linux",
                arch: "x86_64",
                local_tools: &self.tools,
                custom_labels: &self.labels,
                tags: &self.tags,
            }
        }
    }

    #[test]
    fn label_match_truth_table() {
        let edge = Edge::new();
        let cases = [
            (LabelMatch::Equals("env".into(), "prod".into()), true),
            (LabelMatch::Equals("env".into(), "dev".into()), false),
            (LabelMatch::Equals("missing".into(), "prod".into()), false),
            (LabelMatch::Exists("zone".into()), true),
            (LabelMatch::Exists("missing".into()), false),
            (LabelMatch::In("zone".into(), strings(&["a", "b"])), true),
            (LabelMatch::In("zone".into(), strings(&["b", "c"])), false),
            (LabelMatch::In("zone".into(), Vec::new()), false),
            (LabelMatch::In("missing".into(), strings(&["a"])), false),
        ];
        for (predicate, expected) in cases {
            assert_eq!(predicate.matches(&edge.labels), expected, "{predicate:?}");
        }
    }

    #[test]
    fn tag_match_truth_table() {
        let edge = Edge::new();
        let cases = [
            (TagMatch::Has("db".into()), true),
            (TagMatch::Has("web".into()), false),
            (TagMatch::AnyOf(strings(&["web", "eu"])), true),
            (TagMatch::AnyOf(strings(&["web", "us"])), false),
            (TagMatch::AnyOf(Vec::new()), false),
            (TagMatch::AllOf(strings(&["db", "eu"])), true),
            (TagMatch::AllOf(strings(&["db", "us"])), false),
            (TagMatch::AllOf(Vec::new()), true),
            (TagMatch::NoneOf(strings(&["web", "us"])), true),
            (TagMatch::NoneOf(strings(&["web", "db"])), false),
            (TagMatch::NoneOf(Vec::new()), true),
        ];
        for (predicate, expected) in cases {
            assert_eq!(predicate.matches(&edge.tags), expected, "{predicate:?}");
        }
    }

    #[test]
    fn selector_is_the_and_of_its_predicates() {
        let edge = Edge::new();
        let all_true = EdgeSelector {
            os: Some("linux".into()),
            arch: Some("x86_64".into()),
            tools: strings(&["cmd.run"]),
            labels: vec![LabelMatch::Exists("env".into())],
            tags: vec![TagMatch::Has("db".into())],
        };
        assert!(EdgeSelector::default().matches(&edge.facts()));
        assert!(all_true.matches(&edge.facts()));

        let breaks: [fn(&mut EdgeSelector); 6] = [
            |s| s.os = Some("windows".into()),
            |s| s.os = Some("Linux".into()),
            |s| s.arch = Some("aarch64".into()),
            |s| s.tools.push("fs.read".into()),
            |s| s.labels.push(LabelMatch::Exists("missing".into())),
            |s| s.tags.push(TagMatch::NoneOf(strings(&["eu"]))),
        ];
        for (index, break_one) in breaks.iter().enumerate() {
            let mut selector = all_true.clone();
            break_one(&mut selector);
            assert!(
                !selector.matches(&edge.facts()),
                "case {index}: {selector:?}"
            );
        }
    }

    #[test]
    fn tools_and_tags_are_checked_against_their_own_lists() {
        let edge = Edge::new();
        let tool_named_like_a_tag = EdgeSelector {
            tools: strings(&["db"]),
            ..EdgeSelector::default()
        };
        let tag_named_like_a_tool = EdgeSelector {
            tags: vec![TagMatch::Has("cmd.run".into())],
            ..EdgeSelector::default()
        };
        assert!(!tool_named_like_a_tag.matches(&edge.facts()));
        assert!(!tag_named_like_a_tool.matches(&edge.facts()));
    }
}
