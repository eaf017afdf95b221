//! Documents to cluster by meaning: one per line, or a column of a CSV/TSV file or a field of a
//! JSON Lines file, with an optional label column for evaluation.
//!
//! The format is the file's extension: `.csv`/`.tsv`/`.tab` (a header row naming the columns),
//! `.jsonl`/`.ndjson` (one JSON object per line), anything else one document per line. Every
//! document must be UTF-8 and not blank: a blank line in a one-per-line file is far more often
//! a paragraph break than a document, and dropping or keeping it silently would shift which
//! label belongs to which text, so it is an error naming the line.

use std::path::Path;

use crate::DataError;
use crate::delimited::{self, Records};
use crate::table::{self, LabelColumn, LabelIds};

/// Documents read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Texts {
    /// The documents in file order.
    pub texts: Vec<String>,
    /// Labels as dense ids, when a label column was named.
    pub labels: Option<Vec<u32>>,
    /// The label values as written, by id.
    pub label_names: Vec<String>,
}

/// How a text file is laid out, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Lines,
    Delimited,
    JsonLines,
}

impl Layout {
    fn of(path: &Path) -> Self {
        let name = path.to_string_lossy().to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if [".csv", ".tsv", ".tab"].iter().any(|e| name.ends_with(e)) {
            Self::Delimited
        } else if [".jsonl", ".ndjson"].iter().any(|e| name.ends_with(e)) {
            Self::JsonLines
        } else {
            Self::Lines
        }
    }
}

/// Reads the documents of `path` (gzip recognised by its magic). `column` names the text column
/// of a CSV/TSV file (header name or 0-based index; required there) or the field of a JSON
/// Lines file (default `text`); `label` the label column or field.
pub fn read_texts(
    path: &Path,
    column: Option<&str>,
    label: Option<&LabelColumn>,
) -> Result<Texts, DataError> {
    let bytes = crate::idx::read_maybe_gz(path)?;
    parse_texts(&bytes, path, column, label)
}

/// [`read_texts`] on bytes already read; `path` picks the layout and names the file in errors.
pub fn parse_texts(
    bytes: &[u8],
    path: &Path,
    column: Option<&str>,
    label: Option<&LabelColumn>,
) -> Result<Texts, DataError> {
    let texts = match Layout::of(path) {
        Layout::Lines => {
            if let Some(c) = column {
                return Err(DataError::Unsupported(format!(
                    "{}: --text-col {c} names a column, but a file that is not .csv, .tsv or \
                     .jsonl holds one document per line",
                    path.display()
                )));
            }
            if label.is_some() {
                return Err(DataError::BadLabelColumn {
                    path: path.to_path_buf(),
                    reason: "a file of one document per line has no label column; put texts and \
                             labels in a CSV or JSON Lines file"
                        .into(),
                });
            }
            lines(bytes, path)?
        }
        Layout::Delimited => delimited_texts(bytes, path, column, label)?,
        Layout::JsonLines => json_lines(bytes, path, column.unwrap_or("text"), label)?,
    };
    if texts.texts.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(texts)
}

fn bad(path: &Path, line: usize, reason: impl Into<String>) -> DataError {
    DataError::BadText {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// The line as UTF-8, or where it stops being UTF-8.
fn utf8<'a>(raw: &'a [u8], path: &Path, line: usize) -> Result<&'a str, DataError> {
    std::str::from_utf8(raw).map_err(|e| {
        bad(
            path,
            line,
            format!(
                "not UTF-8 from byte {} of the line (save the file as UTF-8)",
                e.valid_up_to() + 1
            ),
        )
    })
}

fn lines(bytes: &[u8], path: &Path) -> Result<Texts, DataError> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut texts = Vec::new();
    if body.is_empty() {
        return Ok(Texts {
            texts,
            labels: None,
            label_names: Vec::new(),
        });
    }
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = utf8(raw, path, line)?.trim();
        if text.is_empty() {
            return Err(bad(
                path,
                line,
                "blank: the file holds one document per line, so a blank line would be an \
                 empty document (remove it, or join a paragraph's lines)",
            ));
        }
        texts.push(text.to_string());
    }
    Ok(Texts {
        texts,
        labels: None,
        label_names: Vec::new(),
    })
}

fn delimited_texts(
    bytes: &[u8],
    path: &Path,
    column: Option<&str>,
    label: Option<&LabelColumn>,
) -> Result<Texts, DataError> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut rows = Records::new(bytes, delimited::delimiter(path, bytes), path);
    let Some(first) = rows.next_record() else {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    };
    let header: Vec<String> = first?.1.iter().map(delimited::text).collect();
    let column = column.ok_or_else(|| {
        DataError::Unsupported(format!(
            "{}: name the text column with --text-col (the header has: {})",
            path.display(),
            header.join(", ")
        ))
    })?;
    let text_at = match column.parse::<usize>() {
        Ok(i) if i < header.len() => i,
        _ => header.iter().position(|h| h == column).ok_or_else(|| {
            DataError::Unsupported(format!(
                "{}: no column '{column}' for the texts (the header has: {})",
                path.display(),
                header.join(", ")
            ))
        })?,
    };
    let label_at = label
        .map(|l| table::resolve(l, header.len(), Some(&header), path))
        .transpose()?;
    if label_at == Some(text_at) {
        return Err(DataError::BadLabelColumn {
            path: path.to_path_buf(),
            reason: format!(
                "the label column is the text column ('{}')",
                header[text_at]
            ),
        });
    }
    let (mut texts, mut ids, mut labels) = (Vec::new(), LabelIds::default(), Vec::new());
    while let Some(r) = rows.next_record() {
        let (line, rec) = r?;
        if rec.len() != header.len() {
            return Err(DataError::Ragged {
                path: path.to_path_buf(),
                line,
                expected: header.len(),
                got: rec.len(),
            });
        }
        let text = utf8(&rec[text_at], path, line)?.trim();
        if text.is_empty() {
            return Err(bad(
                path,
                line,
                format!("the text column '{column}' is empty"),
            ));
        }
        texts.push(text.to_string());
        if let Some(l) = label_at {
            labels.push(ids.id(utf8(&rec[l], path, line)?));
        }
    }
    Ok(Texts {
        texts,
        labels: label_at.map(|_| labels),
        label_names: ids.into_names(),
    })
}

fn json_lines(
    bytes: &[u8],
    path: &Path,
    field: &str,
    label: Option<&LabelColumn>,
) -> Result<Texts, DataError> {
    let label_field = match label {
        None => None,
        Some(LabelColumn::Name(n)) => Some(n.as_str()),
        Some(other) => {
            return Err(DataError::BadLabelColumn {
                path: path.to_path_buf(),
                reason: format!(
                    "JSON Lines objects have named fields, not positions: name the label field \
                     instead of {other:?}"
                ),
            });
        }
    };
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let (mut texts, mut ids, mut labels) = (Vec::new(), LabelIds::default(), Vec::new());
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = utf8(raw, path, line)?.trim();
        if raw.is_empty() {
            continue;
        }
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw)
            .map_err(|e| bad(path, line, format!("not a JSON object: {e}")))?;
        let text = match object.get(field) {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(serde_json::Value::String(_)) => {
                return Err(bad(path, line, format!("field '{field}' is empty")));
            }
            Some(other) => {
                return Err(bad(
                    path,
                    line,
                    format!("field '{field}' is not a string: {other}"),
                ));
            }
            None => return Err(bad(path, line, format!("no field '{field}' for the text"))),
        };
        texts.push(text);
        if let Some(lf) = label_field {
            let value = match object.get(lf) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    v.to_string()
                }
                _ => {
                    return Err(bad(
                        path,
                        line,
                        format!("no string or number label in field '{lf}'"),
                    ));
                }
            };
            labels.push(ids.id(&value));
        }
    }
    Ok(Texts {
        texts,
        labels: label_field.map(|_| labels),
        label_names: ids.into_names(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        name: &str,
        bytes: &[u8],
        col: Option<&str>,
        label: Option<&str>,
    ) -> Result<Texts, DataError> {
        let label = label.map(|l| l.parse::<LabelColumn>().unwrap());
        parse_texts(bytes, Path::new(name), col, label.as_ref())
    }

    #[test]
    fn one_document_per_line() {
        let t = parse(
            "d.txt",
            "\u{feff}강아지가 귀엽다\r\nIt rains.\n  padded  \n".as_bytes(),
            None,
            None,
        )
        .unwrap();
        assert_eq!(t.texts, ["강아지가 귀엽다", "It rains.", "padded"]);
        assert_eq!(t.labels, None);
        let err = parse("d.txt", b"a\n\nb\n", None, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("d.txt: line 2") && err.contains("blank"),
            "{err}"
        );
        let err = parse("d.txt", b"ok\nbad \xff here\n", None, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("not UTF-8 from byte 5"),
            "{err}"
        );
        assert!(matches!(
            parse("d.txt", b"", None, None),
            Err(DataError::Empty { .. })
        ));
        let err = parse("d.txt", b"a\n", Some("text"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("one document per line"), "{err}");
        let err = parse("d.txt", b"a\n", None, Some("last"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no label column"), "{err}");
    }

    #[test]
    fn a_csv_column_with_labels() {
        let csv = b"id,review,topic\n1,\"Great, really great\",pets\n2,cloudy all day,weather\n3,a cute dog,pets\n";
        let t = parse("r.csv", csv, Some("review"), Some("topic")).unwrap();
        assert_eq!(
            t.texts,
            ["Great, really great", "cloudy all day", "a cute dog"]
        );
        assert_eq!(t.labels.unwrap(), [0, 1, 0]);
        assert_eq!(t.label_names, ["pets", "weather"]);
        let t = parse(
            "r.tsv",
            b"text\tlabel\nhello world\t3\n",
            Some("0"),
            Some("last"),
        )
        .unwrap();
        assert_eq!(
            (t.texts, t.label_names),
            (vec!["hello world".to_string()], vec!["3".to_string()])
        );
        for (col, bytes, says) in [
            (None, &csv[..], "name the text column with --text-col"),
            (Some("body"), &csv[..], "no column 'body'"),
            (
                Some("review"),
                &b"id,review\n1,\n"[..],
                "line 2: the text column 'review' is empty",
            ),
            (
                Some("review"),
                &b"id,review\n1,x,y\n"[..],
                "line 2 has 3 fields",
            ),
        ] {
            let err = parse("r.csv", bytes, col, None).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        let err = parse("r.csv", csv, Some("review"), Some("review"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("label column is the text column"), "{err}");
    }

    #[test]
    fn json_lines_fields() {
        let jl = b"{\"text\": \"rain again\", \"y\": 2}\n\n{\"text\": \"a cat\", \"y\": 5}\n";
        let t = parse("c.jsonl", jl, None, Some("y")).unwrap();
        assert_eq!(t.texts, ["rain again", "a cat"]);
        assert_eq!(t.label_names, ["2", "5"]);
        let t = parse("c.ndjson", b"{\"body\": \"x\"}\n", Some("body"), None).unwrap();
        assert_eq!(t.texts, ["x"]);
        for (bytes, label, says) in [
            (
                &b"{\"text\": 3}\n"[..],
                None,
                "line 1: field 'text' is not a string",
            ),
            (&b"{\"t\": \"a\"}\n"[..], None, "no field 'text'"),
            (&b"[1]\n"[..], None, "not a JSON object"),
            (
                &b"{\"text\": \"a\"}\n"[..],
                Some("y"),
                "no string or number label",
            ),
            (&b"{\"text\": \"a\"}\n"[..], Some("last"), "named fields"),
        ] {
            let err = parse("c.jsonl", bytes, None, label)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{err}");
        }
    }
}
