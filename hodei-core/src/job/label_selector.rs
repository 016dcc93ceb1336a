//! Kubernetes label selectors (`team=a,tier!=db,env in (dev,test),!legacy`), parsed from
//! a list request and matched against a job's labels.

use std::collections::{BTreeMap, BTreeSet};

use super::{ValidationError, excerpt, labels, limits::MAX_LABEL_SELECTOR_BYTES};

/// The request field a selector comes from, named in every error.
const FIELD: &str = "label_selector";

/// Why a label selector was refused. Every message names `label_selector` and the term
/// at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelSelectorError {
    /// The selector is longer than [`MAX_LABEL_SELECTOR_BYTES`].
    #[error("invalid label_selector: is {len} bytes; at most {MAX_LABEL_SELECTOR_BYTES} allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A term between commas is empty.
    #[error("invalid label_selector: empty term (two commas in a row, or a comma at an end)")]
    EmptyTerm,
    /// A term's parentheses do not pair up.
    #[error("invalid label_selector: unbalanced parentheses in {term}")]
    Unbalanced {
        /// The term, quoted.
        term: String,
    },
    /// A term has no operator this syntax knows after its key.
    #[error(
        "invalid label_selector: term {term}: expected KEY, !KEY, KEY=VALUE, KEY==VALUE, \
         KEY!=VALUE, KEY in (V1,V2) or KEY notin (V1,V2)"
    )]
    Syntax {
        /// The term, quoted.
        term: String,
    },
    /// A term's key is not a valid label key.
    #[error("invalid label_selector: term {term}: {message}")]
    Key {
        /// The term, quoted.
        term: String,
        /// What is wrong with the key.
        message: String,
    },
    /// A term's value is not a valid label value.
    #[error("invalid label_selector: term {term}: {message}")]
    Value {
        /// The term, quoted.
        term: String,
        /// What is wrong with the value.
        message: String,
    },
    /// An `in` or `notin` term has no values.
    #[error("invalid label_selector: term {term}: the set of values is empty")]
    EmptySet {
        /// The term, quoted.
        term: String,
    },
}

impl LabelSelectorError {
    /// The request field at fault: always `label_selector`.
    #[must_use]
    pub fn field(&self) -> &'static str {
        FIELD
    }
}

impl From<LabelSelectorError> for ValidationError {
    fn from(error: LabelSelectorError) -> Self {
        let message = error.to_string();
        let message = message
            .strip_prefix("invalid label_selector: ")
            .unwrap_or(&message)
            .to_owned();
        ValidationError::new(FIELD, message)
    }
}

/// One condition on a job's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`: the label is absent or has another value.
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, BTreeSet<String>),
    /// `key notin (a,b)`: the label is absent or has none of the values.
    NotIn(String, BTreeSet<String>),
    /// `key`: the label is present.
    Exists(String),
    /// `!key`: the label is absent.
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Equals(key, value) => labels.get(key) == Some(value),
            Self::NotEquals(key, value) => labels.get(key) != Some(value),
            Self::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Self::NotIn(key, values) => !labels.get(key).is_some_and(|v| values.contains(v)),
            Self::Exists(key) => labels.contains_key(key),
            Self::DoesNotExist(key) => !labels.contains_key(key),
        }
    }
}

/// A parsed label selector: every term must hold (comma means AND). The empty selector
/// matches every job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses `input` in Kubernetes syntax; empty (or blank) input selects everything.
    pub fn parse(input: &str) -> Result<Self, LabelSelectorError> {
        if input.len() > MAX_LABEL_SELECTOR_BYTES {
            return Err(LabelSelectorError::TooLong { len: input.len() });
        }
        if input.trim().is_empty() {
            return Ok(Self::default());
        }
        let requirements = split_terms(input)?
            .into_iter()
            .map(parse_term)
            .collect::<Result<_, _>>()?;
        Ok(Self { requirements })
    }

    /// True when the selector has no terms.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every term.
    #[must_use]
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// The terms of `input`: split at the commas that are not inside parentheses.
fn split_terms(input: &str) -> Result<Vec<&str>, LabelSelectorError> {
    let mut terms = Vec::new();
    let mut depth = 0_u32;
    let mut start = 0;
    for (at, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1).ok_or_else(|| unbalanced(input))?;
            }
            ',' if depth == 0 => {
                terms.push(&input[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(unbalanced(input));
    }
    terms.push(&input[start..]);
    Ok(terms)
}

fn unbalanced(term: &str) -> LabelSelectorError {
    LabelSelectorError::Unbalanced {
        term: excerpt(term),
    }
}

fn parse_term(term: &str) -> Result<Requirement, LabelSelectorError> {
    let trimmed = term.trim();
    if trimmed.is_empty() {
        return Err(LabelSelectorError::EmptyTerm);
    }
    let syntax = || LabelSelectorError::Syntax {
        term: excerpt(trimmed),
    };
    if let Some(key) = trimmed.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(checked_key(trimmed, key.trim())?));
    }
    let key_end = trimmed
        .find(|c: char| c.is_whitespace() || matches!(c, '=' | '!' | '(' | ')'))
        .unwrap_or(trimmed.len());
    let key = checked_key(trimmed, &trimmed[..key_end])?;
    let rest = trimmed[key_end..].trim_start();
    if rest.is_empty() {
        return Ok(Requirement::Exists(key));
    }
    if let Some(value) = rest.strip_prefix("!=") {
        return Ok(Requirement::NotEquals(key, checked_value(trimmed, value)?));
    }
    if let Some(value) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
        return Ok(Requirement::Equals(key, checked_value(trimmed, value)?));
    }
    let (negated, set) = if let Some(set) = keyword(rest, "notin") {
        (true, set)
    } else if let Some(set) = keyword(rest, "in") {
        (false, set)
    } else {
        return Err(syntax());
    };
    let inner = set
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(syntax)?;
    if inner.trim().is_empty() {
        return Err(LabelSelectorError::EmptySet {
            term: excerpt(trimmed),
        });
    }
    let values = inner
        .split(',')
        .map(|value| checked_value(trimmed, value))
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(if negated {
        Requirement::NotIn(key, values)
    } else {
        Requirement::In(key, values)
    })
}

/// What follows `word` in `rest` (trimmed), when `rest` starts with that word on its own.
fn keyword<'a>(rest: &'a str, word: &str) -> Option<&'a str> {
    let after = rest.strip_prefix(word)?;
    (after.starts_with(char::is_whitespace) || after.starts_with('(')).then(|| after.trim())
}

fn checked_key(term: &str, key: &str) -> Result<String, LabelSelectorError> {
    labels::check(FIELD, key, "")
        .map(|()| key.to_owned())
        .map_err(|e| LabelSelectorError::Key {
            term: excerpt(term),
            message: e.message().to_owned(),
        })
}

fn checked_value(term: &str, value: &str) -> Result<String, LabelSelectorError> {
    let value = value.trim();
    labels::check(FIELD, "key", value)
        .map(|()| value.to_owned())
        .map_err(|e| LabelSelectorError::Value {
            term: excerpt(term),
            message: e.message().to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Which of three label sets `selector` matches.
    fn matching(selector: &str) -> [bool; 3] {
        let selector = LabelSelector::parse(selector).unwrap();
        [
            labels(&[("team", "a"), ("tier", "web")]),
            labels(&[("team", "b")]),
            labels(&[]),
        ]
        .map(|set| selector.matches(&set))
    }

    #[test]
    fn equality_in_both_spellings() {
        assert_eq!(matching("team=a"), [true, false, false]);
        assert_eq!(matching("team==a"), [true, false, false]);
        assert_eq!(matching(" team = b "), [false, true, false]);
    }

    #[test]
    fn inequality_matches_other_values_and_absent_labels() {
        assert_eq!(matching("team!=a"), [false, true, true]);
    }

    #[test]
    fn existence_and_absence() {
        assert_eq!(matching("tier"), [true, false, false]);
        assert_eq!(matching("!tier"), [false, true, true]);
        assert_eq!(matching("! tier"), [false, true, true]);
    }

    #[test]
    fn set_membership() {
        assert_eq!(matching("team in (a,b)"), [true, true, false]);
        assert_eq!(matching("team in ( b )"), [false, true, false]);
        assert_eq!(matching("team notin (a)"), [false, true, true]);
        assert_eq!(matching("team in(a)"), [true, false, false]);
    }

    #[test]
    fn commas_join_terms_with_and_outside_parentheses_only() {
        assert_eq!(matching("team in (a,b),tier"), [true, false, false]);
        assert_eq!(matching("team,!tier"), [false, true, false]);
        assert_eq!(matching("team=a,team=b"), [false, false, false]);
    }

    #[test]
    fn the_empty_selector_matches_everything() {
        assert_eq!(matching(""), [true, true, true]);
        assert_eq!(matching("  "), [true, true, true]);
        assert!(LabelSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn an_empty_value_is_a_value() {
        let selector = LabelSelector::parse("team=").unwrap();
        assert!(selector.matches(&labels(&[("team", "")])));
        assert!(!selector.matches(&labels(&[("team", "a")])));
    }

    fn error(input: &str) -> LabelSelectorError {
        let error = LabelSelector::parse(input).unwrap_err();
        assert_eq!(error.field(), "label_selector");
        assert!(
            error.to_string().starts_with("invalid label_selector: "),
            "{error}"
        );
        error
    }

    #[test]
    fn a_selector_over_the_size_limit_is_refused() {
        let input = format!("a{}", "=b".repeat(MAX_LABEL_SELECTOR_BYTES));
        assert_eq!(
            error(&input),
            LabelSelectorError::TooLong { len: input.len() }
        );
    }

    #[test]
    fn empty_terms_are_refused() {
        for input in ["a=b,,c", ",a", "a,"] {
            assert_eq!(error(input), LabelSelectorError::EmptyTerm, "{input}");
        }
    }

    #[test]
    fn unbalanced_parentheses_are_refused() {
        for input in ["a in (b", "a in b)", "a in ((b)"] {
            assert!(
                matches!(error(input), LabelSelectorError::Unbalanced { .. }),
                "{input}"
            );
        }
    }

    #[test]
    fn unknown_operators_are_refused_naming_the_term() {
        for input in ["a < b", "a in b", "a notin", "a exists", "a=b,c >= 1"] {
            let error = error(input);
            assert!(
                matches!(error, LabelSelectorError::Syntax { .. }),
                "{input}: {error:?}"
            );
        }
        assert!(error("x,c >= 1").to_string().contains("\"c >= 1\""));
    }

    #[test]
    fn bad_keys_are_refused_naming_the_term() {
        for input in ["-a=b", "=b", "!", "a b=c", "UPPER.example/x=1"] {
            let error = error(input);
            assert!(
                matches!(
                    error,
                    LabelSelectorError::Key { .. } | LabelSelectorError::Syntax { .. }
                ),
                "{input}: {error:?}"
            );
        }
        let error = error("team=a,-bad=1");
        assert!(matches!(error, LabelSelectorError::Key { .. }), "{error:?}");
        assert!(error.to_string().contains("\"-bad=1\""), "{error}");
    }

    #[test]
    fn bad_values_are_refused_naming_the_term() {
        for input in ["a=b c", "a!=-x", "a in (ok,-x)", "a==x=y"] {
            let error = error(input);
            assert!(
                matches!(error, LabelSelectorError::Value { .. }),
                "{input}: {error:?}"
            );
            assert!(error.to_string().contains("term \""), "{error}");
        }
    }

    #[test]
    fn an_empty_set_is_refused() {
        assert_eq!(
            error("a in ()"),
            LabelSelectorError::EmptySet {
                term: "\"a in ()\"".into()
            }
        );
    }

    #[test]
    fn a_refusal_converts_to_a_validation_error_for_the_field() {
        let error = ValidationError::from(error("a in ()"));
        assert_eq!(error.field(), "label_selector");
        assert!(error.message().contains("\"a in ()\""), "{error}");
    }
}
