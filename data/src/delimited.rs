//! Delimited text (CSV, TSV) through the `csv` crate, one record at a time: quoted fields and
//! header names (as pandas and R's `write.csv` write them), `\r\n` line ends, blank lines
//! skipped, and the 1-based line each record ends on (its only line, but for a quoted field
//! across lines) for error messages.
//!
//! The delimiter is a tab for `.tsv`/`.tab` files, else a comma, unless the first line has tabs
//! and no comma (a TSV under another name, or standard input).

use std::io::{BufRead, Read};
use std::path::Path;

use csv::ByteRecord;

use crate::DataError;

/// The delimiter of a file named `path` whose first bytes are `head`.
pub fn delimiter(path: &Path, head: &[u8]) -> u8 {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.ends_with(".tsv") || name.ends_with(".tab") {
        return b'\t';
    }
    let first = head.split(|&b| b == b'\n').next().unwrap_or_default();
    if first.contains(&b'\t') && !first.contains(&b',') {
        b'\t'
    } else {
        b','
    }
}

/// Records of a delimited text, read in bounded memory.
pub struct Records<R> {
    inner: csv::Reader<Tracked<R>>,
    record: ByteRecord,
    path: std::path::PathBuf,
}

/// The reader under the `csv` one, noting whether the input ended and on which byte: the `csv`
/// crate counts the lines it has consumed, so a record ends on the line before its position
/// unless it is the last one of a file without a final newline.
struct Tracked<R> {
    inner: R,
    total: u64,
    last: Option<u8>,
    ended: bool,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.ended = !buf.is_empty();
        } else {
            self.total += n as u64;
            self.last = Some(buf[n - 1]);
        }
        Ok(n)
    }
}

impl<R: Read> Records<R> {
    /// Reads `reader` with `delimiter`; `path` names it in errors. Records end at `\n` (a
    /// `\r` before it is trimmed with the other white space around fields).
    pub fn new(reader: R, delimiter: u8, path: &Path) -> Self {
        let inner = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .delimiter(delimiter)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(Tracked {
                inner: reader,
                total: 0,
                last: None,
                ended: false,
            });
        Self {
            inner,
            record: ByteRecord::new(),
            path: path.to_path_buf(),
        }
    }

    /// The 1-based line the record just read ends on.
    fn line(&self) -> usize {
        let next = self.inner.position().line() as usize;
        let t = self.inner.get_ref();
        let unterminated =
            t.ended && self.inner.position().byte() == t.total && t.last != Some(b'\n');
        if unterminated { next } else { next - 1 }
    }

    /// The next record that is not blank, with the line it ends on (its only line but for a
    /// quoted field across lines); `None` at the end. An I/O error ends the reading.
    pub fn next_record(&mut self) -> Option<Result<(usize, &ByteRecord), DataError>> {
        loop {
            match self.inner.read_byte_record(&mut self.record) {
                Ok(false) => return None,
                Ok(true) if self.record.iter().all(<[u8]>::is_empty) => {}
                Ok(true) => return Some(Ok((self.line(), &self.record))),
                Err(e) => {
                    let path = self.path.clone();
                    return Some(Err(match e.into_kind() {
                        csv::ErrorKind::Io(source) => DataError::Io { path, source },
                        other => DataError::Corrupt {
                            path,
                            reason: format!("{other:?}"),
                        },
                    }));
                }
            }
        }
    }
}

/// Opens delimited text from a buffered reader, choosing the delimiter from `path` and the
/// first buffered bytes.
pub fn records<R: BufRead>(mut reader: R, path: &Path) -> Result<Records<R>, DataError> {
    let head = reader.fill_buf().map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let d = delimiter(path, head);
    Ok(Records::new(reader, d, path))
}

/// A field as text (invalid UTF-8 replaced), for header names and labels.
pub fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(field).into_owned()
}

/// True when a record is a header: any of its fields is not a number.
pub fn is_header(record: &ByteRecord) -> bool {
    record.iter().any(|f| number(f).is_none())
}

/// A field as a number, if it is one (finite or not).
pub fn number(field: &[u8]) -> Option<f64> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str, d: u8) -> Vec<(usize, Vec<String>)> {
        let mut r = Records::new(text.as_bytes(), d, Path::new("t"));
        let mut out = Vec::new();
        while let Some(rec) = r.next_record() {
            let (line, rec) = rec.unwrap();
            out.push((line, rec.iter().map(text_of).collect()));
        }
        out
    }

    fn text_of(f: &[u8]) -> String {
        text(f)
    }

    #[test]
    fn quotes_blank_lines_and_crlf() {
        let got = all(
            "\"a\",\"b, c\",\"label\"\r\n\r\n1, 2 ,\"x \"\"y\"\"\"\r\n\n3,4,z",
            b',',
        );
        assert_eq!(
            got,
            vec![
                (1, vec!["a".into(), "b, c".into(), "label".into()]),
                (3, vec!["1".into(), "2".into(), "x \"y\"".into()]),
                (5, vec!["3".into(), "4".into(), "z".into()]),
            ]
        );
    }

    #[test]
    fn delimiter_by_name_or_first_line() {
        assert_eq!(delimiter(Path::new("x.tsv.gz"), b"1,2"), b'\t');
        assert_eq!(delimiter(Path::new("x.csv"), b"a\tb\n1\t2"), b'\t');
        assert_eq!(delimiter(Path::new("-"), b"a,b\tc\n"), b',');
        assert_eq!(all("a\tb\n1\t2\n", b'\t')[1].1, ["1", "2"]);
    }
}
