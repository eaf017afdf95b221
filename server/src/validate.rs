//! Request checking: limits, ids, settings and data references, each refused with
//! INVALID_ARGUMENT (or the code that says what to do) and a message naming the field.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use dekm_embed::Embedder;

use dekm_edge::bundle::is_model_id;
use dekm_proto::pb;
use dekm_shared::OutlierScore;
use dekm_trainer::choice::Choice;
use dekm_trainer::data::{
    DataSource, Dataset, LabelColumn, LoadOptions, SampleShape, SyntheticOptions, TextOptions,
    Texts, Windowing,
};
use dekm_trainer::train::TrainConfig;
use tonic::Status;

use crate::fleet::check_device_id;
use crate::jobs::{JobData, JobSpec};
use crate::status::fleet_status;

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted message, in bytes (larger ones get RESOURCE_EXHAUSTED).
    pub max_message_bytes: usize,
    /// Most samples in one Assign request.
    pub max_batch: usize,
    /// Most samples sent inline with Train.
    pub max_inline_samples: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 << 20,
            max_batch: 4096,
            max_inline_samples: 100_000,
        }
    }
}

/// An empty id selects the active model; otherwise it must look like a model id.
pub(crate) fn check_model_id(id: &str) -> Result<(), Status> {
    if id.is_empty() || is_model_id(id) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "model id {id:?} is not 16 lower-case hex digits"
        )))
    }
}

/// A device id as the fleet table accepts it, or INVALID_ARGUMENT.
pub(crate) fn device_status(id: &str) -> Result<(), Status> {
    check_device_id(id).map_err(fleet_status)
}

/// Texts per embedding batch on the server (`dekm train --embed-batch`'s default).
pub(crate) const EMBED_BATCH: usize = 32;

/// The server's embedder for documents, or FAILED_PRECONDITION saying how to start it with one.
pub(crate) fn embedder_for(
    embedder: Option<&Arc<Embedder>>,
    what: &str,
) -> Result<Arc<Embedder>, Status> {
    embedder.cloned().ok_or_else(|| {
        Status::failed_precondition(format!(
            "{what}: this server has no sentence embedder (start it with --embedder DIR, a \
             sentence-transformers model folder)"
        ))
    })
}

/// Checks a Train request and turns it into a job.
pub(crate) fn job_spec(
    req: pb::TrainRequest,
    limits: &Limits,
    data_root: Option<&Path>,
    embedder: Option<&Arc<Embedder>>,
) -> Result<JobSpec, Status> {
    let config = train_config(req.settings.unwrap_or_default())?;
    let data = match req.data {
        None => {
            return Err(Status::invalid_argument(
                "the request needs a dataset reference or inline data",
            ));
        }
        Some(pb::train_request::Data::Dataset(d)) => {
            dataset_ref(d, &config, limits, data_root, embedder)?
        }
        Some(pb::train_request::Data::Inline(d)) if !d.texts.is_empty() => {
            let read = inline_texts(d, limits.max_inline_samples)?;
            config
                .validate(read.texts.len())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            JobData::Texts {
                read,
                options: TextOptions {
                    column: None,
                    embedder: embedder_for(embedder, "inline texts")?,
                    batch: EMBED_BATCH,
                    progress: None,
                },
            }
        }
        Some(pb::train_request::Data::Inline(d)) => {
            let ds = inline_dataset(d, limits.max_inline_samples)?;
            config
                .validate(ds.len())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            JobData::Inline(ds)
        }
    };
    Ok(JobSpec {
        data,
        config,
        activate: req.activate,
    })
}

/// A data set named by the request: `synthetic`, an IDX set present under the data root, or a
/// CSV/NPY file inside it.
fn dataset_ref(
    d: pb::DatasetRef,
    cfg: &TrainConfig,
    limits: &Limits,
    root: Option<&Path>,
    embedder: Option<&Arc<Embedder>>,
) -> Result<JobData, Status> {
    let source: DataSource = d
        .name
        .parse()
        .map_err(|e: dekm_trainer::data::DataError| Status::invalid_argument(e.to_string()))?;
    let need_root = || {
        root.ok_or_else(|| {
            Status::failed_precondition(
                "the server has no data root (start it with --data-dir or DEKM_DATA)",
            )
        })
    };
    let source = match source {
        DataSource::Synthetic => DataSource::Synthetic,
        DataSource::Mnist | DataSource::FashionMnist => {
            let sub = need_root()?.join(source.to_string());
            if !sub.is_dir() {
                return Err(Status::not_found(format!(
                    "data set {source} is not on this server (no {source}/ under the data root)"
                )));
            }
            source
        }
        DataSource::Csv(p) => DataSource::Csv(under_root(need_root()?, &p)?),
        DataSource::Npy(p) => DataSource::Npy(under_root(need_root()?, &p)?),
        DataSource::Ts(p) => DataSource::Ts(under_root(need_root()?, &p)?),
        DataSource::Text(p) => DataSource::Text(under_root(need_root()?, &p)?),
    };
    let text = match &source {
        DataSource::Text(_) => Some(TextOptions {
            column: (!d.text_column.is_empty()).then(|| d.text_column.clone()),
            embedder: embedder_for(embedder, &d.name)?,
            batch: EMBED_BATCH,
            progress: None,
        }),
        _ if !d.text_column.is_empty() => {
            return Err(Status::invalid_argument(format!(
                "text_column applies to text:PATH data sets, not {}",
                d.name
            )));
        }
        _ => None,
    };
    let label_column = (!d.label_column.is_empty())
        .then(|| d.label_column.parse::<LabelColumn>())
        .transpose()
        .map_err(|e| Status::invalid_argument(format!("label column: {e:?}")))?;
    let samples = match d.synthetic_samples {
        0 => SyntheticOptions::default().samples,
        n => usize::try_from(n)
            .ok()
            .filter(|&n| n <= limits.max_inline_samples.max(1_000_000))
            .ok_or_else(|| {
                Status::invalid_argument(format!("synthetic_samples {n} is too large"))
            })?,
    };
    if d.window == 0 && d.hop > 0 {
        return Err(Status::invalid_argument("hop needs a window"));
    }
    let windowing = (d.window > 0).then_some(Windowing {
        window: d.window as usize,
        hop: if d.hop == 0 { d.window } else { d.hop } as usize,
    });
    Ok(JobData::Load {
        source,
        options: LoadOptions {
            data_dir: root.map(Path::to_path_buf),
            limit: (d.limit > 0).then_some(d.limit as usize),
            label_column,
            synthetic: SyntheticOptions {
                k: cfg.k,
                samples,
                draw_seed: cfg.seed.wrapping_add(1),
                ..Default::default()
            },
            windowing,
            text,
            ..Default::default()
        },
    })
}

/// `rel` inside `root`: relative, no `..`, and no symbolic link leading outside.
fn under_root(root: &Path, rel: &Path) -> Result<PathBuf, Status> {
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Status::invalid_argument(format!(
            "data path {} must be relative to the data root, without '..'",
            rel.display()
        )));
    }
    let path = root.join(rel);
    let real = path
        .canonicalize()
        .map_err(|_| Status::not_found(format!("no file {} under the data root", rel.display())))?;
    let real_root = root
        .canonicalize()
        .map_err(|e| Status::internal(format!("data root: {e}")))?;
    if !real.starts_with(&real_root) {
        return Err(Status::invalid_argument(format!(
            "data path {} leads outside the data root",
            rel.display()
        )));
    }
    Ok(real)
}

/// One of `T`'s names, or `INVALID_ARGUMENT` listing them all, so a request field accepts
/// exactly what the matching `dekm train` flag does.
fn choice<T: Choice>(field: &str, value: &str) -> Result<T, Status> {
    T::from_name(value).ok_or_else(|| {
        Status::invalid_argument(format!("{field} {value:?}: expected {}", T::names()))
    })
}

/// `dekm train`'s defaults for the request's method with its settings applied and checked.
fn train_config(s: pb::TrainSettings) -> Result<TrainConfig, Status> {
    let method = s
        .method
        .as_deref()
        .map(|m| choice("method", m))
        .transpose()?;
    let mut c = TrainConfig::for_method(method.unwrap_or_default());
    let capped = |name: &str, v: u32, max: u32| {
        if v <= max {
            Ok(v as usize)
        } else {
            Err(Status::invalid_argument(format!(
                "{name} = {v} exceeds the server's limit of {max}"
            )))
        }
    };
    if let Some(v) = s.k {
        c.k = capped("k", v, 10_000)?;
    }
    if let Some(v) = s.epochs {
        c.epochs = capped("epochs", v, 10_000)?;
    }
    if let Some(v) = s.max_iter {
        c.max_iter = capped("max_iter", v, 10_000)?;
    }
    if let Some(v) = s.batch_size {
        c.batch_size = capped("batch_size", v, 65_536)?;
    }
    if let Some(v) = s.steps_per_iter {
        c.steps_per_iter = capped("steps_per_iter", v, 1_000_000)?;
    }
    if let Some(v) = s.restarts {
        c.restarts = capped("restarts", v, 1_000)?;
    }
    if let Some(v) = s.seed {
        c.seed = v;
    }
    if let Some(v) = s.lr {
        c.lr = v;
    }
    if let Some(v) = s.dekm_lr {
        c.finetune_lr = v;
    }
    if let Some(v) = s.tol {
        c.tol = v;
    }
    if let Some(v) = s.threshold_quantile {
        c.threshold_quantile = v;
    }
    if let Some(v) = s.augment_shift {
        c.augment.shift = v;
    }
    if let Some(v) = s.augment_rotate_deg {
        c.augment.rotate_deg = v;
    }
    if let Some(i) = s.init {
        c.init = choice("init", &i)?;
    }
    if let Some(v) = s.start {
        c.start = choice("start", &v)?;
    }
    if let Some(v) = s.gan_loss {
        c.gan_loss = choice("gan_loss", &v)?;
    }
    if let Some(v) = s.image_encoder {
        c.image_encoder = choice("image_encoder", &v)?;
    }
    if let Some(v) = s.outlier_score {
        c.outlier_score = match v.as_str() {
            "auto" => None,
            name => Some(name.parse().map_err(|_: dekm_shared::ContractError| {
                Status::invalid_argument(format!(
                    "unknown outlier score '{name}': use auto, mahalanobis, knn or distance"
                ))
            })?),
        };
    }
    let knn = (s.knn_neighbours, s.knn_references);
    match (&mut c.outlier_score, knn) {
        (Some(OutlierScore::Knn(n)), (neighbours, references)) => {
            n.neighbours = neighbours.unwrap_or(n.neighbours);
            n.references = references.unwrap_or(n.references);
        }
        (_, (None, None)) => {}
        (other, _) => {
            let other = other.map_or("auto".into(), |o| o.to_string());
            return Err(Status::invalid_argument(format!(
                "knn_neighbours and knn_references apply to outlier_score \"knn\", not \"{other}\""
            )));
        }
    }
    if let Some(v) = s.calibration_holdout {
        c.calibration_holdout = Some(v);
    }
    if let Some(v) = s.series_encoder {
        c.series_encoder = choice("series_encoder", &v)?;
    }
    if let Some(v) = s.series_features {
        c.series_features = choice("series_features", &v)?;
    }
    if let Some(v) = s.spectrum_bands {
        c.spectrum_bands = v as usize;
    }
    if let Some(v) = s.time_pooling {
        c.time_pooling = v
            .parse()
            .map_err(|e: dekm_shared::ContractError| Status::invalid_argument(e.to_string()))?;
    }
    // Everything that does not depend on the data's size; k against n is checked once the
    // data is known.
    c.check()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(c)
}

/// Inline documents: as many as the limit allows, none blank, with one label each or none.
fn inline_texts(d: pb::InlineData, max: usize) -> Result<Texts, Status> {
    let n = d.texts.len();
    if !d.samples.is_empty() {
        return Err(Status::invalid_argument(
            "inline data carries samples or texts, not both",
        ));
    }
    if n > max {
        return Err(Status::resource_exhausted(format!(
            "{n} inline texts; the limit is {max} (put larger sets under the data root as \
             text:PATH)"
        )));
    }
    if let Some(i) = d.texts.iter().position(|t| t.trim().is_empty()) {
        return Err(Status::invalid_argument(format!(
            "inline text {i} is blank"
        )));
    }
    let labels = inline_labels(d.labels, n, "texts")?;
    Ok(Texts {
        texts: d.texts,
        labels,
        label_names: Vec::new(),
    })
}

/// Labels for `n` inline `what` (samples or texts): none, or one each.
fn inline_labels(labels: Vec<u32>, n: usize, what: &str) -> Result<Option<Vec<u32>>, Status> {
    match labels.len() {
        0 => Ok(None),
        l if l == n => Ok(Some(labels)),
        l => Err(Status::invalid_argument(format!(
            "{l} labels for {n} inline {what}"
        ))),
    }
}

/// Inline samples: as many as the limit allows, all of one length, finite, with one label
/// each or none.
fn inline_dataset(d: pb::InlineData, max: usize) -> Result<Dataset, Status> {
    let n = d.samples.len();
    if n == 0 {
        return Err(Status::invalid_argument("inline data has no samples"));
    }
    if n > max {
        return Err(Status::resource_exhausted(format!(
            "{n} inline samples; the limit is {max} (put larger sets under the data root)"
        )));
    }
    let dim = d.samples[0].values.len();
    if dim == 0 {
        return Err(Status::invalid_argument("inline sample 0 is empty"));
    }
    let mut xs = Vec::with_capacity(n * dim);
    for (i, s) in d.samples.iter().enumerate() {
        if s.values.len() != dim {
            return Err(Status::invalid_argument(format!(
                "inline sample {i} has {} values, sample 0 has {dim}",
                s.values.len()
            )));
        }
        if let Some(j) = s.values.iter().position(|v| !v.is_finite()) {
            return Err(Status::invalid_argument(format!(
                "inline sample {i}, value {j} is {}",
                s.values[j]
            )));
        }
        xs.extend_from_slice(&s.values);
    }
    let labels = inline_labels(d.labels, n, "samples")?;
    Ok(Dataset {
        name: "inline".into(),
        shape: SampleShape::Vector(dim),
        xs,
        labels,
        anomalies: None,
        label_names: Vec::new(),
        text: None,
        stream: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dekm_trainer::train::{Method, Start};

    #[test]
    fn choices_list_every_name_the_cli_accepts() {
        assert_eq!(
            choice::<Method>("method", "ae-kmeans").unwrap(),
            Method::AeKmeans
        );
        let err = choice::<Method>("method", "kmeans++").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            err.message(),
            "method \"kmeans++\": expected dekm, dec, idec, ae-kmeans, deepcluster or clustergan"
        );
    }

    #[test]
    fn a_request_chooses_the_start_and_a_bad_one_is_named() {
        let settings = |start: &str, max_iter: Option<u32>| pb::TrainSettings {
            start: Some(start.into()),
            max_iter,
            ..Default::default()
        };
        let c = train_config(settings("manifold", None)).unwrap();
        assert_eq!(c.start, Start::Manifold);
        let err = train_config(settings("umap", None)).unwrap_err();
        assert_eq!(
            err.message(),
            "start \"umap\": expected auto, kmeans, manifold or input"
        );
        let c = train_config(settings("input", None)).unwrap();
        assert_eq!(c.start, Start::Input);
        let err = train_config(settings("manifold", Some(0))).unwrap_err();
        assert!(
            err.message().contains("start manifold needs"),
            "{}",
            err.message()
        );
    }

    /// A DeepCluster request starts from DeepCluster's defaults (wide features, jittered
    /// images), and what it sets still wins.
    #[test]
    fn a_deepcluster_request_gets_its_methods_defaults() {
        let c = train_config(pb::TrainSettings {
            method: Some("deepcluster".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c, TrainConfig::for_method(Method::DeepCluster));
        assert_eq!(c.latent, TrainConfig::DEEPCLUSTER_LATENT);
        let c = train_config(pb::TrainSettings {
            method: Some("deepcluster".into()),
            augment_shift: Some(0.0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.augment.shift, c.augment.rotate_deg), (0.0, 10.0));
        let c = train_config(pb::TrainSettings {
            method: Some("clustergan".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c, TrainConfig::for_method(Method::ClusterGan));
        assert_eq!(
            train_config(pb::TrainSettings::default()).unwrap(),
            TrainConfig::default()
        );
    }

    /// A request chooses the image encoder; a bad name is refused naming the choices.
    #[test]
    fn a_request_chooses_the_image_encoder() {
        let settings = |encoder: &str| pb::TrainSettings {
            image_encoder: Some(encoder.into()),
            ..Default::default()
        };
        let c = train_config(settings("clustergan")).unwrap();
        assert_eq!(
            c.image_encoder,
            dekm_trainer::model::ImageEncoder::ClusterGan
        );
        let err = train_config(settings("vgg")).unwrap_err();
        assert_eq!(
            err.message(),
            "image_encoder \"vgg\": expected dekm or clustergan"
        );
    }

    /// The GAN loss is ClusterGAN's: a request names it there, a bad name or another method is
    /// refused with the reason.
    #[test]
    fn a_clustergan_request_chooses_its_gan_loss() {
        let settings = |method: &str, loss: &str| pb::TrainSettings {
            method: Some(method.into()),
            gan_loss: Some(loss.into()),
            ..Default::default()
        };
        let c = train_config(settings("clustergan", "wgan-gp")).unwrap();
        assert_eq!(c.gan_loss, dekm_trainer::gan::GanLoss::WganGp);
        let err = train_config(settings("clustergan", "hinge")).unwrap_err();
        assert_eq!(
            err.message(),
            "gan_loss \"hinge\": expected non-saturating or wgan-gp"
        );
        let err = train_config(settings("dekm", "wgan-gp")).unwrap_err();
        assert_eq!(
            err.message(),
            "invalid setting: gan loss wgan-gp applies to method clustergan, not dekm"
        );
    }

    #[test]
    fn a_request_chooses_what_series_are_clustered_on() {
        let settings = |features: &str, encoder: &str| pb::TrainSettings {
            series_features: Some(features.into()),
            series_encoder: Some(encoder.into()),
            spectrum_bands: Some(4),
            ..Default::default()
        };
        let c = train_config(settings("spectrum", "dense")).unwrap();
        assert_eq!(
            c.series_features,
            dekm_trainer::features::SeriesFeatures::Spectrum
        );
        assert_eq!(c.spectrum_bands, 4);
        let err = train_config(settings("wavelet", "dense")).unwrap_err();
        assert_eq!(
            err.message(),
            "series_features \"wavelet\": expected auto, raw or spectrum"
        );
        let err = train_config(settings("spectrum", "conv1d")).unwrap_err();
        assert!(
            err.message().contains("do not combine"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn a_request_chooses_the_series_encoder_and_its_pooling() {
        let settings = |encoder: &str, pooling: &str| pb::TrainSettings {
            series_encoder: Some(encoder.into()),
            time_pooling: Some(pooling.into()),
            ..Default::default()
        };
        let c = train_config(settings("conv1d", "mean")).unwrap();
        assert_eq!(c.series_encoder, dekm_trainer::model::SeriesEncoder::Conv1d);
        assert_eq!(c.time_pooling, dekm_shared::TimePooling::Mean);
        let err = train_config(settings("lstm", "mean")).unwrap_err();
        assert_eq!(
            err.message(),
            "series_encoder \"lstm\": expected dense or conv1d"
        );
        let err = train_config(settings("conv1d", "max")).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("max"), "{}", err.message());
    }

    #[test]
    fn a_request_chooses_the_neighbour_score_and_its_settings() {
        let settings = |score: &str, neighbours: Option<u32>| pb::TrainSettings {
            outlier_score: Some(score.into()),
            knn_neighbours: neighbours,
            knn_references: Some(300),
            ..Default::default()
        };
        let c = train_config(settings("knn", Some(7))).unwrap();
        assert_eq!(
            c.outlier_score,
            Some(OutlierScore::Knn(dekm_shared::Neighbours {
                neighbours: 7,
                references: 300
            }))
        );
        assert_eq!(
            train_config(pb::TrainSettings::default())
                .unwrap()
                .outlier_score,
            None
        );
        let auto = pb::TrainSettings {
            outlier_score: Some("auto".into()),
            ..Default::default()
        };
        assert_eq!(train_config(auto).unwrap().outlier_score, None);
        let err = train_config(settings("knn", Some(40))).unwrap_err();
        assert!(err.message().contains("1 to 32"), "{}", err.message());
        let err = train_config(settings("mahalanobis", None)).unwrap_err();
        assert_eq!(
            err.message(),
            "knn_neighbours and knn_references apply to outlier_score \"knn\", not \"mahalanobis\""
        );
    }
}
