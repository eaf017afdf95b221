//! The compact bundle for devices without a file system: one byte slice that the `no_std` core
//! decodes, with a SHA-256 that is checked before anything is parsed.
//!
//! Layout (all integers little-endian):
//!
//! | bytes | content |
//! |---|---|
//! | 8 | [`MAGIC`] `DEKMEDGE` |
//! | 4 | bundle version: the model's format version (2 to [`dekm_shared::FORMAT_VERSION`]) |
//! | 8 | payload length `n` |
//! | 32 | SHA-256 of the payload |
//! | n | postcard encoding of the metadata JSON (the same string as the safetensors header's) and the tensors |
//!
//! Keeping the metadata as the export's JSON means one schema and one validator for both
//! formats; [`ModelParts::new`] then checks the tensors exactly as for a safetensors file.

use alloc::{string::String, vec::Vec};

use dekm_shared::{FORMAT_VERSION, ModelMeta, OLDEST_FORMAT_VERSION};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{LoadError, ModelParts, NamedTensor};

/// First bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"DEKMEDGE";
const HEADER: usize = 8 + 4 + 8 + 32;

#[derive(Serialize, Deserialize)]
struct Payload {
    meta_json: String,
    tensors: Vec<NamedTensor>,
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

/// Hex digits of a bundle's SHA-256 that make its model id.
pub const ID_LEN: usize = 16;

/// The model id of a bundle: the first [`ID_LEN`] hex digits of its SHA-256. Server and devices
/// name models this way, so the same bytes have the same id everywhere.
pub fn model_id(sha256_hex: &str) -> &str {
    sha256_hex.get(..ID_LEN).unwrap_or(sha256_hex)
}

/// True for strings shaped like a model id (what a request or pointer file may name).
pub fn is_model_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// True when `bytes` start like a bundle (used to tell bundles from safetensors files).
pub fn is_bundle(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

impl ModelParts {
    /// Encodes these parts as a bundle.
    pub fn to_bundle(&self) -> Vec<u8> {
        let payload = Payload {
            meta_json: self.meta().to_json(),
            tensors: self.tensors().to_vec(),
        };
        // Serialising strings, integers and floats into a Vec cannot fail.
        let body = postcard::to_allocvec(&payload).unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.meta().format_version.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&Sha256::digest(&body));
        out.extend_from_slice(&body);
        out
    }

    /// Decodes and checks a bundle: magic, version, length, checksum, then the contract.
    pub fn from_bundle(bytes: &[u8]) -> Result<Self, LoadError> {
        if !is_bundle(bytes) {
            return Err(LoadError::BadMagic);
        }
        if bytes.len() < HEADER {
            return Err(LoadError::Length {
                expected: HEADER,
                got: bytes.len(),
            });
        }
        let found = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&found) {
            return Err(LoadError::BundleVersion {
                found,
                supported: FORMAT_VERSION,
            });
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[12..20]);
        let expected = usize::try_from(u64::from_le_bytes(len))
            .ok()
            .and_then(|n| n.checked_add(HEADER))
            .unwrap_or(usize::MAX);
        if bytes.len() != expected {
            return Err(LoadError::Length {
                expected,
                got: bytes.len(),
            });
        }
        let (stored, body) = (&bytes[20..HEADER], &bytes[HEADER..]);
        let actual = Sha256::digest(body);
        if actual.as_slice() != stored {
            return Err(LoadError::Checksum {
                expected: hex(stored),
                actual: hex(&actual),
            });
        }
        let payload: Payload =
            postcard::from_bytes(body).map_err(|e| LoadError::Payload(alloc::format!("{e}")))?;
        let version = alloc::format!("{found}");
        let meta = ModelMeta::from_header(Some(&version), Some(&payload.meta_json))?;
        Self::new(meta, payload.tensors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixture;

    /// A bundle carries its model's format version: a version 2 model (what a Mahalanobis
    /// model is written as) round-trips as version 2, a version beyond this build is refused.
    #[test]
    fn a_bundle_keeps_its_models_version() {
        let parts = fixture::dense(1);
        let mut meta = parts.meta().clone();
        meta.format_version = 2;
        let v2 = ModelParts::new(meta, parts.tensors().to_vec()).unwrap();
        let bytes = v2.to_bundle();
        assert_eq!(bytes[8..12], 2u32.to_le_bytes());
        assert_eq!(ModelParts::from_bundle(&bytes).unwrap(), v2);
        let mut newer = bytes.clone();
        newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert_eq!(
            ModelParts::from_bundle(&newer),
            Err(LoadError::BundleVersion {
                found: FORMAT_VERSION + 1,
                supported: FORMAT_VERSION
            })
        );
    }
}
