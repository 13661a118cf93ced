//! The three ways a request carries a module: `wasm_hex`, `wasm_base64` or
//! `wat`. Exactly one must be present.

use base64::Engine as _;

use super::error::{ApiError, ApiResult};
use crate::engine::{WasmEngine, decode_hex};

/// The code fields of a request, as sent.
pub struct CodeFields {
    pub wasm_hex: Option<String>,
    pub wasm_base64: Option<String>,
    pub wat: Option<String>,
}

impl CodeFields {
    /// Whether any code field was sent.
    pub fn is_present(&self) -> bool {
        self.wasm_hex.is_some() || self.wasm_base64.is_some() || self.wat.is_some()
    }

    /// Decodes the one code field into a module binary (text is compiled to
    /// binary by the engine). Sizes are checked before decoding, so an
    /// oversized module costs no allocation.
    pub async fn into_wasm(self, engine: &WasmEngine) -> ApiResult<Vec<u8>> {
        let limit = engine.settings().max_module_bytes;
        let too_large = |size: usize| {
            ApiError::payload_too_large(format!("module is about {size} bytes; the limit is {limit} bytes"))
        };
        match (self.wasm_hex, self.wasm_base64, self.wat) {
            (Some(hex), None, None) => {
                let hex = strip_whitespace(hex);
                if hex.len() / 2 > limit {
                    return Err(too_large(hex.len() / 2));
                }
                decode_hex(&hex).map_err(|e| ApiError::invalid_request(format!("wasm_hex is not valid hex: {e}")))
            }
            (None, Some(b64), None) => {
                let b64 = strip_whitespace(b64);
                if b64.len() / 4 * 3 > limit + 3 {
                    return Err(too_large(b64.len() / 4 * 3));
                }
                base64::engine::general_purpose::STANDARD
                    .decode(&b64)
                    .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&b64))
                    .map_err(|e| ApiError::invalid_request(format!("wasm_base64 is not valid base64: {e}")))
            }
            (None, None, Some(wat)) => Ok(engine.wat_to_wasm(wat).await?),
            (None, None, None) => Err(ApiError::invalid_request(
                "the module is missing: send one of `wasm_hex`, `wasm_base64` or `wat`",
            )),
            _ => Err(ApiError::invalid_request(
                "send exactly one of `wasm_hex`, `wasm_base64` or `wat`, not several",
            )),
        }
    }
}

fn strip_whitespace(s: String) -> String {
    if s.bytes().any(|b| b.is_ascii_whitespace()) {
        s.chars().filter(|c| !c.is_ascii_whitespace()).collect()
    } else {
        s
    }
}
