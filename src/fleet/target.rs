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

    mod properties {
        use std::collections::HashSet;

        use proptest::prelude::*;

        use super::*;

        /// A small alphabet, so predicates often hit.
        fn word() -> impl Strategy<Value = String> {
            prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")].prop_map(str::to_owned)
        }

        fn words() -> impl Strategy<Value = Vec<String>> {
            proptest::collection::vec(word(), 0..4)
        }

        fn label() -> impl Strategy<Value = LabelMatch> {
            prop_oneof![
                (word(), word()).prop_map(|(k, v)| LabelMatch::Equals(k, v)),
                word().prop_map(LabelMatch::Exists),
                (word(), words()).prop_map(|(k, vs)| LabelMatch::In(k, vs)),
            ]
        }

        fn tag() -> impl Strategy<Value = TagMatch> {
            prop_oneof![
                word().prop_map(TagMatch::Has),
                words().prop_map(TagMatch::AnyOf),
                words().prop_map(TagMatch::AllOf),
                words().prop_map(TagMatch::NoneOf),
            ]
        }

        fn selector() -> impl Strategy<Value = EdgeSelector> {
            (
                proptest::option::of(word()),
                proptest::option::of(word()),
                words(),
                proptest::collection::vec(label(), 0..3),
                proptest::collection::vec(tag(), 0..3),
            )
                .prop_map(|(os, arch, tools, labels, tags)| EdgeSelector {
                    os,
                    arch,
                    tools,
                    labels,
                    tags,
                })
        }

        #[derive(Debug)]
        struct Facts {
            os: String,
            arch: String,
            tools: Vec<String>,
            labels: BTreeMap<String, String>,
            tags: Vec<String>,
        }

        fn facts() -> impl Strategy<Value = Facts> {
            (
                word(),
                word(),
                words(),
                proptest::collection::btree_map(word(), word(), 0..4),
                words(),
            )
                .prop_map(|(os, arch, tools, labels, tags)| Facts {
                    os,
                    arch,
                    tools,
                    labels,
                    tags,
                })
        }

        /// The rule written out plainly, with sets: every predicate present
        /// must hold; lists of tags read as sets.
        fn model(selector: &EdgeSelector, edge: &Facts) -> bool {
            let tags: HashSet<&str> = edge.tags.iter().map(String::as_str).collect();
            let tools: HashSet<&str> = edge.tools.iter().map(String::as_str).collect();
            if let Some(os) = &selector.os {
                if *os != edge.os {
                    return false;
                }
            }
            if let Some(arch) = &selector.arch {
                if *arch != edge.arch {
                    return false;
                }
            }
            for tool in &selector.tools {
                if !tools.contains(tool.as_str()) {
                    return false;
                }
            }
            for label in &selector.labels {
                let holds = match label {
                    LabelMatch::Equals(k, v) => {
                        edge.labels.get(k).map(String::as_str) == Some(v.as_str())
                    }
                    LabelMatch::Exists(k) => edge.labels.contains_key(k),
                    LabelMatch::In(k, vs) => match edge.labels.get(k) {
                        Some(got) => vs.iter().any(|v| v == got),
                        None => false,
                    },
                };
                if !holds {
                    return false;
                }
            }
            for predicate in &selector.tags {
                let holds = match predicate {
                    TagMatch::Has(t) => tags.contains(t.as_str()),
                    TagMatch::AnyOf(list) => !wanted(list).is_disjoint(&tags),
                    TagMatch::AllOf(list) => wanted(list).is_subset(&tags),
                    TagMatch::NoneOf(list) => wanted(list).is_disjoint(&tags),
                };
                if !holds {
                    return false;
                }
            }
            true
        }

        fn wanted(list: &[String]) -> HashSet<&str> {
            list.iter().map(String::as_str).collect()
        }

        proptest! {
            #[test]
            fn the_matcher_agrees_with_the_model(selector in selector(), edge in facts()) {
                let view = EdgeFacts {
                    os: &edge.os,
                    arch: &edge.arch,
                    local_tools: &edge.tools,
                    custom_labels: &edge.labels,
                    tags: &edge.tags,
                };
                prop_assert_eq!(selector.matches(&view), model(&selector, &edge));
            }

            /// The wire invariant: any selector serializes and parses back.
            #[test]
            fn selectors_round_trip_on_the_wire(selector in selector()) {
                let target = EdgeTarget::Selector(selector);
                let wire = serde_json::to_value(&target).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let back: EdgeTarget = serde_json::from_value(wire.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&back, &target);
                prop_assert_eq!(serde_json::to_value(&back).map_err(|e| TestCaseError::fail(e.to_string()))?, wire);
            }
        }
    }
}
