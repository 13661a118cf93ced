//! Unsigned integers in request bodies, accepted as JSON Schema defines
//! them: `4096` and also `4096.0` (a number with no fractional part). A
//! float form is taken only up to 2^53, where every integer is exact, so
//! an offset or limit is never silently rounded.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, Visitor};

struct U64Visitor;

/// Largest float that is an exact integer with nothing lost (2^53).
const MAX_EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

impl Visitor<'_> for U64Visitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.fract() == 0.0 && (0.0..=MAX_EXACT_FLOAT).contains(&v) {
            Ok(v as u64)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
}

/// `#[serde(deserialize_with = "json_int::u64")]`
pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(U64Visitor)
}

/// `#[serde(default, deserialize_with = "json_int::opt_u64")]`
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct OptVisitor;
    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a non-negative integer or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            u64(d).map(Some)
        }
    }
    d.deserialize_option(OptVisitor)
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct T {
        #[serde(deserialize_with = "super::u64")]
        n: u64,
        #[serde(default, deserialize_with = "super::opt_u64")]
        o: Option<u64>,
    }

    fn parse(s: &str) -> Result<T, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn integers_and_integral_floats_are_taken() {
        assert_eq!(parse(r#"{"n": 7}"#).unwrap().n, 7);
        assert_eq!(parse(r#"{"n": 7.0, "o": 3e3}"#).unwrap().o, Some(3000));
        assert_eq!(parse(r#"{"n": 18446744073709551615}"#).unwrap().n, u64::MAX);
        assert_eq!(parse(r#"{"n": 1, "o": null}"#).unwrap().o, None);
        assert_eq!(parse(r#"{"n": 1}"#).unwrap().o, None);
    }

    #[test]
    fn fractions_negatives_and_inexact_floats_are_refused() {
        for bad in [
            r#"{"n": 1.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": -1.0}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": "1"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse(r#"{"n": 9007199254740994.0}"#).is_err());
    }
}
