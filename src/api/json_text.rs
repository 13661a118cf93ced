//! Pieces of JSON text written by hand: strings (escaped only when they
//! need it), arrays of strings, numbers and booleans. The hand-written
//! answers (`call_json`) and the `stats.modules` text (`call::ModulesRan`)
//! are made of them.

/// `text` as a JSON string: as it is when nothing in it needs escaping
/// (the usual case: type names, tiers, short output), else through
/// `serde_json`.
pub(super) fn string(out: &mut Vec<u8>, text: &str) -> serde_json::Result<()> {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, text)
    }
}

/// `items` as a JSON array of strings.
pub(super) fn strings<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a str>) -> serde_json::Result<()> {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, item)?;
    }
    out.push(b']');
    Ok(())
}

pub(super) fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

pub(super) fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}
