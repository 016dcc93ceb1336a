//! Refused calls counted by phase, gRPC code and message class, in bounded memory.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use tonic::Status;

/// Most distinct (phase, code, class) rows kept; further ones count under `other`.
const MAX_ROWS: usize = 64;
/// Characters of a message that make its class.
const CLASS_CHARS: usize = 72;

/// Refusals seen, by phase, code and class.
#[derive(Debug, Default)]
pub struct Tally {
    rows: Mutex<BTreeMap<(String, String, String), u64>>,
}

impl Tally {
    /// Counts `status`, seen in `phase`.
    pub fn refused(&self, phase: &str, status: &Status) {
        self.count(
            phase,
            &format!("{:?}", status.code()),
            &class(status.message()),
        );
    }

    /// Counts an outcome that is not a status (e.g. `ok`, a transport error).
    pub fn count(&self, phase: &str, code: &str, class: &str) {
        let mut rows = self.rows.lock();
        let mut key = (phase.to_owned(), code.to_owned(), class.to_owned());
        if !rows.contains_key(&key) && rows.len() >= MAX_ROWS {
            key.2 = "other".to_owned();
        }
        *rows.entry(key).or_default() += 1;
    }

    /// Every row, sorted by phase, code, class.
    pub fn rows(&self) -> Vec<(String, String, String, u64)> {
        self.rows
            .lock()
            .iter()
            .map(|((phase, code, class), n)| (phase.clone(), code.clone(), class.clone(), *n))
            .collect()
    }
}

/// What kind of message this is: its start, with numbers and ids folded to `#`, so
/// messages that differ only in counts or ids share a class.
#[must_use]
pub fn class(message: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for word in message.split_inclusive(|c: char| c.is_whitespace() || c == ':' || c == '"') {
        if out.chars().count() >= CLASS_CHARS {
            out.push('…');
            break;
        }
        let trimmed = word.trim_end_matches(|c: char| c.is_whitespace() || c == ':' || c == '"');
        let numeric = is_number_or_id(trimmed);
        if numeric {
            if !in_number {
                out.push('#');
            }
            out.push_str(&word[trimmed.len()..]);
        } else {
            out.push_str(word);
        }
        in_number = numeric;
    }
    out.trim_end().to_owned()
}

/// A count, size or id (`64`, `4194305`, `1.5`, a UUID), not a word such as `args[0]`.
fn is_number_or_id(token: &str) -> bool {
    let digits = token.chars().any(|c| c.is_ascii_digit());
    let plain = token
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | ',' | '-' | '_'));
    let id = token.len() >= 16 && token.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    digits && (plain || id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_differing_in_numbers_or_ids_share_a_class() {
        assert_eq!(
            class("this connection already follows 64 jobs, the limit"),
            class("this connection already follows 65 jobs, the limit"),
        );
        assert_eq!(
            class("job 0ce7bcde-90eb-432d-8827-4ce00474899a not found"),
            "job # not found"
        );
        assert_ne!(class("invalid args"), class("invalid env"));
        assert_eq!(
            class("invalid args[0]: is 131072 bytes"),
            "invalid args[0]: is # bytes"
        );
        assert!(class(&"word ".repeat(100)).ends_with('…'));
    }

    #[test]
    fn rows_are_bounded() {
        let tally = Tally::default();
        for i in 0..200 {
            tally.count("p", "C", &format!("class {}", "x".repeat(i)));
        }
        let rows = tally.rows();
        assert_eq!(rows.len(), MAX_ROWS + 1);
        assert_eq!(rows.iter().map(|r| r.3).sum::<u64>(), 200);
    }
}
