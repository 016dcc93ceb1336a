//! Free space on the filesystem that holds the data directory, and the floor below which
//! the server takes no more work.

use std::{fmt, io, path::Path, str::FromStr};

use crate::job::Memory;

/// Free space by default: 1 GiB.
pub const DEFAULT_MIN_FREE_DISK: FreeDiskFloor = FreeDiskFloor::Bytes(1 << 30);

/// Space on one filesystem, as an unprivileged process sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes an unprivileged writer may still use.
    pub available: u64,
    /// Size of the filesystem in bytes.
    pub total: u64,
}

/// The space of the filesystem holding `path`.
pub fn space(path: &Path) -> io::Result<DiskSpace> {
    let stats = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    let fragment = stats.fragment_size();
    Ok(DiskSpace {
        available: stats.blocks_available().saturating_mul(fragment),
        total: stats.blocks().saturating_mul(fragment),
    })
}

/// `bytes` for people, e.g. `812.3 MiB` or `512 B`.
#[must_use]
#[allow(clippy::cast_precision_loss)] // one decimal is shown
pub fn readable(bytes: u64) -> String {
    for (unit, scale) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= scale {
            return format!("{:.1} {unit}", bytes as f64 / scale as f64);
        }
    }
    format!("{bytes} B")
}

/// The least free space the server keeps: a number of bytes or a share of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeDiskFloor {
    /// At least this many bytes free.
    Bytes(u64),
    /// At least this percentage (0 to 100) of the filesystem free.
    Percent(u8),
}

impl FreeDiskFloor {
    /// The floor in bytes on a filesystem of `total` bytes.
    #[must_use]
    pub fn bytes_on(self, total: u64) -> u64 {
        match self {
            Self::Bytes(bytes) => bytes,
            Self::Percent(percent) => {
                u64::try_from(u128::from(total) * u128::from(percent) / 100).unwrap_or(u64::MAX)
            }
        }
    }

    /// True when `space` has at least the floor free.
    #[must_use]
    pub fn is_above(self, space: DiskSpace) -> bool {
        space.available >= self.bytes_on(space.total)
    }
}

impl fmt::Display for FreeDiskFloor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bytes(bytes) => write!(f, "{}", Memory::from_bytes(*bytes)),
            Self::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

/// Why a free-disk floor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FloorError(String);

impl FromStr for FreeDiskFloor {
    type Err = FloorError;

    /// `5%`, or a byte count or quantity such as `1000000`, `512Mi`, `1Gi`.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let input = input.trim();
        if let Some(percent) = input.strip_suffix('%') {
            return match percent.trim().parse::<u8>() {
                Ok(p) if p <= 100 => Ok(Self::Percent(p)),
                _ => Err(FloorError(format!(
                    "{} is not a percentage from 0% to 100%",
                    crate::job::excerpt(input)
                ))),
            };
        }
        input
            .parse::<Memory>()
            .map(|m| Self::Bytes(m.bytes()))
            .map_err(|e| FloorError(format!("{e}, or a percentage such as 5%")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_parse_as_bytes_quantities_or_percentages() {
        assert_eq!("1000000".parse(), Ok(FreeDiskFloor::Bytes(1_000_000)));
        assert_eq!("512Mi".parse(), Ok(FreeDiskFloor::Bytes(512 << 20)));
        assert_eq!(" 5% ".parse(), Ok(FreeDiskFloor::Percent(5)));
        assert!("101%".parse::<FreeDiskFloor>().is_err());
        let error = "lots".parse::<FreeDiskFloor>().unwrap_err().to_string();
        assert!(error.contains("percentage"), "{error}");
        assert_eq!(FreeDiskFloor::Percent(5).to_string(), "5%");
        assert_eq!(DEFAULT_MIN_FREE_DISK.to_string(), "1Gi");
    }

    #[test]
    fn a_floor_compares_with_the_free_space() {
        let space = DiskSpace {
            available: 40,
            total: 1000,
        };
        assert!(FreeDiskFloor::Percent(4).is_above(space));
        assert!(!FreeDiskFloor::Percent(5).is_above(space));
        assert!(FreeDiskFloor::Bytes(40).is_above(space));
        assert!(!FreeDiskFloor::Bytes(41).is_above(space));
    }

    #[test]
    fn the_space_of_a_real_directory_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let found = space(dir.path()).unwrap();
        assert!(found.total > 0);
        assert!(found.available <= found.total);
        assert!(space(&dir.path().join("missing")).is_err());
    }
}
