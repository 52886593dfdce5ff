//! Payload encryption: AES-256-GCM with random 96-bit nonces and the event id as associated data.
//!
//! A sealed payload is `nonce (12 bytes) || ciphertext || tag (16 bytes)`. The key id stored
//! beside it names the key, so keys can rotate; it is a fingerprint of the key, never the key.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use anyhow::{Context, bail};
use compact_str::CompactString;
use rand::Rng;
use sha2::{Digest, Sha256};

/// The environment variable that holds the payload key as 64 hex characters.
pub const KEY_ENV: &str = "VIGIL_KEY";

const NONCE_LEN: usize = 12;

/// An AES-256-GCM key and its id. Neither `Debug` nor `Display` shows the key.
#[derive(Clone)]
pub struct PayloadKey {
    cipher: Aes256Gcm,
    key_id: CompactString,
}

impl std::fmt::Debug for PayloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Why a payload could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// The payload was sealed with a different key.
    #[error("payload was encrypted with key {found}, but the configured key is {expected}")]
    WrongKey {
        /// The key id stored with the payload.
        found: String,
        /// The configured key's id.
        expected: String,
    },
    /// The ciphertext, nonce, tag or associated event id do not match.
    #[error("payload failed authentication: it was altered, or belongs to another event")]
    Tampered,
}

impl PayloadKey {
    /// A key from 64 hex characters (surrounding whitespace allowed).
    pub fn from_hex(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let bytes = hex::decode(text).ok().filter(|b| b.len() == 32);
        let Some(bytes) = bytes else {
            bail!(
                "the payload key must be 64 hex characters (32 bytes); got {} characters. \
                 Generate one with: openssl rand -hex 32",
                text.len()
            );
        };
        let key = Key::<Aes256Gcm>::try_from(bytes.as_slice()).context("key length")?;
        let digest = Sha256::digest(&bytes);
        let key_id = CompactString::from(format!("k-{}", hex::encode(&digest[..4])));
        Ok(Self {
            cipher: Aes256Gcm::new(&key),
            key_id,
        })
    }

    /// The key a job is given: the text of its key file when one was named (`file`: the path
    /// and what reading it gave), else the value of `VIGIL_KEY` (`env`), else none. The caller
    /// reads the file and the environment: operators do no I/O.
    ///
    /// # Examples
    /// ```
    /// use std::path::Path;
    /// use vigil_operators::crypto::PayloadKey;
    /// let file = Some((Path::new("key.hex"), Ok("ab".repeat(32))));
    /// let key = PayloadKey::from_file_or_env(file, Some("not a key".into())).unwrap();
    /// assert!(key.is_some(), "the file wins over the environment");
    /// assert!(PayloadKey::from_file_or_env(None, Some(" ".into())).unwrap().is_none());
    /// assert!(PayloadKey::from_file_or_env(None, Some("cd".repeat(31))).is_err());
    /// ```
    pub fn from_file_or_env(
        file: Option<(&Path, std::io::Result<String>)>,
        env: Option<String>,
    ) -> anyhow::Result<Option<Self>> {
        if let Some((path, text)) = file {
            let text = text.with_context(|| format!("reading the key file {}", path.display()))?;
            return Self::from_hex(&text)
                .map(Some)
                .with_context(|| format!("key file {}", path.display()));
        }
        match env {
            Some(text) if !text.trim().is_empty() => {
                Self::from_hex(&text).map(Some).context(KEY_ENV)
            }
            _ => Ok(None),
        }
    }

    /// The key's id, stored in `key_id` beside every payload it seals.
    pub fn key_id(&self) -> &CompactString {
        &self.key_id
    }

    /// Encrypts `clear` for the event `event_id` with a fresh random nonce from `rng`.
    pub fn seal(&self, event_id: &str, clear: &[u8], rng: &mut impl Rng) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: clear,
            aad: event_id.as_bytes(),
        };
        // AES-GCM encryption fails only for messages over 64 GiB, which no event carries.
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), payload)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts a payload sealed by [`PayloadKey::seal`] for `event_id` under key `key_id`.
    pub fn open(&self, event_id: &str, key_id: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if key_id != self.key_id {
            return Err(OpenError::WrongKey {
                found: key_id.to_owned(),
                expected: self.key_id.to_string(),
            });
        }
        if sealed.len() < NONCE_LEN + 16 {
            return Err(OpenError::Tampered);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError::Tampered)?;
        let payload = Payload {
            msg: body,
            aad: event_id.as_bytes(),
        };
        self.cipher
            .decrypt(&Nonce::from(nonce), payload)
            .map_err(|_| OpenError::Tampered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn round_trip_and_tamper() {
        let key = PayloadKey::from_hex(HEX).expect("valid key");
        let mut rng = rand::rng();
        let sealed = key.seal("veh-1-temp_c-1", b"secret reading", &mut rng);
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "ciphertext must not contain the clear text"
        );
        let id = key.key_id().clone();
        assert_eq!(
            key.open("veh-1-temp_c-1", &id, &sealed).expect("opens"),
            b"secret reading"
        );

        let mut flipped = sealed.clone();
        let last = flipped.len() - 20;
        flipped[last] ^= 0x01;
        assert_eq!(
            key.open("veh-1-temp_c-1", &id, &flipped),
            Err(OpenError::Tampered)
        );
        assert_eq!(
            key.open("veh-1-temp_c-2", &id, &sealed),
            Err(OpenError::Tampered),
            "bound to event id"
        );
        assert!(matches!(
            key.open("veh-1-temp_c-1", "k-other", &sealed),
            Err(OpenError::WrongKey { .. })
        ));

        let again = key.seal("veh-1-temp_c-1", b"secret reading", &mut rng);
        assert_ne!(sealed[..12], again[..12], "nonces are fresh");
    }

    #[test]
    fn key_never_printed() {
        let key = PayloadKey::from_hex(HEX).expect("valid key");
        let shown = format!("{key:?}");
        assert!(!shown.contains("0001020304"), "{shown}");
        let err = PayloadKey::from_hex("abcd")
            .expect_err("short key")
            .to_string();
        assert!(err.contains("64 hex characters"), "{err}");
        assert!(
            !err.contains("abcd"),
            "the error must not echo the key: {err}"
        );
    }
}
