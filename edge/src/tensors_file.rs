//! A model's parts as a safetensors file: what the trainer exports (`model.safetensors`) and,
//! from bundle version [`crate::bundle::SAFETENSORS_BUNDLE`], the payload of a bundle, so the
//! bytes a device fetches open in Python (`safetensors.numpy.load`) once the bundle's header is
//! cut off.
//!
//! Layout: the metadata as the export writes it (`dekm.format_version`, `dekm.meta` with the
//! model's JSON), every f32 tensor under its export name, and for an int8 model each quantized
//! weight as an `I8` tensor under its own name with its per-row scales beside it as the `F32`
//! tensor `<name>.scales` ([`SCALES_SUFFIX`]): `w ≈ q · scales[row]`.

use alloc::{borrow::ToOwned, string::String, vec::Vec};

use dekm_shared::{Weights, names};
use safetensors::{Dtype, SafeTensors};

use crate::model::{LoadError, ModelParts, NamedTensor};
use crate::quantize::Int8Tensor;

/// Suffix of the tensor that holds an int8 weight's per-row scales.
pub const SCALES_SUFFIX: &str = ".scales";

fn bad(e: safetensors::SafeTensorError) -> LoadError {
    LoadError::Safetensors(alloc::format!("{e}"))
}

impl ModelParts {
    /// Parses a safetensors file held in memory (an export, or a bundle's payload), f32 or
    /// int8, checked against the contract.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, LoadError> {
        let st = SafeTensors::deserialize(bytes).map_err(bad)?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(bad)?;
        let kv = header.metadata();
        let field = |key: &str| kv.as_ref().and_then(|m| m.get(key)).map(String::as_str);
        let meta =
            dekm_shared::ModelMeta::from_header(field(names::FORMAT_KEY), field(names::META_KEY))?;
        let (mut tensors, mut int8) = (Vec::new(), Vec::new());
        let mut scales = alloc::collections::BTreeMap::new();
        for (name, view) in st.tensors() {
            match view.dtype() {
                Dtype::F32 => {
                    let data: Vec<f32> = view
                        .data()
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    match name.strip_suffix(SCALES_SUFFIX) {
                        Some(of) => {
                            scales.insert(of.to_owned(), data);
                        }
                        None => tensors.push(NamedTensor {
                            name,
                            shape: view.shape().to_vec(),
                            data,
                        }),
                    }
                }
                Dtype::I8 if meta.weights == Weights::Int8 => int8.push(Int8Tensor {
                    name,
                    shape: view.shape().to_vec(),
                    scales: Vec::new(),
                    values: view.data().iter().map(|&b| b as i8).collect(),
                }),
                other => {
                    return Err(LoadError::Dtype {
                        name,
                        found: alloc::format!("{other:?}"),
                    });
                }
            }
        }
        if meta.weights != Weights::Int8 {
            if let Some(of) = scales.keys().next() {
                return Err(LoadError::Weights(alloc::format!(
                    "{of}{SCALES_SUFFIX}: scales in a model whose metadata says f32"
                )));
            }
            return Self::new(meta, tensors);
        }
        for q in &mut int8 {
            q.scales = scales.remove(&q.name).ok_or_else(|| {
                LoadError::Weights(alloc::format!(
                    "int8 tensor {} has no {}{SCALES_SUFFIX}",
                    q.name,
                    q.name
                ))
            })?;
        }
        if let Some(of) = scales.keys().next() {
            return Err(LoadError::Weights(alloc::format!(
                "{of}{SCALES_SUFFIX} scales a tensor that is not stored as int8"
            )));
        }
        Self::with_int8(meta, tensors, int8)
    }

    /// These parts as a safetensors file (see the module for the layout); for an int8 model
    /// the quantized weights are stored as int8, not widened. Written here rather than by the
    /// `safetensors` crate, whose header follows a hash map's order: the same parts must make
    /// the same bytes, since a bundle's checksum is its model id.
    pub fn to_safetensors(&self) -> Vec<u8> {
        let int8 = self.int8_tensors();
        let as_bytes =
            |data: &[f32]| -> Vec<u8> { data.iter().flat_map(|v| v.to_le_bytes()).collect() };
        // (name, dtype, shape, bytes), in name order.
        let mut stored: Vec<(String, &str, Vec<usize>, Vec<u8>)> = self
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), "F32", t.shape.clone(), as_bytes(&t.data)))
            .collect();
        for q in int8 {
            stored.push((
                q.name.clone(),
                "I8",
                q.shape.clone(),
                q.values.iter().map(|&v| v as u8).collect(),
            ));
            stored.push((
                alloc::format!("{}{SCALES_SUFFIX}", q.name),
                "F32",
                alloc::vec![q.scales.len()],
                as_bytes(&q.scales),
            ));
        }
        stored.sort_by(|a, b| a.0.cmp(&b.0));
        let meta = self.meta();
        let mut header = serde_json::Map::new();
        header.insert(
            "__metadata__".into(),
            serde_json::json!({
                (names::FORMAT_KEY): alloc::format!("{}", meta.format_version),
                (names::META_KEY): meta.to_json(),
            }),
        );
        let mut offset = 0usize;
        for (name, dtype, shape, bytes) in &stored {
            header.insert(
                name.clone(),
                serde_json::json!({
                    "dtype": dtype,
                    "shape": shape,
                    "data_offsets": [offset, offset + bytes.len()],
                }),
            );
            offset += bytes.len();
        }
        // A map of strings and numbers always serialises.
        let mut json = serde_json::to_string(&header).unwrap_or_default();
        // The data starts 8-byte aligned (after the 8-byte length), as the reference writer pads it.
        while !json.len().is_multiple_of(8) {
            json.push(' ');
        }
        let mut out = Vec::with_capacity(8 + json.len() + offset);
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(json.as_bytes());
        for (_, _, _, bytes) in &stored {
            out.extend_from_slice(bytes);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixture;
    use safetensors::tensor::TensorView;

    #[test]
    fn f32_and_int8_parts_round_trip_and_int8_stays_int8() {
        let parts = fixture::dense(4);
        assert_eq!(
            ModelParts::from_safetensors(&parts.to_safetensors()).unwrap(),
            parts
        );
        let int8 = parts.to_int8().unwrap();
        let bytes = int8.to_safetensors();
        assert_eq!(ModelParts::from_safetensors(&bytes).unwrap(), int8);
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for q in int8.int8_tensors() {
            assert_eq!(st.tensor(&q.name).unwrap().dtype(), Dtype::I8);
            let s = st
                .tensor(&alloc::format!("{}{SCALES_SUFFIX}", q.name))
                .unwrap();
            assert_eq!(s.shape(), [q.scales.len()]);
        }
        // About a quarter of the f32 file's weight bytes.
        assert!(bytes.len() < parts.to_safetensors().len());
        // The same parts, the same bytes (a bundle's checksum is its model id).
        assert_eq!(int8.to_safetensors(), bytes);
        assert_eq!(parts.to_safetensors(), parts.to_safetensors());
    }

    #[test]
    fn scales_without_their_int8_tensor_and_int8_without_scales_are_refused() {
        let int8 = fixture::dense(4).to_int8().unwrap();
        let q = &int8.int8_tensors()[0];
        // Drop the scales of the first int8 tensor.
        let mut kept: Vec<(String, TensorView<'_>)> = Vec::new();
        let bytes = int8.to_safetensors();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let scales_name = alloc::format!("{}{SCALES_SUFFIX}", q.name);
        for (name, view) in st.tensors() {
            if name != scales_name {
                kept.push((name, view));
            }
        }
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().clone();
        let without = safetensors::serialize(kept, meta).unwrap();
        let err = ModelParts::from_safetensors(&without).unwrap_err();
        assert!(err.to_string().contains("has no"), "{err}");
        // Scales in an f32 model.
        let f32_parts = fixture::dense(4);
        let mut views: Vec<(String, TensorView<'_>)> = Vec::new();
        let f32_bytes = f32_parts.to_safetensors();
        let st = SafeTensors::deserialize(&f32_bytes).unwrap();
        for (name, view) in st.tensors() {
            views.push((name, view));
        }
        let extra = [0u8; 4];
        views.push((
            "encoder.dense0.weight.scales".into(),
            TensorView::new(Dtype::F32, alloc::vec![1], &extra).unwrap(),
        ));
        let (_, header) = SafeTensors::read_metadata(&f32_bytes).unwrap();
        let with = safetensors::serialize(views, header.metadata().clone()).unwrap();
        let err = ModelParts::from_safetensors(&with).unwrap_err();
        assert!(err.to_string().contains("metadata says f32"), "{err}");
    }
}
