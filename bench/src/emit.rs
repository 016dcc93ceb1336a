//! `hodei-bench emit`: the command of output jobs. Either timestamped lines at a steady
//! rate (`--rate R --count N`, each line `<nanoseconds since the epoch>\n`, flushed at
//! once) or bulk numbered lines as fast as possible (`--bytes N`).

use std::{
    io::Write,
    process::ExitCode,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::Args;

/// What to write.
#[derive(Debug, Clone, Args)]
pub struct EmitArgs {
    /// Timestamped lines per second.
    #[arg(long, requires = "count", conflicts_with = "bytes")]
    pub rate: Option<f64>,
    /// Number of timestamped lines.
    #[arg(long, requires = "rate")]
    pub count: Option<u64>,
    /// Bulk mode: write this many bytes (rounded down to whole lines).
    #[arg(long)]
    pub bytes: Option<u64>,
    /// Bulk mode: bytes per line, newline included.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(2..=65536))]
    pub line_len: u64,
    /// Wait this long before the first line.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
}

/// Size of the writes in bulk mode.
const BULK_WRITE: usize = 64 * 1024;

/// Writes what `args` asks for to stdout.
pub fn run(args: &EmitArgs) -> anyhow::Result<ExitCode> {
    std::thread::sleep(Duration::from_millis(args.delay_ms));
    match (args.bytes, args.rate, args.count) {
        (Some(bytes), _, _) => bulk(bytes / args.line_len, args.line_len),
        (None, Some(rate), Some(count)) => timestamps(rate, count),
        _ => anyhow::bail!("give --bytes, or --rate and --count"),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// Lines `bulk` writes for `bytes` at `line_len`, and their total size.
#[must_use]
pub fn bulk_size(bytes: u64, line_len: u64) -> (u64, u64) {
    let lines = bytes / line_len;
    (lines, lines * line_len)
}

fn timestamps(rate: f64, count: u64) -> anyhow::Result<()> {
    anyhow::ensure!(rate > 0.0, "--rate must be positive");
    let mut out = std::io::stdout().lock();
    let start = Instant::now();
    for i in 0..count {
        // A fixed schedule, so a late line does not delay the ones after it.
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        writeln!(out, "{nanos}")?;
        out.flush()?;
    }
    Ok(())
}

fn bulk(lines: u64, line_len: u64) -> anyhow::Result<()> {
    // Each line is its number, zero-padded to fill the line. The number is incremented in
    // place as text: formatting each line would make this program the bottleneck.
    let len = usize::try_from(line_len)?;
    let mut line = vec![b'0'; len];
    line[len - 1] = b'\n';
    let mut out = std::io::stdout().lock();
    let mut buffer = Vec::with_capacity(BULK_WRITE + len);
    for _ in 0..lines {
        buffer.extend_from_slice(&line);
        if buffer.len() >= BULK_WRITE {
            out.write_all(&buffer)?;
            buffer.clear();
        }
        increment(&mut line[..len - 1]);
    }
    out.write_all(&buffer)?;
    out.flush()?;
    Ok(())
}

/// Adds one to a zero-padded decimal number, wrapping at all nines.
fn increment(digits: &mut [u8]) {
    for digit in digits.iter_mut().rev() {
        if *digit == b'9' {
            *digit = b'0';
        } else {
            *digit += 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increment_carries() {
        let mut digits = *b"0199";
        increment(&mut digits);
        assert_eq!(&digits, b"0200");
        let mut digits = *b"99";
        increment(&mut digits);
        assert_eq!(&digits, b"00");
    }
}
