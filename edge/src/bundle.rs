//! The compact bundle for devices without a file system: one byte slice that the `no_std` core
//! decodes, with a SHA-256 that is checked before anything is parsed.
//!
//! Layout (all integers little-endian):
//!
//! | bytes | content |
//! |---|---|
//! | 8 | [`MAGIC`] `DEKMEDGE` |
//! | 4 | bundle version: [`SAFETENSORS_BUNDLE`] (6) when written by this build |
//! | 8 | payload length `n` |
//! | 32 | SHA-256 of the payload |
//! | n | the payload: from version 6 a safetensors file ([`crate::tensors_file`]: the export's metadata and tensors, int8 weights as `I8` with their scales) |
//!
//! So a bundle served by the registry opens in any language with a safetensors reader once the
//! first 52 bytes are cut off (`safetensors.numpy.load(bundle[52:])`), and the checksum is still
//! checked before anything is parsed.
//!
//! Versions 1 to 5, still read: the version was the model's format version and the payload a
//! postcard encoding of the metadata JSON and the f32 tensors, from version 5 with a third list,
//! the int8 weights. From version 6 the two numbers part: the model's format version is in the
//! payload's metadata.

use alloc::{string::String, vec::Vec};

use dekm_shared::{INT8_FORMAT_VERSION, ModelMeta, OLDEST_FORMAT_VERSION};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{LoadError, ModelParts, NamedTensor};
use crate::quantize::Int8Tensor;

/// First bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"DEKMEDGE";
/// The bundle version whose payload is a safetensors file; the newest this build reads.
pub const SAFETENSORS_BUNDLE: u32 = 6;
/// Bytes before the payload: magic, version, length, SHA-256.
pub const HEADER_LEN: usize = 8 + 4 + 8 + 32;

/// The payload of bundles before version 5 (postcard).
#[derive(Serialize, Deserialize)]
struct Payload {
    meta_json: String,
    tensors: Vec<NamedTensor>,
}

/// The payload of version 5 (postcard): int8 weights beside the f32 tensors.
#[derive(Serialize, Deserialize)]
struct PayloadV5 {
    meta_json: String,
    tensors: Vec<NamedTensor>,
    int8: Vec<Int8Tensor>,
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
    /// Encodes these parts as a bundle (version [`SAFETENSORS_BUNDLE`]).
    pub fn to_bundle(&self) -> Vec<u8> {
        let body = self.to_safetensors();
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&SAFETENSORS_BUNDLE.to_le_bytes());
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
        if bytes.len() < HEADER_LEN {
            return Err(LoadError::Length {
                expected: HEADER_LEN,
                got: bytes.len(),
            });
        }
        let found = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if !(OLDEST_FORMAT_VERSION..=SAFETENSORS_BUNDLE).contains(&found) {
            return Err(LoadError::BundleVersion {
                found,
                supported: SAFETENSORS_BUNDLE,
            });
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[12..20]);
        let expected = usize::try_from(u64::from_le_bytes(len))
            .ok()
            .and_then(|n| n.checked_add(HEADER_LEN))
            .unwrap_or(usize::MAX);
        if bytes.len() != expected {
            return Err(LoadError::Length {
                expected,
                got: bytes.len(),
            });
        }
        let (stored, body) = (&bytes[20..HEADER_LEN], &bytes[HEADER_LEN..]);
        let actual = Sha256::digest(body);
        if actual.as_slice() != stored {
            return Err(LoadError::Checksum {
                expected: hex(stored),
                actual: hex(&actual),
            });
        }
        if found == SAFETENSORS_BUNDLE {
            return Self::from_safetensors(body);
        }
        let decode = |e: postcard::Error| LoadError::Payload(alloc::format!("{e}"));
        let version = alloc::format!("{found}");
        if found >= INT8_FORMAT_VERSION {
            let payload: PayloadV5 = postcard::from_bytes(body).map_err(decode)?;
            let meta = ModelMeta::from_header(Some(&version), Some(&payload.meta_json))?;
            if payload.int8.is_empty() {
                Self::new(meta, payload.tensors)
            } else {
                Self::with_int8(meta, payload.tensors, payload.int8)
            }
        } else {
            let payload: Payload = postcard::from_bytes(body).map_err(decode)?;
            let meta = ModelMeta::from_header(Some(&version), Some(&payload.meta_json))?;
            Self::new(meta, payload.tensors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixture;
    use crate::{Model, quantize::is_quantized};

    /// An int8 bundle is about a quarter of the f32 one's weight bytes, decodes to the same
    /// parts (bytes, scales and their widening), and its model assigns as the widened weights
    /// say; the metadata and the stored lists must agree.
    #[test]
    fn int8_bundles_round_trip_and_are_checked() {
        let f32_parts = fixture::dense(3);
        let parts = f32_parts.to_int8().unwrap();
        assert_eq!(parts.meta().format_version, 5);
        assert_eq!(parts.meta().weights, dekm_shared::Weights::Int8);
        assert!(!parts.int8_tensors().is_empty());
        assert!(parts.int8_tensors().iter().all(|q| is_quantized(&q.name)));
        let bytes = parts.to_bundle();
        assert_eq!(bytes[8..12], SAFETENSORS_BUNDLE.to_le_bytes());
        let back = ModelParts::from_bundle(&bytes).unwrap();
        assert_eq!(back, parts);
        assert_eq!(
            back.to_int8().unwrap(),
            back,
            "quantizing twice changes nothing"
        );
        // Widened weights are within half a step of the f32 ones.
        for q in parts.int8_tensors() {
            let original = f32_parts.tensor(&q.name).unwrap();
            assert!(parts.tensor(&q.name).is_none(), "no f32 copy of {}", q.name);
            let widened = q.widen().unwrap();
            let rows = original.chunks(original.len() / q.scales.len());
            for ((row, wide), s) in rows
                .zip(widened.chunks(original.len() / q.scales.len()))
                .zip(&q.scales)
            {
                for (a, b) in row.iter().zip(wide) {
                    assert!((a - b).abs() <= 0.5 * s * 1.0001, "{}: {a} vs {b}", q.name);
                }
            }
        }
        let model = Model::from_parts(&back).unwrap();
        let mut session = model.session();
        assert!(session.assign(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]).is_ok());
        // An f32 file that claims int8 weights, and int8 parts whose metadata says f32.
        let mut meta = parts.meta().clone();
        let err = ModelParts::new(meta.clone(), parts.tensors().to_vec()).unwrap_err();
        assert!(err.to_string().contains("no int8 tensors"), "{err}");
        meta.weights = dekm_shared::Weights::F32;
        let err =
            ModelParts::with_int8(meta, Vec::new(), parts.int8_tensors().to_vec()).unwrap_err();
        assert!(err.to_string().contains("metadata says f32"), "{err}");
    }

    /// A bundle as versions 1 to 5 wrote it: the model's format version in the header and a
    /// postcard payload.
    fn legacy_bundle(parts: &ModelParts) -> Vec<u8> {
        let meta_json = parts.meta().to_json();
        let body = if parts.meta().format_version >= INT8_FORMAT_VERSION {
            let int8 = parts.int8_tensors();
            postcard::to_allocvec(&PayloadV5 {
                meta_json,
                tensors: parts.tensors().to_vec(),
                int8: int8.to_vec(),
            })
        } else {
            postcard::to_allocvec(&Payload {
                meta_json,
                tensors: parts.tensors().to_vec(),
            })
        }
        .unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&parts.meta().format_version.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&Sha256::digest(&body));
        out.extend_from_slice(&body);
        out
    }

    /// The payload is a safetensors file that opens without this crate once the header is cut
    /// off, and carries the model's own format version (a version 2 model round-trips as
    /// version 2); bundles of versions 2 to 5 (postcard) still load to the same parts; a
    /// version beyond this build is refused by number.
    #[test]
    fn the_payload_is_safetensors_and_older_bundles_still_load() {
        let parts = fixture::dense(1);
        let mut meta = parts.meta().clone();
        meta.format_version = 2;
        let v2 = ModelParts::new(meta, parts.tensors().to_vec()).unwrap();
        let bytes = v2.to_bundle();
        assert_eq!(bytes[8..12], SAFETENSORS_BUNDLE.to_le_bytes());
        assert_eq!(ModelParts::from_bundle(&bytes).unwrap(), v2);
        let st = safetensors::SafeTensors::deserialize(&bytes[HEADER_LEN..]).unwrap();
        assert_eq!(st.len(), v2.tensors().len());
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes[HEADER_LEN..]).unwrap();
        assert_eq!(
            header.metadata().as_ref().unwrap()[dekm_shared::names::FORMAT_KEY],
            "2"
        );
        for old in [v2.clone(), parts.to_int8().unwrap()] {
            let legacy = legacy_bundle(&old);
            assert_eq!(
                legacy[8..12],
                old.meta().format_version.to_le_bytes(),
                "the old header"
            );
            assert_eq!(ModelParts::from_bundle(&legacy).unwrap(), old);
        }
        let mut newer = bytes.clone();
        newer[8..12].copy_from_slice(&(SAFETENSORS_BUNDLE + 1).to_le_bytes());
        assert_eq!(
            ModelParts::from_bundle(&newer),
            Err(LoadError::BundleVersion {
                found: SAFETENSORS_BUNDLE + 1,
                supported: SAFETENSORS_BUNDLE
            })
        );
    }
}
