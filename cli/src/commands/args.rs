//! Arguments several subcommands share: where the data come from, and how pairwise metrics
//! are sampled.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use dekm_cli::analysis;
use dekm_cli::progress::Count;
use dekm_cluster::internal::PairOptions;
use dekm_server::db::Location;
use dekm_trainer::data::{
    self, DataSource, LabelColumn, LoadOptions, Split, SyntheticOptions, Windowing,
};
use dekm_trainer::device::DeviceChoice;

#[derive(Args)]
pub(crate) struct DataArgs {
    /// mnist, fashion-mnist, synthetic, csv:PATH (CSV or TSV), npy:PATH (.npy or .npz),
    /// ts:PATH (a UEA/UCR .ts file) or text:PATH (documents: one per line, a .csv/.tsv column
    /// or a .jsonl field, embedded with --embedder).
    #[arg(long)]
    dataset: DataSource,
    /// Directory with mnist/ and fashion-mnist/ (IDX files, gzip or raw).
    #[arg(long, env = "DEKM_DATA")]
    data_dir: Option<PathBuf>,
    /// IDX split: train+test (the literature's 70,000), train or test.
    #[arg(long, value_enum, default_value_t = Split::All)]
    split: Split,
    /// Use only the first N samples.
    #[arg(long)]
    limit: Option<usize>,
    /// Label column of CSV/NPY data: index, header name or "last".
    #[arg(long)]
    label_col: Option<LabelColumn>,
    /// Windows generated for --dataset synthetic.
    #[arg(long, default_value_t = 5000)]
    synthetic_samples: usize,
    /// Read csv:PATH or npy:PATH as one recording (a header naming the channels, one reading
    /// per row; timestamp, label and is_anomaly columns recognised) and cut it into windows of
    /// this many readings, standardised per channel. The model records window, hop and
    /// channels, and `dekm-edge assign --stream` cuts a device's readings the same way.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    window: Option<u64>,
    /// Resample every case of a ts:PATH file to N readings per channel (linear interpolation
    /// from its first reading to its last), so cases of unequal length can be clustered.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    ts_length: Option<u64>,
    /// Readings between window starts (default: the window, so windows do not overlap).
    #[arg(long, requires = "window", value_parser = clap::value_parser!(u64).range(1..))]
    hop: Option<u64>,
    #[command(flatten)]
    text: TextArgs,
}

/// How documents become vectors (`text:PATH` data sets, `dekm embed`).
#[derive(Args)]
pub(crate) struct TextArgs {
    /// A sentence-transformers model folder (config.json, tokenizer.json, model.safetensors,
    /// modules.json, 1_Pooling/): texts are clustered as its embeddings. Nothing is
    /// downloaded; scripts/fetch-minilm.sh unpacks all-MiniLM-L6-v2 once.
    #[arg(long, env = "DEKM_EMBEDDER")]
    embedder: Option<PathBuf>,
    /// The text column of a .csv/.tsv file (header name or index) or field of a .jsonl file
    /// (default: text).
    #[arg(long)]
    pub(crate) text_col: Option<String>,
    /// Texts per embedding batch.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) embed_batch: u64,
}

impl TextArgs {
    /// The embedder, loaded on `dev`, for documents described as `what`.
    pub(crate) fn embedder(
        &self,
        what: impl std::fmt::Display,
        dev: &candle_core::Device,
    ) -> Result<dekm_embed::Embedder> {
        let Some(dir) = &self.embedder else {
            anyhow::bail!(data::needs_embedder(what));
        };
        Ok(dekm_embed::Embedder::load(dir, dev)?)
    }

    /// The text options for `source`: the embedder loaded on the device `open` gives (the
    /// command's `--device`) when the source is text, with a progress bar; `None` for other
    /// sources, which open no device.
    pub(crate) fn options(
        &self,
        source: &DataSource,
        open: impl FnOnce() -> Result<candle_core::Device>,
    ) -> Result<Option<data::TextOptions>> {
        if !matches!(source, DataSource::Text(_)) {
            return Ok(None);
        }
        let embedder = self.embedder(source, &open()?)?;
        tracing::info!(embedder = %embedder.id().name, sha256 = %embedder.id().sha256, dim = embedder.dim(), "sentence embedder");
        let bar: Arc<Mutex<Option<Count>>> = Arc::default();
        Ok(Some(data::TextOptions {
            column: self.text_col.clone(),
            embedder: Arc::new(embedder),
            batch: self.embed_batch as usize,
            progress: Some(Arc::new(move |done, total| {
                let mut bar = bar
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let b = bar.get_or_insert_with(|| Count::new("embedding", total));
                b.set(done);
                if done >= total {
                    bar.take();
                }
            })),
        }))
    }
}

impl DataArgs {
    /// Loads the data set; documents are embedded on the device `open` gives.
    pub(crate) fn load(
        &self,
        k: usize,
        seed: u64,
        open: impl FnOnce() -> Result<candle_core::Device>,
    ) -> Result<data::Dataset> {
        let opts = LoadOptions {
            data_dir: self.data_dir.clone(),
            split: self.split,
            limit: self.limit,
            label_column: self.label_col.clone(),
            synthetic: SyntheticOptions {
                k,
                samples: self.synthetic_samples,
                draw_seed: seed.wrapping_add(1),
                ..Default::default()
            },
            ts_length: self.ts_length.map(|n| n as usize),
            windowing: self.window.map(|w| Windowing {
                window: w as usize,
                hop: self.hop.unwrap_or(w) as usize,
            }),
            text: self.text.options(&self.dataset, open)?,
        };
        let started = Instant::now();
        let ds = data::load(&self.dataset, &opts)?;
        tracing::info!(dataset = %self.dataset, samples = ds.len(), seconds = started.elapsed().as_secs_f32(), "loaded");
        Ok(ds)
    }
}

#[derive(Args)]
pub(crate) struct PairArgs {
    /// Silhouette and Dunn are exact up to this many points, computed on a seeded sample of
    /// this size beyond.
    #[arg(long, default_value_t = 20_000)]
    max_exact: usize,
}

impl PairArgs {
    pub(crate) fn options(&self) -> PairOptions {
        PairOptions {
            max_exact: self.max_exact,
            seed: 0,
        }
    }

    /// Explains the `*` when a pairwise metric was sampled.
    pub(crate) fn footnote(&self, rows: &[(String, analysis::Scores, Option<f64>)]) {
        let sampled = |s: &analysis::Scores| {
            [s.silhouette, s.dunn]
                .iter()
                .any(|p| p.is_some_and(|p| p.sampled.is_some()))
        };
        if rows.iter().any(|r| sampled(&r.1)) {
            println!(
                "(* silhouette and Dunn on a seeded random sample of {} points)",
                self.max_exact
            );
        }
    }
}

/// Where a command computes.
#[derive(Args)]
pub(crate) struct DeviceArgs {
    /// Where to compute: auto (a CUDA GPU when this dekm was built with CUDA and one answers,
    /// else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub(crate) device: DeviceChoice,
}

impl DeviceArgs {
    /// Opens the device, saying which in the log.
    pub(crate) fn open(&self) -> Result<candle_core::Device> {
        let (dev, used) = self.device.open()?;
        tracing::info!(device = %used, chosen = %self.device, "computing on");
        Ok(dev)
    }
}

/// `--outlier-score`: a score by name, or `auto` (the default), which picks by the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScoreArg(pub(crate) Option<dekm_shared::OutlierScore>);

impl std::str::FromStr for ScoreArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self(None)),
            name => name.parse().map(|score| Self(Some(score))).map_err(|_| {
                format!("unknown outlier score '{name}': use auto, mahalanobis, knn or distance")
            }),
        }
    }
}

impl std::fmt::Display for ScoreArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("auto"),
            Some(score) => score.fmt(f),
        }
    }
}

/// A server store and its database (`dekm serve`, `dekm import`).
#[derive(Args)]
pub(crate) struct StoreArgs {
    /// Store directory: model bundles, training work and, by default, the SQLite database
    /// (created when missing). Replicas share it as a volume.
    #[arg(long)]
    pub(crate) store: PathBuf,
    /// Where the registry state, job records and fleet table live: sqlite (dekm.sqlite in the
    /// store), postgres://USER:PASSWORD@HOST:PORT/DB (several replicas), or json (the files
    /// of stores made before the database; one replica). A store with JSON files is imported
    /// into sqlite or postgres on first start.
    #[arg(
        long,
        env = "DEKM_DATABASE",
        default_value = "sqlite",
        hide_env_values = true
    )]
    pub(crate) database: Location,
}
