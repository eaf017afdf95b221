//! NumPy arrays as people save them: `.npy` files of any numeric dtype (floats, signed and
//! unsigned integers, booleans; either byte order) and any number of dimensions, and `.npz`
//! archives of them (`numpy.savez`, `savez_compressed`).
//!
//! The header is parsed by the `npyz` crate; the values are decoded here, one sample at a time,
//! so the streaming reader needs memory for one sample only. The first axis counts samples and
//! the rest make one sample, flattened in C order, except for arrays shaped like images:
//!
//! - `(N, H, H)` is grey-scale images of `H x H`;
//! - `(N, H, H, C)` with `C` in 1, 3, 4 is images stored channels-last (TensorFlow, PIL), and
//!   `(N, C, H, H)` with `C` in 1, 3, 4 and `H >= 8` channels-first (PyTorch); both are given
//!   channel-major, as the convolutional encoder and the IDX reader lay them out.
//!
//! Only square images are recognised, as the convolutional autoencoder takes square images;
//! other shapes are flattened and clustered as vectors.
//!
//! A 1-D array `(N,)` is N samples of one value.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use crate::DataError;
use crate::table::{LabelColumn, LabelIds, resolve};

/// How one stored value is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    kind: Kind,
    size: usize,
    big_endian: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Float,
    Int,
    Uint,
    Bool,
}

impl Element {
    fn from_dtype(dtype: &npyz::DType, path: &Path) -> Result<Self, DataError> {
        use npyz::{Endianness, TypeChar};
        let unsupported = |d: String| DataError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "dtype {d} is not numeric: save the samples as floats, integers or booleans"
            ),
        };
        let npyz::DType::Plain(t) = dtype else {
            return Err(unsupported(dtype.descr()));
        };
        let size = t.size_field() as usize;
        let kind = match (t.type_char(), size) {
            (TypeChar::Float, 4 | 8) => Kind::Float,
            (TypeChar::Int, 1 | 2 | 4 | 8) => Kind::Int,
            (TypeChar::Uint, 1 | 2 | 4 | 8) => Kind::Uint,
            (TypeChar::Bool, 1) => Kind::Bool,
            _ => return Err(unsupported(t.to_string())),
        };
        Ok(Self {
            kind,
            size,
            big_endian: t.endianness() == Endianness::Big,
        })
    }

    /// Bytes per value.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Decodes one value of `self.size()` bytes.
    pub fn decode(&self, b: &[u8]) -> f64 {
        let mut raw = [0u8; 8];
        raw[..self.size].copy_from_slice(&b[..self.size]);
        if self.big_endian {
            raw[..self.size].reverse();
        }
        let bits = u64::from_le_bytes(raw);
        match (self.kind, self.size) {
            (Kind::Float, 4) => f64::from(f32::from_bits(bits as u32)),
            (Kind::Float, _) => f64::from_bits(bits),
            (Kind::Uint | Kind::Bool, _) => bits as f64,
            (Kind::Int, n) => {
                // Sign-extend the n-byte value.
                let shift = 64 - 8 * n as u32;
                (((bits << shift) as i64) >> shift) as f64
            }
        }
    }
}

/// What one sample of an array is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A flat vector of this many values.
    Vector(usize),
    /// An image, given channel-major (`channels x height x width`).
    Image {
        /// Channels (1 for grey-scale).
        channels: usize,
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
        /// Whether the file stores it channels-last (`H, W, C`), reordered on reading.
        channels_last: bool,
    },
}

impl Layout {
    /// Values per sample.
    pub fn len(&self) -> usize {
        match *self {
            Self::Vector(n) => n,
            Self::Image {
                channels,
                height,
                width,
                ..
            } => channels * height * width,
        }
    }

    /// Whether a sample holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The layout of samples shaped `rest` (the array's shape after its first axis).
    fn of(rest: &[usize]) -> Self {
        let image = |channels, height, width, channels_last| Self::Image {
            channels,
            height,
            width,
            channels_last,
        };
        let channels = |c: usize| matches!(c, 1 | 3 | 4);
        match *rest {
            [h, w] if h == w && h > 1 => image(1, h, w, false),
            [h, w, c] if h == w && h > 1 && channels(c) => image(c, h, w, true),
            [c, h, w] if h == w && h >= 8 && channels(c) => image(c, h, w, false),
            _ => Self::Vector(rest.iter().product()),
        }
    }
}

/// The header of an `.npy` array, as far as reading its samples needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// How values are stored.
    pub element: Element,
    /// The array's shape as saved.
    pub shape: Vec<usize>,
    /// Samples (the first axis).
    pub samples: usize,
    /// What one sample is.
    pub layout: Layout,
    /// Column-major storage (`fortran_order`).
    pub fortran: bool,
}

impl Header {
    /// Reads the header at the start of `reader`, leaving it at the first data byte.
    pub fn read(reader: &mut impl Read, path: &Path) -> Result<Self, DataError> {
        let corrupt = |reason: String| DataError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let npy = npyz::NpyFile::new(reader)
            .map_err(|e| corrupt(format!("not a readable .npy file: {e}")))?;
        let element = Element::from_dtype(&npy.dtype(), path)?;
        let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
        let fortran = npy.order() == npyz::Order::Fortran;
        let (samples, rest) = match shape.split_first() {
            Some((&n, rest)) => (n, rest),
            None => return Err(corrupt("a 0-d array holds no samples".into())),
        };
        let layout = Layout::of(rest);
        if layout.is_empty() {
            return Err(corrupt(format!("shape {shape:?} holds empty samples")));
        }
        samples
            .checked_mul(layout.len())
            .and_then(|v| v.checked_mul(element.size))
            .ok_or_else(|| corrupt(format!("shape {shape:?} overflows")))?;
        Ok(Self {
            element,
            shape,
            samples,
            layout,
            fortran,
        })
    }

    /// Bytes of one sample as stored.
    pub fn sample_bytes(&self) -> usize {
        self.layout.len() * self.element.size
    }

    /// Decodes one sample stored C-order in `raw` into `out` (appended, channel-major);
    /// `Err(j)` names the first value that is NaN or infinite.
    pub fn decode_sample(&self, raw: &[u8], out: &mut Vec<f32>) -> Result<(), usize> {
        let size = self.element.size;
        let value = |j: usize| self.element.decode(&raw[j * size..(j + 1) * size]);
        let start = out.len();
        match self.layout {
            Layout::Image {
                channels,
                height,
                width,
                channels_last: true,
            } => {
                for c in 0..channels {
                    for p in 0..height * width {
                        out.push(value(p * channels + c) as f32);
                    }
                }
            }
            _ => out.extend((0..self.layout.len()).map(|j| value(j) as f32)),
        }
        match out[start..].iter().position(|v| !v.is_finite()) {
            Some(j) => Err(j),
            None => Ok(()),
        }
    }
}

/// A whole array: its header and every sample's values, channel-major, sample after sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The header.
    pub header: Header,
    /// `samples x layout.len()` values.
    pub xs: Vec<f32>,
}

/// Reads a whole `.npy` array from `bytes` (C or Fortran order); a NaN or infinite value is an
/// error naming its sample and position.
pub fn read_npy(bytes: &[u8], path: &Path) -> Result<Array, DataError> {
    let mut reader = Cursor::new(bytes);
    let header = Header::read(&mut reader, path)?;
    let data = &bytes[reader.position() as usize..];
    let (n, len, size) = (header.samples, header.layout.len(), header.element.size);
    let expected = n * len * size;
    if data.len() < expected {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: bytes.len() - data.len() + expected,
            got: bytes.len(),
        });
    }
    // Fortran order: gather each sample's values into C order first.
    let c_order: std::borrow::Cow<[u8]> = if header.fortran && header.shape.len() > 1 {
        std::borrow::Cow::Owned(fortran_to_c(&data[..expected], &header.shape, size))
    } else {
        std::borrow::Cow::Borrowed(&data[..expected])
    };
    let mut xs = Vec::with_capacity(n * len);
    for (i, raw) in c_order.chunks_exact(header.sample_bytes()).enumerate() {
        header
            .decode_sample(raw, &mut xs)
            .map_err(|j| DataError::NotFinite {
                path: path.to_path_buf(),
                location: format!("sample {i}, value {j}"),
            })?;
    }
    if n == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Array { header, xs })
}

/// The bytes of a column-major array of `shape` (values of `size` bytes) in row-major order.
fn fortran_to_c(data: &[u8], shape: &[usize], size: usize) -> Vec<u8> {
    let total: usize = shape.iter().product();
    // Column-major strides (in values) of each axis.
    let mut strides = vec![1usize; shape.len()];
    for a in 1..shape.len() {
        strides[a] = strides[a - 1] * shape[a - 1];
    }
    let mut out = Vec::with_capacity(total * size);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..total {
        let at: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out.extend_from_slice(&data[at * size..(at + 1) * size]);
        // Advance the row-major multi-index (last axis fastest).
        for a in (0..shape.len()).rev() {
            index[a] += 1;
            if index[a] < shape[a] {
                break;
            }
            index[a] = 0;
        }
    }
    out
}

/// Names an archive's label array may have.
const LABEL_NAMES: [&str; 5] = ["y", "labels", "label", "target", "targets"];
/// Names of the samples array, tried in order when the archive holds several others.
const SAMPLE_NAMES: [&str; 5] = ["x", "X", "data", "images", "arr_0"];

/// What an `.npz` archive holds for clustering: the samples array and, when present, labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Npz {
    /// Name of the samples array in the archive.
    pub name: String,
    /// The samples.
    pub array: Array,
    /// Labels of the samples, from a 1-D array named `y`, `labels`, `label`, `target` or
    /// `targets` with one value per sample.
    pub labels: Option<Vec<f64>>,
}

/// The `.npy` members of an `.npz` archive, by array name (without `.npy`).
fn members(bytes: &[u8], path: &Path) -> Result<Vec<(String, Vec<u8>)>, DataError> {
    let corrupt = |reason: String| DataError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| corrupt(format!("not a readable .npz (zip) archive: {e}")))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|e| corrupt(format!("archive member {i}: {e}")))?;
        let file = f
            .name()
            .map_err(|e| corrupt(format!("archive member {i}: {e}")))?
            .into_owned();
        let Some(name) = file.strip_suffix(".npy").map(str::to_string) else {
            continue;
        };
        let mut data = Vec::with_capacity(f.size().min(1 << 30) as usize);
        f.read_to_end(&mut data)
            .map_err(|e| corrupt(format!("archive member {name}: {e}")))?;
        out.push((name, data));
    }
    Ok(out)
}

/// The samples array of an archive holding arrays `names`: the only array besides the labels,
/// else the first of `x`, `X`, `data`, `images`, `arr_0` present.
fn samples_name<'a>(names: &[&'a str], path: &Path) -> Result<&'a str, DataError> {
    let others: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !LABEL_NAMES.contains(n))
        .collect();
    match others[..] {
        [one] => Ok(one),
        _ => SAMPLE_NAMES
            .iter()
            .find_map(|n| names.iter().copied().find(|m| m == n))
            .ok_or_else(|| DataError::Corrupt {
                path: path.to_path_buf(),
                reason: format!(
                    "which array holds the samples? The archive has {names:?}; name it one of \
                     {SAMPLE_NAMES:?} (labels: {LABEL_NAMES:?})"
                ),
            }),
    }
}

/// Reads an `.npz` archive: its samples array (the only array besides the labels, else the
/// first of `x`, `X`, `data`, `images`, `arr_0` present) and its labels.
pub fn read_npz(bytes: &[u8], path: &Path) -> Result<Npz, DataError> {
    let members = members(bytes, path)?;
    let member_path = |name: &str| PathBuf::from(format!("{}:{name}", path.display()));
    let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
    let name = samples_name(&names, path)?;
    let bytes_of = |n: &str| members.iter().find(|(m, _)| m == n).map(|(_, b)| b);
    let array = read_npy(bytes_of(name).expect("a listed member"), &member_path(name))?;
    let labels = match LABEL_NAMES.iter().find(|n| names.contains(n)) {
        None => None,
        Some(&l) => {
            let p = member_path(l);
            let y = read_npy(bytes_of(l).expect("a listed member"), &p)?;
            if y.header.shape != [array.header.samples] {
                return Err(DataError::Corrupt {
                    path: p,
                    reason: format!(
                        "labels of shape {:?} for {} samples: expected ({},)",
                        y.header.shape, array.header.samples, array.header.samples
                    ),
                });
            }
            Some(y.xs.iter().map(|&v| f64::from(v)).collect())
        }
    };
    Ok(Npz {
        name: name.to_string(),
        array,
        labels,
    })
}

/// The samples array of an `.npz` archive as `.npy` bytes (for the streaming reader, which
/// needs the archive's directory and so reads the archive whole).
pub fn npz_samples(bytes: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    let mut members = members(bytes, path)?;
    let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
    let name = samples_name(&names, path)?.to_string();
    let at = members
        .iter()
        .position(|(n, _)| *n == name)
        .expect("a listed member");
    Ok(members.swap_remove(at).1)
}

/// The samples of an `.npy` or `.npz` file (by its extension) ready to cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// What one sample is.
    pub layout: Layout,
    /// `samples x layout.len()` values.
    pub xs: Vec<f32>,
    /// Labels as dense ids in order of first appearance, when the file has them.
    pub labels: Option<Vec<u32>>,
    /// The label values as written, by id.
    pub label_names: Vec<String>,
}

/// Reads `bytes` of the file `path`: an `.npz` archive's samples and labels ([`read_npz`]), or
/// an `.npy` array, from whose 2-D rows `label` takes a label column out.
pub fn read_samples(
    bytes: &[u8],
    path: &Path,
    label: Option<&LabelColumn>,
) -> Result<Samples, DataError> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let mut ids = LabelIds::default();
    if name.ends_with(".npz") || name.ends_with(".npz.gz") {
        if label.is_some() {
            return Err(DataError::BadLabelColumn {
                path: path.to_path_buf(),
                reason: format!(
                    "an .npz archive's labels are its array named one of {LABEL_NAMES:?}"
                ),
            });
        }
        let npz = read_npz(bytes, path)?;
        let labels = npz
            .labels
            .map(|y| y.iter().map(|v| ids.id(&v.to_string())).collect());
        return Ok(Samples {
            layout: npz.array.header.layout,
            xs: npz.array.xs,
            labels,
            label_names: ids.into_names(),
        });
    }
    let array = read_npy(bytes, path)?;
    let Some(label) = label else {
        return Ok(Samples {
            layout: array.header.layout,
            xs: array.xs,
            labels: None,
            label_names: Vec::new(),
        });
    };
    let Layout::Vector(width) = array.header.layout else {
        return Err(DataError::BadLabelColumn {
            path: path.to_path_buf(),
            reason: "a label column is taken from the rows of a 2-D array, not from images".into(),
        });
    };
    let at = resolve(label, width, None, path)?;
    let mut xs = Vec::with_capacity(array.xs.len() - array.header.samples);
    let mut labels = Vec::with_capacity(array.header.samples);
    for row in array.xs.chunks_exact(width) {
        for (j, &v) in row.iter().enumerate() {
            if j == at {
                labels.push(ids.id(&v.to_string()));
            } else {
                xs.push(v);
            }
        }
    }
    Ok(Samples {
        layout: Layout::Vector(width - 1),
        xs,
        labels: Some(labels),
        label_names: ids.into_names(),
    })
}

/// The bytes of a `.npy` file holding `xs` as a little-endian `float32` array of `rows` x
/// `cols` (format version 1.0, header padded to 64 bytes as NumPy writes it), which
/// `numpy.load` and [`read_npy`] read back.
pub fn npy_f32(xs: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    debug_assert_eq!(xs.len(), rows * cols);
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + xs.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in xs {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn element(descr: &str) -> Element {
        let t: npyz::TypeStr = descr.parse().unwrap();
        Element::from_dtype(&npyz::DType::Plain(t), Path::new("t")).unwrap()
    }

    #[test]
    fn every_numeric_dtype_decodes() {
        assert_eq!(element("|u1").decode(&[200]), 200.0);
        assert_eq!(element("|i1").decode(&[0xff]), -1.0);
        assert_eq!(element("<i2").decode(&(-300i16).to_le_bytes()), -300.0);
        assert_eq!(element(">i4").decode(&(-7i32).to_be_bytes()), -7.0);
        assert_eq!(element("<u8").decode(&9u64.to_le_bytes()), 9.0);
        assert_eq!(element("<f4").decode(&1.5f32.to_le_bytes()), 1.5);
        assert_eq!(element(">f8").decode(&(-2.25f64).to_be_bytes()), -2.25);
        assert_eq!(element("|b1").decode(&[1]), 1.0);
        let err = Element::from_dtype(
            &npyz::DType::Plain("<U3".parse().unwrap()),
            Path::new("t.npy"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("<U3"), "{err}");
    }

    #[test]
    fn image_shapes_are_recognised() {
        let img = |channels, height, width, channels_last| Layout::Image {
            channels,
            height,
            width,
            channels_last,
        };
        assert_eq!(Layout::of(&[28, 28]), img(1, 28, 28, false));
        assert_eq!(Layout::of(&[20, 30]), Layout::Vector(600));
        assert_eq!(Layout::of(&[100, 6]), Layout::Vector(600));
        assert_eq!(Layout::of(&[32, 32, 3]), img(3, 32, 32, true));
        assert_eq!(Layout::of(&[3, 32, 32]), img(3, 32, 32, false));
        assert_eq!(Layout::of(&[6, 5, 5]), Layout::Vector(150));
        assert_eq!(Layout::of(&[13]), Layout::Vector(13));
        assert_eq!(Layout::of(&[]), Layout::Vector(1));
    }

    #[test]
    fn channels_last_is_reordered_channel_major() {
        let h = Header {
            element: element("|u1"),
            shape: vec![1, 2, 2, 3],
            samples: 1,
            layout: Layout::Image {
                channels: 3,
                height: 2,
                width: 2,
                channels_last: true,
            },
            fortran: false,
        };
        // Pixels p0..p3, channels r g b: r = 10 + p, g = 20 + p, b = 30 + p.
        let raw: Vec<u8> = (0..4).flat_map(|p| [10 + p, 20 + p, 30 + p]).collect();
        let mut out = Vec::new();
        h.decode_sample(&raw, &mut out).unwrap();
        assert_eq!(
            out,
            [10., 11., 12., 13., 20., 21., 22., 23., 30., 31., 32., 33.]
        );
    }

    #[test]
    fn fortran_order_is_gathered_row_major() {
        // shape (2, 3): C order 0 1 2 / 3 4 5 stored column-major as 0 3 1 4 2 5.
        let stored: Vec<u8> = [0u8, 3, 1, 4, 2, 5].to_vec();
        assert_eq!(fortran_to_c(&stored, &[2, 3], 1), [0, 1, 2, 3, 4, 5]);
    }

    /// A `.npy` file of `descr` values with raw `data`.
    pub(crate) fn npy(descr: &str, shape: &str, fortran: bool, data: &[u8]) -> Vec<u8> {
        let mut h = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((h.len() as u16).to_le_bytes());
        b.extend(h.as_bytes());
        b.extend(data);
        b
    }

    fn p() -> &'static Path {
        Path::new("t.npy")
    }

    #[test]
    fn rows_with_a_label_column_and_fortran_order() {
        let f32s: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = read_samples(&npy("<f4", "(3, 2)", false, &f32s), p(), None).unwrap();
        assert_eq!(
            (t.layout, t.xs),
            (Layout::Vector(2), vec![1., 2., 3., 4., 5., 6.])
        );
        let t = read_samples(
            &npy("<f4", "(3, 2)", true, &f32s),
            p(),
            Some(&LabelColumn::Last),
        )
        .unwrap();
        assert_eq!((t.layout, t.xs), (Layout::Vector(1), vec![1., 2., 3.]));
        assert_eq!(t.labels.unwrap(), [0, 1, 2]);
        assert_eq!(t.label_names, ["4", "5", "6"]);
    }

    #[test]
    fn bad_arrays_are_named() {
        let f32s: Vec<u8> = [1f32, 2., 3.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let err = read_npy(&npy("<f4", "(2, 2)", false, &f32s), p()).unwrap_err();
        assert!(matches!(err, DataError::Truncated { .. }), "{err}");
        let err = read_npy(&npy("<U3", "(1, 1)", false, &[0; 12]), p()).unwrap_err();
        assert!(err.to_string().contains("<U3"), "{err}");
        let nan: Vec<u8> = [0f32, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let err = read_npy(&npy("<f4", "(2, 1)", false, &nan), p()).unwrap_err();
        assert!(err.to_string().contains("sample 1, value 0"), "{err}");
        let err = read_npy(&npy("<f4", "(0, 3)", false, &[]), p()).unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }), "{err}");
        assert!(read_npy(b"hello", p()).is_err());
        assert!(read_npz(b"hello", Path::new("t.npz")).is_err());
    }

    #[test]
    fn written_arrays_read_back() {
        let xs: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
        let bytes = npy_f32(&xs, 3, 4);
        assert_eq!(
            bytes.len() % 16,
            0,
            "header padded; 12 values of 4 bytes follow"
        );
        assert_eq!(
            (10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64,
            0
        );
        let a = read_npy(&bytes, Path::new("x.npy")).unwrap();
        assert_eq!((a.header.samples, a.header.layout.len()), (3, 4));
        assert_eq!(a.xs, xs);
    }
}
