//! The subcommands, one file each owning its arguments and its handler; this file holds the
//! command line's shape and the dispatch.

mod args;
mod cluster;
mod demo;
mod embed;
mod evaluate;
mod import;
mod plot;
mod representatives;
mod sample;
mod select_k;
mod serve;
mod timeline;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

use cluster::ClusterArgs;
use demo::DemoArgs;
use embed::EmbedArgs;
use evaluate::EvalArgs;
use import::ImportArgs;
use plot::PlotArgs;
use sample::SampleArgs;
use select_k::SelectKArgs;
use serve::ServeArgs;
use timeline::TimelineArgs;
use train::TrainArgs;

#[derive(Parser)]
#[command(
    name = "dekm",
    version,
    about = "Deep Embedded K-Means: train, evaluate and export clustering models"
)]
pub(crate) struct Cli {
    /// Hide progress bars and informational logs.
    #[arg(long, global = true)]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Train a model and export it to --out.
    Train(TrainArgs),
    /// Assign a data set with an exported model and print cluster sizes and metrics.
    Evaluate(EvalArgs),
    /// Embed documents with a local sentence-transformers model and write a .npy file.
    Embed(EmbedArgs),
    /// Train on built-in synthetic sensor data, export, and assign a fresh stream.
    Demo(DemoArgs),
    /// Cluster with k-means, mini-batch k-means, GMM, DBSCAN, agglomerative or SOM, in a
    /// model's latent space or on raw vectors, and compare them with every metric.
    Cluster(ClusterArgs),
    /// Pictures of a trained model on a data set: latent map, confusion matrix, training curves.
    Plot(PlotArgs),
    /// Picture of a sensor stream assigned by a stream model: channels along time, each
    /// window's cluster, outliers.
    Timeline(TimelineArgs),
    /// Draw new samples of a cluster with a ClusterGAN model's generator: a picture grid
    /// (images, one row per cluster) or CSV.
    Sample(SampleArgs),
    /// Choose k: inertia (elbow, with its knee) and mean silhouette for a range of k.
    SelectK(SelectKArgs),
    /// Serve gRPC: training jobs, assignment, the model registry and fleet distribution.
    Serve(ServeArgs),
    /// Add an exported model to a server store, and activate it when asked (servers running on
    /// the same store and database serve an activation within a quarter of a second).
    Import(ImportArgs),
}

impl Command {
    /// Runs the subcommand; `quiet` hides progress bars.
    pub(crate) fn run(&self, quiet: bool) -> Result<()> {
        match self {
            Self::Train(a) => train::run(a, quiet),
            Self::Evaluate(a) => evaluate::run(a),
            Self::Demo(a) => demo::run(a, quiet),
            Self::Embed(a) => embed::run(a),
            Self::Serve(a) => serve::run(a),
            Self::Cluster(a) => cluster::run(a),
            Self::SelectK(a) => select_k::run(a),
            Self::Plot(a) => plot::run(a),
            Self::Sample(a) => sample::run(a),
            Self::Timeline(a) => timeline::run(a),
            Self::Import(a) => import::run(a),
        }
    }

    /// Whether this is the long-lived gRPC server, which must outlive clients that hang up.
    pub(crate) fn is_server(&self) -> bool {
        matches!(self, Self::Serve(_))
    }

    /// The default log level, and whether logs are JSON lines: the server logs at info.
    pub(crate) fn logging(&self) -> (&'static str, bool) {
        match self {
            Self::Serve(a) => ("info", a.log_json),
            _ => ("warn", false),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;
    use dekm_trainer::choice::Choice;
    use dekm_trainer::data::Split;
    use dekm_trainer::model::{ConvBackend, Init, SeriesEncoder};
    use dekm_trainer::train::{Method, Start};

    /// The command line offers exactly the names a request and `config.json` use.
    #[test]
    fn flags_accept_the_library_names() {
        fn same<T: ValueEnum + Choice + std::fmt::Debug>() {
            let clap: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
                .collect();
            let ours: Vec<&str> = T::ALL.iter().map(|c| c.name()).collect();
            assert_eq!(clap, ours);
        }
        same::<Method>();
        same::<Start>();
        same::<Init>();
        same::<ConvBackend>();
        same::<SeriesEncoder>();
        same::<dekm_trainer::features::SeriesFeatures>();
        same::<Split>();
        same::<dekm_trainer::gan::GanLoss>();
        same::<dekm_trainer::model::ImageEncoder>();
    }
}
