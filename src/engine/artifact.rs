//! The bytes a compiled module is kept as in the store: what its section
//! headers said ([`Headers`]), then wasmtime's serialized module.
//!
//! Why the headers travel with the code: whether a module can keep state
//! (and so whether its instances may serve several calls, and its calls
//! begin synchronously) is read from its binary, which a module loaded
//! from an artifact after a restart never reads. Without them every such
//! module counted as stateful, and a restarted server called its hot
//! stateless modules at a fraction of the speed it had before. Kept inside
//! the artifact, they are sealed with the code when artifacts are sealed.
//!
//! An artifact without them (kept by a build from before they were, which
//! has the same engine hash) still loads, as a module of unknown headers.

use super::compile::Headers;

/// Marks an artifact that begins with headers; wasmtime's own begin with
/// an ELF header (`\x7fELF`), so neither is taken for the other.
const MAGIC: &[u8; 8] = b"wxa-hd1\0";

/// Three counts and a byte of flags after [`MAGIC`].
const LEN: usize = MAGIC.len() + 3 * 4 + 1;

const IMPORTS_STATE: u8 = 1;
const HAS_START: u8 = 1 << 1;
const MUTABLE_GLOBALS: u8 = 1 << 2;
const GC_TYPES: u8 = 1 << 3;
const MALFORMED: u8 = 1 << 4;
/// Every flag this build writes; an artifact with another set is not read.
const KNOWN: u8 = IMPORTS_STATE | HAS_START | MUTABLE_GLOBALS | GC_TYPES | MALFORMED;

/// `code` (wasmtime's serialized module) preceded by `headers`.
pub(crate) fn encode(headers: &Headers, code: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEN + code.len());
    out.extend_from_slice(MAGIC);
    for count in [headers.memories, headers.tables, headers.imports] {
        out.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
    }
    let flags = [
        (headers.imports_state, IMPORTS_STATE),
        (headers.has_start, HAS_START),
        (headers.mutable_globals, MUTABLE_GLOBALS),
        (headers.gc_types, GC_TYPES),
        (headers.malformed, MALFORMED),
    ];
    out.push(flags.iter().filter(|(set, _)| *set).fold(0, |all, (_, bit)| all | bit));
    out.extend_from_slice(code);
    out
}

/// The headers an artifact made by [`encode`] keeps, and wasmtime's part
/// of it. An artifact without headers (or with flags this build does not
/// know) gives headers that count as stateful, and all of its bytes.
pub(crate) fn decode(artifact: &[u8]) -> (Headers, &[u8]) {
    let unknown = Headers {
        malformed: true,
        ..Headers::default()
    };
    let Some(rest) = artifact.strip_prefix(MAGIC.as_slice()) else {
        return (unknown, artifact);
    };
    let Some((fields, code)) = rest.split_at_checked(LEN - MAGIC.len()) else {
        return (unknown, artifact);
    };
    let count = |at: usize| u32::from_le_bytes(fields[at..at + 4].try_into().expect("four bytes")) as usize;
    let flags = fields[12];
    if flags & !KNOWN != 0 {
        return (unknown, code);
    }
    let headers = Headers {
        memories: count(0),
        tables: count(4),
        imports: count(8),
        imports_state: flags & IMPORTS_STATE != 0,
        has_start: flags & HAS_START != 0,
        mutable_globals: flags & MUTABLE_GLOBALS != 0,
        gc_types: flags & GC_TYPES != 0,
        malformed: flags & MALFORMED != 0,
    };
    (headers, code)
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};
    use crate::engine::compile::headers;

    fn headers_of(wat: &str) -> super::Headers {
        headers(&wat::parse_str(wat).unwrap())
    }

    #[test]
    fn headers_come_back_as_they_went_in_with_the_code_after_them() {
        for wat in [
            r#"(module (func (export "f") (result i32) (i32.const 1)))"#,
            r#"(module (import "m" "f" (func)) (memory 2) (table 1 funcref) (global (mut i32) (i32.const 0)) (func $s) (start $s))"#,
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32))) (type (struct)))"#,
        ] {
            let sent = headers_of(wat);
            let kept = encode(&sent, b"\x7fELF code");
            let (got, code) = decode(&kept);
            assert_eq!(code, b"\x7fELF code");
            assert_eq!(got, sent, "{wat}");
            assert_eq!(
                (got.stateless(), got.stateless_when_linked()),
                (sent.stateless(), sent.stateless_when_linked())
            );
        }
        assert!(decode(&encode(&headers_of("(module)"), b"")).0.stateless());
    }

    #[test]
    fn an_artifact_without_headers_loads_whole_as_stateful() {
        for old in [&b"\x7fELF code"[..], b"", b"wxa-hd1\0short"] {
            let (got, code) = decode(old);
            assert_eq!(code, old);
            assert!(!got.stateless() && !got.stateless_when_linked());
        }
        let mut unknown_flag = encode(&headers_of("(module)"), b"code");
        unknown_flag[super::LEN - 1] |= 1 << 7;
        let (got, code) = decode(&unknown_flag);
        assert_eq!(code, b"code");
        assert!(!got.stateless_when_linked());
    }
}
