//! Label selectors: the structured `LabelSelector` objects carry (matchLabels,
//! matchExpressions), kubectl's `-l` string syntax ([`labels`]) and field
//! selectors the server evaluates against JSON ([`fields`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validate::{FieldError, Path, check_key, check_labels, is_label_value};

pub mod fields;
pub mod labels;

pub use fields::{FieldOp, FieldRequirement, FieldSelector};
pub use labels::{Operator, Requirement, Selector, SelectorParseError};

/// A structured label selector. An empty selector matches every object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Operators allowed in `matchExpressions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelectorRequirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

impl LabelSelector {
    /// Whether no requirement is set (matches everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| e.matches(labels))
    }

    /// The same selector in string form (for `?labelSelector=`).
    pub fn to_selector(&self) -> Selector {
        let mut requirements: Vec<Requirement> = self
            .match_labels
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                operator: Operator::Equals,
                values: vec![v.clone()],
            })
            .collect();
        requirements.extend(self.match_expressions.iter().map(|e| Requirement {
            key: e.key.clone(),
            operator: match e.operator {
                SelectorOperator::In => Operator::In,
                SelectorOperator::NotIn => Operator::NotIn,
                SelectorOperator::Exists => Operator::Exists,
                SelectorOperator::DoesNotExist => Operator::DoesNotExist,
            },
            values: e.values.clone(),
        }));
        Selector { requirements }
    }

    /// Checks keys, values and that each operator has the values it needs.
    pub fn validate(&self, path: &Path) -> Vec<FieldError> {
        let mut errs = Vec::new();
        check_labels(&path.field("matchLabels"), &self.match_labels, &mut errs);
        for (i, e) in self.match_expressions.iter().enumerate() {
            let p = path.field("matchExpressions").index(i);
            check_key(&p.field("key"), &e.key, &mut errs);
            match e.operator {
                SelectorOperator::In | SelectorOperator::NotIn if e.values.is_empty() => errs.push(
                    p.field("values")
                        .error(format!("operator {:?} needs at least one value", e.operator))
                        .hint("list the label values to match under values"),
                ),
                SelectorOperator::Exists | SelectorOperator::DoesNotExist if !e.values.is_empty() => errs
                    .push(
                        p.field("values")
                            .error(format!("operator {:?} takes no values", e.operator))
                            .hint("remove values, or use In/NotIn to match specific values"),
                    ),
                _ => {}
            }
            for (j, v) in e.values.iter().enumerate() {
                if !is_label_value(v) {
                    errs.push(
                        p.field("values")
                            .index(j)
                            .error(format!("{v:?} is not a valid label value"))
                            .hint("use at most 63 letters, digits, '-', '_' and '.'"),
                    );
                }
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, operator: SelectorOperator, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn match_expressions_each_operator() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        use SelectorOperator::*;
        assert!(expr("app", In, &["web", "api"]).matches(&l));
        assert!(!expr("app", In, &["api"]).matches(&l));
        assert!(!expr("env", In, &["prod"]).matches(&l));
        assert!(expr("app", NotIn, &["api"]).matches(&l));
        assert!(expr("env", NotIn, &["prod"]).matches(&l));
        assert!(!expr("app", NotIn, &["web"]).matches(&l));
        assert!(expr("tier", Exists, &[]).matches(&l));
        assert!(!expr("env", Exists, &[]).matches(&l));
        assert!(expr("env", DoesNotExist, &[]).matches(&l));
        assert!(!expr("app", DoesNotExist, &[]).matches(&l));
    }

    #[test]
    fn selector_matches_and_converts() {
        let sel = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![expr("tier", SelectorOperator::In, &["front", "back"])],
        };
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(!sel.matches(&labels(&[("app", "web")])));
        assert!(LabelSelector::default().matches(&labels(&[])));
        assert_eq!(sel.to_selector().to_string(), "app=web,tier in (back,front)");
    }

    #[test]
    fn validation_of_operators() {
        let sel = LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![
                expr("a", SelectorOperator::In, &[]),
                expr("b", SelectorOperator::Exists, &["x"]),
                expr("c d", SelectorOperator::NotIn, &["ok"]),
            ],
        };
        let errs = sel.validate(&Path::new("spec").field("selector"));
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.selector.matchExpressions[0].values",
                "spec.selector.matchExpressions[1].values",
                "spec.selector.matchExpressions[2].key"
            ]
        );
    }

    #[test]
    fn unknown_operator_is_rejected() {
        let r = serde_json::from_str::<LabelSelector>(
            r#"{"matchExpressions":[{"key":"a","operator":"Gt","values":["1"]}]}"#,
        );
        assert!(r.is_err());
    }
}
