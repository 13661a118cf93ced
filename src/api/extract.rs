//! A JSON body extractor whose every rejection is an [`ApiError`].
//!
//! axum's own `Json` answers bad bodies with plain-text errors; clients of
//! this API get the documented JSON error shape for every failure, including
//! a wrong content type, an oversized body and malformed JSON.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, OptionalFromRequest, Request};
use axum::http::header;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode};

/// A JSON request body of type `T`.
pub struct JsonBody<T>(pub T);

/// An optional body (`Option<JsonBody<T>>`): a request with neither a
/// content type nor a body has none; anything else must be JSON.
impl<S, T> OptionalFromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    BodyRules: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let headers = req.headers();
        let empty = headers.get(header::CONTENT_TYPE).is_none()
            && headers.get(header::TRANSFER_ENCODING).is_none()
            && headers
                .get(header::CONTENT_LENGTH)
                .is_none_or(|len| len.as_bytes() == b"0");
        if empty {
            return Ok(None);
        }
        <JsonBody<T> as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

/// A body that is an object of `T`'s fields, or `null` (serde would also
/// take a struct's fields as an array, which no client means).
pub struct ObjectOrNull<T>(pub Option<T>);

impl<'de, T: DeserializeOwned> serde::Deserialize<'de> for ObjectOrNull<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match <Option<serde_json::Map<String, serde_json::Value>> as serde::Deserialize>::deserialize(deserializer)? {
            None => Ok(ObjectOrNull(None)),
            Some(map) => T::deserialize(serde_json::Value::Object(map))
                .map(|t| ObjectOrNull(Some(t)))
                .map_err(D::Error::custom),
        }
    }
}

/// How a request body is read.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules {
    /// How long a client may take to send its whole body. A total
    /// deadline, not an idle timeout: a client trickling one byte at a time
    /// cannot hold a connection and a task open for longer than this.
    pub timeout: Duration,
    /// The largest body read (`--max-body-bytes`). Kept here rather than
    /// set per request by axum's `DefaultBodyLimit` layer, which puts it
    /// into every request's extensions (an allocation, and often the growth
    /// of the extensions' table), read or not.
    pub max_bytes: usize,
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    BodyRules: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_json(req, state).await?;
        from_json(&bytes).map(JsonBody).map_err(unreadable)
    }
}

/// The refusal of a body that is not the JSON its endpoint reads.
pub fn unreadable(e: serde_json::Error) -> ApiError {
    ApiError::invalid_request(format!("invalid JSON body: {e}"))
}

/// A JSON request body's bytes, as every JSON body is read: the content
/// type checked, the whole body read within the [`BodyRules`] and the
/// size limit. Not parsed yet (see [`from_json`]).
pub async fn read_json<S>(req: Request, state: &S) -> Result<Bytes, ApiError>
where
    S: Send + Sync,
    BodyRules: FromRef<S>,
{
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !is_json(content_type) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "expected a JSON body with `Content-Type: application/json`, got {}",
                if content_type.is_empty() {
                    "no content type".to_string()
                } else {
                    format!("`{content_type}`")
                }
            ),
        ));
    }
    let rules = BodyRules::from_ref(state);
    let deadline = rules.timeout;
    let limited = http_body_util::Limited::new(req.into_body(), rules.max_bytes);
    let read = tokio::time::timeout(deadline, limited.collect()).await.map_err(|_| {
        ApiError::new(
            ErrorCode::RequestTimeout,
            format!("the request body did not arrive within {} ms", deadline.as_millis()),
        )
    })?;
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::payload_too_large(format!(
            "the request body is larger than the server's limit of {} bytes (see --max-body-bytes)",
            rules.max_bytes
        ))),
        Err(e) => Err(ApiError::invalid_request(format!("cannot read the request body: {e}"))),
    }
}

/// Parses a body [`read_json`] read.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    // Read as text once it is known to be UTF-8: serde_json then skips
    // checking every string, and every raw value (a batch's calls, each
    // param), again. A body that is not UTF-8 gets serde_json's own
    // error, with its position.
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

fn is_json(content_type: &str) -> bool {
    // Compared without allocating: this runs on every request with a body.
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let has = |at: usize, part: &str| {
        essence
            .get(at..at + part.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(part))
    };
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() >= "application/+json".len()
            && has(0, "application/")
            && has(essence.len() - "+json".len(), "+json"))
}

/// `#[serde(default, deserialize_with = "object")]` for an optional nested
/// object. Serde's derive also accepts a struct written as a JSON array of
/// its fields in order (`"limits": [1000, null]`); nobody means that, the
/// schema does not allow it, and accepting it hides mistakes.
pub fn object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::Deserialize;
    use serde::de::Error;
    match Option::<serde_json::Map<String, serde_json::Value>>::deserialize(d)? {
        None => Ok(None),
        Some(map) => T::deserialize(serde_json::Value::Object(map))
            .map(Some)
            .map_err(D::Error::custom),
    }
}

/// [`object`] for a list of nested objects (`memory_writes`, `memory_reads`).
pub fn objects<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::Deserialize;
    use serde::de::Error;
    Vec::<serde_json::Map<String, serde_json::Value>>::deserialize(d)?
        .into_iter()
        .map(|map| T::deserialize(serde_json::Value::Object(map)).map_err(D::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_media_types_are_told_from_others_in_any_case() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ;q=1",
            "application/merge-patch+json",
            "APPLICATION/VND.API+JSON",
        ] {
            assert!(is_json(yes), "{yes}");
        }
        for no in [
            "",
            "text/json",
            "application/jsonx",
            "application/xml",
            "text/plain+json",
            "application/json5",
            "applicatión/json",
        ] {
            assert!(!is_json(no), "{no}");
        }
    }
}
