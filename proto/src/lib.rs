//! The dekm gRPC contract. Generated code stays private; everything is re-exported as [`pb`].

mod generated {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/dekm.v1.rs"));
}

/// Protocol buffer types, clients (`*_client`) and servers (`*_server`) of package `dekm.v1`.
pub mod pb {
    pub use crate::generated::*;
}

/// The encoded `FileDescriptorSet` of `dekm.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/dekm_descriptor.bin"));

#[cfg(test)]
mod tests {
    use super::pb;
    use prost::Message;

    #[test]
    fn assign_request_round_trips_on_the_wire() {
        let req = pb::AssignRequest {
            model_id: "m1".into(),
            samples: vec![pb::Sample {
                values: vec![0.5, 1.0],
            }],
            readings: vec![],
            texts: vec![],
        };
        let bytes = req.encode_to_vec();
        assert_eq!(pb::AssignRequest::decode(bytes.as_slice()).unwrap(), req);
        assert!(
            pb::AssignRequest::decode(&bytes[..bytes.len() - 1]).is_err(),
            "truncated input is an error"
        );
    }

    #[test]
    fn descriptor_set_names_every_service() {
        // Names are plain strings inside the encoded descriptor.
        let text = String::from_utf8_lossy(super::FILE_DESCRIPTOR_SET);
        for s in [
            "dekm/v1/dekm.proto",
            "Assigner",
            "Training",
            "Registry",
            "Fleet",
        ] {
            assert!(text.contains(s), "descriptor set lacks {s}");
        }
    }
}
