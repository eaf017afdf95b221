//! Vector data: CSV (header optional) and NumPy `.npy` (f32/f64, 2-D), one sample per row.

use std::path::Path;

use crate::DataError;

/// Which column, if any, holds the evaluation label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelColumn {
    /// Zero-based column index.
    Index(usize),
    /// Column name from the CSV header.
    Name(String),
    /// The last column.
    Last,
}

impl std::str::FromStr for LabelColumn {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match (s, s.parse()) {
            ("last", _) => Self::Last,
            (_, Ok(i)) => Self::Index(i),
            _ => Self::Name(s.to_string()),
        })
    }
}

/// Rows of features, plus labels when a label column was named.
#[derive(Debug)]
pub struct Table {
    /// Feature columns per row.
    pub dim: usize,
    /// Row-major features.
    pub xs: Vec<f32>,
    /// Labels as dense ids (distinct label values in order of first appearance).
    pub labels: Option<Vec<u32>>,
}

fn fields(l: &str) -> Vec<&str> {
    l.split(',').map(str::trim).collect()
}

fn resolve(
    col: &LabelColumn,
    width: usize,
    header: Option<&[&str]>,
    path: &Path,
) -> Result<usize, DataError> {
    let bad = |reason: String| DataError::BadLabelColumn {
        path: path.to_path_buf(),
        reason,
    };
    let i = match col {
        LabelColumn::Last => width
            .checked_sub(1)
            .ok_or_else(|| bad("no columns".into()))?,
        LabelColumn::Index(i) => *i,
        LabelColumn::Name(n) => header
            .ok_or_else(|| bad(format!("column '{n}' named but the file has no header")))?
            .iter()
            .position(|h| h == n)
            .ok_or_else(|| bad(format!("no column named '{n}'")))?,
    };
    if i >= width {
        return Err(bad(format!("column {i} but rows have {width} columns")));
    }
    if width < 2 {
        return Err(bad("the label column would leave no features".into()));
    }
    Ok(i)
}

/// Maps label strings to dense ids in order of first appearance, so "3" and "cat" both work.
#[derive(Default)]
pub(crate) struct LabelIds(Vec<String>);

impl LabelIds {
    pub(crate) fn id(&mut self, s: &str) -> u32 {
        let s = s.strip_suffix(".0").unwrap_or(s);
        match self.0.iter().position(|x| x == s) {
            Some(i) => i as u32,
            None => {
                self.0.push(s.to_string());
                (self.0.len() - 1) as u32
            }
        }
    }
}

/// True when a CSV line is a header: any of its fields is not a number.
pub fn is_header(l: &str) -> bool {
    fields(l).iter().any(|f| f.parse::<f64>().is_err())
}

/// Appends the numbers of one CSV data line (`line` is its 1-based number) to `out`, skipping
/// the field at `label_at` and returning it. The line must have `width` fields; a missing, extra,
/// non-numeric or non-finite field is an error naming the line and column.
pub fn parse_csv_row<'a>(
    l: &'a str,
    line: usize,
    width: usize,
    label_at: Option<usize>,
    path: &Path,
    out: &mut Vec<f32>,
) -> Result<Option<&'a str>, DataError> {
    let row = fields(l);
    if row.len() != width {
        return Err(DataError::Ragged {
            path: path.to_path_buf(),
            line,
            expected: width,
            got: row.len(),
        });
    }
    let mut label = None;
    for (col, f) in row.into_iter().enumerate() {
        if Some(col) == label_at {
            label = Some(f);
            continue;
        }
        out.push(parse_field(f, line, col, path)?);
    }
    Ok(label)
}

/// One numeric CSV field (`line` 1-based, `col` 0-based): an error naming both when it is not
/// a number or not finite.
pub(crate) fn parse_field(f: &str, line: usize, col: usize, path: &Path) -> Result<f32, DataError> {
    let v: f64 = f.parse().map_err(|_| DataError::NotNumeric {
        path: path.to_path_buf(),
        line,
        column: col + 1,
        value: f.chars().take(40).collect(),
    })?;
    if !v.is_finite() {
        return Err(DataError::NotFinite {
            path: path.to_path_buf(),
            location: format!("line {line}, column {}", col + 1),
        });
    }
    Ok(v as f32)
}

/// Parses CSV text. The first line is a header when any of its fields is not a number.
pub fn parse_csv(text: &str, label: Option<&LabelColumn>, path: &Path) -> Result<Table, DataError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .peekable();
    let Some(&(_, first_line)) = lines.peek() else {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    };
    let first = fields(first_line);
    let header = is_header(first_line).then_some(first.clone());
    if header.is_some() {
        lines.next();
    }
    let width = first.len();
    let label_at = label
        .map(|c| resolve(c, width, header.as_deref(), path))
        .transpose()?;
    let (mut xs, mut ids, mut labels) = (Vec::new(), LabelIds::default(), Vec::new());
    for (line, l) in lines {
        if let Some(label) = parse_csv_row(l, line, width, label_at, path, &mut xs)? {
            labels.push(ids.id(label));
        }
    }
    let dim = width - usize::from(label_at.is_some());
    if xs.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Table {
        dim,
        xs,
        labels: label_at.map(|_| labels),
    })
}

/// The header of a 2-D little-endian `f4`/`f8` `.npy` array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NpyHeader {
    /// Offset of the first data byte.
    pub data_start: usize,
    /// Bytes per value (4 or 8).
    pub width: usize,
    /// Column-major storage.
    pub fortran: bool,
    /// Samples.
    pub rows: usize,
    /// Values per sample.
    pub cols: usize,
}

impl NpyHeader {
    /// Parses the magic, version and header dictionary at the start of `bytes` (the data may
    /// follow or not).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, DataError> {
        let corrupt = |reason: &str| DataError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
            return Err(corrupt("not a .npy file (missing \\x93NUMPY magic)"));
        }
        let (start, hlen) = match bytes[6] {
            1 => (10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
            2 | 3 if bytes.len() >= 12 => (
                12,
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            ),
            v => return Err(corrupt(&format!("unsupported .npy version {v}"))),
        };
        let header = bytes
            .get(start..start + hlen)
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or_else(|| corrupt("truncated or non-UTF-8 header"))?;
        let field = |key: &str| -> Option<&str> {
            let at = header.find(&format!("'{key}'"))? + key.len() + 2;
            let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
            Some(rest)
        };
        let descr = field("descr").ok_or_else(|| corrupt("header has no 'descr'"))?;
        let width = if descr.starts_with("'<f4'") {
            4
        } else if descr.starts_with("'<f8'") {
            8
        } else {
            let d: String = descr.chars().take_while(|&c| c != ',').collect();
            return Err(corrupt(&format!(
                "dtype {d} is not supported; save as float32 or float64"
            )));
        };
        let fortran = field("fortran_order").is_some_and(|f| f.starts_with("True"));
        let shape = field("shape").ok_or_else(|| corrupt("header has no 'shape'"))?;
        let shape: Vec<usize> = shape
            .strip_prefix('(')
            .and_then(|s| s.split(')').next())
            .ok_or_else(|| corrupt("malformed 'shape'"))?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| corrupt("malformed 'shape'")))
            .collect::<Result<_, _>>()?;
        let [rows, cols] = shape[..] else {
            return Err(corrupt(&format!(
                "expected a 2-D array (samples x features), got shape {shape:?}"
            )));
        };
        Ok(Self {
            data_start: start + hlen,
            width,
            fortran,
            rows,
            cols,
        })
    }

    /// Decodes one little-endian value of this header's width.
    pub fn value(&self, b: &[u8]) -> f64 {
        match b {
            [a, b, c, d] => f64::from(f32::from_le_bytes([*a, *b, *c, *d])),
            [a, b, c, d, e, f, g, h] => f64::from_le_bytes([*a, *b, *c, *d, *e, *f, *g, *h]),
            _ => f64::NAN,
        }
    }
}

/// Parses a 2-D little-endian `f4`/`f8` `.npy` array (C or Fortran order).
pub fn parse_npy(
    bytes: &[u8],
    label: Option<&LabelColumn>,
    path: &Path,
) -> Result<Table, DataError> {
    let h = NpyHeader::parse(bytes, path)?;
    let (width, fortran, rows, cols) = (h.width, h.fortran, h.rows, h.cols);
    let data = &bytes[h.data_start..];
    let expected = rows
        .checked_mul(cols)
        .and_then(|v| v.checked_mul(width))
        .ok_or_else(|| DataError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("shape ({rows}, {cols}) overflows"),
        })?;
    if data.len() < expected {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: h.data_start + expected,
            got: bytes.len(),
        });
    }
    let value = |i: usize, j: usize| -> f64 {
        let at = if fortran { j * rows + i } else { i * cols + j } * width;
        h.value(&data[at..at + width])
    };
    let label_at = label.map(|c| resolve(c, cols, None, path)).transpose()?;
    let (mut xs, mut labels, mut ids) = (
        Vec::with_capacity(rows * cols),
        Vec::new(),
        LabelIds::default(),
    );
    for i in 0..rows {
        for j in 0..cols {
            let v = value(i, j);
            if !v.is_finite() {
                return Err(DataError::NotFinite {
                    path: path.to_path_buf(),
                    location: format!("row {i}, column {j}"),
                });
            }
            if Some(j) == label_at {
                labels.push(ids.id(&v.to_string()));
            } else {
                xs.push(v as f32);
            }
        }
    }
    if rows == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Table {
        dim: cols - usize::from(label_at.is_some()),
        xs,
        labels: label_at.map(|_| labels),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("t.csv")
    }

    #[test]
    fn csv_with_and_without_header() {
        let t = parse_csv(
            "a,b,label\n1,2,x\n3,4,y\n5,6,x\n",
            Some(&"label".parse().unwrap()),
            p(),
        )
        .unwrap();
        assert_eq!((t.dim, t.xs.as_slice()), (2, &[1., 2., 3., 4., 5., 6.][..]));
        assert_eq!(t.labels.unwrap(), [0, 1, 0]);
        let t = parse_csv("1, 2\n3, 4\n", None, p()).unwrap();
        assert_eq!((t.dim, t.xs.len(), t.labels), (2, 4, None));
    }

    #[test]
    fn csv_errors_name_the_line() {
        let err = parse_csv("1,2\n3\n", None, p()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Ragged {
                    line: 2,
                    expected: 2,
                    got: 1,
                    ..
                }
            ),
            "{err}"
        );
        let err = parse_csv("x,y\n1,2\n3,abc\n", None, p()).unwrap_err();
        assert!(err.to_string().contains("line 3, column 2"), "{err}");
        assert!(err.to_string().contains("abc"), "{err}");
        let err = parse_csv("1,2\n3,NaN\n", None, p()).unwrap_err();
        assert!(matches!(err, DataError::NotFinite { .. }), "{err}");
        assert!(err.to_string().contains("line 2, column 2"), "{err}");
        assert!(matches!(
            parse_csv("\n\n", None, p()),
            Err(DataError::Empty { .. })
        ));
        let err = parse_csv("a,b\n1,2\n", Some(&"c".parse().unwrap()), p()).unwrap_err();
        assert!(err.to_string().contains("no column named 'c'"), "{err}");
    }

    /// A `.npy` file of `descr` values with raw little-endian `data`.
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

    #[test]
    fn npy_f32_f64_and_fortran_order() {
        let f32s: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = parse_npy(&npy("<f4", "(3, 2)", false, &f32s), None, p()).unwrap();
        assert_eq!((t.dim, t.xs), (2, vec![1., 2., 3., 4., 5., 6.]));
        let t = parse_npy(
            &npy("<f4", "(3, 2)", true, &f32s),
            Some(&LabelColumn::Last),
            p(),
        )
        .unwrap();
        assert_eq!((t.dim, t.xs), (1, vec![1., 2., 3.]));
        assert_eq!(t.labels.unwrap(), [0, 1, 2]);
        let f64s: Vec<u8> = [1f64, 2.].iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = parse_npy(&npy("<f8", "(1, 2)", false, &f64s), None, p()).unwrap();
        assert_eq!(t.xs, [1., 2.]);
    }

    #[test]
    fn npy_errors() {
        let f32s: Vec<u8> = [1f32, 2., 3.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let err = parse_npy(&npy("<f4", "(2, 2)", false, &f32s), None, p()).unwrap_err();
        assert!(matches!(err, DataError::Truncated { .. }), "{err}");
        let err = parse_npy(&npy("<i8", "(1, 1)", false, &[0; 8]), None, p()).unwrap_err();
        assert!(err.to_string().contains("'<i8'"), "{err}");
        let err = parse_npy(&npy("<f4", "(3,)", false, &f32s), None, p()).unwrap_err();
        assert!(err.to_string().contains("2-D"), "{err}");
        let nan: Vec<u8> = f32::NAN.to_le_bytes().to_vec();
        let err = parse_npy(&npy("<f4", "(1, 1)", false, &nan), None, p()).unwrap_err();
        assert!(matches!(err, DataError::NotFinite { .. }), "{err}");
        assert!(parse_npy(b"hello", None, p()).is_err());
    }
}
