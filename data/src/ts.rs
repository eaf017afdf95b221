//! UEA/UCR `.ts` files, the text format sktime and aeon keep the time-series archives in: `#`
//! comments, `@` header lines up to `@data`, then one case per line, channels separated by `:`,
//! readings by `,`, and the class label last when `@classLabel true`.
//!
//! A case becomes one sample of `channels x length` readings, channel-major (channel 0's
//! readings, then channel 1's, ...), the layout a 1-D convolution over `[C, W]` reads. dekm
//! clusters windows of one length, so cases of unequal length are refused with the case and both
//! lengths named (JapaneseVowels is such a set), unless the caller asks for every case to be
//! resampled to one length: each channel is interpolated linearly onto that many evenly spaced
//! points from its first reading to its last ([`resample`]). Missing values (`?`, NaN),
//! timestamped readings and cases whose channels differ in length are refused. Nothing is
//! skipped silently.

use std::path::Path;

use crate::DataError;

/// The cases of a `.ts` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Channels per case.
    pub channels: usize,
    /// Readings per channel.
    pub length: usize,
    /// Every case's readings, `[cases, channels, length]` row-major.
    pub xs: Vec<f32>,
    /// Each case's class as an id into `classes`, when the file has class labels.
    pub labels: Option<Vec<u32>>,
    /// Class names by id: the header's `@classLabel` order, then any others by first appearance.
    pub classes: Vec<String>,
}

impl Series {
    /// Number of cases.
    pub fn len(&self) -> usize {
        self.xs.len() / (self.channels * self.length).max(1)
    }

    /// Whether there are no cases (never, for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.xs.is_empty()
    }
}

/// `xs` (one channel's readings) linearly interpolated onto `n` evenly spaced points from the
/// first reading to the last; a single reading is repeated.
pub fn resample(xs: &[f32], n: usize, out: &mut Vec<f32>) {
    let l = xs.len();
    for i in 0..n {
        if l < 2 || n < 2 {
            out.push(xs.first().copied().unwrap_or(0.0));
            continue;
        }
        let t = i as f64 * (l - 1) as f64 / (n - 1) as f64;
        let (j, frac) = (t.floor() as usize, (t - t.floor()) as f32);
        let next = xs[(j + 1).min(l - 1)];
        out.push(xs[j] + (next - xs[j]) * frac);
    }
}

/// Parses the text of a `.ts` file read from `path` (named in every error). With `length`,
/// every case's channels are resampled to that many readings ([`resample`]), so cases of
/// unequal length become windows of one.
pub fn parse_ts(text: &str, path: &Path, length: Option<usize>) -> Result<Series, DataError> {
    if length == Some(0) {
        return Err(DataError::Unsupported(format!(
            "{}: cases cannot be resampled to 0 readings",
            path.display()
        )));
    }
    let resample_to = length;
    let bad = |line: usize, reason: String| DataError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let mut dimensions = None;
    let mut class_label = false;
    let mut classes: Vec<String> = Vec::new();
    let mut data_at = None;
    for (line, l) in lines.by_ref() {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some(header) = l.strip_prefix('@') else {
            return Err(bad(line, "data before the @data line".into()));
        };
        let mut words = header.split_whitespace();
        let key = words.next().unwrap_or_default().to_ascii_lowercase();
        let value = words.next().unwrap_or_default();
        let yes = || value.eq_ignore_ascii_case("true");
        match key.as_str() {
            "data" => {
                data_at = Some(line);
                break;
            }
            "timestamps" if yes() => {
                return Err(bad(line, "timestamped readings are not supported".into()));
            }
            "dimensions" => {
                let d = value
                    .parse::<usize>()
                    .ok()
                    .filter(|&d| d > 0)
                    .ok_or_else(|| bad(line, format!("@dimensions {value:?} is not a count")))?;
                dimensions = Some(d);
            }
            "classlabel" => {
                class_label = yes();
                classes = words.map(str::to_string).collect();
            }
            "targetlabel" if yes() => {
                return Err(bad(
                    line,
                    "regression targets (@targetLabel true) are not class labels".into(),
                ));
            }
            _ => {}
        }
    }
    let Some(data_line) = data_at else {
        return Err(DataError::Corrupt {
            path: path.to_path_buf(),
            reason: "no @data line".into(),
        });
    };
    let (mut xs, mut labels) = (Vec::new(), Vec::new());
    let mut shape: Option<(usize, usize, usize)> = None; // (channels, length, first case's line)
    let mut case = 0usize;
    for (line, l) in lines {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let mut parts: Vec<&str> = l.split(':').collect();
        if class_label {
            let label = parts.pop().unwrap_or_default().trim();
            if label.is_empty() || parts.is_empty() {
                return Err(bad(line, format!("case {case} has no class label")));
            }
            let id = match classes.iter().position(|c| c == label) {
                Some(i) => i,
                None => {
                    classes.push(label.to_string());
                    classes.len() - 1
                }
            };
            labels.push(id as u32);
        }
        let channels = parts.len();
        if let Some(d) = dimensions.filter(|&d| d != channels) {
            return Err(bad(
                line,
                format!("case {case} has {channels} channels, the header says {d}"),
            ));
        }
        let start = xs.len();
        let mut length = None;
        for (c, part) in parts.iter().enumerate() {
            let before = xs.len();
            for (j, v) in part.split(',').map(str::trim).enumerate() {
                let x = v.parse::<f32>().map_err(|_| {
                    bad(
                        line,
                        format!(
                            "case {case}, channel {c}, reading {j}: {:?} is not a number",
                            v.chars().take(40).collect::<String>()
                        ),
                    )
                })?;
                if !x.is_finite() {
                    return Err(DataError::NotFinite {
                        path: path.to_path_buf(),
                        location: format!("line {line}, case {case}, channel {c}, reading {j}"),
                    });
                }
                xs.push(x);
            }
            let n = xs.len() - before;
            match length {
                None => length = Some(n),
                Some(l0) if l0 != n => {
                    return Err(bad(
                        line,
                        format!("case {case}: channel {c} has {n} readings, channel 0 has {l0}"),
                    ));
                }
                Some(_) => {}
            }
        }
        let mut length = length.unwrap_or(0);
        if let Some(n) = resample_to.filter(|&n| n != length) {
            let case_values = xs.split_off(start);
            for channel in case_values.chunks_exact(length.max(1)) {
                resample(channel, n, &mut xs);
            }
            length = n;
        }
        match shape {
            None => shape = Some((channels, length, line)),
            Some((c0, l0, first)) if (c0, l0) != (channels, length) => {
                return Err(bad(
                    line,
                    format!(
                        "case {case} is {channels} channels x {length} readings, case 0 (line \
                         {first}) {c0} x {l0}: dekm clusters windows of one length, so cut or \
                         resample the cases to one length first (`--ts-length N` resamples)"
                    ),
                ));
            }
            Some(_) => {}
        }
        debug_assert_eq!(xs.len() - start, channels * length);
        case += 1;
    }
    let Some((channels, length, _)) = shape else {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    };
    if length == 0 {
        return Err(bad(data_line, "cases have no readings".into()));
    }
    Ok(Series {
        channels,
        length,
        xs,
        labels: class_label.then_some(labels),
        classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "\
# two channels, three readings, two classes
@problemName Tiny
@dimensions 2
@equalLength true
@classLabel true up down
@data
1,2,3:4,5,6:down
0.5,0.25,0:1,1,1:up

-1,-2,-3:7,8,9:down
";

    fn parse(text: &str) -> Result<Series, DataError> {
        parse_ts(text, Path::new("t.ts"), None)
    }

    #[test]
    fn cases_become_channel_major_samples_with_the_headers_class_order() {
        let s = parse(SMALL).unwrap();
        assert_eq!((s.channels, s.length, s.len()), (2, 3, 3));
        assert_eq!(&s.xs[..6], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(s.labels, Some(vec![1, 0, 1]));
        assert_eq!(s.classes, ["up", "down"]);
    }

    #[test]
    fn an_unlabelled_file_has_no_labels() {
        let s = parse("@classLabel false\n@data\n1,2:3,4\n5,6:7,8\n").unwrap();
        assert_eq!((s.channels, s.length, s.len()), (2, 2, 2));
        assert_eq!(s.labels, None);
    }

    #[test]
    fn every_bad_file_is_refused_with_its_place() {
        let cases: &[(&str, &str)] = &[
            (
                "@data\n1,2:3\n",
                "case 0: channel 1 has 1 readings, channel 0 has 2",
            ),
            (
                "@data\n1,2\n1,2,3\n",
                "line 3: case 1 is 1 channels x 3 readings, case 0 (line 2) 1 x 2",
            ),
            (
                "@dimensions 2\n@data\n1,2\n",
                "case 0 has 1 channels, the header says 2",
            ),
            (
                "@data\n1,x,3\n",
                "case 0, channel 0, reading 1: \"x\" is not a number",
            ),
            ("@data\n1,?,3\n", "reading 1: \"?\" is not a number"),
            (
                "@data\n1,NaN,3\n",
                "line 2, case 0, channel 0, reading 1 is NaN or infinite",
            ),
            (
                "@classLabel true a b\n@data\n1,2\n",
                "case 0 has no class label",
            ),
            ("@timeStamps true\n@data\n", "timestamped readings"),
            ("@problemName x\n", "no @data line"),
            ("@data\n", "no samples"),
            ("1,2\n@data\n", "line 1: data before the @data line"),
            (
                "@dimensions two\n@data\n",
                "@dimensions \"two\" is not a count",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.starts_with("t.ts"), "{err}");
        }
    }

    /// The archive files under ../shared/data/sensors, when present.
    #[test]
    fn the_sensor_archives_parse_as_their_readme_says() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/sensors");
        if !dir.is_dir() {
            eprintln!(
                "SKIPPED the_sensor_archives_parse_as_their_readme_says: no {}",
                dir.display()
            );
            return;
        }
        for (file, cases, channels, length, classes) in [
            ("basicmotions/BasicMotions_TRAIN.ts", 40, 6, 100, 4),
            ("basicmotions/BasicMotions_TEST.ts", 40, 6, 100, 4),
            ("gunpoint/GunPoint_TRAIN.ts", 50, 1, 150, 2),
            ("gunpoint/GunPoint_TEST.ts", 150, 1, 150, 2),
        ] {
            let path = dir.join(file);
            let s = parse_ts(&std::fs::read_to_string(&path).unwrap(), &path, None).unwrap();
            assert_eq!(
                (s.len(), s.channels, s.length),
                (cases, channels, length),
                "{file}"
            );
            assert_eq!(s.classes.len(), classes, "{file}");
        }
        // Unequal lengths (7 to 29 readings) are refused, naming the case.
        let path = dir.join("japanesevowels/JapaneseVowels_TRAIN.ts");
        let text = std::fs::read_to_string(&path).unwrap();
        let err = parse_ts(&text, &path, None).unwrap_err().to_string();
        assert!(err.contains("resample the cases to one length"), "{err}");
        // Resampled to 29 readings (the longest case), all 270 cases of 12 channels load.
        let s = parse_ts(&text, &path, Some(29)).unwrap();
        assert_eq!((s.len(), s.channels, s.length), (270, 12, 29));
        assert_eq!(s.classes.len(), 9);
    }

    #[test]
    fn resampling_keeps_the_ends_and_interpolates_between() {
        let mut out = Vec::new();
        resample(&[0.0, 10.0, 20.0], 5, &mut out);
        assert_eq!(out, [0.0, 5.0, 10.0, 15.0, 20.0]);
        out.clear();
        resample(&[0.0, 3.0, 6.0, 9.0], 2, &mut out);
        assert_eq!(out, [0.0, 9.0]);
        out.clear();
        resample(&[4.0], 3, &mut out);
        assert_eq!(out, [4.0; 3]);
    }

    #[test]
    fn unequal_cases_resample_to_one_length_channel_by_channel() {
        let text = "@dimensions 2\n@classLabel true a b\n@data\n0,2:10,30:a\n1,2,3:4,5,6:b\n";
        let err = parse_ts(text, Path::new("u.ts"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("case 1 is 2 channels x 3 readings"), "{err}");
        let s = parse_ts(text, Path::new("u.ts"), Some(3)).unwrap();
        assert_eq!((s.len(), s.length), (2, 3));
        assert_eq!(
            s.xs,
            [
                0.0, 1.0, 2.0, 10.0, 20.0, 30.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0
            ]
        );
        assert!(parse_ts(text, Path::new("u.ts"), Some(0)).is_err());
    }
}
