//! Vector data in CSV or TSV (header optional, quoted fields), one sample per row; the label
//! column and the dense ids labels are given.

use std::path::Path;

use csv::ByteRecord;

use crate::DataError;
use crate::delimited::{self, Records};

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
    /// The label values as written, indexed by id (empty without labels).
    pub label_names: Vec<String>,
}

pub(crate) fn resolve(
    col: &LabelColumn,
    width: usize,
    header: Option<&[String]>,
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
    /// The label values by id.
    pub(crate) fn into_names(self) -> Vec<String> {
        self.0
    }

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

/// What each column of a CSV file holds: its width, the label column if one was named, and the
/// row-index columns (an empty header name, as pandas' `to_csv()` and R's `write.csv` write the
/// row names), which are not features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvColumns {
    width: usize,
    label: Option<usize>,
    index: Vec<usize>,
}

impl CsvColumns {
    /// Columns of a file whose first record is `first`, with its names when it is a header.
    pub fn new(
        first: &ByteRecord,
        header: bool,
        label: Option<&LabelColumn>,
        path: &Path,
    ) -> Result<Self, DataError> {
        let width = first.len();
        let names: Option<Vec<String>> =
            header.then(|| first.iter().map(delimited::text).collect());
        let index: Vec<usize> = names.as_ref().map_or_else(Vec::new, |n| {
            (0..width).filter(|&i| n[i].is_empty()).collect()
        });
        let label = label
            .map(|c| resolve(c, width, names.as_deref(), path))
            .transpose()?;
        let columns = Self {
            width,
            label,
            index,
        };
        if columns.features() == 0 {
            return Err(DataError::Corrupt {
                path: path.to_path_buf(),
                reason: "no feature column (only the label or a row index)".into(),
            });
        }
        Ok(columns)
    }

    /// Feature values per row.
    pub fn features(&self) -> usize {
        self.width
            - self.index.len()
            - usize::from(self.label.is_some_and(|l| !self.index.contains(&l)))
    }

    /// Fields per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Whether a label column was named.
    pub fn has_label(&self) -> bool {
        self.label.is_some()
    }

    /// Appends the features of one record (`line` is the 1-based line it starts on) to `out`
    /// and returns its label as text. The record must have the file's width; a missing, extra,
    /// non-numeric or non-finite field is an error naming the line and column.
    pub fn row(
        &self,
        record: &ByteRecord,
        line: usize,
        path: &Path,
        out: &mut Vec<f32>,
    ) -> Result<Option<String>, DataError> {
        if record.len() != self.width {
            return Err(DataError::Ragged {
                path: path.to_path_buf(),
                line,
                expected: self.width,
                got: record.len(),
            });
        }
        let mut label = None;
        for (col, f) in record.iter().enumerate() {
            if Some(col) == self.label {
                label = Some(delimited::text(f));
            } else if !self.index.contains(&col) {
                out.push(parse_field(f, line, col, path)?);
            }
        }
        Ok(label)
    }
}

/// One numeric CSV field (`line` 1-based, `col` 0-based): an error naming both when it is not
/// a number or not finite.
pub(crate) fn parse_field(
    f: &[u8],
    line: usize,
    col: usize,
    path: &Path,
) -> Result<f32, DataError> {
    let v = delimited::number(f).ok_or_else(|| DataError::NotNumeric {
        path: path.to_path_buf(),
        line,
        column: col + 1,
        value: delimited::text(f).chars().take(40).collect(),
    })?;
    if !v.is_finite() {
        return Err(DataError::NotFinite {
            path: path.to_path_buf(),
            location: format!("line {line}, column {}", col + 1),
        });
    }
    Ok(v as f32)
}

/// Parses CSV or TSV bytes (the delimiter as [`delimited::delimiter`] picks it for `path`).
/// The first record is a header when any of its fields is not a number.
pub fn parse_csv(
    bytes: &[u8],
    label: Option<&LabelColumn>,
    path: &Path,
) -> Result<Table, DataError> {
    let mut rows = Records::new(bytes, delimited::delimiter(path, bytes), path);
    let empty = || DataError::Empty {
        path: path.to_path_buf(),
    };
    let (first_line, first) = match rows.next_record() {
        None => return Err(empty()),
        Some(r) => {
            let (line, rec) = r?;
            (line, rec.clone())
        }
    };
    let header = delimited::is_header(&first);
    let columns = CsvColumns::new(&first, header, label, path)?;
    let (mut xs, mut ids, mut labels) = (Vec::new(), LabelIds::default(), Vec::new());
    let mut row = |line: usize, rec: &ByteRecord, xs: &mut Vec<f32>| -> Result<(), DataError> {
        if let Some(label) = columns.row(rec, line, path, xs)? {
            labels.push(ids.id(&label));
        }
        Ok(())
    };
    if !header {
        row(first_line, &first, &mut xs)?;
    }
    while let Some(r) = rows.next_record() {
        let (line, rec) = r?;
        row(line, rec, &mut xs)?;
    }
    if xs.is_empty() {
        return Err(empty());
    }
    let has_label = columns.has_label();
    Ok(Table {
        dim: columns.features(),
        xs,
        labels: has_label.then_some(labels),
        label_names: ids.into_names(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("t.csv")
    }

    #[test]
    fn csv_with_and_without_header() {
        let t = parse_csv(
            b"a,b,label\n1,2,x\n3,4,y\n5,6,x\n",
            Some(&"label".parse().unwrap()),
            p(),
        )
        .unwrap();
        assert_eq!((t.dim, t.xs.as_slice()), (2, &[1., 2., 3., 4., 5., 6.][..]));
        assert_eq!(t.labels.unwrap(), [0, 1, 0]);
        let t = parse_csv(b"1, 2\n3, 4\n", None, p()).unwrap();
        assert_eq!((t.dim, t.xs.len(), t.labels), (2, 4, None));
    }

    #[test]
    fn csv_errors_name_the_line() {
        let err = parse_csv(b"1,2\n3\n", None, p()).unwrap_err();
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
        let err = parse_csv(b"x,y\n1,2\n3,abc\n", None, p()).unwrap_err();
        assert!(err.to_string().contains("line 3, column 2"), "{err}");
        assert!(err.to_string().contains("abc"), "{err}");
        let err = parse_csv(b"1,2\n3,NaN\n", None, p()).unwrap_err();
        assert!(matches!(err, DataError::NotFinite { .. }), "{err}");
        assert!(err.to_string().contains("line 2, column 2"), "{err}");
        assert!(matches!(
            parse_csv(b"\n\n", None, p()),
            Err(DataError::Empty { .. })
        ));
        let err = parse_csv(b"a,b\n1,2\n", Some(&"c".parse().unwrap()), p()).unwrap_err();
        assert!(err.to_string().contains("no column named 'c'"), "{err}");
    }
}
