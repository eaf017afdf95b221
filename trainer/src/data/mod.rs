//! Data sets: where samples come from and in what shape.
//!
//! Every source ends as a [`Dataset`]: raw row-major `f32` samples (pixels stay 0..=255), a
//! sample shape, and labels or anomaly flags when known. Normalisation is not applied here; the
//! fitted [`Normalizer`] travels with the model so the edge applies the same map.

mod scaling;
pub mod synthetic;
mod text;

use std::path::{Path, PathBuf};

use dekm_shared::{EncoderSpec, ImageShape, Normalizer, SeriesShape, StreamSpec, TimePooling};

use crate::model::{ImageEncoder, SeriesEncoder};

pub use dekm_data::text::Texts;
pub use dekm_data::{DataError, LabelColumn, idx, numpy, table};
pub use scaling::{ONE_UNIT_MAX_RATIO, VectorScaling};
pub use text::{TextCorpus, TextOptions, embed_texts, needs_embedder};

/// Where samples come from, parsed from `--dataset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// MNIST digits (IDX files under `<data-dir>/mnist`).
    Mnist,
    /// Fashion-MNIST (IDX files under `<data-dir>/fashion-mnist`).
    FashionMnist,
    /// The built-in sensor generator.
    Synthetic,
    /// A CSV file.
    Csv(PathBuf),
    /// A NumPy `.npy` file.
    Npy(PathBuf),
    /// A UEA/UCR `.ts` file of pre-cut multichannel cases (one sample per case, its channels'
    /// readings one after the other).
    Ts(PathBuf),
    /// Documents (one per line, a CSV column or a JSON Lines field), clustered as the
    /// sentence embeddings [`TextOptions::embedder`] gives them.
    Text(PathBuf),
}

impl std::str::FromStr for DataSource {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        Ok(match s {
            "mnist" => Self::Mnist,
            "fashion-mnist" | "fashion_mnist" | "fmnist" => Self::FashionMnist,
            "synthetic" => Self::Synthetic,
            _ => match s.split_once(':') {
                Some(("csv", p)) if !p.is_empty() => Self::Csv(p.into()),
                Some(("npy", p)) if !p.is_empty() => Self::Npy(p.into()),
                Some(("ts", p)) if !p.is_empty() => Self::Ts(p.into()),
                Some(("text", p)) if !p.is_empty() => Self::Text(p.into()),
                _ => return Err(DataError::UnknownSource(s.to_string())),
            },
        })
    }
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mnist => f.write_str("mnist"),
            Self::FashionMnist => f.write_str("fashion-mnist"),
            Self::Synthetic => f.write_str("synthetic"),
            Self::Csv(p) => write!(f, "csv:{}", p.display()),
            Self::Npy(p) => write!(f, "npy:{}", p.display()),
            Self::Ts(p) => write!(f, "ts:{}", p.display()),
            Self::Text(p) => write!(f, "text:{}", p.display()),
        }
    }
}

/// Which part of an IDX data set to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Split {
    /// Train and test concatenated (70,000 images), as the clustering literature does.
    #[default]
    All,
    /// The training files only.
    Train,
    /// The test files only.
    Test,
}

crate::choice::choice!(Split { All => "all", Train => "train", Test => "test" });

/// How to load a data set.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Directory holding `mnist/` and `fashion-mnist/`.
    pub data_dir: Option<PathBuf>,
    /// IDX split.
    pub split: Split,
    /// Keep only the first `limit` samples.
    pub limit: Option<usize>,
    /// Label column of CSV/NPY data.
    pub label_column: Option<LabelColumn>,
    /// Samples and seed of the synthetic generator.
    pub synthetic: SyntheticOptions,
    /// Resample every case of a `.ts` file to this many readings per channel (linear
    /// interpolation from the first reading to the last), so cases of unequal length cluster.
    pub ts_length: Option<usize>,
    /// Read a CSV or `.npy` file as one long recording (a header naming the channels, one
    /// reading per row) and cut it into windows, instead of one sample per row.
    pub windowing: Option<Windowing>,
    /// How documents of `text:PATH` are read and embedded.
    pub text: Option<TextOptions>,
}

/// How a recording is cut into samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windowing {
    /// Readings per window.
    pub window: usize,
    /// Readings between window starts.
    pub hop: usize,
}

/// Parameters of the built-in generator.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticOptions {
    /// Number of regimes.
    pub k: usize,
    /// Number of windows.
    pub samples: usize,
    /// Fraction of corrupted windows.
    pub anomaly_rate: f64,
    /// Seed of the plant (regimes).
    pub world_seed: u64,
    /// Seed of this draw.
    pub draw_seed: u64,
}

impl Default for SyntheticOptions {
    fn default() -> Self {
        Self {
            k: 5,
            samples: 5000,
            anomaly_rate: 0.01,
            world_seed: 42,
            draw_seed: 1,
        }
    }
}

/// Shape of one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleShape {
    /// An image, clustered with the convolutional autoencoder.
    Image(ImageShape),
    /// A multichannel series (a window of a recording, a `.ts` case), channel-major, clustered
    /// with the encoder [`SeriesEncoder`] picks.
    Series(SeriesShape),
    /// A feature vector, clustered with the dense autoencoder.
    Vector(usize),
    /// The spectral features of a series' windows ([`crate::features`]): each channel's mean
    /// and `bands` log band powers, clustered as a vector, standardised with
    /// [`Normalizer::spectral`].
    Spectra {
        /// Channels of the windows.
        channels: usize,
        /// Bands per channel.
        bands: usize,
    },
}

impl SampleShape {
    /// Values per sample.
    pub fn len(&self) -> usize {
        match self {
            Self::Image(s) => s.len(),
            Self::Series(s) => s.len(),
            Self::Vector(d) => *d,
            Self::Spectra { channels, bands } => channels * (bands + 1),
        }
    }

    /// True for zero-length samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the samples are, in words: "images", "series", "vectors" or "spectra".
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Image(_) => "images",
            Self::Series(_) => "series",
            Self::Vector(_) => "vectors",
            Self::Spectra { .. } => "spectra",
        }
    }
}

/// Samples in memory.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Source name, recorded in the model.
    pub name: String,
    /// Shape of one sample.
    pub shape: SampleShape,
    /// Raw row-major values.
    pub xs: Vec<f32>,
    /// Ground-truth classes, when known.
    pub labels: Option<Vec<u32>>,
    /// The classes' names as the file writes them (`setosa`), by id; empty when the classes
    /// are numbers or unknown.
    pub label_names: Vec<String>,
    /// Known anomalies: the synthetic generator's injected faults, or a recording's anomaly
    /// column (a window is anomalous when any of its readings is).
    pub anomalies: Option<Vec<bool>>,
    /// For windows cut from a recording: channels, window and hop, which the export records
    /// so a device cuts its readings the same way.
    pub stream: Option<StreamSpec>,
    /// For documents: the texts the samples embed and the embedder that did it.
    pub text: Option<TextCorpus>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.xs.len() / self.shape.len().max(1)
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Raw values of sample `i`.
    pub fn sample(&self, i: usize) -> &[f32] {
        let d = self.shape.len();
        &self.xs[i * d..(i + 1) * d]
    }

    /// The normalisation of the sample values alone: pixels to [0, 1], windows of a recording
    /// standardised per channel, spectra per channel ([`Normalizer::spectral`]), vectors as
    /// [`VectorScaling`] chooses (unit-length rows as they are: standardising 20 Newsgroups'
    /// all-MiniLM-L6-v2 embeddings cost k-means 3 points of ACC, 0.637 to 0.606; features of
    /// one unit centred and scaled together; others one by one), other series per value.
    pub fn fit_normalizer(&self) -> Normalizer {
        match (&self.stream, self.shape) {
            (_, SampleShape::Image(s)) => Normalizer::pixels(s.len()),
            (_, SampleShape::Spectra { channels, bands }) => {
                Normalizer::spectral(&self.xs, channels, bands)
            }
            (Some(s), _) => Normalizer::per_channel(&self.xs, s.channel_count(), s.window),
            (None, SampleShape::Vector(d)) => {
                VectorScaling::choose(&self.xs, d).normalizer(&self.xs, d)
            }
            (None, shape) => Normalizer::standardize(&self.xs, shape.len()),
        }
    }

    /// For vectors (not a stream's windows): how their features are scaled, and why.
    pub fn vector_scaling(&self) -> Option<VectorScaling> {
        match (&self.stream, self.shape) {
            (None, SampleShape::Vector(d)) => Some(VectorScaling::choose(&self.xs, d)),
            _ => None,
        }
    }

    /// The normalisation a model with encoder `spec` uses: [`Self::fit_normalizer`], except that
    /// a series under convolutions over time is always standardised per channel. A per-value
    /// offset would differ from step to step and tell the filters where in the window they are.
    pub fn normalizer_for(&self, spec: &EncoderSpec) -> Normalizer {
        match (self.shape, spec) {
            (SampleShape::Series(s), EncoderSpec::Conv1d { .. }) => {
                Normalizer::per_channel(&self.xs, s.channels, s.length)
            }
            _ => self.fit_normalizer(),
        }
    }

    /// The encoder for this sample shape: the convolutions `image` names for images, the
    /// paper's dense stack sized to the features and the number of samples for vectors
    /// ([`EncoderSpec::sized_dense`]), and for series the one `series` names, pooled over time
    /// as `pooling` says.
    pub fn encoder_spec(
        &self,
        latent: usize,
        (image, series, pooling): (ImageEncoder, SeriesEncoder, TimePooling),
    ) -> EncoderSpec {
        match (self.shape, series) {
            (SampleShape::Image(s), _) => match image {
                ImageEncoder::Dekm => EncoderSpec::paper_conv(s, latent),
                ImageEncoder::ClusterGan => EncoderSpec::clustergan_conv(s, latent),
            },
            (SampleShape::Series(s), SeriesEncoder::Conv1d) => {
                EncoderSpec::paper_conv1d(s, pooling, latent)
            }
            (SampleShape::Vector(_) | SampleShape::Spectra { .. }, _) => {
                EncoderSpec::sized_dense(self.shape.len(), self.len(), latent)
            }
            (shape, _) => EncoderSpec::paper_dense(shape.len(), latent),
        }
    }

    /// All samples through `normalizer`, row-major; on failure, the index of the first bad
    /// sample and why (wrong length, NaN or infinity).
    pub fn normalized(
        &self,
        normalizer: &Normalizer,
    ) -> Result<Vec<f32>, (usize, dekm_shared::ContractError)> {
        let len = self.shape.len();
        let mut flat = vec![0f32; self.xs.len()];
        for (i, (raw, out)) in self
            .xs
            .chunks_exact(len)
            .zip(flat.chunks_exact_mut(len))
            .enumerate()
        {
            normalizer.apply(raw, out).map_err(|e| (i, e))?;
        }
        Ok(flat)
    }

    /// The samples at `indices` (in that order), with their labels and anomaly flags.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let d = self.shape.len();
        Dataset {
            name: self.name.clone(),
            shape: self.shape,
            xs: indices
                .iter()
                .flat_map(|&i| &self.xs[i * d..(i + 1) * d])
                .copied()
                .collect(),
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
            anomalies: self
                .anomalies
                .as_ref()
                .map(|a| indices.iter().map(|&i| a[i]).collect()),
            label_names: self.label_names.clone(),
            text: self.text.as_ref().map(|t| t.select(indices)),
            stream: self.stream.clone(),
        }
    }

    /// Splits off `fraction` of the samples (rounded down) to hold out: windows of a recording
    /// from its end, leaving a gap so no held-out window shares a reading with a kept one;
    /// other samples at random (seeded), both parts in their original order.
    pub fn split_holdout(&self, fraction: f32, seed: u64) -> (Dataset, Dataset) {
        let n = self.len();
        let held = ((n as f64) * f64::from(fraction.clamp(0.0, 1.0))).floor() as usize;
        if held == 0 {
            return (self.clone(), self.select(&[]));
        }
        let (keep, out): (Vec<usize>, Vec<usize>) = match &self.stream {
            Some(s) => {
                let gap = s.window.div_ceil(s.hop) - 1;
                let first_held = n - held;
                (
                    (0..first_held.saturating_sub(gap)).collect(),
                    (first_held..n).collect(),
                )
            }
            None => {
                use rand::seq::SliceRandom;
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut crate::rng(seed, 13));
                let mut out = order[..held].to_vec();
                let mut keep = order[held..].to_vec();
                out.sort_unstable();
                keep.sort_unstable();
                (keep, out)
            }
        };
        (self.select(&keep), self.select(&out))
    }

    fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.xs.truncate(n * self.shape.len());
            if let Some(l) = &mut self.labels {
                l.truncate(n);
            }
            if let Some(a) = &mut self.anomalies {
                a.truncate(n);
            }
            if let Some(t) = &mut self.text {
                t.texts.truncate(n);
            }
        }
    }
}

impl From<synthetic::Draw> for Dataset {
    /// The windows with their regimes as labels and the injected faults as anomaly flags.
    fn from(draw: synthetic::Draw) -> Self {
        let anomalies = Some(draw.anomalies());
        Dataset {
            name: DataSource::Synthetic.to_string(),
            shape: SampleShape::Series(SeriesShape {
                channels: synthetic::CHANNELS,
                length: synthetic::WINDOW,
            }),
            xs: draw.xs,
            labels: Some(draw.labels),
            anomalies,
            label_names: Vec::new(),
            text: None,
            stream: None,
        }
    }
}

impl Dataset {
    /// The windows of `rec` (`w.window` readings every `w.hop`), named `name`, with the stream
    /// spec a model trained on them carries; `path` names the recording in errors.
    pub fn from_recording(
        name: String,
        rec: &dekm_data::Recording,
        w: Windowing,
        path: &Path,
    ) -> Result<Self, DataError> {
        let cut = dekm_data::windows(rec, w.window, w.hop, path)?;
        Ok(Dataset {
            name,
            shape: SampleShape::Series(SeriesShape {
                channels: rec.channels.len(),
                length: w.window,
            }),
            xs: cut.xs,
            labels: cut.labels,
            anomalies: cut.anomalies,
            label_names: rec.label_names.clone(),
            text: None,
            stream: Some(StreamSpec {
                channels: rec.channels.clone(),
                window: w.window,
                hop: w.hop,
            }),
        })
    }
}

/// Loads `source` with `opts`.
pub fn load(source: &DataSource, opts: &LoadOptions) -> Result<Dataset, DataError> {
    if opts.windowing.is_some() && !matches!(source, DataSource::Csv(_) | DataSource::Npy(_)) {
        return Err(DataError::Unsupported(format!(
            "{source} cannot be cut into windows: only csv:PATH and npy:PATH recordings can"
        )));
    }
    let mut ds = match source {
        DataSource::Text(path) => text::load_text(source, path, opts)?,
        DataSource::Mnist => load_idx("mnist", opts)?,
        DataSource::FashionMnist => load_idx("fashion-mnist", opts)?,
        DataSource::Synthetic => {
            let s = opts.synthetic;
            synthetic::Plant::new(s.k, s.world_seed)
                .draw(s.samples, s.anomaly_rate, s.draw_seed)
                .into()
        }
        DataSource::Ts(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
                path: path.clone(),
                source,
            })?;
            let s = dekm_data::ts::parse_ts(&text, path, opts.ts_length)?;
            Dataset {
                name: source.to_string(),
                shape: SampleShape::Series(SeriesShape {
                    channels: s.channels,
                    length: s.length,
                }),
                xs: s.xs,
                labels: s.labels,
                anomalies: None,
                label_names: s.classes,
                text: None,
                stream: None,
            }
        }
        DataSource::Csv(path) | DataSource::Npy(path) if opts.windowing.is_some() => {
            let w = opts.windowing.unwrap_or(Windowing { window: 1, hop: 1 });
            if opts.label_column.is_some() {
                return Err(DataError::BadLabelColumn {
                    path: path.clone(),
                    reason: "a recording's labels come from its `label` column; \
                             --label-col applies to one sample per row"
                        .into(),
                });
            }
            let rec = dekm_data::read_recording(path)?;
            Dataset::from_recording(source.to_string(), &rec, w, path)?
        }
        DataSource::Csv(path) | DataSource::Npy(path) => {
            // gzip is recognised by its magic, as for every file the product reads.
            let bytes = dekm_data::idx::read_maybe_gz(path)?;
            let (shape, xs, labels, names) = if matches!(source, DataSource::Csv(_)) {
                let t = table::parse_csv(&bytes, opts.label_column.as_ref(), path)?;
                (SampleShape::Vector(t.dim), t.xs, t.labels, t.label_names)
            } else {
                let s = numpy::read_samples(&bytes, path, opts.label_column.as_ref())?;
                (
                    npy_shape(s.layout, &s.xs, path)?,
                    s.xs,
                    s.labels,
                    s.label_names,
                )
            };
            if !names.is_empty() {
                tracing::info!(classes = names.len(), labels = %names.join(", "), "labels");
            }
            Dataset {
                name: source.to_string(),
                shape,
                xs,
                labels,
                anomalies: None,
                label_names: names,
                text: None,
                stream: None,
            }
        }
    };
    if let Some(n) = opts.limit {
        ds.truncate(n);
    }
    Ok(ds)
}

/// Whether every row of `xs` (`d` values each, at least one row) has unit length.
fn unit_rows(xs: &[f32], d: usize) -> bool {
    d > 1
        && !xs.is_empty()
        && xs.chunks_exact(d).all(|row| {
            let norm2: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            (norm2 - 1.0).abs() < 1e-3
        })
}

/// The sample shape of a NumPy array's samples: images as the IDX reader gives them, pixel
/// values 0..=255 (the model scales them by 1/255); images saved as floats within [0, 1] are
/// refused rather than guessed at, since a device must be fed the same scale.
fn npy_shape(layout: numpy::Layout, xs: &[f32], path: &Path) -> Result<SampleShape, DataError> {
    Ok(match layout {
        numpy::Layout::Vector(d) => SampleShape::Vector(d),
        numpy::Layout::Image {
            channels,
            height,
            width,
            ..
        } => {
            let max = xs.iter().copied().fold(0f32, f32::max);
            if xs.iter().any(|&v| v < 0.0) || (max <= 1.0 && xs.iter().any(|&v| v.fract() != 0.0)) {
                return Err(DataError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!(
                        "images of {channels}x{height}x{width} must hold pixel values 0..255 (as \
                         uint8 or floats); these lie in [{}, {max}]: save (x * 255).astype('uint8')",
                        xs.iter().copied().fold(f32::INFINITY, f32::min)
                    ),
                });
            }
            SampleShape::Image(ImageShape {
                channels,
                height,
                width,
            })
        }
    })
}

/// The directory named by `--data-dir`, else by `DEKM_DATA`; nothing else is guessed.
pub fn default_data_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("DEKM_DATA").map(PathBuf::from))
}

fn find(dir: &Path, name: &str, stem: &str) -> Result<PathBuf, DataError> {
    let candidates = [dir.join(name), dir.to_path_buf()];
    for d in &candidates {
        for f in [format!("{stem}.gz"), stem.to_string()] {
            let p = d.join(&f);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(DataError::NotFound {
        name: name.into(),
        missing: format!("{stem}[.gz]"),
        searched: candidates.map(|c| c.display().to_string()).join(" and "),
    })
}

fn load_idx(name: &str, opts: &LoadOptions) -> Result<Dataset, DataError> {
    let dir = default_data_dir(opts.data_dir.as_deref()).ok_or_else(|| DataError::NotFound {
        name: name.into(),
        missing: "a data directory".into(),
        searched: "--data-dir and DEKM_DATA (neither is set)".into(),
    })?;
    let parts: &[&str] = match opts.split {
        Split::All => &["train", "t10k"],
        Split::Train => &["train"],
        Split::Test => &["t10k"],
    };
    let (mut xs, mut labels, mut shape) = (Vec::new(), Vec::new(), None);
    for part in parts {
        let ipath = find(&dir, name, &format!("{part}-images-idx3-ubyte"))?;
        let lpath = find(&dir, name, &format!("{part}-labels-idx1-ubyte"))?;
        let images = idx::parse(&idx::read_maybe_gz(&ipath)?, 3, &ipath)?;
        let lab = idx::parse(&idx::read_maybe_gz(&lpath)?, 1, &lpath)?;
        if images.dims[0] != lab.dims[0] {
            return Err(DataError::CountMismatch {
                name: format!("{name} {part}"),
                images: images.dims[0],
                labels: lab.dims[0],
            });
        }
        let s = ImageShape {
            channels: 1,
            height: images.dims[1],
            width: images.dims[2],
        };
        if shape.is_some_and(|p| p != s) {
            return Err(DataError::Corrupt {
                path: ipath,
                reason: format!(
                    "image size {}x{} differs from the other split",
                    s.height, s.width
                ),
            });
        }
        shape = Some(s);
        xs.extend(images.data.iter().map(|&p| f32::from(p)));
        labels.extend(lab.data.iter().map(|&l| u32::from(l)));
    }
    Ok(Dataset {
        name: name.into(),
        shape: SampleShape::Image(shape.unwrap_or(ImageShape {
            channels: 1,
            height: 0,
            width: 0,
        })),
        xs,
        labels: Some(labels),
        anomalies: None,
        label_names: Vec::new(),
        text: None,
        stream: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_unknown_is_named() {
        assert_eq!("mnist".parse::<DataSource>().unwrap(), DataSource::Mnist);
        assert_eq!(
            "csv:a.csv".parse::<DataSource>().unwrap(),
            DataSource::Csv("a.csv".into())
        );
        let err = "cifar".parse::<DataSource>().unwrap_err();
        assert!(
            err.to_string().contains("unknown data set 'cifar'"),
            "{err}"
        );
    }

    #[test]
    fn unit_length_vectors_keep_their_values_others_are_standardised() {
        let vectors = |xs: Vec<f32>| Dataset {
            name: "v".into(),
            shape: SampleShape::Vector(2),
            xs,
            labels: None,
            anomalies: None,
            label_names: Vec::new(),
            stream: None,
            text: None,
        };
        let unit = vectors(vec![0.6, 0.8, 1.0, 0.0, 0.0, -1.0]);
        let n = unit.fit_normalizer();
        assert_eq!((n.offset(), n.scale()), (&[0.0, 0.0][..], &[1.0, 1.0][..]));
        let other = vectors(vec![0.6, 0.8, 2.0, 0.0, 0.0, -1.0]);
        assert_ne!(other.fit_normalizer().offset(), &[0.0, 0.0][..]);
        assert!(!unit_rows(&[], 2) && !unit_rows(&[1.0], 1));
        assert!(
            "text:docs.txt".parse::<DataSource>().unwrap() == DataSource::Text("docs.txt".into())
        );
    }

    #[test]
    fn missing_directory_says_where_and_how() {
        let opts = LoadOptions {
            data_dir: Some("/nonexistent/dekm".into()),
            ..Default::default()
        };
        let err = load(&DataSource::Mnist, &opts).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/dekm/mnist"), "{msg}");
        assert!(msg.contains("DEKM_DATA"), "{msg}");
    }

    fn write_idx(dir: &Path, stem: &str, dims: &[u32], data: &[u8]) {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b.extend(data);
        std::fs::write(dir.join(stem), b).unwrap();
    }

    #[test]
    fn count_mismatch_between_images_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("mnist");
        std::fs::create_dir(&m).unwrap();
        write_idx(&m, "train-images-idx3-ubyte", &[2, 2, 2], &[0; 8]);
        write_idx(&m, "train-labels-idx1-ubyte", &[3], &[0; 3]);
        let opts = LoadOptions {
            data_dir: Some(dir.path().into()),
            split: Split::Train,
            ..Default::default()
        };
        let err = load(&DataSource::Mnist, &opts).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::CountMismatch {
                    images: 2,
                    labels: 3,
                    ..
                }
            ),
            "{err}"
        );
        write_idx(&m, "train-labels-idx1-ubyte", &[2], &[3, 4]);
        let ds = load(&DataSource::Mnist, &opts).unwrap();
        assert_eq!((ds.len(), ds.labels.unwrap()), (2, vec![3, 4]));
    }

    #[test]
    fn holdout_of_a_recording_is_its_end_after_a_gap() {
        let mut ds = load(&DataSource::Synthetic, &LoadOptions::default()).unwrap();
        ds.truncate(20);
        let (keep, held) = ds.split_holdout(0.2, 0);
        assert_eq!((keep.len(), held.len()), (16, 4));
        ds.stream = Some(StreamSpec {
            channels: vec!["a".into(); synthetic::CHANNELS],
            window: synthetic::WINDOW,
            hop: 10,
        });
        let (keep, held) = ds.split_holdout(0.2, 0);
        // Windows 16..20 held out; windows 13..16 would share readings with window 16.
        assert_eq!((keep.len(), held.len()), (13, 4));
        assert_eq!(held.sample(0), ds.sample(16));
        assert_eq!(keep.sample(12), ds.sample(12));
        let (all, none) = ds.split_holdout(0.0, 0);
        assert_eq!((all.len(), none.len()), (20, 0));
    }

    #[test]
    fn synthetic_respects_limit() {
        let opts = LoadOptions {
            limit: Some(50),
            ..Default::default()
        };
        let ds = load(&DataSource::Synthetic, &opts).unwrap();
        assert_eq!(ds.len(), 50);
        assert_eq!(ds.anomalies.unwrap().len(), 50);
    }
}
