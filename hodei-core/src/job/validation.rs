//! The error for a job field that fails validation, and how it quotes the bad value.

use std::{borrow::Cow, fmt::Write as _};

use super::limits::MAX_ECHOED_CHARS;

/// A field of a request that fails validation. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct ValidationError {
    field: Cow<'static, str>,
    message: String,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The name of the offending field, e.g. `memory` or `env["PATH"]`.
    #[must_use]
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error seen from the enclosing field: `memory` within `spec` is `spec.memory`.
    #[must_use]
    pub(crate) fn within(self, parent: &str) -> Self {
        Self {
            field: format!("{parent}.{}", self.field).into(),
            message: self.message,
        }
    }
}

/// `input` quoted and escaped for an error message, cut after [`MAX_ECHOED_CHARS`]
/// characters (then followed by its size), so a message never repeats a huge or hostile
/// value.
pub(crate) fn excerpt(input: &str) -> String {
    let mut chars = input.char_indices();
    let cut = chars.nth(MAX_ECHOED_CHARS).map(|(at, _)| at);
    let head = &input[..cut.unwrap_or(input.len())];
    let mut shown = format!("\"{}\"", head.escape_debug());
    if cut.is_some() {
        let _ = write!(shown, "... ({} bytes)", input.len());
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_value_is_quoted_whole_and_escaped() {
        assert_eq!(excerpt("a\"b\n\u{1b}"), r#""a\"b\n\u{1b}""#);
        assert_eq!(excerpt(""), r#""""#);
    }

    #[test]
    fn a_long_value_is_cut_after_the_echo_limit() {
        let long = "\u{7}".repeat(1_000_000);
        let shown = excerpt(&long);
        assert_eq!(
            shown,
            format!(
                "\"{}\"... (1000000 bytes)",
                r"\u{7}".repeat(MAX_ECHOED_CHARS)
            )
        );
        // Exactly at the limit nothing is cut.
        let exact = "é".repeat(MAX_ECHOED_CHARS);
        assert_eq!(excerpt(&exact), format!("\"{exact}\""));
    }
}
