//! `dekm select-k`: choose k from the inertia curve's knee and the mean silhouette, and on
//! short raw vectors from the BIC of the mixture `dekm train` would start from.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use dekm_cli::progress::Step;
use dekm_cli::{analysis, plots};
use dekm_cluster::Points;
use dekm_cluster::gmm::{self, Covariance, GmmConfig};
use dekm_trainer::data::SampleShape;
use dekm_trainer::export::read_model;
use dekm_trainer::train::{INPUT_STARTS, Start};

use super::args::{DataArgs, DeviceArgs, PairArgs};

#[derive(Args)]
pub(crate) struct SelectKArgs {
    /// Cluster in this model's latent space (default: the raw, normalised samples).
    #[arg(long)]
    model: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Range of k, inclusive: FROM..TO.
    #[arg(long, default_value = "2..20")]
    k_range: KRange,
    /// k-means++ restarts per k.
    #[arg(long, default_value_t = 3)]
    restarts: usize,
    /// Write elbow.png and silhouette.png into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    pairs: PairArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

/// `FROM..TO` on the command line.
#[derive(Clone, Copy)]
pub(crate) struct KRange(usize, usize);

impl std::str::FromStr for KRange {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (a, b) = s
            .split_once("..")
            .ok_or_else(|| format!("{s:?}: expected FROM..TO, e.g. 2..20"))?;
        let p = |v: &str| {
            v.trim_start_matches('=')
                .parse::<usize>()
                .map_err(|e| format!("{s:?}: {e}"))
        };
        Ok(Self(p(a)?, p(b)?))
    }
}

/// The lower BIC of the full and diagonal mixtures of `k` components on `p`.
fn lowest_bic(p: &Points<'_>, k: usize, seed: u64) -> Result<f64> {
    let cfg = GmmConfig {
        seed,
        ..GmmConfig::new(k, Covariance::Diagonal)
    };
    let c = gmm::fit_by_bic(p, &cfg, INPUT_STARTS)?;
    Ok(c.full.map_or(c.diagonal, |f| f.min(c.diagonal)))
}

/// Prints inertia and silhouette per k (and the mixture's BIC on short raw vectors), the knee,
/// the lowest BIC and the recommendation (the best silhouette, else the knee).
pub(crate) fn run(args: &SelectKArgs) -> Result<()> {
    let model = args.model.as_deref().map(read_model).transpose()?;
    let dev = args.device.open()?;
    let ds = args
        .data
        .load(args.k_range.1.max(1), args.seed, || Ok(dev.clone()))?;
    let space = {
        let _step = Step::new("encoding");
        analysis::space(model.as_ref(), &ds, &dev)?
    };
    let p = Points::new(&space.xs, space.dim)?;
    let step = Step::new(format!(
        "k-means and silhouettes for k in {}..={} on {} samples",
        args.k_range.0,
        args.k_range.1,
        ds.len()
    ));
    let sel = dekm_cluster::select::select_k(
        &p,
        args.k_range.0..=args.k_range.1,
        args.restarts,
        args.seed,
        &args.pairs.options(),
    )?;
    drop(step);
    println!(
        "{} samples of {}, k-means in the {}",
        ds.len(),
        ds.name,
        space.name
    );
    // Raw vectors short enough for `train` to start from a mixture on them: that mixture's BIC
    // judges k too, as model-based clustering does.
    let bics = match ds.shape {
        SampleShape::Vector(d) if model.is_none() && d <= Start::AUTO_INPUT_MAX_DIM => {
            let _step = Step::new("mixture BIC per k");
            Some(
                sel.scores
                    .iter()
                    .map(|s| lowest_bic(&p, s.k, args.seed))
                    .collect::<Result<Vec<f64>>>()?,
            )
        }
        _ => None,
    };
    println!(
        "{:>4} {:>16} {:>11}{}",
        "k",
        "inertia",
        "silhouette",
        if bics.is_some() { "   mixture BIC" } else { "" }
    );
    for (i, s) in sel.scores.iter().enumerate() {
        println!(
            "{:>4} {:>16.2} {:>11}{}",
            s.k,
            s.inertia,
            s.silhouette.map_or("-".into(), |v| format!("{v:.4}")),
            bics.as_ref()
                .map_or(String::new(), |b| format!(" {:>14.1}", b[i]))
        );
    }
    let show = |k: Option<usize>| k.map_or("none".to_string(), |k| k.to_string());
    println!(
        "elbow (knee of the inertia curve): {}; best silhouette: {}",
        show(sel.knee),
        show(sel.best_silhouette)
    );
    let lowest = bics.as_ref().and_then(|b| {
        let i = (0..b.len()).min_by(|&x, &y| b[x].total_cmp(&b[y]))?;
        Some(sel.scores[i].k)
    });
    if let Some(k) = lowest {
        println!(
            "lowest BIC of a Gaussian mixture on the input (full or diagonal covariance, what `train` starts from on vectors of at most {} features): {k}",
            Start::AUTO_INPUT_MAX_DIM
        );
    }
    // The silhouette stays the recommendation: on wine, breast cancer and iris it named the
    // true k on two of three, the mixture's BIC on one (docs/RESULTS.md, "Vector data").
    println!("recommended k: {}", show(sel.best_silhouette.or(sel.knee)));
    if let Some(m) = sel.sampled {
        println!("(silhouettes on a seeded random sample of {m} points)");
    }
    if let Some(dir) = &args.plots {
        std::fs::create_dir_all(dir)?;
        let ks: Vec<f64> = sel.scores.iter().map(|s| s.k as f64).collect();
        let inertia: Vec<f64> = sel.scores.iter().map(|s| s.inertia).collect();
        let sil: Vec<f64> = sel
            .scores
            .iter()
            .map(|s| s.silhouette.unwrap_or(f64::NAN))
            .collect();
        let (elbow, silhouette) = (dir.join("elbow.png"), dir.join("silhouette.png"));
        plots::lines(
            &elbow,
            "k-means inertia (line: knee)",
            ("k", "inertia"),
            &ks,
            &[("inertia", inertia)],
            sel.knee.map(|k| k as f64),
        )?;
        plots::lines(
            &silhouette,
            "mean silhouette (line: best)",
            ("k", "silhouette"),
            &ks,
            &[("silhouette", sil)],
            sel.best_silhouette.map(|k| k as f64),
        )?;
        println!("wrote {} and {}", elbow.display(), silhouette.display());
    }
    Ok(())
}
