//! Long multichannel recordings, read one reading at a time, and cut into windows.
//!
//! A recording is a CSV (or TSV) file whose header names its columns: one column per channel,
//! and optionally a timestamp (`timestamp`, `time`, `datetime`), a label (`label`, `class`) and
//! an anomaly flag (`is_anomaly`, `anomaly`), recognised by name, case-insensitively, anywhere in
//! the row; a column with an empty name is the row index pandas and R write, and is skipped. A `.npy` array `[T, C]` is a recording too, its channels named `ch0`, `ch1`, ....
//! [`RecordingReader`] yields readings one by one in bounded memory (the edge CLI streams
//! with it); [`read_recording`] collects them and [`windows`] cuts them into the samples a
//! model trains on, channel-major as `dekm_shared::StreamSpec` lays them out.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::DataError;
use crate::delimited::{self, Records};
use crate::table::{self, LabelIds};

/// What a column of a recording holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Channel,
    Timestamp,
    Label,
    Anomaly,
    Index,
}

fn role(name: &str) -> Role {
    match name.to_ascii_lowercase().as_str() {
        "" => Role::Index,
        "timestamp" | "time" | "datetime" => Role::Timestamp,
        "label" | "class" => Role::Label,
        "is_anomaly" | "anomaly" => Role::Anomaly,
        _ => Role::Channel,
    }
}

/// What came with one reading besides its channel values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadingInfo {
    /// 1-based line of the file (row for `.npy`).
    pub line: usize,
    /// The timestamp column's text, when the recording has one.
    pub timestamp: Option<String>,
    /// The label column's text.
    pub label: Option<String>,
    /// The anomaly column (`1`/`true` is anomalous, `0`/`false` normal).
    pub anomaly: Option<bool>,
}

/// Reads a CSV recording one reading at a time. Row-level problems (wrong field count,
/// non-numeric or non-finite value) are returned for that reading and reading goes on.
pub struct RecordingReader<R> {
    path: PathBuf,
    rows: Records<R>,
    roles: Vec<Role>,
    channels: Vec<String>,
}

impl<R: BufRead> RecordingReader<R> {
    /// Reads the header line of `reader` (`path` names it in errors). Blank lines before it
    /// are skipped; a first line of numbers is refused, since a recording's columns must be
    /// named for a model to check them.
    pub fn new(reader: R, path: &Path) -> Result<Self, DataError> {
        let mut rows = delimited::records(reader, path)?;
        let header = match rows.next_record() {
            None => {
                return Err(DataError::Empty {
                    path: path.to_path_buf(),
                });
            }
            Some(r) => r?.1.clone(),
        };
        let corrupt = |reason: String| DataError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        if !delimited::is_header(&header) {
            return Err(corrupt(
                "a recording needs a header line naming its columns (one per channel, and \
                 optionally timestamp, label, is_anomaly); the first line is all numbers"
                    .into(),
            ));
        }
        let names: Vec<String> = header.iter().map(delimited::text).collect();
        let roles: Vec<Role> = names.iter().map(|n| role(n)).collect();
        for r in [Role::Timestamp, Role::Label, Role::Anomaly] {
            if roles.iter().filter(|&&x| x == r).count() > 1 {
                return Err(corrupt(format!(
                    "the header names more than one {r:?} column"
                )));
            }
        }
        let channels: Vec<String> = names
            .iter()
            .zip(&roles)
            .filter(|&(_, &r)| r == Role::Channel)
            .map(|(n, _)| n.to_string())
            .collect();
        if channels.is_empty() {
            return Err(corrupt("the header names no channel column".into()));
        }
        if let Some(dup) = channels
            .iter()
            .enumerate()
            .find(|(i, c)| channels[..*i].contains(c))
        {
            return Err(corrupt(format!("channel '{}' is named twice", dup.1)));
        }
        Ok(Self {
            path: path.to_path_buf(),
            rows,
            roles,
            channels,
        })
    }

    /// Channel names, in the order of a reading's values.
    pub fn channels(&self) -> &[String] {
        &self.channels
    }

    /// Reads the next reading's channel values into `out` (cleared first). `None` at the end;
    /// an I/O error ends the recording, a row error does not.
    pub fn next_into(&mut self, out: &mut Vec<f32>) -> Option<Result<ReadingInfo, DataError>> {
        out.clear();
        let (line, record) = match self.rows.next_record()? {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        Some(parse(&self.path, &self.roles, line, record, out))
    }
}

/// One reading of a recording whose columns play `roles`.
fn parse(
    path: &Path,
    roles: &[Role],
    line: usize,
    record: &csv::ByteRecord,
    out: &mut Vec<f32>,
) -> Result<ReadingInfo, DataError> {
    if record.len() != roles.len() {
        return Err(DataError::Ragged {
            path: path.to_path_buf(),
            line,
            expected: roles.len(),
            got: record.len(),
        });
    }
    let mut info = ReadingInfo {
        line,
        ..Default::default()
    };
    for (col, (f, role)) in record.iter().zip(roles).enumerate() {
        match role {
            Role::Timestamp => info.timestamp = Some(delimited::text(f)),
            Role::Label => info.label = Some(delimited::text(f)),
            Role::Anomaly => {
                info.anomaly = Some(match f.to_ascii_lowercase().as_slice() {
                    b"1" | b"1.0" | b"true" => true,
                    b"0" | b"0.0" | b"false" => false,
                    _ => {
                        return Err(DataError::NotNumeric {
                            path: path.to_path_buf(),
                            line,
                            column: col + 1,
                            value: delimited::text(f).chars().take(40).collect(),
                        });
                    }
                })
            }
            Role::Channel => out.push(table::parse_field(f, line, col, path)?),
            Role::Index => {}
        }
    }
    Ok(info)
}

/// A whole recording in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// Channel names.
    pub channels: Vec<String>,
    /// Reading-major values, `[readings, channels]`.
    pub values: Vec<f32>,
    /// Timestamps as written, when the recording has them.
    pub timestamps: Option<Vec<String>>,
    /// Label of each reading as a dense id (distinct labels in order of first appearance).
    pub labels: Option<Vec<u32>>,
    /// The labels as written, by id (empty without a label column).
    pub label_names: Vec<String>,
    /// Anomaly flag of each reading.
    pub anomalies: Option<Vec<bool>>,
}

impl Recording {
    /// Number of readings.
    pub fn len(&self) -> usize {
        self.values.len() / self.channels.len().max(1)
    }

    /// True for a recording with no readings.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` readings and the rest (`n` is clamped to the length).
    pub fn split_at(&self, n: usize) -> (Recording, Recording) {
        let n = n.min(self.len());
        let c = self.channels.len();
        let cut = |r: std::ops::Range<usize>| Recording {
            channels: self.channels.clone(),
            values: self.values[r.start * c..r.end * c].to_vec(),
            timestamps: self.timestamps.as_ref().map(|t| t[r.clone()].to_vec()),
            labels: self.labels.as_ref().map(|t| t[r.clone()].to_vec()),
            label_names: self.label_names.clone(),
            anomalies: self.anomalies.as_ref().map(|t| t[r.clone()].to_vec()),
        };
        (cut(0..n), cut(n..self.len()))
    }
}

/// Reads a whole recording: CSV or TSV (any row error fails, naming its line and column) or, by
/// the `.npy` extension, a 2-D array `[readings, channels]`; gzip is recognised by its magic.
pub fn read_recording(path: &Path) -> Result<Recording, DataError> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".npy") || name.ends_with(".npy.gz") {
        let bytes = crate::idx::read_maybe_gz(path)?;
        let a = crate::numpy::read_npy(&bytes, path)?;
        let [_, channels] = a.header.shape[..] else {
            return Err(DataError::Corrupt {
                path: path.to_path_buf(),
                reason: format!(
                    "a recording is a 2-D array [readings, channels], not of shape {:?}",
                    a.header.shape
                ),
            });
        };
        return Ok(Recording {
            channels: (0..channels).map(|i| format!("ch{i}")).collect(),
            values: a.xs,
            timestamps: None,
            labels: None,
            label_names: Vec::new(),
            anomalies: None,
        });
    }
    let bytes = crate::idx::read_maybe_gz(path)?;
    let mut reader = RecordingReader::new(bytes.as_slice(), path)?;
    let (mut values, mut row) = (Vec::new(), Vec::new());
    let (mut timestamps, mut labels, mut anomalies) = (Vec::new(), Vec::new(), Vec::new());
    let mut ids = LabelIds::default();
    while let Some(info) = reader.next_into(&mut row) {
        let info = info?;
        values.extend_from_slice(&row);
        timestamps.extend(info.timestamp);
        labels.extend(info.label.map(|l| ids.id(&l)));
        anomalies.extend(info.anomaly);
    }
    let n = values.len() / reader.channels().len();
    if n == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let labels = full(labels, n);
    Ok(Recording {
        channels: reader.channels().to_vec(),
        values,
        timestamps: full(timestamps, n),
        label_names: if labels.is_some() {
            ids.into_names()
        } else {
            Vec::new()
        },
        labels,
        anomalies: full(anomalies, n),
    })
}

/// A column's values come with every reading (the header names it) or not at all.
fn full<T>(column: Vec<T>, n: usize) -> Option<Vec<T>> {
    (column.len() == n).then_some(column)
}

/// A recording cut into windows.
#[derive(Debug, Clone, PartialEq)]
pub struct Windows {
    /// Channel-major windows, `channels x window` values each.
    pub xs: Vec<f32>,
    /// Index of each window's first reading in the recording.
    pub starts: Vec<usize>,
    /// The label most of each window's readings carry (the lowest id on a tie).
    pub labels: Option<Vec<u32>>,
    /// Whether any of each window's readings is flagged anomalous.
    pub anomalies: Option<Vec<bool>>,
}

/// Cuts `rec` into windows of `window` readings starting every `hop` readings; readings after
/// the last full window are not used. A recording shorter than one window is an error.
pub fn windows(
    rec: &Recording,
    window: usize,
    hop: usize,
    path: &Path,
) -> Result<Windows, DataError> {
    let corrupt = |reason: String| DataError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if window == 0 || hop == 0 {
        return Err(corrupt("window and hop must be at least 1 reading".into()));
    }
    let (n, c) = (rec.len(), rec.channels.len());
    if n < window {
        return Err(corrupt(format!(
            "{n} readings are shorter than one window of {window}"
        )));
    }
    let starts: Vec<usize> = (0..=n - window).step_by(hop).collect();
    let mut xs = vec![0f32; starts.len() * c * window];
    for (&s, out) in starts.iter().zip(xs.chunks_exact_mut(c * window)) {
        for t in 0..window {
            for ch in 0..c {
                out[ch * window + t] = rec.values[(s + t) * c + ch];
            }
        }
    }
    let labels = rec.labels.as_ref().map(|l| {
        starts
            .iter()
            .map(|&s| majority(&l[s..s + window]))
            .collect()
    });
    let anomalies = rec.anomalies.as_ref().map(|a| {
        starts
            .iter()
            .map(|&s| a[s..s + window].iter().any(|&x| x))
            .collect()
    });
    Ok(Windows {
        xs,
        starts,
        labels,
        anomalies,
    })
}

fn majority(labels: &[u32]) -> u32 {
    let mut sorted = labels.to_vec();
    sorted.sort_unstable();
    let (mut best, mut best_n, mut i) = (sorted[0], 0, 0);
    while i < sorted.len() {
        let j = sorted[i..].partition_point(|&x| x == sorted[i]) + i;
        if j - i > best_n {
            (best, best_n) = (sorted[i], j - i);
        }
        i = j;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(text: &str) -> Result<RecordingReader<&[u8]>, DataError> {
        RecordingReader::new(text.as_bytes(), Path::new("rec.csv"))
    }

    #[test]
    fn columns_are_recognised_by_name_anywhere() {
        let mut r =
            reader("\nx, Timestamp ,y,is_anomaly,Label\n1,t0,2,0,walk\n3,t1,4,1,run\n").unwrap();
        assert_eq!(r.channels(), ["x", "y"]);
        let mut row = Vec::new();
        let info = r.next_into(&mut row).unwrap().unwrap();
        assert_eq!(row, [1.0, 2.0]);
        assert_eq!(info.timestamp.as_deref(), Some("t0"));
        assert_eq!((info.anomaly, info.line), (Some(false), 3));
        let info = r.next_into(&mut row).unwrap().unwrap();
        assert_eq!(
            (row.as_slice(), info.anomaly),
            ([3.0, 4.0].as_slice(), Some(true))
        );
        assert_eq!(info.label.as_deref(), Some("run"));
        assert!(r.next_into(&mut row).is_none());
    }

    #[test]
    fn bad_rows_name_line_and_column_and_reading_goes_on() {
        let mut r = reader("a,b\n1,2\n1,x\n1,inf\n1\n5,6\n").unwrap();
        let mut row = Vec::new();
        assert!(r.next_into(&mut row).unwrap().is_ok());
        let e = r.next_into(&mut row).unwrap().unwrap_err().to_string();
        assert!(e.contains("line 3, column 2: 'x' is not a number"), "{e}");
        let e = r.next_into(&mut row).unwrap().unwrap_err().to_string();
        assert!(e.contains("line 4, column 2 is NaN or infinite"), "{e}");
        let e = r.next_into(&mut row).unwrap().unwrap_err().to_string();
        assert!(e.contains("line 5 has 1 fields, expected 2"), "{e}");
        r.next_into(&mut row).unwrap().unwrap();
        assert_eq!(row, [5.0, 6.0]);
    }

    #[test]
    fn headers_without_names_or_channels_are_refused() {
        let e = reader("1,2\n3,4\n").err().unwrap().to_string();
        assert!(e.contains("needs a header line"), "{e}");
        let e = reader("timestamp,label\nt,a\n").err().unwrap().to_string();
        assert!(e.contains("no channel column"), "{e}");
        let e = reader("x,x\n1,2\n").err().unwrap().to_string();
        assert!(e.contains("'x' is named twice"), "{e}");
        let e = reader("").err().unwrap().to_string();
        assert!(e.contains("no samples"), "{e}");
    }

    fn recording() -> Recording {
        Recording {
            channels: vec!["x".into(), "y".into()],
            values: (0..10).flat_map(|t| [t as f32, 10.0 * t as f32]).collect(),
            timestamps: None,
            labels: Some(vec![0, 0, 0, 1, 1, 1, 1, 2, 2, 2]),
            label_names: vec!["a".into(), "b".into(), "c".into()],
            anomalies: Some((0..10).map(|t| t == 6).collect()),
        }
    }

    #[test]
    fn windows_are_channel_major_every_hop() {
        let w = windows(&recording(), 4, 3, Path::new("r")).unwrap();
        assert_eq!(w.starts, [0, 3, 6]);
        assert_eq!(&w.xs[..8], [0.0, 1.0, 2.0, 3.0, 0.0, 10.0, 20.0, 30.0]);
        assert_eq!(w.labels.unwrap(), [0, 1, 2]);
        assert_eq!(w.anomalies.unwrap(), [false, true, true]);
    }

    #[test]
    fn a_recording_shorter_than_a_window_is_an_error() {
        let e = windows(&recording(), 11, 1, Path::new("r")).unwrap_err();
        assert!(
            e.to_string()
                .contains("10 readings are shorter than one window of 11"),
            "{e}"
        );
        assert!(windows(&recording(), 4, 0, Path::new("r")).is_err());
    }

    #[test]
    fn a_whole_recording_keeps_its_label_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.tsv");
        std::fs::write(&path, "x\tlabel\n1\twalk\n2\trun\n3\twalk\n").unwrap();
        let r = read_recording(&path).unwrap();
        assert_eq!(r.labels, Some(vec![0, 1, 0]));
        assert_eq!(r.label_names, ["walk", "run"]);
        let (a, b) = r.split_at(1);
        assert_eq!(
            (a.label_names, b.label_names),
            (r.label_names.clone(), r.label_names)
        );
    }

    #[test]
    fn split_keeps_columns_aligned() {
        let (a, b) = recording().split_at(7);
        assert_eq!((a.len(), b.len()), (7, 3));
        assert_eq!(b.values[..2], [7.0, 70.0]);
        assert_eq!(b.labels.unwrap(), [2, 2, 2]);
    }

    #[test]
    fn majority_breaks_ties_to_the_lowest() {
        assert_eq!(majority(&[2, 1, 2, 1]), 1);
        assert_eq!(majority(&[3, 3, 1]), 3);
    }
}
