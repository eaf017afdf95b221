//! Samples one at a time from a file or stdin, in memory bounded by one sample.
//!
//! The edge CLI assigns data sets far larger than the memory it is allowed (70,000 MNIST images
//! are 55 MB as bytes; the device budget is 20 MiB), so it cannot use the whole-file parsers.
//! The streams share their header and row parsers with those, so both accept the same files.
//! gzip is detected from the magic bytes for every format.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::DataError;
use crate::delimited::{self, Records};
use crate::idx;
use crate::numpy;
use crate::table::CsvColumns;

/// File format of a sample stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// IDX unsigned bytes: the first dimension counts samples, the rest make one sample.
    Idx,
    /// Comma- or tab-separated numbers, one sample per record, header optional (quoted fields,
    /// an unnamed row-index column skipped, as the whole-file reader does).
    Csv,
    /// NumPy array of any numeric dtype, C order, one sample per index of its first axis
    /// (images channel-major, as [`numpy`] lays them out); an `.npz` archive's samples array.
    Npy,
    /// Little-endian `f32` values back to back; the sample length comes from the caller.
    RawF32,
}

impl Format {
    /// Guesses from the file name: `.csv`, `.npy`, `.f32`/`.raw`/`.bin` (optionally `.gz`),
    /// anything else is IDX (`*-ubyte[.gz]`). Stdin (`-`) is raw `f32`.
    pub fn from_path(path: &Path) -> Self {
        let name = path.to_string_lossy().to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name == "-" {
            Self::RawF32
        } else if name.ends_with(".csv") {
            Self::Csv
        } else if name.ends_with(".npy") || name.ends_with(".npz") {
            Self::Npy
        } else if [".f32", ".raw", ".bin"].iter().any(|e| name.ends_with(e)) {
            Self::RawF32
        } else {
            Self::Idx
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "idx" => Ok(Self::Idx),
            "csv" => Ok(Self::Csv),
            "npy" => Ok(Self::Npy),
            "f32" | "raw" => Ok(Self::RawF32),
            _ => Err(format!("unknown format '{s}': use idx, csv, npy or f32")),
        }
    }
}

enum Source {
    Idx {
        remaining: usize,
        buf: Vec<u8>,
    },
    Csv {
        rows: Box<Records<Box<dyn BufRead>>>,
        columns: Option<CsvColumns>,
    },
    Npy {
        remaining: usize,
        header: numpy::Header,
        buf: Vec<u8>,
    },
    Raw {
        buf: Vec<u8>,
    },
}

/// A stream of samples. Row-level problems ([`DataError::is_row_error`]: wrong field count,
/// non-numeric or non-finite values) are returned for that sample and the stream goes on; any
/// other error (I/O, truncation, corrupt header) ends it.
pub struct SampleStream {
    name: PathBuf,
    reader: Box<dyn BufRead>,
    source: Source,
    dim: Option<usize>,
    total: Option<usize>,
    /// Bytes of the (decompressed) stream consumed so far, for truncation messages.
    offset: usize,
    done: bool,
}

impl std::fmt::Debug for SampleStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleStream")
            .field("name", &self.name)
            .field("dim", &self.dim)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl SampleStream {
    /// Opens `path` (`-` for stdin). `raw_dim` is the sample length of [`Format::RawF32`]
    /// input and, when given, the length every other format must announce.
    pub fn open(path: &Path, format: Format, raw_dim: Option<usize>) -> Result<Self, DataError> {
        let name = path.to_string_lossy().to_ascii_lowercase();
        if format == Format::Npy && (name.ends_with(".npz") || name.ends_with(".npz.gz")) {
            // An archive is read through its directory at the end: whole, then its samples
            // array streamed from memory.
            let bytes = idx::read_maybe_gz(path)?;
            let samples = numpy::npz_samples(&bytes, path)?;
            return Self::from_reader(
                Box::new(std::io::Cursor::new(samples)),
                path,
                format,
                raw_dim,
            );
        }
        let reader: Box<dyn Read> = if path.as_os_str() == "-" {
            Box::new(std::io::stdin())
        } else {
            Box::new(std::fs::File::open(path).map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                source,
            })?)
        };
        Self::from_reader(reader, path, format, raw_dim)
    }

    /// Wraps any reader; `name` is used in messages.
    pub fn from_reader(
        reader: Box<dyn Read>,
        name: &Path,
        format: Format,
        raw_dim: Option<usize>,
    ) -> Result<Self, DataError> {
        let io = |source| DataError::Io {
            path: name.to_path_buf(),
            source,
        };
        let mut buffered = BufReader::with_capacity(1 << 16, reader);
        let gz = buffered.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn BufRead> = if gz {
            Box::new(BufReader::with_capacity(
                1 << 16,
                flate2::bufread::MultiGzDecoder::new(buffered),
            ))
        } else {
            Box::new(buffered)
        };
        let mut s = Self {
            name: name.to_path_buf(),
            reader,
            source: Source::Raw { buf: Vec::new() },
            dim: raw_dim,
            total: None,
            offset: 0,
            done: false,
        };
        s.source = match format {
            Format::Idx => s.idx_header()?,
            Format::Npy => s.npy_header()?,
            Format::Csv => {
                let reader = std::mem::replace(&mut s.reader, Box::new(std::io::empty()));
                Source::Csv {
                    rows: Box::new(delimited::records(reader, name)?),
                    columns: None,
                }
            }
            Format::RawF32 => {
                let dim = raw_dim
                    .filter(|&d| d > 0)
                    .ok_or_else(|| DataError::Corrupt {
                        path: name.to_path_buf(),
                        reason: "raw f32 input needs the sample length".into(),
                    })?;
                Source::Raw {
                    buf: vec![0; dim * 4],
                }
            }
        };
        if let (Some(want), Some(got)) = (raw_dim, s.dim)
            && want != got
        {
            return Err(s.corrupt(format!("samples have {got} values, expected {want}")));
        }
        Ok(s)
    }

    fn corrupt(&self, reason: String) -> DataError {
        DataError::Corrupt {
            path: self.name.clone(),
            reason,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, DataError> {
        let n = read_full(&mut self.reader, buf).map_err(|source| DataError::Io {
            path: self.name.clone(),
            source,
        })?;
        self.offset += n;
        Ok(n)
    }

    /// Reads exactly `buf.len()` bytes; a short read is a truncation of a file announcing
    /// `expected` bytes in all.
    fn read_exact(&mut self, buf: &mut [u8], expected: usize) -> Result<(), DataError> {
        let n = self.read(buf)?;
        if n < buf.len() {
            return Err(DataError::Truncated {
                path: self.name.clone(),
                expected,
                got: self.offset,
            });
        }
        Ok(())
    }

    fn idx_header(&mut self) -> Result<Source, DataError> {
        let mut head = vec![0u8; 4];
        let n = self.read(&mut head)?;
        head.truncate(n);
        // The magic alone says how long the header is; let the parser report a short one.
        if n == 4 {
            head.resize(4 + 4 * usize::from(head[3]), 0);
            let got = self.read(&mut head[4..])?;
            head.truncate(4 + got);
        }
        let (dims, _) = idx::parse_header(&head, None, &self.name)?;
        let count = dims[0];
        let dim = idx::volume(&dims[1..], &self.name)?;
        if dim == 0 {
            return Err(self.corrupt(format!("IDX dimensions {dims:?} hold empty samples")));
        }
        self.dim = Some(dim);
        self.total = Some(count);
        Ok(Source::Idx {
            remaining: count,
            buf: vec![0; dim],
        })
    }

    fn npy_header(&mut self) -> Result<Source, DataError> {
        let header = numpy::Header::read(&mut self.reader, &self.name)?;
        if header.fortran && header.samples > 1 && header.layout.len() > 1 {
            return Err(self.corrupt(
                "column-major (Fortran-order) arrays cannot be streamed; save with \
                 numpy.ascontiguousarray"
                    .into(),
            ));
        }
        self.dim = Some(header.layout.len());
        self.total = Some(header.samples);
        Ok(Source::Npy {
            remaining: header.samples,
            buf: vec![0; header.sample_bytes()],
            header,
        })
    }

    /// Values per sample, when the header announces it (CSV learns it from its first row).
    pub fn dim(&self) -> Option<usize> {
        self.dim
    }

    /// Number of samples, when the header announces it (IDX and NPY).
    pub fn len_hint(&self) -> Option<usize> {
        self.total
    }

    /// Reads the next sample into `out` (replacing its contents); `None` at the end.
    pub fn next_into(&mut self, out: &mut Vec<f32>) -> Option<Result<(), DataError>> {
        if self.done {
            return None;
        }
        out.clear();
        let r = self.next_inner(out);
        match &r {
            Some(Err(e)) if !e.is_row_error() => self.done = true,
            None => self.done = true,
            _ => {}
        }
        r
    }

    fn next_inner(&mut self, out: &mut Vec<f32>) -> Option<Result<(), DataError>> {
        let mut source = std::mem::replace(&mut self.source, Source::Raw { buf: Vec::new() });
        let r = match &mut source {
            Source::Idx { remaining, buf } => {
                if *remaining == 0 {
                    None
                } else {
                    *remaining -= 1;
                    let expected = self.offset + buf.len() * (*remaining + 1);
                    Some(self.read_exact(buf, expected).map(|()| {
                        out.extend(buf.iter().map(|&b| f32::from(b)));
                    }))
                }
            }
            Source::Npy {
                remaining,
                header,
                buf,
            } => {
                if *remaining == 0 {
                    None
                } else {
                    let row = header.samples - *remaining;
                    *remaining -= 1;
                    let expected = self.offset + buf.len() * (*remaining + 1);
                    Some(self.read_exact(buf, expected).and_then(|()| {
                        header
                            .decode_sample(buf, out)
                            .map_err(|j| DataError::NotFinite {
                                path: self.name.clone(),
                                location: format!("sample {row}, value {j}"),
                            })
                    }))
                }
            }
            Source::Raw { buf } => match self.read(buf) {
                Err(e) => Some(Err(e)),
                Ok(0) => None,
                Ok(n) if n < buf.len() => Some(Err(DataError::Truncated {
                    path: self.name.clone(),
                    expected: self.offset - n + buf.len(),
                    got: self.offset,
                })),
                Ok(_) => {
                    out.extend(
                        buf.chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    );
                    match out.iter().position(|v| !v.is_finite()) {
                        Some(j) => Some(Err(DataError::NotFinite {
                            path: self.name.clone(),
                            location: format!("value {j} of the sample"),
                        })),
                        None => Some(Ok(())),
                    }
                }
            },
            Source::Csv { rows, columns } => self.csv_row(rows, columns, out),
        };
        self.source = source;
        r
    }

    fn csv_row(
        &mut self,
        rows: &mut Records<Box<dyn BufRead>>,
        columns: &mut Option<CsvColumns>,
        out: &mut Vec<f32>,
    ) -> Option<Result<(), DataError>> {
        loop {
            let (line, record) = match rows.next_record()? {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            let c = match columns {
                Some(c) => c,
                None => {
                    let header = delimited::is_header(record);
                    let c = match CsvColumns::new(record, header, None, &self.name) {
                        Ok(c) => c,
                        Err(e) => return Some(Err(e)),
                    };
                    let features = c.features();
                    if let Some(want) = self.dim.filter(|&d| d != features) {
                        return Some(Err(
                            self.corrupt(format!("rows have {features} values, expected {want}"))
                        ));
                    }
                    self.dim = Some(features);
                    let c = columns.insert(c);
                    if header {
                        continue;
                    }
                    c
                }
            };
            return Some(c.row(record, line, &self.name, out).map(|_| ()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(bytes: Vec<u8>, format: Format, dim: Option<usize>) -> SampleStream {
        SampleStream::from_reader(
            Box::new(std::io::Cursor::new(bytes)),
            Path::new("t"),
            format,
            dim,
        )
        .unwrap()
    }

    fn collect(mut s: SampleStream) -> Vec<Result<Vec<f32>, String>> {
        let mut out = Vec::new();
        let mut row = Vec::new();
        while let Some(r) = s.next_into(&mut row) {
            out.push(r.map(|()| row.clone()).map_err(|e| e.to_string()));
        }
        out
    }

    fn idx_file(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b.extend(data);
        b
    }

    #[test]
    fn idx_streams_images_and_detects_gzip() {
        use std::io::Write;
        let raw = idx_file(&[2, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7]);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&raw).unwrap();
        for bytes in [raw.clone(), enc.finish().unwrap()] {
            let s = stream(bytes, Format::Idx, Some(4));
            assert_eq!((s.dim(), s.len_hint()), (Some(4), Some(2)));
            let rows = collect(s);
            assert_eq!(rows, [Ok(vec![0., 1., 2., 3.]), Ok(vec![4., 5., 6., 7.])]);
        }
    }

    #[test]
    fn idx_truncation_and_wrong_size_are_named() {
        let rows = collect(stream(
            idx_file(&[2, 2, 2], &[0, 1, 2, 3, 4]),
            Format::Idx,
            None,
        ));
        assert_eq!(rows.len(), 2);
        assert!(
            rows[1]
                .as_ref()
                .unwrap_err()
                .contains("truncated, expected 24 bytes, got 21")
        );
        let err = SampleStream::from_reader(
            Box::new(std::io::Cursor::new(idx_file(&[1, 2, 2], &[0; 4]))),
            Path::new("t"),
            Format::Idx,
            Some(784),
        )
        .unwrap_err();
        assert!(err.to_string().contains("4 values, expected 784"), "{err}");
        let err = SampleStream::from_reader(
            Box::new(std::io::Cursor::new(vec![0, 0, 8])),
            Path::new("t"),
            Format::Idx,
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("shorter than the IDX magic"),
            "{err}"
        );
    }

    #[test]
    fn csv_bad_rows_are_reported_and_the_stream_goes_on() {
        let text = "a,b\n1,2\n3\n\n4,x\n5,NaN\n6,7\n";
        let rows = collect(stream(text.into(), Format::Csv, None));
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0], Ok(vec![1., 2.]));
        assert!(
            rows[1]
                .as_ref()
                .unwrap_err()
                .contains("line 3 has 1 fields")
        );
        assert!(
            rows[2]
                .as_ref()
                .unwrap_err()
                .contains("line 5, column 2: 'x'")
        );
        assert!(rows[3].as_ref().unwrap_err().contains("NaN or infinite"));
        assert_eq!(rows[4], Ok(vec![6., 7.]));
    }

    fn npy(shape: &str, fortran: bool, data: &[f32]) -> Vec<u8> {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        crate::numpy::tests::npy("<f4", shape, fortran, &bytes)
    }

    #[test]
    fn npy_streams_rows_and_rejects_fortran_order() {
        let rows = collect(stream(
            npy("(3, 2)", false, &[1., 2., f32::INFINITY, 4., 5., 6.]),
            Format::Npy,
            Some(2),
        ));
        assert_eq!(rows[0], Ok(vec![1., 2.]));
        assert!(rows[1].as_ref().unwrap_err().contains("sample 1, value 0"));
        assert_eq!(rows[2], Ok(vec![5., 6.]));
        let err = SampleStream::from_reader(
            Box::new(std::io::Cursor::new(npy("(3, 2)", true, &[0.; 6]))),
            Path::new("t"),
            Format::Npy,
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("Fortran-order"), "{err}");
    }

    #[test]
    fn raw_f32_needs_a_length_and_reports_a_partial_tail() {
        let bytes: Vec<u8> = [1f32, 2., 3., 4., 5.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let rows = collect(stream(bytes.clone(), Format::RawF32, Some(2)));
        assert_eq!(rows[..2], [Ok(vec![1., 2.]), Ok(vec![3., 4.])]);
        assert!(
            rows[2]
                .as_ref()
                .unwrap_err()
                .contains("truncated, expected 24 bytes, got 20")
        );
        assert!(
            SampleStream::from_reader(
                Box::new(std::io::Cursor::new(bytes)),
                Path::new("-"),
                Format::RawF32,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn formats_are_guessed_from_names() {
        for (name, f) in [
            ("t10k-images-idx3-ubyte.gz", Format::Idx),
            ("x.csv", Format::Csv),
            ("x.CSV.gz", Format::Csv),
            ("x.npy", Format::Npy),
            ("x.npz", Format::Npy),
            ("-", Format::RawF32),
            ("x.f32", Format::RawF32),
        ] {
            assert_eq!(Format::from_path(Path::new(name)), f, "{name}");
        }
        assert!("parquet".parse::<Format>().is_err());
    }
}
