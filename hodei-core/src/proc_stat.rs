//! One process as `/proc/PID/stat` shows it: what finding a job's processes and finding a
//! worker again after a restart both read.

/// The fields of `/proc/PID/stat` this crate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub parent: i32,
    pub group: i32,
    pub zombie: bool,
    /// When it started, in clock ticks since boot (field 22): with the pid, it names one
    /// process, never a later one that got the same pid.
    pub started: Option<u64>,
}

/// The fields from the text of `/proc/PID/stat`. The command name in parentheses may
/// hold any byte, so the fields are read after its last `)`.
pub(crate) fn parse(stat: &str) -> Option<ProcStat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let parent = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    // Fields 6 to 21 come between the group (field 5) and the start time (field 22).
    let started = fields.nth(16).and_then(|f| f.parse().ok());
    Some(ProcStat {
        parent,
        group,
        zombie: state == "Z" || state == "X",
        started,
    })
}

/// The process `pid` as it is now; `None` once it is gone.
pub(crate) fn read(pid: i32) -> Option<ProcStat> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_last_parenthesis() {
        assert_eq!(
            parse("42 (a) b) c) S 7 40 42 0 -1"),
            Some(ProcStat {
                parent: 7,
                group: 40,
                zombie: false,
                started: None,
            })
        );
        assert_eq!(
            parse("43 (sh) Z 1 43"),
            Some(ProcStat {
                parent: 1,
                group: 43,
                zombie: true,
                started: None,
            })
        );
        assert_eq!(parse("44 (sh"), None);
        assert_eq!(parse("45 (sh) S x"), None);
        assert_eq!(parse("46 (sh) S 1"), None);
    }

    #[test]
    fn the_start_time_is_field_22() {
        let line = "7 (a b) S 1 7 7 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(parse(line).unwrap().started, Some(123_456));
        let me = read(i32::try_from(std::process::id()).unwrap()).unwrap();
        assert!(me.started.is_some());
    }
}
