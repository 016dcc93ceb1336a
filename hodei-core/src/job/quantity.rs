//! CPU and memory amounts in Kubernetes quantity notation ("500m", "0.5", "64Mi", "1G").

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// An amount of CPU, in thousandths of a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cpu {
    millicores: u64,
}

impl Cpu {
    /// A CPU amount of `millicores` thousandths of a core.
    #[must_use]
    pub const fn from_millicores(millicores: u64) -> Self {
        Self { millicores }
    }

    /// Thousandths of a core.
    #[must_use]
    pub const fn millicores(self) -> u64 {
        self.millicores
    }
}

/// An amount of memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Memory {
    bytes: u64,
}

impl Memory {
    /// A memory amount of `bytes`.
    #[must_use]
    pub const fn from_bytes(bytes: u64) -> Self {
        Self { bytes }
    }

    /// The amount in bytes.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        self.bytes
    }
}

/// Why a quantity string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input} is not a valid {kind} quantity ({hint})")]
pub struct QuantityError {
    /// The refused text, quoted and cut short.
    input: String,
    kind: &'static str,
    hint: &'static str,
}

const CPU_HINT: &str = "expected e.g. \"500m\", \"0.5\" or \"2\"";
const MEMORY_HINT: &str = "expected e.g. \"64Mi\", \"1Gi\", \"500M\" or a number of bytes";

/// Splits "12.5Mi" into ("12.5", "Mi").
fn split_number(input: &str) -> (&str, &str) {
    let end = input
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(input.len());
    input.split_at(end)
}

/// Parses a non-negative decimal and multiplies it by `scale`, refusing overflow
/// and precision finer than one unit.
fn scaled(number: &str, scale: u64) -> Option<u64> {
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut value = whole.checked_mul(scale)?;
    let mut divisor: u64 = 1;
    for digit in frac.bytes() {
        divisor = divisor.checked_mul(10)?;
        let d = u64::from(digit - b'0');
        let part = scale.checked_mul(d)? / divisor;
        if scale.checked_mul(d)? % divisor != 0 {
            return None;
        }
        value = value.checked_add(part)?;
    }
    Some(value)
}

impl FromStr for Cpu {
    type Err = QuantityError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = || QuantityError {
            input: super::excerpt(input),
            kind: "cpu",
            hint: CPU_HINT,
        };
        let (number, suffix) = split_number(input.trim());
        let millicores = match suffix {
            "" => scaled(number, 1000),
            "m" => scaled(number, 1),
            _ => None,
        }
        .ok_or_else(err)?;
        if millicores == 0 {
            return Err(err());
        }
        Ok(Self { millicores })
    }
}

impl FromStr for Memory {
    type Err = QuantityError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = || QuantityError {
            input: super::excerpt(input),
            kind: "memory",
            hint: MEMORY_HINT,
        };
        let (number, suffix) = split_number(input.trim());
        let scale: u64 = match suffix {
            "" => 1,
            "k" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            _ => return Err(err()),
        };
        let bytes = scaled(number, scale).ok_or_else(err)?;
        if bytes == 0 {
            return Err(err());
        }
        Ok(Self { bytes })
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millicores.is_multiple_of(1000) {
            write!(f, "{}", self.millicores / 1000)
        } else {
            write!(f, "{}m", self.millicores)
        }
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, scale) in [
            ("Ti", 1u64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if self.bytes.is_multiple_of(scale) {
                return write!(f, "{}{suffix}", self.bytes / scale);
            }
        }
        write!(f, "{}", self.bytes)
    }
}

impl TryFrom<String> for Cpu {
    type Error = QuantityError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Cpu> for String {
    fn from(value: Cpu) -> Self {
        value.to_string()
    }
}

impl TryFrom<String> for Memory {
    type Error = QuantityError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Memory> for String {
    fn from(value: Memory) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_accepts_cores_and_millicores() {
        assert_eq!("500m".parse::<Cpu>().unwrap().millicores(), 500);
        assert_eq!("0.5".parse::<Cpu>().unwrap().millicores(), 500);
        assert_eq!("2".parse::<Cpu>().unwrap().millicores(), 2000);
        assert_eq!("1.25".parse::<Cpu>().unwrap().to_string(), "1250m");
        assert_eq!("3".parse::<Cpu>().unwrap().to_string(), "3");
    }

    #[test]
    fn cpu_refuses_garbage_and_zero() {
        for bad in ["", "abc", "0", "1.0001", "-1", "5x", "m", "."] {
            assert!(bad.parse::<Cpu>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn memory_accepts_binary_and_decimal_suffixes() {
        assert_eq!("64Mi".parse::<Memory>().unwrap().bytes(), 64 << 20);
        assert_eq!("1G".parse::<Memory>().unwrap().bytes(), 1_000_000_000);
        assert_eq!("1.5Gi".parse::<Memory>().unwrap().bytes(), 3 << 29);
        assert_eq!("4096".parse::<Memory>().unwrap().bytes(), 4096);
        assert_eq!("1536Mi".parse::<Memory>().unwrap().to_string(), "1536Mi");
        assert_eq!("1000".parse::<Memory>().unwrap().to_string(), "1000");
    }

    #[test]
    fn memory_refuses_garbage_with_a_hint() {
        let err = "abc".parse::<Memory>().unwrap_err();
        assert!(err.to_string().contains("\"abc\""));
        assert!(err.to_string().contains("64Mi"));
        for bad in ["", "0", "12Qi", "1.5", "99999999999999999999Gi"] {
            assert!(bad.parse::<Memory>().is_err(), "{bad:?} should be refused");
        }
    }
}
