//! IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed.

use std::io::Read;
use std::path::Path;

use crate::DataError;

/// A parsed IDX file of unsigned bytes: its dimensions and data.
#[derive(Debug)]
pub struct Idx {
    /// Dimensions, outermost first (e.g. `[60000, 28, 28]`).
    pub dims: Vec<usize>,
    /// Row-major values.
    pub data: Vec<u8>,
}

/// Reads a whole file, gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DataError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("gzip stream: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX header of unsigned bytes (type `0x08`) with `expect_dims` dimensions (any
/// number when `None`): the dimensions and the header length in bytes.
pub fn parse_header(
    bytes: &[u8],
    expect_dims: Option<usize>,
    path: &Path,
) -> Result<(Vec<usize>, usize), DataError> {
    let corrupt = |reason: String| DataError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 4 {
        return Err(corrupt(format!(
            "{} bytes, shorter than the IDX magic",
            bytes.len()
        )));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let (kind, ndim) = (bytes[2], bytes[3] as usize);
    let dims_ok = expect_dims.is_none_or(|e| e == ndim) && ndim > 0;
    if bytes[0] != 0 || bytes[1] != 0 || kind != 0x08 || !dims_ok {
        let want = expect_dims.map_or("at least 1".to_string(), |e| e.to_string());
        return Err(corrupt(format!(
            "bad IDX magic {magic:#010x}: expected unsigned bytes (type 0x08) with {want} dimensions"
        )));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: header,
            got: bytes.len(),
        });
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    Ok((dims, header))
}

/// Values in an array of `dims`, or an error when the product overflows.
pub fn volume(dims: &[usize], path: &Path) -> Result<usize, DataError> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| DataError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("dimensions {dims:?} overflow"),
        })
}

/// Parses IDX bytes of type `u8` with `expect_dims` dimensions.
pub fn parse(bytes: &[u8], expect_dims: usize, path: &Path) -> Result<Idx, DataError> {
    let (dims, header) = parse_header(bytes, Some(expect_dims), path)?;
    let expected = header + volume(&dims, path)?;
    if bytes.len() < expected {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected,
            got: bytes.len(),
        });
    }
    if bytes.len() > expected {
        return Err(DataError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "{} trailing bytes after the {expected} the header announces",
                bytes.len() - expected
            ),
        });
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b.extend(data);
        b
    }

    #[test]
    fn parses_images_and_labels() {
        let p = Path::new("x");
        let idx = parse(&file(&[2, 2, 3], &[1; 12]), 3, p).unwrap();
        assert_eq!(idx.dims, [2, 2, 3]);
        assert_eq!(idx.data.len(), 12);
        let idx = parse(&file(&[3], &[0, 1, 2]), 1, p).unwrap();
        assert_eq!(idx.data, [0, 1, 2]);
    }

    #[test]
    fn bad_magic_is_named() {
        let mut b = file(&[3], &[0, 1, 2]);
        b[2] = 0x0d;
        let err = parse(&b, 1, Path::new("labels")).unwrap_err();
        assert!(
            err.to_string().contains("bad IDX magic 0x00000d01"),
            "{err}"
        );
        let err = parse(&file(&[3], &[0, 1, 2]), 3, Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("3 dimensions"), "{err}");
        assert!(matches!(
            parse(&[0, 0], 1, Path::new("x")),
            Err(DataError::Corrupt { .. })
        ));
    }

    #[test]
    fn truncated_data_and_header_are_named() {
        let err = parse(&file(&[2, 2, 3], &[1; 11]), 3, Path::new("x")).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    expected: 28,
                    got: 27,
                    ..
                }
            ),
            "{err}"
        );
        let err = parse(&[0, 0, 8, 3, 0, 0], 3, Path::new("x")).unwrap_err();
        assert!(
            matches!(err, DataError::Truncated { expected: 16, .. }),
            "{err}"
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let err = parse(&file(&[2], &[1, 2, 3]), 1, Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
    }

    #[test]
    fn gzip_is_detected_and_corrupt_gzip_named() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let raw = file(&[2], &[4, 5]);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&raw).unwrap();
        let gz = enc.finish().unwrap();
        let path = dir.path().join("l.gz");
        std::fs::write(&path, &gz).unwrap();
        assert_eq!(read_maybe_gz(&path).unwrap(), raw);
        std::fs::write(&path, &gz[..gz.len() / 2]).unwrap();
        let err = read_maybe_gz(&path).unwrap_err();
        assert!(err.to_string().contains("gzip stream"), "{err}");
    }
}
