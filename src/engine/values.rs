//! JSON ⇄ WebAssembly value conversion, exact for every value type.
//!
//! Params arrive as raw JSON tokens (`serde_json::value::RawValue`) so that the
//! decimal text of a number reaches us untouched: an `i64` is parsed from its
//! digits and never passes through `f64`, and an `f32` is parsed from its
//! decimal text straight into `f32` (parsing into `f64` first would round
//! twice and break bit-exact round trips). Results are written back as JSON
//! text for the same reason. The encodings are specified in `docs/API.md`.

use serde_json::value::RawValue;
use wasmtime::{V128, Val, ValType};

use super::types::ref_type_name;

/// Canonical NaN payloads: only the most significant mantissa bit set.
const F32_CANONICAL_NAN_PAYLOAD: u32 = 1 << 22;
const F64_CANONICAL_NAN_PAYLOAD: u64 = 1 << 51;
const F32_MANTISSA: u32 = (1 << 23) - 1;
const F64_MANTISSA: u64 = (1 << 52) - 1;

/// Longest numeric text we try to parse; anything longer is out of range for
/// every type anyway, and refusing early keeps hostile inputs cheap.
const MAX_NUMBER_TEXT: usize = 1024;

/// One JSON param before it meets the signature: a value for one param, or
/// bytes for a `(ptr, len)` pair placed in guest memory.
#[derive(Debug)]
pub enum Arg<'a> {
    Json(&'a RawValue),
    Bytes(Vec<u8>),
    /// `{"externref": N}` or `{"anyref": N}`: a host reference carrying `N`.
    HostRef(RefKind, u32),
}

/// Which reference type a host reference a request passes is made as:
/// an `externref`, or the same as an `anyref` (`any.convert_extern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    Extern,
    Any,
}

impl RefKind {
    /// The JSON field that carries it, which is also the type's name.
    pub(crate) fn field(self) -> &'static str {
        match self {
            RefKind::Extern => "externref",
            RefKind::Any => "anyref",
        }
    }

    /// Whether a param of reference type `ty` takes it.
    pub(crate) fn fits(self, ty: &ValType) -> bool {
        ty.as_ref().is_some_and(|r| match self {
            RefKind::Extern => r.heap_type().is_extern(),
            RefKind::Any => matches!(r.heap_type(), wasmtime::HeapType::Any),
        })
    }
}

/// The host data of the `externref`s a request passes: the number it gave,
/// which a result or a global holding the reference shows again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostRef(pub u32);

/// The object forms of a param: exactly one field.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectParam {
    utf8: Option<String>,
    hex: Option<String>,
    base64: Option<String>,
    externref: Option<u32>,
    anyref: Option<u32>,
}

/// Splits params into plain values and bytes objects (`{"utf8": …}`,
/// `{"hex": …}`, `{"base64": …}`).
pub fn classify_args(params: &[Box<RawValue>]) -> Result<Vec<Arg<'_>>, String> {
    use base64::Engine as _;
    params
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            if !raw.get().trim_start().starts_with('{') {
                return Ok(Arg::Json(raw));
            }
            let shape = || {
                format!(
                    "param {i} is an object; a bytes param is {{\"utf8\": …}}, {{\"hex\": …}} or {{\"base64\": …}}, an externref {{\"externref\": N}}, an anyref {{\"anyref\": N}} (N from 0 to 4294967295)"
                )
            };
            let object: ObjectParam = serde_json::from_str(raw.get()).map_err(|e| format!("{}: {e}", shape()))?;
            match (object.utf8, object.hex, object.base64, object.externref, object.anyref) {
                (Some(text), None, None, None, None) => Ok(Arg::Bytes(text.into_bytes())),
                (None, Some(hex), None, None, None) => decode_hex(hex.trim())
                    .map(Arg::Bytes)
                    .map_err(|e| format!("param {i}: invalid hex: {e}")),
                (None, None, Some(b64), None, None) => base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map(Arg::Bytes)
                    .map_err(|e| format!("param {i}: invalid base64: {e}")),
                (None, None, None, Some(n), None) => Ok(Arg::HostRef(RefKind::Extern, n)),
                (None, None, None, None, Some(n)) => Ok(Arg::HostRef(RefKind::Any, n)),
                _ => Err(shape()),
            }
        })
        .collect()
}

/// What a JSON token is, before it is interpreted against a value type.
enum Token<'a> {
    Null,
    Number(&'a str),
    String(String),
    Other(&'static str),
}

fn classify(raw: &RawValue) -> Result<Token<'_>, String> {
    let text = raw.get().trim();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text)
            .map(Token::String)
            .map_err(|e| format!("invalid JSON string: {e}")),
        Some(b'n') => Ok(Token::Null),
        Some(b't' | b'f') => Ok(Token::Other("a boolean")),
        Some(b'[') => Ok(Token::Other("an array")),
        Some(b'{') => Ok(Token::Other("an object")),
        Some(_) => Ok(Token::Number(text)),
        None => Err("empty value".into()),
    }
}

/// Converts one JSON param into a value of type `ty`.
///
/// The error is a sentence fragment about the value (`"300 is out of range for
/// i8"`); the caller adds which param it was and the function's signature.
pub fn json_to_val(raw: &RawValue, ty: &ValType) -> Result<Val, String> {
    let token = classify(raw)?;
    let shown = || abbreviate(raw.get().trim());
    match ty {
        ValType::I32 => int_token(&token, 32, &shown).map(|v| Val::I32(v as u32 as i32)),
        ValType::I64 => int_token(&token, 64, &shown).map(|v| Val::I64(v as i64)),
        ValType::F32 => float_token(&token, &shown, parse_f32).map(Val::F32),
        ValType::F64 => float_token(&token, &shown, parse_f64).map(Val::F64),
        ValType::V128 => match &token {
            Token::String(s) => parse_v128(s).map(|v| Val::V128(V128::from(v))),
            _ => Err(format!(
                "expected a v128 string such as \"0x000000010000000200000003000000ff\" or \"i32x4 1 2 3 255\", got {}",
                shown()
            )),
        },
        ValType::Ref(r) => match token {
            Token::Null if r.is_nullable() => {
                Val::default_for_ty(ty).ok_or_else(|| format!("cannot build a null {}", ref_type_name(r)))
            }
            Token::Null => Err(format!("{} is not nullable", ref_type_name(r))),
            _ if r.heap_type().is_extern() => Err(format!(
                "expected null or {{\"externref\": N}} for {}, got {}",
                ref_type_name(r),
                shown()
            )),
            _ => Err(format!(
                "only null can be passed for {}, got {}",
                ref_type_name(r),
                shown()
            )),
        },
    }
}

fn int_token(token: &Token, bits: u32, shown: &dyn Fn() -> String) -> Result<u64, String> {
    match token {
        Token::Number(text) => parse_int(text, bits),
        Token::String(s) => parse_int(s.trim(), bits),
        Token::Null => Err(format!("expected an i{bits} integer, got null")),
        Token::Other(what) => Err(format!("expected an i{bits} integer, got {what} {}", shown())),
    }
}

fn float_token<T>(
    token: &Token,
    shown: &dyn Fn() -> String,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, String> {
    match token {
        Token::Number(text) => parse(text),
        Token::String(s) => parse(s.trim()),
        Token::Null => Err("expected a number, got null".into()),
        Token::Other(what) => Err(format!("expected a number, got {what} {}", shown())),
    }
}

pub(crate) fn abbreviate(text: &str) -> String {
    const MAX: usize = 60;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Parses a signed or unsigned integer of `bits` width into its two's
/// complement bit pattern. Accepts decimal and `0x` hexadecimal, with an
/// optional sign; the range is `-2^(bits-1) ..= 2^bits - 1`.
pub fn parse_int(text: &str, bits: u32) -> Result<u64, String> {
    let fail = || format!("{} is not an i{bits} integer", abbreviate(text));
    if text.len() > MAX_NUMBER_TEXT {
        return Err(format!("{} is out of range for i{bits}", abbreviate(text)));
    }
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = match body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        Some(hex) => (16, hex),
        None => (10, body),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(fail());
    }
    let out_of_range = || format!("{text} is out of range for i{bits}");
    let magnitude = u128::from_str_radix(digits, radix).map_err(|_| out_of_range())?;
    let limit = if negative {
        1u128 << (bits - 1)
    } else {
        (1u128 << bits) - 1
    };
    if magnitude > limit {
        return Err(out_of_range());
    }
    let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let value = if negative {
        (magnitude as u64).wrapping_neg()
    } else {
        magnitude as u64
    };
    Ok(value & mask)
}

/// The special float spellings shared by f32 and f64.
enum Special {
    Nan { negative: bool, payload: Option<u64> },
    Infinity { negative: bool },
}

fn parse_special(text: &str) -> Result<Option<Special>, String> {
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = body.to_ascii_lowercase();
    if lower == "nan" {
        return Ok(Some(Special::Nan {
            negative,
            payload: None,
        }));
    }
    if let Some(hex) = lower.strip_prefix("nan:0x") {
        let payload =
            u64::from_str_radix(hex, 16).map_err(|_| format!("{} is not a valid NaN payload", abbreviate(text)))?;
        return Ok(Some(Special::Nan {
            negative,
            payload: Some(payload),
        }));
    }
    if lower == "inf" || lower == "infinity" {
        return Ok(Some(Special::Infinity { negative }));
    }
    Ok(None)
}

/// Checks that `text` is a plain decimal number, so that Rust's float parser
/// (which also takes `inf`, `nan` and friends) sees only what we document.
fn is_decimal(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mut parts = mantissa.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let frac = parts.next().unwrap_or("");
    let digits_ok = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = (!whole.is_empty() || !frac.is_empty()) && digits_ok(whole) && digits_ok(frac);
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits_ok(e)
    });
    mantissa_ok && exponent_ok
}

/// Whether `text` is a hexadecimal float (`0x1.8p3`, `-0x1p-149`), the
/// notation the text format and the spec tests use for exact values.
fn is_hex_float(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    body.starts_with("0x") || body.starts_with("0X")
}

/// Parses a hex float with the text-format parser (which `wat` already
/// brings in), so its rounding is the spec's. `None` if it is not one.
fn parse_hex_float<'a, T: wast::parser::Parse<'a>>(buffer: &'a wast::parser::ParseBuffer<'a>) -> Option<T> {
    wast::parser::parse::<T>(buffer).ok()
}

fn hex_f32(text: &str) -> Result<u32, String> {
    let fail = || format!("{} is not an f32 hex float", abbreviate(text));
    let buffer = wast::parser::ParseBuffer::new(text).map_err(|_| fail())?;
    parse_hex_float::<wast::token::F32>(&buffer)
        .map(|f| f.bits)
        .ok_or_else(fail)
}

fn hex_f64(text: &str) -> Result<u64, String> {
    let fail = || format!("{} is not an f64 hex float", abbreviate(text));
    let buffer = wast::parser::ParseBuffer::new(text).map_err(|_| fail())?;
    parse_hex_float::<wast::token::F64>(&buffer)
        .map(|f| f.bits)
        .ok_or_else(fail)
}

/// Parses an f32 from decimal text (correctly rounded, straight into f32),
/// a hex float, or one of the special spellings, returning its bit pattern.
pub fn parse_f32(text: &str) -> Result<u32, String> {
    const SIGN: u32 = 1 << 31;
    if text.len() <= MAX_NUMBER_TEXT && is_hex_float(text) {
        return hex_f32(text);
    }
    match parse_special(text)? {
        Some(Special::Infinity { negative }) => Ok(f32::INFINITY.to_bits() | if negative { SIGN } else { 0 }),
        Some(Special::Nan { negative, payload }) => {
            let payload = payload.unwrap_or(F32_CANONICAL_NAN_PAYLOAD as u64);
            if payload == 0 || payload > F32_MANTISSA as u64 {
                return Err(format!("NaN payload of {text} must be between 0x1 and 0x7fffff"));
            }
            Ok(0x7f80_0000 | payload as u32 | if negative { SIGN } else { 0 })
        }
        None => {
            if text.len() > MAX_NUMBER_TEXT || !is_decimal(text) {
                return Err(format!("{} is not an f32 number", abbreviate(text)));
            }
            let value: f32 = text
                .parse()
                .map_err(|_| format!("{} is not an f32 number", abbreviate(text)))?;
            if value.is_infinite() {
                return Err(format!("{} is out of range for f32", abbreviate(text)));
            }
            Ok(value.to_bits())
        }
    }
}

/// Parses an f64 like [`parse_f32`] does an f32.
pub fn parse_f64(text: &str) -> Result<u64, String> {
    const SIGN: u64 = 1 << 63;
    if text.len() <= MAX_NUMBER_TEXT && is_hex_float(text) {
        return hex_f64(text);
    }
    match parse_special(text)? {
        Some(Special::Infinity { negative }) => Ok(f64::INFINITY.to_bits() | if negative { SIGN } else { 0 }),
        Some(Special::Nan { negative, payload }) => {
            let payload = payload.unwrap_or(F64_CANONICAL_NAN_PAYLOAD);
            if payload == 0 || payload > F64_MANTISSA {
                return Err(format!("NaN payload of {text} must be between 0x1 and 0xfffffffffffff"));
            }
            Ok(0x7ff0_0000_0000_0000 | payload | if negative { SIGN } else { 0 })
        }
        None => {
            if text.len() > MAX_NUMBER_TEXT || !is_decimal(text) {
                return Err(format!("{} is not an f64 number", abbreviate(text)));
            }
            let value: f64 = text
                .parse()
                .map_err(|_| format!("{} is not an f64 number", abbreviate(text)))?;
            if value.is_infinite() {
                return Err(format!("{} is out of range for f64", abbreviate(text)));
            }
            Ok(value.to_bits())
        }
    }
}

/// Parses a v128 from `0x` followed by up to 32 hex digits (the 128-bit
/// little-endian value, lane 0 in the lowest bits), or from lane syntax as in
/// the text format: `i8x16`, `i16x8`, `i32x4`, `i64x2`, `f32x4`, `f64x2`
/// followed by the lanes separated by spaces.
pub fn parse_v128(text: &str) -> Result<u128, String> {
    let text = text.trim();
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        if hex.is_empty() || hex.len() > 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("{} is not 0x followed by 1 to 32 hex digits", abbreviate(text)));
        }
        return u128::from_str_radix(hex, 16).map_err(|e| e.to_string());
    }
    let mut words = text.split_whitespace();
    let shape = words.next().unwrap_or("");
    let (lane_bits, count, float): (u32, usize, bool) = match shape {
        "i8x16" => (8, 16, false),
        "i16x8" => (16, 8, false),
        "i32x4" => (32, 4, false),
        "i64x2" => (64, 2, false),
        "f32x4" => (32, 4, true),
        "f64x2" => (64, 2, true),
        _ => {
            return Err(format!(
                "{} is not a v128: use 0x and 32 hex digits, or a shape (i8x16, i16x8, i32x4, i64x2, f32x4, f64x2) and its lanes",
                abbreviate(text)
            ));
        }
    };
    let lanes: Vec<&str> = words.collect();
    if lanes.len() != count {
        return Err(format!("{shape} needs {count} lanes, got {}", lanes.len()));
    }
    let mut value = 0u128;
    for (i, lane) in lanes.iter().enumerate() {
        let bits = match (float, lane_bits) {
            (true, 32) => parse_f32(lane)? as u64,
            (true, _) => parse_f64(lane)?,
            (false, _) => parse_int(lane, lane_bits)?,
        };
        value |= (bits as u128) << (i as u32 * lane_bits);
    }
    Ok(value)
}

/// Writes one result as JSON text (see `docs/API.md` for the encodings).
/// A result as ready JSON for the response body: the text [`val_to_json`]
/// writes (only numbers, strings, `null` and small fixed objects, so the
/// check `RawValue` makes of it cannot fail). Integers, the common case,
/// are written by `itoa` into a string of their exact length
/// (`serde_json::value::to_raw_value` writes into a 128-byte buffer and
/// shrinks it, a reallocation per result).
pub fn result_json(val: &Val) -> Box<RawValue> {
    let written = match val {
        Val::I32(v) => RawValue::from_string(itoa::Buffer::new().format(*v).to_owned()),
        Val::I64(v) => RawValue::from_string(itoa::Buffer::new().format(*v).to_owned()),
        _ => RawValue::from_string(val_to_json(val)),
    };
    written.unwrap_or_else(|_| RawValue::from_string("null".into()).expect("`null` is JSON"))
}

/// The JSON text of an `externref` result: `{"externref": N}` for one a
/// request made, `{"ref":"extern"}` for any other.
pub(crate) fn externref_json(data: Option<&HostRef>) -> String {
    match data {
        Some(HostRef(n)) => format!(r#"{{"externref":{n}}}"#),
        None => r#"{"ref":"extern"}"#.into(),
    }
}

/// What a non-null `anyref` result is.
pub(crate) enum AnyKind {
    I31(i32),
    Struct,
    Array,
    /// A host reference a request passed as `{"anyref": N}`.
    Host(u32),
    Other,
}

/// The JSON text of a non-null `anyref` result.
pub(crate) fn anyref_json(kind: AnyKind) -> String {
    match kind {
        AnyKind::I31(n) => format!(r#"{{"i31":{n}}}"#),
        AnyKind::Struct => r#"{"ref":"struct"}"#.into(),
        AnyKind::Array => r#"{"ref":"array"}"#.into(),
        AnyKind::Host(n) => format!(r#"{{"anyref":{n}}}"#),
        AnyKind::Other => r#"{"ref":"any"}"#.into(),
    }
}

/// A value as JSON text (see docs/API.md for the encodings).
pub fn val_to_json(val: &Val) -> String {
    match val {
        Val::I32(v) => v.to_string(),
        Val::I64(v) => v.to_string(),
        Val::F32(bits) => f32_to_json(*bits),
        Val::F64(bits) => f64_to_json(*bits),
        Val::V128(v) => format!("\"0x{:032x}\"", v.as_u128()),
        Val::FuncRef(None) | Val::ExternRef(None) | Val::AnyRef(None) | Val::ExnRef(None) => "null".into(),
        Val::FuncRef(Some(_)) => r#"{"ref":"func"}"#.into(),
        Val::ExternRef(Some(_)) => r#"{"ref":"extern"}"#.into(),
        Val::AnyRef(Some(_)) => r#"{"ref":"any"}"#.into(),
        Val::ExnRef(Some(_)) => r#"{"ref":"exn"}"#.into(),
        // `Val` is non-exhaustive; a new kind of value is still reported.
        #[allow(unreachable_patterns)]
        _ => r#"{"ref":"unknown"}"#.into(),
    }
}

/// Shortest decimal text that parses back to the same f32, or a special
/// string for NaN and the infinities.
pub fn f32_to_json(bits: u32) -> String {
    let value = f32::from_bits(bits);
    let negative = bits >> 31 == 1;
    if value.is_nan() {
        nan_json(negative, (bits & F32_MANTISSA) as u64, F32_CANONICAL_NAN_PAYLOAD as u64)
    } else if value.is_infinite() {
        infinity_json(negative)
    } else {
        format!("{value:?}")
    }
}

/// Shortest decimal text that parses back to the same f64, or a special
/// string for NaN and the infinities.
pub fn f64_to_json(bits: u64) -> String {
    let value = f64::from_bits(bits);
    let negative = bits >> 63 == 1;
    if value.is_nan() {
        nan_json(negative, bits & F64_MANTISSA, F64_CANONICAL_NAN_PAYLOAD)
    } else if value.is_infinite() {
        infinity_json(negative)
    } else {
        format!("{value:?}")
    }
}

fn nan_json(negative: bool, payload: u64, canonical: u64) -> String {
    let sign = if negative { "-" } else { "" };
    if payload == canonical {
        format!("\"{sign}NaN\"")
    } else {
        format!("\"{sign}nan:0x{payload:x}\"")
    }
}

fn infinity_json(negative: bool) -> String {
    if negative {
        "\"-Infinity\"".into()
    } else {
        "\"Infinity\"".into()
    }
}

/// Decodes hex text (either case) into bytes, with the `hex` crate's
/// errors. faster-hex decodes (SIMD, about a tenth of the instructions of
/// `hex::decode`, which collects an iterator of `Result`s: 50 a byte, and a
/// module sent as `wasm_hex` can be megabytes); text it refuses is handed
/// to `hex::decode` for the error, which names the first bad character and
/// where it is.
pub fn decode_hex(text: &str) -> Result<Vec<u8>, hex::FromHexError> {
    if !text.len().is_multiple_of(2) {
        return Err(hex::FromHexError::OddLength);
    }
    let mut bytes = vec![0; text.len() / 2];
    match faster_hex::hex_decode(text.as_bytes(), &mut bytes) {
        Ok(_) => Ok(bytes),
        Err(_) => hex::decode(text),
    }
}

/// Lower-case hex of `bytes`, as `hex::encode` writes it. faster-hex
/// writes it with SIMD; `hex::encode` collects an iterator of `char`s
/// (about 2,000 instructions for a 32-byte digest, which every call
/// answers in `stats.modules`, and a memory read asked for as hex can be
/// megabytes).
pub fn encode_hex(bytes: impl AsRef<[u8]>) -> String {
    faster_hex::hex_string(bytes.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::types::type_name;

    /// `encode_hex` writes what `hex::encode` does, and `decode_hex`
    /// reads it back.
    #[test]
    fn hex_encodes_as_the_hex_crate_does() {
        let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for len in [0, 1, 15, 16, 31, 32, 33, 64, 512] {
            let slice = &bytes[..len];
            assert_eq!(encode_hex(slice), hex::encode(slice), "{len} bytes");
            assert_eq!(decode_hex(&encode_hex(slice)).unwrap(), slice);
        }
    }

    /// `decode_hex` answers what `hex::decode` does, errors included.
    #[test]
    fn hex_decodes_as_the_hex_crate_does() {
        let long = "0123456789abcdefABCDEF".repeat(40);
        let long_bad = format!("{long}0x{long}");
        for text in [
            "", "00", "0061736d", "DEADbeef", "abc", "0g", "g0", "12 4", "ff\u{e9}", &long, &long_bad,
        ] {
            assert_eq!(decode_hex(text), hex::decode(text), "{text:?}");
        }
    }

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    fn to_val(text: &str, ty: ValType) -> Result<Val, String> {
        json_to_val(&raw(text), &ty)
    }

    #[test]
    fn i32_accepts_signed_unsigned_strings_and_hex() {
        assert_eq!(to_val("2", ValType::I32).unwrap().unwrap_i32(), 2);
        assert_eq!(to_val("-2147483648", ValType::I32).unwrap().unwrap_i32(), i32::MIN);
        assert_eq!(to_val("4294967295", ValType::I32).unwrap().unwrap_i32(), -1);
        assert_eq!(to_val("\"0xffffffff\"", ValType::I32).unwrap().unwrap_i32(), -1);
        assert_eq!(to_val("\"-7\"", ValType::I32).unwrap().unwrap_i32(), -7);
    }

    #[test]
    fn i32_rejects_out_of_range_fractions_and_other_types() {
        assert!(to_val("4294967296", ValType::I32).unwrap_err().contains("out of range"));
        assert!(
            to_val("-2147483649", ValType::I32)
                .unwrap_err()
                .contains("out of range")
        );
        assert!(to_val("2.0", ValType::I32).unwrap_err().contains("not an i32"));
        assert!(to_val("1e3", ValType::I32).is_err());
        assert!(to_val("true", ValType::I32).unwrap_err().contains("boolean"));
        assert!(to_val("null", ValType::I32).is_err());
        assert!(to_val("\"\"", ValType::I32).is_err());
    }

    #[test]
    fn i64_is_exact_beyond_2_pow_53() {
        assert_eq!(
            to_val("9007199254740993", ValType::I64).unwrap().unwrap_i64(),
            9007199254740993
        );
        assert_eq!(
            to_val("-9223372036854775808", ValType::I64).unwrap().unwrap_i64(),
            i64::MIN
        );
        assert_eq!(to_val("18446744073709551615", ValType::I64).unwrap().unwrap_i64(), -1);
        assert!(to_val("18446744073709551616", ValType::I64).is_err());
        assert_eq!(val_to_json(&Val::I64(i64::MAX)), "9223372036854775807");
    }

    #[test]
    fn f32_parses_straight_from_decimal() {
        let bits = to_val("0.1", ValType::F32).unwrap().unwrap_f32().to_bits();
        assert_eq!(bits, 0.1f32.to_bits());
        assert_eq!(f32_to_json(bits), "0.1");
        // 16777217 is not representable in f32; it must round to even once.
        assert_eq!(to_val("16777217", ValType::F32).unwrap().unwrap_f32(), 16777216.0);
    }

    #[test]
    fn signed_zero_nan_and_infinities_survive() {
        let neg_zero = to_val("-0.0", ValType::F64).unwrap();
        assert_eq!(val_to_json(&neg_zero), "-0.0");
        assert_eq!(val_to_json(&to_val("\"NaN\"", ValType::F32).unwrap()), "\"NaN\"");
        assert_eq!(val_to_json(&to_val("\"-nan\"", ValType::F64).unwrap()), "\"-NaN\"");
        assert_eq!(
            val_to_json(&to_val("\"nan:0x200000\"", ValType::F32).unwrap()),
            "\"nan:0x200000\""
        );
        assert_eq!(
            val_to_json(&to_val("\"Infinity\"", ValType::F32).unwrap()),
            "\"Infinity\""
        );
        assert_eq!(
            val_to_json(&to_val("\"-Infinity\"", ValType::F64).unwrap()),
            "\"-Infinity\""
        );
    }

    #[test]
    fn hex_floats_are_exact() {
        assert_eq!(parse_f32("0x1p-149").unwrap(), 1);
        assert_eq!(parse_f32("-0x1.fffffep+127").unwrap(), f32::MIN.to_bits());
        assert_eq!(parse_f64("0x1.8p1").unwrap(), 3.0f64.to_bits());
        assert!(parse_f32("0x1p128").is_err(), "overflow is refused");
        assert!(parse_f64("0xzz").is_err());
    }

    #[test]
    fn floats_reject_overflow_and_junk() {
        assert!(to_val("1e39", ValType::F32).unwrap_err().contains("out of range"));
        assert!(to_val("1e309", ValType::F64).unwrap_err().contains("out of range"));
        assert!(to_val("\"12abc\"", ValType::F64).is_err());
        assert!(to_val("\"nan:0x0\"", ValType::F32).is_err());
        assert!(to_val("\"nan:0x800000\"", ValType::F32).is_err());
    }

    #[test]
    fn v128_hex_and_lane_forms_agree() {
        let hex = parse_v128("0x00000004000000030000000200000001").unwrap();
        let lanes = parse_v128("i32x4 1 2 3 4").unwrap();
        assert_eq!(hex, lanes);
        assert_eq!(
            val_to_json(&Val::V128(V128::from(lanes))),
            "\"0x00000004000000030000000200000001\""
        );
        assert_eq!(
            parse_v128("i8x16 -1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 255").unwrap(),
            0xff << 120 | 0xff
        );
        assert!(parse_v128("i32x4 1 2 3").is_err());
    }

    #[test]
    fn refs_take_only_null() {
        assert!(matches!(to_val("null", ValType::FUNCREF).unwrap(), Val::FuncRef(None)));
        assert!(matches!(
            to_val("null", ValType::EXTERNREF).unwrap(),
            Val::ExternRef(None)
        ));
        assert!(to_val("1", ValType::FUNCREF).is_err());
        assert_eq!(type_name(&ValType::FUNCREF), "funcref");
    }

    mod round_trip {
        use super::*;
        use proptest::prelude::*;

        /// Writes a value as a result, reads it back as a param.
        fn again(val: Val, ty: ValType) -> Val {
            json_to_val(&raw(&val_to_json(&val)), &ty).unwrap()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(20_000))]

            #[test]
            fn every_f32_bit_pattern_survives(bits in any::<u32>()) {
                prop_assert_eq!(again(Val::F32(bits), ValType::F32).unwrap_f32().to_bits(), bits);
            }

            #[test]
            fn every_f64_bit_pattern_survives(bits in any::<u64>()) {
                prop_assert_eq!(again(Val::F64(bits), ValType::F64).unwrap_f64().to_bits(), bits);
            }

            #[test]
            fn every_i32_and_i64_survives(a in any::<i32>(), b in any::<i64>()) {
                prop_assert_eq!(again(Val::I32(a), ValType::I32).unwrap_i32(), a);
                prop_assert_eq!(again(Val::I64(b), ValType::I64).unwrap_i64(), b);
            }

            #[test]
            fn every_v128_survives(bits in any::<u128>()) {
                prop_assert_eq!(again(Val::V128(V128::from(bits)), ValType::V128).unwrap_v128().as_u128(), bits);
            }

            #[test]
            fn unsigned_spellings_wrap_like_twos_complement(u in any::<u64>()) {
                prop_assert_eq!(to_val(&u.to_string(), ValType::I64).unwrap().unwrap_i64(), u as i64);
            }

            #[test]
            fn arbitrary_text_never_panics(text in ".{0,40}") {
                let quoted = serde_json::to_string(&text).unwrap();
                for ty in [ValType::I32, ValType::I64, ValType::F32, ValType::F64, ValType::V128, ValType::FUNCREF] {
                    let _ = to_val(&quoted, ty);
                }
            }
        }
    }
}
