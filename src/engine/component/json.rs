//! JSON ⇄ component-model values, by the WIT type of each param and result.
//!
//! The table in docs/API.md ("Component values") is the contract. Numbers
//! are read from the request's own text, never through `f64`: an `s64` or a
//! `u64` above 2^53 keeps every digit, and an `f32` is rounded once, straight
//! from the decimal text, as core values are (see [`super::super::values`]).
//! Errors name the path of the value that is wrong
//! (`params[0].address.zip: expected u32, got "x"`), so a client with a deep
//! record finds the field at once.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::value::RawValue;
use wasmtime::component::{Type, Val};

use super::resources::Handles;
use crate::engine::values::{abbreviate, decode_hex, f32_to_json, f64_to_json, parse_f32, parse_f64, parse_int};

/// A value that does not fit its type: where it is, and what is wrong.
#[derive(Debug)]
pub struct ValueError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The JSON shape of a value, before its type interprets it.
enum Shape<'a> {
    Null,
    Bool(bool),
    Number(&'a str),
    String(String),
    Array(Vec<&'a RawValue>),
    Object(Vec<(String, &'a RawValue)>),
}

fn shape(raw: &RawValue) -> Result<Shape<'_>, String> {
    let text = raw.get().trim();
    let bad = |e: serde_json::Error| format!("invalid JSON: {e}");
    Ok(match text.as_bytes().first() {
        Some(b'"') => Shape::String(serde_json::from_str(text).map_err(bad)?),
        Some(b'n') => Shape::Null,
        Some(b't') => Shape::Bool(true),
        Some(b'f') => Shape::Bool(false),
        Some(b'[') => Shape::Array(serde_json::from_str(text).map_err(bad)?),
        Some(b'{') => {
            let map: BTreeMap<String, &RawValue> = serde_json::from_str(text).map_err(bad)?;
            Shape::Object(map.into_iter().collect())
        }
        Some(_) => Shape::Number(text),
        None => return Err("empty value".into()),
    })
}

impl Shape<'_> {
    fn describe(&self, raw: &RawValue) -> String {
        let what = match self {
            Shape::Null => return "null".into(),
            Shape::Bool(_) => "a boolean",
            Shape::Number(_) => "a number",
            Shape::String(_) => "a string",
            Shape::Array(_) => "an array",
            Shape::Object(_) => "an object",
        };
        format!("{what} {}", abbreviate(raw.get().trim()))
    }
}

/// Converts the JSON `raw` at `path` into a value of type `ty`.
/// Resources (`{"resource": N}`) are looked up in `handles`, the calling
/// instance's; a one-shot call passes an empty one.
pub fn from_json(raw: &RawValue, ty: &Type, path: &str, handles: &mut Handles) -> Result<Val, ValueError> {
    let fail = |message: String| ValueError {
        path: path.to_string(),
        message,
    };
    let shape = shape(raw).map_err(fail)?;
    let expected = |what: &str| fail(format!("expected {what}, got {}", shape.describe(raw)));
    let int = |bits: u32, signed: bool| -> Result<u64, ValueError> {
        let name = int_name(bits, signed);
        let text = match &shape {
            Shape::Number(text) => text.to_string(),
            Shape::String(text) => text.trim().to_string(),
            _ => return Err(expected(name)),
        };
        parse_ranged(&text, bits, signed).map_err(|m| fail(format!("expected {name}, got {m}")))
    };
    let float = |parse: fn(&str) -> Result<u64, String>, name: &str| -> Result<u64, ValueError> {
        match &shape {
            Shape::Number(text) => parse(text),
            Shape::String(text) => parse(text.trim()),
            _ => return Err(expected(name)),
        }
        .map_err(fail)
    };
    Ok(match ty {
        Type::Bool => match shape {
            Shape::Bool(b) => Val::Bool(b),
            _ => return Err(expected("a boolean")),
        },
        Type::S8 => Val::S8(int(8, true)? as i8),
        Type::U8 => Val::U8(int(8, false)? as u8),
        Type::S16 => Val::S16(int(16, true)? as i16),
        Type::U16 => Val::U16(int(16, false)? as u16),
        Type::S32 => Val::S32(int(32, true)? as i32),
        Type::U32 => Val::U32(int(32, false)? as u32),
        Type::S64 => Val::S64(int(64, true)? as i64),
        Type::U64 => Val::U64(int(64, false)?),
        Type::Float32 => Val::Float32(f32::from_bits(
            float(|t| parse_f32(t).map(u64::from), "an f32 number")? as u32
        )),
        Type::Float64 => Val::Float64(f64::from_bits(float(parse_f64, "an f64 number")?)),
        Type::Char => match &shape {
            Shape::String(s) if s.chars().count() == 1 => Val::Char(s.chars().next().unwrap_or_default()),
            _ => return Err(expected("a one-character string (char)")),
        },
        Type::String => match shape {
            Shape::String(s) => Val::String(s),
            _ => return Err(expected("a string")),
        },
        Type::List(list) => {
            let element = list.ty();
            match shape {
                Shape::Array(items) => Val::List(elements(&items, &element, path, handles)?),
                Shape::Object(fields) if element == Type::U8 => Val::List(bytes(&fields).map_err(fail)?),
                _ if element == Type::U8 => {
                    return Err(expected("an array of u8, {\"base64\": \"...\"} or {\"hex\": \"...\"}"));
                }
                _ => return Err(expected("an array")),
            }
        }
        Type::FixedLengthList(list) => match shape {
            Shape::Array(items) if items.len() == list.len() as usize => {
                Val::FixedLengthList(elements(&items, &list.ty(), path, handles)?)
            }
            _ => return Err(expected(&format!("an array of {} elements", list.len()))),
        },
        Type::Tuple(tuple) => {
            let types: Vec<Type> = tuple.types().collect();
            match shape {
                Shape::Array(items) if items.len() == types.len() => Val::Tuple(
                    items
                        .iter()
                        .zip(&types)
                        .enumerate()
                        .map(|(i, (item, ty))| from_json(item, ty, &format!("{path}[{i}]"), handles))
                        .collect::<Result<_, _>>()?,
                ),
                _ => return Err(expected(&format!("an array of {} elements (a tuple)", types.len()))),
            }
        }
        Type::Record(record) => {
            let Shape::Object(mut given) = shape else {
                return Err(expected("an object (a record)"));
            };
            let mut fields = Vec::with_capacity(record.fields().len());
            for field in record.fields() {
                let at = format!("{path}.{}", field.name);
                let value = match given.iter().position(|(k, _)| k == field.name) {
                    Some(i) => from_json(given.swap_remove(i).1, &field.ty, &at, handles)?,
                    // An absent optional field is `none`, as in most JSON APIs.
                    None if matches!(field.ty, Type::Option(_)) => Val::Option(None),
                    None => {
                        return Err(ValueError {
                            path: at,
                            message: "missing field".into(),
                        });
                    }
                };
                fields.push((field.name.to_string(), value));
            }
            if let Some((unknown, _)) = given.first() {
                let known: Vec<&str> = record.fields().map(|f| f.name).collect();
                return Err(fail(format!(
                    "unknown field `{unknown}`; the record has {}",
                    known.join(", ")
                )));
            }
            Val::Record(fields)
        }
        Type::Variant(variant) => {
            let cases: Vec<(String, Option<Type>)> = variant.cases().map(|c| (c.name.to_string(), c.ty)).collect();
            let (name, payload) = case_of(&shape)
                .ok_or_else(|| expected("a case name, or an object with one case name as its key (a variant)"))?;
            let Some((case, ty)) = cases.iter().find(|(c, _)| *c == name) else {
                let names: Vec<&str> = cases.iter().map(|(c, _)| c.as_str()).collect();
                return Err(fail(format!(
                    "unknown case `{name}`; the cases are {}",
                    names.join(", ")
                )));
            };
            let at = format!("{path}.{case}");
            Val::Variant(case.clone(), payload_of(payload, ty.as_ref(), &at, handles)?)
        }
        Type::Enum(e) => match &shape {
            Shape::String(name) if e.names().any(|n| n == name) => Val::Enum(name.clone()),
            _ => {
                let names: Vec<&str> = e.names().collect();
                return Err(expected(&format!("one of the enum's cases ({})", names.join(", "))));
            }
        },
        Type::Option(option) => {
            let inner = option.ty();
            match (&shape, &inner) {
                (Shape::Null, _) => Val::Option(None),
                // `option<option<T>>`: the outer `some` is spelled out, so
                // `some(none)` and `none` differ.
                (Shape::Object(fields), Type::Option(_)) => match fields.as_slice() {
                    [(key, value)] if key == "some" => Val::Option(Some(Box::new(from_json(
                        value,
                        &inner,
                        &format!("{path}.some"),
                        handles,
                    )?))),
                    _ => return Err(expected("null or {\"some\": ...} (an option of an option)")),
                },
                (_, Type::Option(_)) => return Err(expected("null or {\"some\": ...} (an option of an option)")),
                _ => Val::Option(Some(Box::new(from_json(raw, &inner, path, handles)?))),
            }
        }
        Type::Result(result) => {
            let Some((name, payload)) = case_of(&shape) else {
                return Err(expected("{\"ok\": ...} or {\"err\": ...} (a result)"));
            };
            let at = format!("{path}.{name}");
            match name.as_str() {
                "ok" => Val::Result(Ok(payload_of(payload, result.ok().as_ref(), &at, handles)?)),
                "err" => Val::Result(Err(payload_of(payload, result.err().as_ref(), &at, handles)?)),
                _ => return Err(expected("{\"ok\": ...} or {\"err\": ...} (a result)")),
            }
        }
        Type::Flags(flags) => {
            let Shape::Array(items) = &shape else {
                return Err(expected("an array of flag names"));
            };
            let names: Vec<&str> = flags.names().collect();
            let mut set = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let name: Option<String> = serde_json::from_str(item.get()).ok();
                match name {
                    Some(name) if names.contains(&name.as_str()) => {
                        if !set.contains(&name) {
                            set.push(name);
                        }
                    }
                    _ => {
                        return Err(ValueError {
                            path: format!("{path}[{i}]"),
                            message: format!(
                                "expected one of the flags ({}), got {}",
                                names.join(", "),
                                abbreviate(item.get())
                            ),
                        });
                    }
                }
            }
            Val::Flags(set)
        }
        Type::Map(map) => {
            let (key, value) = (map.key(), map.value());
            let pairs = match shape {
                Shape::Object(fields) if key == Type::String => fields
                    .into_iter()
                    .map(|(k, v)| {
                        let at = format!("{path}.{k}");
                        Ok((Val::String(k), from_json(v, &value, &at, handles)?))
                    })
                    .collect::<Result<Vec<_>, ValueError>>()?,
                Shape::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let at = format!("{path}[{i}]");
                        let pair: Vec<&RawValue> = serde_json::from_str(item.get()).map_err(|_| ValueError {
                            path: at.clone(),
                            message: "expected a [key, value] pair".into(),
                        })?;
                        match pair.as_slice() {
                            [k, v] => Ok((
                                from_json(k, &key, &format!("{at}[0]"), handles)?,
                                from_json(v, &value, &format!("{at}[1]"), handles)?,
                            )),
                            _ => Err(ValueError {
                                path: at,
                                message: "expected a [key, value] pair".into(),
                            }),
                        }
                    })
                    .collect::<Result<Vec<_>, ValueError>>()?,
                _ => return Err(expected("an array of [key, value] pairs (a map)")),
            };
            Val::Map(pairs)
        }
        Type::Own(resource) | Type::Borrow(resource) => {
            let number = match &shape {
                Shape::Object(fields) => match fields.as_slice() {
                    [(key, value)] if key == "resource" => value.get().trim().parse::<u64>().ok(),
                    _ => None,
                },
                _ => None,
            };
            let Some(number) = number else {
                return Err(expected(
                    "{\"resource\": N}, naming a resource an earlier call on this instance returned",
                ));
            };
            let owned = matches!(ty, Type::Own(_));
            Val::Resource(handles.lend(number, *resource, owned).map_err(fail)?)
        }
        Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            return Err(fail(format!("{} values cannot be passed as JSON", type_name(ty))));
        }
    })
}

fn elements(items: &[&RawValue], ty: &Type, path: &str, handles: &mut Handles) -> Result<Vec<Val>, ValueError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| from_json(item, ty, &format!("{path}[{i}]"), handles))
        .collect()
}

/// `{"base64": …}` or `{"hex": …}` as the bytes of a `list<u8>`.
fn bytes(fields: &[(String, &RawValue)]) -> Result<Vec<Val>, String> {
    let text = |raw: &RawValue| serde_json::from_str::<String>(raw.get()).map_err(|e| e.to_string());
    let data = match fields {
        [(key, value)] if key == "base64" => base64::engine::general_purpose::STANDARD
            .decode(text(value)?.trim())
            .map_err(|e| format!("invalid base64: {e}"))?,
        [(key, value)] if key == "hex" => decode_hex(text(value)?.trim()).map_err(|e| format!("invalid hex: {e}"))?,
        _ => return Err("expected an array of u8, {\"base64\": \"...\"} or {\"hex\": \"...\"}".into()),
    };
    Ok(data.into_iter().map(Val::U8).collect())
}

/// A case as JSON: `"name"` (no payload) or `{"name": payload}`.
fn case_of<'a>(shape: &Shape<'a>) -> Option<(String, Option<&'a RawValue>)> {
    match shape {
        Shape::String(name) => Some((name.clone(), None)),
        Shape::Object(fields) if fields.len() == 1 => Some((fields[0].0.clone(), Some(fields[0].1))),
        _ => None,
    }
}

/// A case's payload: required when the case has a type, else absent or null.
fn payload_of(
    raw: Option<&RawValue>,
    ty: Option<&Type>,
    path: &str,
    handles: &mut Handles,
) -> Result<Option<Box<Val>>, ValueError> {
    match (ty, raw) {
        (Some(ty), Some(raw)) => Ok(Some(Box::new(from_json(raw, ty, path, handles)?))),
        (Some(ty), None) => Err(ValueError {
            path: path.to_string(),
            message: format!("this case carries a {}; give it as {{\"case\": value}}", type_name(ty)),
        }),
        (None, None) => Ok(None),
        (None, Some(raw)) if raw.get().trim() == "null" => Ok(None),
        (None, Some(raw)) => Err(ValueError {
            path: path.to_string(),
            message: format!("this case has no payload, got {}", abbreviate(raw.get().trim())),
        }),
    }
}

fn int_name(bits: u32, signed: bool) -> &'static str {
    match (bits, signed) {
        (8, true) => "s8",
        (8, false) => "u8",
        (16, true) => "s16",
        (16, false) => "u16",
        (32, true) => "s32",
        (32, false) => "u32",
        (64, true) => "s64",
        _ => "u64",
    }
}

/// An integer of `bits` in the signed or unsigned range (the core parser
/// takes both ranges at once, as core integers have no sign).
fn parse_ranged(text: &str, bits: u32, signed: bool) -> Result<u64, String> {
    let bits_value = parse_int(text, bits).map_err(|e| match e.contains("out of range") {
        true => format!("{}, which is out of range", abbreviate(text)),
        false => abbreviate(text),
    })?;
    let negative = text.starts_with('-');
    let in_range = if signed {
        // Positive values must stay below 2^(bits-1).
        negative || bits_value >> (bits - 1) & 1 == 0
    } else {
        !negative || bits_value == 0
    };
    if !in_range {
        return Err(format!("{}, which is out of range", abbreviate(text)));
    }
    Ok(bits_value)
}

/// A value as JSON text, the inverse of [`from_json`].
/// A resource result is kept in `handles` and written as its number.
pub fn to_json(val: &Val, ty: &Type, handles: &mut Handles) -> String {
    match val {
        Val::Bool(b) => b.to_string(),
        Val::S8(v) => v.to_string(),
        Val::U8(v) => v.to_string(),
        Val::S16(v) => v.to_string(),
        Val::U16(v) => v.to_string(),
        Val::S32(v) => v.to_string(),
        Val::U32(v) => v.to_string(),
        Val::S64(v) => v.to_string(),
        Val::U64(v) => v.to_string(),
        Val::Float32(v) => f32_to_json(v.to_bits()),
        Val::Float64(v) => f64_to_json(v.to_bits()),
        Val::Char(c) => quote(&c.to_string()),
        Val::String(s) => quote(s),
        Val::List(items) | Val::FixedLengthList(items) => {
            let element = match ty {
                Type::List(l) => Some(l.ty()),
                Type::FixedLengthList(l) => Some(l.ty()),
                _ => None,
            };
            array(
                items
                    .iter()
                    .map(|v| to_json(v, element.as_ref().unwrap_or(ty), handles)),
            )
        }
        Val::Tuple(items) => {
            let types: Vec<Type> = match ty {
                Type::Tuple(t) => t.types().collect(),
                _ => Vec::new(),
            };
            array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| to_json(v, types.get(i).unwrap_or(ty), handles)),
            )
        }
        Val::Record(fields) => {
            let types: Vec<(String, Type)> = match ty {
                Type::Record(r) => r.fields().map(|f| (f.name.to_string(), f.ty)).collect(),
                _ => Vec::new(),
            };
            object(fields.iter().map(|(name, v)| {
                let field_ty = types.iter().find(|(n, _)| n == name).map_or(ty, |(_, t)| t);
                (name.as_str(), to_json(v, field_ty, handles))
            }))
        }
        Val::Variant(case, payload) => {
            let case_ty = match ty {
                Type::Variant(v) => v.cases().find(|c| c.name == case).and_then(|c| c.ty),
                _ => None,
            };
            case_json(case, payload.as_deref(), case_ty.as_ref(), handles)
        }
        Val::Enum(name) => quote(name),
        Val::Option(None) => "null".into(),
        Val::Option(Some(inner)) => match ty {
            Type::Option(o) => {
                let inner_ty = o.ty();
                let text = to_json(inner, &inner_ty, handles);
                if matches!(inner_ty, Type::Option(_)) {
                    object([("some", text)])
                } else {
                    text
                }
            }
            _ => to_json(inner, ty, handles),
        },
        Val::Result(result) => {
            let (name, payload, payload_ty) = match (result, ty) {
                (Ok(p), Type::Result(r)) => ("ok", p, r.ok()),
                (Err(p), Type::Result(r)) => ("err", p, r.err()),
                (Ok(p), _) => ("ok", p, None),
                (Err(p), _) => ("err", p, None),
            };
            let text = match (payload, payload_ty) {
                (Some(v), Some(t)) => to_json(v, &t, handles),
                _ => "null".into(),
            };
            object([(name, text)])
        }
        Val::Flags(names) => array(names.iter().map(|n| quote(n))),
        Val::Map(pairs) => {
            let (key_ty, value_ty) = match ty {
                Type::Map(m) => (m.key(), m.value()),
                _ => (Type::String, Type::String),
            };
            array(
                pairs
                    .iter()
                    .map(|(k, v)| array([to_json(k, &key_ty, handles), to_json(v, &value_ty, handles)].into_iter())),
            )
        }
        Val::Resource(resource) => object([("resource", handles.keep(*resource).to_string())]),
        Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => object([("unsupported", quote(&type_name(ty)))]),
    }
}

fn case_json(case: &str, payload: Option<&Val>, ty: Option<&Type>, handles: &mut Handles) -> String {
    match (payload, ty) {
        (Some(v), Some(t)) => object([(case, to_json(v, t, handles))]),
        _ => quote(case),
    }
}

/// `s` as a JSON string.
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn array(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    format!("[{}]", items.join(","))
}

fn object<'a>(fields: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let fields: Vec<String> = fields.into_iter().map(|(k, v)| format!("{}:{v}", quote(k))).collect();
    format!("{{{}}}", fields.join(","))
}

/// A WIT type as text, written out structurally (`record { x: u32 }`): the
/// component's binary keeps the shape of a type, not its WIT name.
pub fn type_name(ty: &Type) -> String {
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(l) => format!("list<{}>", type_name(&l.ty())),
        Type::FixedLengthList(l) => format!("list<{}, {}>", type_name(&l.ty()), l.len()),
        Type::Map(m) => format!("map<{}, {}>", type_name(&m.key()), type_name(&m.value())),
        Type::Record(r) => {
            let fields: Vec<String> = r
                .fields()
                .map(|f| format!("{}: {}", f.name, type_name(&f.ty)))
                .collect();
            format!("record {{ {} }}", fields.join(", "))
        }
        Type::Tuple(t) => {
            let types: Vec<String> = t.types().map(|t| type_name(&t)).collect();
            format!("tuple<{}>", types.join(", "))
        }
        Type::Variant(v) => {
            let cases: Vec<String> = v
                .cases()
                .map(|c| match &c.ty {
                    Some(t) => format!("{}({})", c.name, type_name(t)),
                    None => c.name.to_string(),
                })
                .collect();
            format!("variant {{ {} }}", cases.join(", "))
        }
        Type::Enum(e) => format!("enum {{ {} }}", e.names().collect::<Vec<_>>().join(", ")),
        Type::Option(o) => format!("option<{}>", type_name(&o.ty())),
        Type::Result(r) => match (r.ok(), r.err()) {
            (None, None) => "result".into(),
            (Some(ok), None) => format!("result<{}>", type_name(&ok)),
            (None, Some(err)) => format!("result<_, {}>", type_name(&err)),
            (Some(ok), Some(err)) => format!("result<{}, {}>", type_name(&ok), type_name(&err)),
        },
        Type::Flags(f) => format!("flags {{ {} }}", f.names().collect::<Vec<_>>().join(", ")),
        Type::Own(_) => "own<resource>".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
    }
}

/// Whether values of `ty` can cross as JSON at all: futures, streams and
/// error contexts cannot (they need a call that stays open).
pub fn carries(ty: &Type) -> bool {
    !contains(ty, &|t| {
        matches!(t, Type::Future(_) | Type::Stream(_) | Type::ErrorContext)
    })
}

/// Whether values of `ty` hold resources, which only a live instance can
/// keep between calls.
pub fn holds_resources(ty: &Type) -> bool {
    contains(ty, &|t| matches!(t, Type::Own(_) | Type::Borrow(_)))
}

/// Whether `ty` or any type inside it is one `is` picks.
fn contains(ty: &Type, is: &dyn Fn(&Type) -> bool) -> bool {
    is(ty)
        || match ty {
            Type::List(l) => contains(&l.ty(), is),
            Type::FixedLengthList(l) => contains(&l.ty(), is),
            Type::Map(m) => contains(&m.key(), is) || contains(&m.value(), is),
            Type::Record(r) => r.fields().any(|f| contains(&f.ty, is)),
            Type::Tuple(t) => t.types().any(|t| contains(&t, is)),
            Type::Variant(v) => v.cases().any(|c| c.ty.as_ref().is_some_and(|t| contains(t, is))),
            Type::Option(o) => contains(&o.ty(), is),
            Type::Result(r) => {
                r.ok().as_ref().is_some_and(|t| contains(t, is)) || r.err().as_ref().is_some_and(|t| contains(t, is))
            }
            _ => false,
        }
}
