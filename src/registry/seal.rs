//! Compiled artifacts under a cluster key.
//!
//! Loading an artifact runs its machine code, so an artifact read from a
//! store that other processes write to (a shared database) must prove that
//! a node holding the cluster key made it. A sealed artifact is a short
//! header, an HMAC-SHA256 tag over the binary's digest, the engine's
//! compatibility hash and the machine code, then the code itself. Tags are
//! checked in constant time; the first key seals and every key opens, so
//! that a key can be rotated without a moment in which nodes reject each
//! other's artifacts (docs/DEPLOY.md).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type Tag = Hmac<Sha256>;

/// Marks a sealed artifact (format version 1).
const MAGIC: &[u8; 4] = b"wxa1";
const TAG_LEN: usize = 32;

/// Fewest bytes a key may have.
pub const MIN_KEY_LEN: usize = 16;

/// The cluster's artifact keys: the first seals, any opens.
#[derive(Clone)]
pub struct ArtifactSeal {
    keys: Vec<Vec<u8>>,
}

/// Shows how many keys, never the keys.
impl std::fmt::Debug for ArtifactSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArtifactSeal({} keys)", self.keys.len())
    }
}

/// Why a stored artifact was not opened.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("the artifact is not sealed")]
    NotSealed,
    #[error("the artifact's tag does not verify under any artifact key")]
    BadTag,
}

impl ArtifactSeal {
    /// Keys from text: one per line (blank lines and `#` comments
    /// skipped), or several separated by whitespace.
    pub fn parse(text: &str) -> Result<Self, String> {
        let keys: Vec<Vec<u8>> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .flat_map(str::split_whitespace)
            .map(|k| k.as_bytes().to_vec())
            .collect();
        if keys.is_empty() {
            return Err("the artifact key is empty".into());
        }
        if let Some(short) = keys.iter().find(|k| k.len() < MIN_KEY_LEN) {
            return Err(format!(
                "an artifact key has {} bytes; use at least {MIN_KEY_LEN} (32 random bytes, e.g. `openssl rand -hex 32`)",
                short.len()
            ));
        }
        Ok(ArtifactSeal { keys })
    }

    fn mac(key: &[u8], sha256: &str, engine: &str, code: &[u8]) -> Tag {
        let mut mac = Tag::new_from_slice(key).expect("HMAC takes a key of any length");
        mac.update(sha256.as_bytes());
        mac.update(&[0]);
        mac.update(engine.as_bytes());
        mac.update(&[0]);
        mac.update(code);
        mac
    }

    /// The sealed form of `code`, the artifact of binary `sha256` for the
    /// engine whose compatibility hash is `engine`.
    pub fn seal(&self, sha256: &str, engine: &str, code: &[u8]) -> Vec<u8> {
        let tag = Self::mac(&self.keys[0], sha256, engine, code).finalize().into_bytes();
        let mut sealed = Vec::with_capacity(MAGIC.len() + TAG_LEN + code.len());
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(&tag);
        sealed.extend_from_slice(code);
        sealed
    }

    /// The code of a sealed artifact, if its tag verifies under one of the
    /// keys for this binary and engine (so a row copied to another digest
    /// or engine does not open either).
    pub fn open(&self, sha256: &str, engine: &str, mut sealed: Vec<u8>) -> Result<Vec<u8>, Rejected> {
        let header = MAGIC.len() + TAG_LEN;
        if sealed.len() < header || &sealed[..MAGIC.len()] != MAGIC {
            return Err(Rejected::NotSealed);
        }
        let (tag, code) = sealed[MAGIC.len()..].split_at(TAG_LEN);
        let verified = self
            .keys
            .iter()
            .any(|key| Self::mac(key, sha256, engine, code).verify_slice(tag).is_ok());
        if !verified {
            return Err(Rejected::BadTag);
        }
        sealed.drain(..header);
        Ok(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(text: &str) -> ArtifactSeal {
        ArtifactSeal::parse(text).unwrap()
    }

    #[test]
    fn a_sealed_artifact_opens_only_unchanged_and_in_place() {
        let keys = seal("0123456789abcdef0123456789abcdef");
        let sealed = keys.seal("aa", "e1", b"machine code");
        assert_eq!(keys.open("aa", "e1", sealed.clone()).unwrap(), b"machine code");
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(keys.open("aa", "e1", flipped), Err(Rejected::BadTag)));
        assert!(matches!(keys.open("bb", "e1", sealed.clone()), Err(Rejected::BadTag)));
        assert!(matches!(keys.open("aa", "e2", sealed), Err(Rejected::BadTag)));
        assert!(matches!(
            keys.open("aa", "e1", b"\x7fELF raw".to_vec()),
            Err(Rejected::NotSealed)
        ));
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let (old, new) = ("old-key-0123456789abcdef", "new-key-0123456789abcdef");
        let before = seal(old).seal("aa", "e", b"code");
        let during = seal(&format!("{new}\n{old}"));
        assert_eq!(during.open("aa", "e", before.clone()).unwrap(), b"code");
        let after = seal(new);
        assert!(after.open("aa", "e", before).is_err(), "a retired key opens nothing");
        assert_eq!(after.open("aa", "e", during.seal("aa", "e", b"code")).unwrap(), b"code");
    }

    #[test]
    fn short_or_missing_keys_are_refused() {
        assert!(ArtifactSeal::parse("# nothing\n\n").is_err());
        assert!(ArtifactSeal::parse("short").unwrap_err().contains("at least 16"));
    }
}
