//! Pieces of JSON text written by hand: strings (escaped only when they
//! need it), arrays of strings, numbers and booleans. The hand-written
//! answers (`call_json`) and the `stats.modules` text (`call::ModulesRan`)
//! are made of them.

/// `text` as a JSON string: as it is when nothing in it needs escaping
/// (the usual case: type names, tiers, short output), else through
/// `serde_json`.
pub(super) fn string(out: &mut Vec<u8>, text: &str) -> serde_json::Result<()> {
    if !needs_escape(text.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, text)
    }
}

/// Whether any byte is a control character, `"` or `\\`: the bytes a JSON
/// string escapes. Eight bytes at a time (the word tests of "Bit Twiddling
/// Hacks": a byte below `n`, a byte equal to zero), as a byte-wise loop
/// cost about ten instructions a byte, most of writing a module's 64-digit
/// digest into every answer.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = ONES * 0x80;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS != 0;
        if control || has_zero(x ^ (ONES * u64::from(b'"'))) || has_zero(x ^ (ONES * u64::from(b'\\'))) {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
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

#[cfg(test)]
mod tests {
    /// The word-wise test agrees with the byte-wise one for every byte at
    /// every position of a word and of the tail, beside plain text and
    /// beside bytes above 0x7f (UTF-8), which need no escape.
    #[test]
    fn needs_escape_finds_every_byte_json_escapes() {
        for len in 1..=19 {
            for at in 0..len {
                for filler in [b'a', 0x7f, 0xc3, 0xff, b'!', b'#', b'[', b']'] {
                    for b in 0..=255u8 {
                        let mut text = vec![filler; len];
                        text[at] = b;
                        let expected = text.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
                        assert_eq!(super::needs_escape(&text), expected, "{text:?}");
                    }
                }
            }
        }
        assert!(!super::needs_escape(b""));
        assert!(!super::needs_escape(
            b"45eb05dbe0a0a2df47788f382ba1d87adab365e30c522c7bc86e0d0e705b1395"
        ));
    }
}
