//! Kubernetes resource quantities for CPU and memory, parsed and formatted exactly.
//!
//! Kubernetes accepts `<number><suffix>` where the suffix is binary (`Ki`…`Ei`), decimal (`n u m k M G T P E`)
//! or an exponent (`e3`, `E-2`). We keep two integer newtypes at Kubernetes' own resolution — millicores for
//! CPU and bytes for memory — and round up finer values, as the apiserver does. Arithmetic is done on integers
//! (u128) so `1.5Gi` is exactly 1610612736 bytes, never a float approximation.
//!
//! We wrote this instead of using `kube_quantity` because IPA validates untrusted LLM output with it: we want
//! no floats on the parse path, explicit bounds, and error messages that say what was wrong.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a quantity string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("empty quantity")]
    Empty,
    #[error("quantity {0:?} is longer than 64 characters")]
    TooLong(String),
    #[error("quantity {0:?} is negative; resources cannot be negative")]
    Negative(String),
    #[error("quantity {0:?} has no digits")]
    NoDigits(String),
    #[error("quantity {input:?} has an unknown suffix {suffix:?} (use m, k, M, G, Ki, Mi, Gi, …)")]
    UnknownSuffix { input: String, suffix: String },
    #[error("quantity {0:?} is too large")]
    Overflow(String),
}

/// A parsed non-negative quantity: `mantissa × 10^(exp10) × 2^(exp2)`, exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Exact {
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

fn parse_exact(input: &str) -> Result<Exact, QuantityError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    if s.len() > 64 {
        return Err(QuantityError::TooLong(s.chars().take(64).collect()));
    }
    let (negative, body) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(number_len);
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
        return Err(QuantityError::NoDigits(s.to_string()));
    }
    let mut mantissa: u128 = 0;
    let mut exp10: i32 = 0;
    for c in int_part.chars().chain(frac_part.chars()) {
        let digit = u128::from(c as u8 - b'0');
        if mantissa > (u128::MAX - 9) / 10 {
            return Err(QuantityError::Overflow(s.to_string()));
        }
        mantissa = mantissa * 10 + digit;
    }
    exp10 -= frac_part.len() as i32;
    let (suffix_exp10, exp2) =
        parse_suffix(suffix).ok_or_else(|| QuantityError::UnknownSuffix {
            input: s.to_string(),
            suffix: suffix.to_string(),
        })?;
    if negative && mantissa != 0 {
        return Err(QuantityError::Negative(s.to_string()));
    }
    Ok(Exact {
        mantissa,
        exp10: exp10 + suffix_exp10,
        exp2,
    })
}

/// Returns (power of ten, power of two) for a suffix.
fn parse_suffix(suffix: &str) -> Option<(i32, u32)> {
    Some(match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let rest = suffix.strip_prefix(['e', 'E'])?;
            let exp: i32 = rest.parse().ok()?;
            if !(-64..=64).contains(&exp) || rest.starts_with('+') && rest.len() == 1 {
                return None;
            }
            (exp, 0)
        }
    })
}

impl Exact {
    /// `ceil(value × 10^scale)` as u64, or None on overflow.
    fn scaled_ceil(self, scale: i32) -> Option<u64> {
        if self.mantissa == 0 {
            return Some(0);
        }
        let shifted = self.mantissa.checked_mul(1u128.checked_shl(self.exp2)?)?;
        let e = self.exp10 + scale;
        let value = if e >= 0 {
            shifted.checked_mul(10u128.checked_pow(e as u32)?)?
        } else if -e > 38 {
            1 // a positive value far below the resolution rounds up to one unit
        } else {
            let div = 10u128.pow((-e) as u32);
            shifted.div_ceil(div)
        };
        u64::try_from(value).ok()
    }
}

/// CPU in millicores. Kubernetes' resolution is 1m; finer values round up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuMillis(pub u64);

/// Memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * 1024 * 1024;

impl CpuMillis {
    pub fn from_cores(cores: u64) -> Self {
        Self(cores.saturating_mul(1000))
    }
    /// Rounds a measured core count up to the next millicore; non-finite or negative values give 0.
    pub fn from_cores_f64(cores: f64) -> Self {
        if cores.is_finite() && cores > 0.0 {
            Self((cores * 1000.0).ceil().min(u64::MAX as f64) as u64)
        } else {
            Self(0)
        }
    }
    pub fn as_cores(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl Bytes {
    pub fn from_mib(mib: u64) -> Self {
        Self(mib.saturating_mul(MIB))
    }
    /// Rounds a measured byte count up; non-finite or negative values give 0.
    pub fn from_f64(bytes: f64) -> Self {
        if bytes.is_finite() && bytes > 0.0 {
            Self(bytes.ceil().min(u64::MAX as f64) as u64)
        } else {
            Self(0)
        }
    }
    pub fn as_f64(self) -> f64 {
        self.0 as f64
    }
    pub fn as_mib(self) -> f64 {
        self.0 as f64 / MIB as f64
    }
    /// Rounds up to a whole MiB: recommendations in MiB read better and avoid churn from byte-level noise.
    pub fn round_up_mib(self) -> Self {
        Self(self.0.div_ceil(MIB).saturating_mul(MIB))
    }
}

impl FromStr for CpuMillis {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let exact = parse_exact(s)?;
        exact
            .scaled_ceil(3)
            .map(Self)
            .ok_or_else(|| QuantityError::Overflow(s.trim().to_string()))
    }
}

impl FromStr for Bytes {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let exact = parse_exact(s)?;
        exact
            .scaled_ceil(0)
            .map(Self)
            .ok_or_else(|| QuantityError::Overflow(s.trim().to_string()))
    }
}

impl fmt::Display for CpuMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SUFFIXES: [(&str, u64); 4] = [("Ti", 1 << 40), ("Gi", GIB), ("Mi", MIB), ("Ki", KIB)];
        if self.0 != 0 {
            for (suffix, unit) in SUFFIXES {
                if self.0.is_multiple_of(unit) {
                    return write!(f, "{}{}", self.0 / unit, suffix);
                }
            }
        }
        write!(f, "{}", self.0)
    }
}

macro_rules! quantity_serde {
    ($ty:ident, $what:literal, $example:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            /// Accepts a quantity string or a plain non-negative JSON number (as Kubernetes does).
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Raw {
                    Text(String),
                    Number(serde_json::Number),
                }
                let text = match Raw::deserialize(deserializer)? {
                    Raw::Text(s) => s,
                    Raw::Number(n) => n.to_string(),
                };
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "description": concat!("Kubernetes ", $what, " quantity, e.g. ", $example),
                    "maxLength": 16,
                })
            }
        }
    };
}

quantity_serde!(CpuMillis, "CPU", "\"250m\" or \"2\"");
quantity_serde!(Bytes, "memory", "\"256Mi\" or \"1Gi\"");

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_cpu_forms() {
        let cases = [
            ("100m", 100),
            ("0.5", 500),
            ("2", 2000),
            ("1k", 1_000_000),
            (".25", 250),
            ("1.0005", 1001), // rounds up to Kubernetes' 1m resolution
            ("250000u", 250),
            ("1e3", 1_000_000),
            ("5E-3", 5),
            ("+3", 3000),
            ("0", 0),
            ("-0", 0),
        ];
        for (text, millis) in cases {
            assert_eq!(text.parse::<CpuMillis>(), Ok(CpuMillis(millis)), "{text}");
        }
    }

    #[test]
    fn parses_memory_forms() {
        let cases = [
            ("1.5Gi", 1_610_612_736),
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("123Mi", 128_974_848),
            ("1k", 1000),
            ("1Ki", 1024),
            ("0.5Mi", 524_288),
            ("1m", 1), // a thousandth of a byte rounds up to one byte
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<Bytes>(), Ok(Bytes(bytes)), "{text}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "lots",
            "1.2.3",
            "-1",
            "-100m",
            "1Xi",
            "1e",
            "e3",
            "Gi",
            "1 Gi",
            "1e999",
            "99999999999999999999999Ei",
            ".",
        ] {
            assert!(bad.parse::<Bytes>().is_err(), "{bad:?} should be rejected");
            assert!(
                bad.parse::<CpuMillis>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(CpuMillis(250).to_string(), "250m");
        assert_eq!(CpuMillis(2000).to_string(), "2");
        assert_eq!(Bytes(128 * MIB).to_string(), "128Mi");
        assert_eq!(Bytes(3 * GIB).to_string(), "3Gi");
        assert_eq!(Bytes(1536 * MIB).to_string(), "1536Mi");
        assert_eq!(Bytes(1000).to_string(), "1000");
        assert_eq!(Bytes(0).to_string(), "0");
    }

    #[test]
    fn serde_accepts_strings_and_numbers() {
        let b: Bytes = serde_json::from_str("\"64Mi\"").unwrap_or_default();
        assert_eq!(b, Bytes(64 * MIB));
        let c: CpuMillis = serde_json::from_str("0.5").unwrap_or_default();
        assert_eq!(c, CpuMillis(500));
        assert!(serde_json::from_str::<Bytes>("-5").is_err());
        assert!(serde_json::from_str::<Bytes>("\"lots\"").is_err());
        assert_eq!(
            serde_json::to_string(&CpuMillis(1500)).ok().as_deref(),
            Some("\"1500m\"")
        );
    }

    proptest! {
        #[test]
        fn cpu_round_trips(millis in 0u64..u64::MAX / 1000) {
            let text = CpuMillis(millis).to_string();
            prop_assert_eq!(text.parse::<CpuMillis>(), Ok(CpuMillis(millis)));
        }

        #[test]
        fn bytes_round_trip(bytes in any::<u64>()) {
            let text = Bytes(bytes).to_string();
            prop_assert_eq!(text.parse::<Bytes>(), Ok(Bytes(bytes)));
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,80}") {
            let _ = text.parse::<Bytes>();
            let _ = text.parse::<CpuMillis>();
        }

        #[test]
        fn decimal_and_binary_suffixes_agree(n in 0u64..1_000_000) {
            prop_assert_eq!(format!("{n}Ki").parse::<Bytes>(), Ok(Bytes(n * 1024)));
            prop_assert_eq!(format!("{n}k").parse::<Bytes>(), Ok(Bytes(n * 1000)));
            prop_assert_eq!(format!("{n}m").parse::<CpuMillis>(), Ok(CpuMillis(n)));
        }
    }
}
