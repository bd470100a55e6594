//! Quantities with units, as users write them in config and flags: sizes (`"2GB"`, `"512MiB"`),
//! rates (`"20Mbit"`, `"2.5MB/s"`) and durations (`"250ms"`, `"10s"`).
//!
//! Each type parses from a string with its unit (a size may also be a bare number of bytes, in
//! quotes), so that TOML errors point at the offending line.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::{fmt, str::FromStr, time::Duration};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct UnitError(String);

fn split_number(s: &str) -> Result<(f64, &str), UnitError> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let num = num.replace('_', "");
    let value: f64 = num
        .parse()
        .map_err(|_| UnitError(format!("`{s}` does not start with a number")))?;
    if !value.is_finite() || value < 0.0 {
        return Err(UnitError(format!("`{s}` is not a non-negative number")));
    }
    Ok((value, unit.trim()))
}

/// A size in bytes. Decimal (`kB`, `MB`, `GB`, `TB`) and binary (`KiB`, `MiB`, `GiB`, `TiB`) units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let (value, unit) = split_number(s)?;
        let mult: f64 = match unit {
            "" | "B" | "b" => 1.0,
            "k" | "K" | "kB" | "KB" => 1e3,
            "M" | "MB" => 1e6,
            "G" | "GB" => 1e9,
            "T" | "TB" => 1e12,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => {
                return Err(UnitError(format!(
                    "unknown size unit `{unit}` in `{s}` (use B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)"
                )))
            }
        };
        Ok(ByteSize((value * mult).round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        match self.0 {
            0..1_000 => write!(f, "{} B", self.0),
            1_000..1_000_000 => write!(f, "{:.1} kB", b / 1e3),
            1_000_000..1_000_000_000 => write!(f, "{:.1} MB", b / 1e6),
            _ => write!(f, "{:.2} GB", b / 1e9),
        }
    }
}

/// A rate in bits per second. Bit units (`bit`, `kbit`, `Mbit`, `Gbit`, also `bps`, `Mbps`)
/// and byte units per second (`B/s`, `kB/s`, `MB/s`, `GB/s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rate(pub u64);

impl Rate {
    pub fn bytes_per_sec(self) -> f64 {
        self.0 as f64 / 8.0
    }
}

impl FromStr for Rate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let (value, unit) = split_number(s)?;
        let bits: f64 = match unit {
            "bit" | "bps" | "bit/s" => 1.0,
            "kbit" | "Kbit" | "kbps" | "kbit/s" => 1e3,
            "Mbit" | "mbit" | "Mbps" | "Mbit/s" => 1e6,
            "Gbit" | "gbit" | "Gbps" | "Gbit/s" => 1e9,
            "B/s" => 8.0,
            "kB/s" | "KB/s" => 8e3,
            "MB/s" => 8e6,
            "GB/s" => 8e9,
            _ => {
                return Err(UnitError(format!(
                    "unknown rate unit `{unit}` in `{s}` (use kbit, Mbit, Gbit, kB/s, MB/s)"
                )))
            }
        };
        Ok(Rate((value * bits).round() as u64))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        if b >= 1e9 {
            write!(f, "{:.2} Gbit/s", b / 1e9)
        } else if b >= 1e6 {
            write!(f, "{:.1} Mbit/s", b / 1e6)
        } else {
            write!(f, "{:.0} kbit/s", b / 1e3)
        }
    }
}

/// A duration written with a unit: `250ms`, `3s`, `10m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| UnitError(format!("bad duration `{s}`: {e} (write e.g. 250ms, 3s, 10m)")))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

macro_rules! serde_via_str {
    ($t:ty, $what:literal) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$t, E> {
                        s.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

serde_via_str!(ByteSize, "a size with a unit, like \"2GB\" or \"512MiB\"");
serde_via_str!(Rate, "a rate with a unit, like \"20Mbit\" or \"2.5MB/s\"");
serde_via_str!(Dur, "a duration with a unit, like \"250ms\" or \"3s\"");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("2GB".parse::<ByteSize>().unwrap().0, 2_000_000_000);
        assert_eq!("1.5 MiB".parse::<ByteSize>().unwrap().0, 1_572_864);
        assert_eq!("512".parse::<ByteSize>().unwrap().0, 512);
        assert!("2 parsecs".parse::<ByteSize>().is_err());
        assert!("GB".parse::<ByteSize>().is_err());
        assert!("-1GB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn rates() {
        assert_eq!("20Mbit".parse::<Rate>().unwrap().0, 20_000_000);
        assert_eq!("2.5MB/s".parse::<Rate>().unwrap().0, 20_000_000);
        assert_eq!("300kbit".parse::<Rate>().unwrap().0, 300_000);
        assert!("20".parse::<Rate>().is_err(), "a bare number is ambiguous for a rate");
    }

    #[test]
    fn durations() {
        assert_eq!("250ms".parse::<Dur>().unwrap().0, Duration::from_millis(250));
        assert_eq!("1m 30s".parse::<Dur>().unwrap().0, Duration::from_secs(90));
        assert!("soon".parse::<Dur>().is_err());
    }
}
