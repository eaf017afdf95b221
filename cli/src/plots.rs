//! Pictures (PNG): the latent space in 2-D (PCA) coloured by cluster with outliers marked,
//! curves (elbow, silhouette, training loss and ACC), the confusion matrix against labels, and
//! the dendrogram. Text is drawn with the embedded DejaVu Sans (`assets/`), so no system font
//! library is involved.

use std::path::Path;
use std::sync::OnceLock;

use dekm_cluster::Points;
use dekm_cluster::hierarchy::Dendrogram;
use dekm_cluster::metrics::best_map;
use dekm_cluster::pca::Pca;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// Why a picture could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The drawing backend failed (usually: the file cannot be written).
    #[error("{path}: {reason}")]
    Draw {
        /// The picture.
        path: String,
        /// What failed.
        reason: String,
    },
    /// Nothing to draw.
    #[error("{0}")]
    Input(String),
}

static FONT: OnceLock<Result<(), String>> = OnceLock::new();

pub(crate) fn font(path: &Path) -> Result<(), PlotError> {
    FONT.get_or_init(|| {
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("../assets/DejaVuSans.ttf"),
        )
        .map_err(|_| "the embedded font cannot be read".to_string())
    })
    .clone()
    .map_err(|reason| PlotError::Draw {
        path: path.display().to_string(),
        reason,
    })
}

/// The error of drawing the picture at `path`. The backend reports a file it cannot write as
/// nested debug text (`ImageError(IoError(Os { .. }))`); the likeliest cause, a folder that
/// does not exist, is named plainly instead.
pub(crate) fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError::Draw {
        path: path.display().to_string(),
        reason: match path
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && !p.is_dir())
        {
            Some(folder) => format!("cannot write it: there is no folder {}", folder.display()),
            None => e.to_string(),
        },
    }
}

const SIZE: (u32, u32) = (900, 700);

/// A distinct colour per cluster.
pub(crate) fn colour(i: usize) -> RGBColor {
    const P: [RGBColor; 12] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
        RGBColor(57, 59, 121),
        RGBColor(173, 73, 74),
    ];
    P[i % P.len()]
}

/// The first two principal components of `[n, d]` points (the first twice when `d` is 1;
/// nothing for no points or non-finite ones).
pub fn pca2(xs: &[f32], d: usize) -> Vec<(f32, f32)> {
    let Ok(p) = Points::new(xs, d) else {
        return Vec::new();
    };
    let Ok(y) = Pca::fit(&p, d.min(2)).and_then(|pca| pca.project(&p)) else {
        return Vec::new();
    };
    y.chunks_exact(d.min(2))
        .map(|r| (r[0], r[r.len() - 1]))
        .collect()
}

pub(crate) fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}

pub(crate) type XyChart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The titled, meshed axes that the scatter and line charts share; `y_label_width` is room for
/// the y-axis numbers (wider for losses than for PCA coordinates).
pub(crate) fn xy_chart<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    path: &Path,
    (title, x_desc, y_desc): (&str, &str, &str),
    (x, y): (std::ops::Range<f64>, std::ops::Range<f64>),
    y_label_width: u32,
) -> Result<XyChart<'a, 'b>, PlotError> {
    let e = draw_err(path);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(y_label_width)
        .build_cartesian_2d(x, y)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(&e)?;
    Ok(chart)
}

/// Draws the legend of the labelled series and writes the picture.
fn legend_and_present<'a, 'b: 'a>(
    root: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    mut chart: XyChart<'a, 'b>,
    path: &Path,
) -> Result<(), PlotError> {
    let e = draw_err(path);
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(&e)?;
    root.present().map_err(&e)
}

/// Scatter of 2-D points coloured by `labels`, with `outliers` drawn as black crosses on top.
pub fn scatter(
    path: &Path,
    (title, x_desc, y_desc): (&str, &str, &str),
    pts: &[(f32, f32)],
    labels: &[u32],
    outliers: &[bool],
) -> Result<(), PlotError> {
    if pts.is_empty() || pts.len() != labels.len() {
        return Err(PlotError::Input(format!(
            "{}: {} points and {} labels",
            path.display(),
            pts.len(),
            labels.len()
        )));
    }
    font(path)?;
    let e = draw_err(path);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let (x0, x1) = bounds(pts.iter().map(|p| f64::from(p.0)));
    let (y0, y1) = bounds(pts.iter().map(|p| f64::from(p.1)));
    let mut chart = xy_chart(&root, path, (title, x_desc, y_desc), (x0..x1, y0..y1), 48)?;
    let k = labels.iter().max().map_or(0, |&m| m as usize + 1);
    for c in 0..k {
        let series = pts
            .iter()
            .zip(labels)
            .filter(|(_, l)| **l as usize == c)
            .map(|(p, _)| {
                Circle::new(
                    (f64::from(p.0), f64::from(p.1)),
                    1,
                    colour(c).mix(0.5).filled(),
                )
            });
        chart
            .draw_series(series)
            .map_err(&e)?
            .label(format!("cluster {c}"))
            .legend(move |(x, y)| Circle::new((x, y), 4, colour(c).filled()));
    }
    let out = pts
        .iter()
        .zip(outliers)
        .filter(|(_, o)| **o)
        .map(|(p, _)| Cross::new((f64::from(p.0), f64::from(p.1)), 3, BLACK.stroke_width(1)));
    chart
        .draw_series(out)
        .map_err(&e)?
        .label("outlier")
        .legend(|(x, y)| Cross::new((x, y), 4, BLACK.stroke_width(1)));
    legend_and_present(&root, chart, path)
}

/// Line chart of one or more series over `x`, with an optional vertical marker.
pub fn lines(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    x: &[f64],
    series: &[(&str, Vec<f64>)],
    marker: Option<f64>,
) -> Result<(), PlotError> {
    if x.is_empty() || series.iter().any(|s| s.1.len() != x.len()) {
        return Err(PlotError::Input(format!(
            "{}: series lengths differ from x ({})",
            path.display(),
            x.len()
        )));
    }
    font(path)?;
    let e = draw_err(path);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let (x0, x1) = bounds(x.iter().copied());
    let (y0, y1) = bounds(
        series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .filter(|v| v.is_finite()),
    );
    let mut chart = xy_chart(&root, path, (title, x_desc, y_desc), (x0..x1, y0..y1), 64)?;
    for (i, (name, ys)) in series.iter().enumerate() {
        let c = colour(i);
        let pts: Vec<(f64, f64)> = x
            .iter()
            .zip(ys)
            .filter(|(_, y)| y.is_finite())
            .map(|(a, b)| (*a, *b))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(&e)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))
            .map_err(&e)?;
    }
    if let Some(m) = marker {
        chart
            .draw_series(LineSeries::new(vec![(m, y0), (m, y1)], BLACK.mix(0.5)))
            .map_err(&e)?;
    }
    legend_and_present(&root, chart, path)
}

/// Confusion matrix: one row per cluster (ordered by the class it is matched to), one column per
/// class, cell shade and number = samples.
pub fn confusion(path: &Path, pred: &[u32], truth: &[u32]) -> Result<(), PlotError> {
    if pred.is_empty() || pred.len() != truth.len() {
        return Err(PlotError::Input(format!(
            "{}: {} predictions and {} labels",
            path.display(),
            pred.len(),
            truth.len()
        )));
    }
    font(path)?;
    let e = draw_err(path);
    let mut clusters: Vec<u32> = pred.to_vec();
    clusters.sort_unstable();
    clusters.dedup();
    let mut classes: Vec<u32> = truth.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let map = best_map(pred, truth);
    clusters.sort_by_key(|c| (map.get(c).copied().flatten().unwrap_or(u32::MAX), *c));
    let (r, c) = (clusters.len(), classes.len());
    let mut t = vec![0u64; r * c];
    for (p, y) in pred.iter().zip(truth) {
        let (i, j) = (
            clusters.iter().position(|x| x == p).unwrap_or(0),
            classes.binary_search(y).unwrap_or(0),
        );
        t[i * c + j] += 1;
    }
    let max = t.iter().copied().max().unwrap_or(1).max(1) as f64;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("clusters vs labels", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0..c, 0..r)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("label")
        .y_desc("cluster")
        .x_labels(c)
        .y_labels(r)
        .x_label_formatter(&|j| classes.get(*j).map_or(String::new(), u32::to_string))
        .y_label_formatter(&|i| clusters.get(*i).map_or(String::new(), u32::to_string))
        .draw()
        .map_err(&e)?;
    chart
        .draw_series(
            (0..r)
                .flat_map(|i| (0..c).map(move |j| (i, j)))
                .map(|(i, j)| {
                    let v = t[i * c + j] as f64 / max;
                    let shade = (255.0 * (1.0 - v)) as u8;
                    Rectangle::new(
                        [(j, i), (j + 1, i + 1)],
                        RGBColor(shade, shade, 255).filled(),
                    )
                }),
        )
        .map_err(&e)?;
    chart
        .draw_series(
            (0..r)
                .flat_map(|i| (0..c).map(move |j| (i, j)))
                .filter(|&(i, j)| t[i * c + j] > 0)
                .map(|(i, j)| {
                    Text::new(
                        t[i * c + j].to_string(),
                        (j, i + 1),
                        ("sans-serif", 11).into_font(),
                    )
                }),
        )
        .map_err(&e)?;
    root.present().map_err(&e)
}

/// The last `last` merges of a dendrogram (like SciPy's `truncate_mode="lastp"`): leaves are the
/// clusters that existed before them, labelled with their sizes.
pub fn dendrogram(path: &Path, tree: &Dendrogram, last: usize) -> Result<(), PlotError> {
    let m = tree.merges.len();
    if m == 0 {
        return Err(PlotError::Input(format!("{}: no merges", path.display())));
    }
    font(path)?;
    let e = draw_err(path);
    let last = last.clamp(1, m);
    let first_kept = tree.n + (m - last);
    let size_of = |id: usize| {
        if id < tree.n {
            1
        } else {
            tree.merges[id - tree.n].size
        }
    };
    // Leaves in drawing order: depth-first from the root.
    let mut leaves = Vec::new();
    let mut stack = vec![tree.n + m - 1];
    while let Some(id) = stack.pop() {
        if id >= first_kept {
            let s = tree.merges[id - tree.n];
            stack.push(s.b);
            stack.push(s.a);
        } else {
            leaves.push(id);
        }
    }
    let mut x = std::collections::HashMap::new();
    for (i, &l) in leaves.iter().enumerate() {
        x.insert(l, i as f64 + 0.5);
    }
    let mut segments = Vec::new();
    let height = |id: usize| {
        if id >= first_kept {
            f64::from(tree.merges[id - tree.n].height)
        } else {
            0.0
        }
    };
    for (i, s) in tree.merges.iter().enumerate().skip(m - last) {
        let (xa, xb) = (x[&s.a], x[&s.b]);
        let h = f64::from(s.height);
        segments.push(vec![(xa, height(s.a)), (xa, h), (xb, h), (xb, height(s.b))]);
        x.insert(tree.n + i, (xa + xb) / 2.0);
    }
    let top = f64::from(tree.merges[m - 1].height).max(1e-9) * 1.05;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("dendrogram (last {last} merges)"),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..leaves.len() as f64, 0f64..top)
        .map_err(&e)?;
    let names: Vec<String> = leaves
        .iter()
        .map(|&l| format!("({})", size_of(l)))
        .collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("clusters (size)")
        .y_desc("linkage distance")
        .x_labels(leaves.len())
        .x_label_formatter(&|v| names.get(*v as usize).cloned().unwrap_or_default())
        .draw()
        .map_err(&e)?;
    chart
        .draw_series(
            segments
                .into_iter()
                .map(|s| PathElement::new(s, colour(0).stroke_width(2))),
        )
        .map_err(&e)?;
    root.present().map_err(&e)
}

/// What [`model_pictures`] draws from.
pub struct ModelView<'a> {
    /// Latent vectors `[n, d]`.
    pub z: &'a [f32],
    /// Latent dimension.
    pub d: usize,
    /// Cluster of each sample.
    pub labels: &'a [u32],
    /// Outlier flag of each sample.
    pub outliers: &'a [bool],
    /// Ground truth, when known.
    pub truth: Option<&'a [u32]>,
    /// Training curves, when known.
    pub history: Option<&'a dekm_trainer::train::History>,
    /// Also draw a t-SNE map of this many evenly spaced samples (0: none): exact up to
    /// [`dekm_cluster::tsne::MAX_POINTS`], Barnes-Hut above.
    pub tsne_points: usize,
}

/// Writes `latent.png` (PCA of at most `max_points` evenly spaced samples), `confusion.png`
/// (with labels) and `training.png` (with a history) into `dir`; returns the files written.
pub fn model_pictures(
    dir: &Path,
    v: &ModelView<'_>,
    max_points: usize,
) -> Result<Vec<std::path::PathBuf>, PlotError> {
    std::fs::create_dir_all(dir).map_err(draw_err(dir))?;
    let n = v.labels.len();
    let step = n.div_ceil(max_points.max(1)).max(1);
    let keep: Vec<usize> = (0..n).step_by(step).collect();
    let z: Vec<f32> = keep
        .iter()
        .flat_map(|&i| v.z[i * v.d..(i + 1) * v.d].iter().copied())
        .collect();
    let labels: Vec<u32> = keep.iter().map(|&i| v.labels[i]).collect();
    let outliers: Vec<bool> = keep.iter().map(|&i| v.outliers[i]).collect();
    let mut written = Vec::new();
    let path = dir.join("latent.png");
    let title = format!("latent space, PCA ({} of {n} samples)", keep.len());
    scatter(
        &path,
        (&title, "PC 1", "PC 2"),
        &pca2(&z, v.d),
        &labels,
        &outliers,
    )?;
    written.push(path);
    if v.tsne_points > 0 {
        let m = v.tsne_points.min(n);
        let step = n.div_ceil(m).max(1);
        let keep: Vec<usize> = (0..n).step_by(step).collect();
        let z: Vec<f32> = keep
            .iter()
            .flat_map(|&i| v.z[i * v.d..(i + 1) * v.d].iter().copied())
            .collect();
        let points =
            dekm_cluster::Points::new(&z, v.d).map_err(|e| PlotError::Input(e.to_string()))?;
        let perplexity = 30f64.min((keep.len() as f64 - 1.0) / 3.0).max(2.0);
        let cfg = dekm_cluster::tsne::TsneConfig {
            perplexity,
            ..Default::default()
        };
        let (map, how) = if keep.len() <= dekm_cluster::tsne::MAX_POINTS {
            (dekm_cluster::tsne::tsne(&points, &cfg), "exact")
        } else {
            (dekm_cluster::tsne::barnes_hut(&points, &cfg), "Barnes-Hut")
        };
        let map = map.map_err(|e| PlotError::Input(e.to_string()))?;
        let labels: Vec<u32> = keep.iter().map(|&i| v.labels[i]).collect();
        let outliers: Vec<bool> = keep.iter().map(|&i| v.outliers[i]).collect();
        let path = dir.join("latent_tsne.png");
        let title = format!("latent space, {how} t-SNE ({} of {n} samples)", keep.len());
        scatter(
            &path,
            (&title, "t-SNE 1", "t-SNE 2"),
            &map,
            &labels,
            &outliers,
        )?;
        written.push(path);
    }
    if let Some(t) = v.truth {
        let path = dir.join("confusion.png");
        confusion(&path, v.labels, t)?;
        written.push(path);
    }
    if let Some(h) = v.history
        && !h.pretrain_loss.is_empty()
    {
        let path = dir.join("training.png");
        let e = h.pretrain_loss.len();
        let its = &h.iterations;
        let x: Vec<f64> = (1..=e + its.len()).map(|i| i as f64).collect();
        let mut loss: Vec<f64> = h.pretrain_loss.iter().map(|&l| f64::from(l)).collect();
        loss.extend(its.iter().map(|_| f64::NAN));
        let mut tune: Vec<f64> = vec![f64::NAN; e];
        tune.extend(its.iter().map(|i| f64::from(i.loss)));
        let mut series = vec![("reconstruction loss", loss), ("fine-tuning loss", tune)];
        if its.iter().any(|i| i.metrics.is_some()) {
            let mut acc = vec![f64::NAN; e];
            acc.extend(its.iter().map(|i| i.metrics.map_or(f64::NAN, |m| m.acc)));
            series.push(("ACC", acc));
        }
        lines(
            &path,
            "training: pretraining epochs, then clustering iterations",
            ("epoch / iteration", "value"),
            &x,
            &series,
            Some(e as f64 + 0.5),
        )?;
        written.push(path);
    }
    Ok(written)
}

/// Images in a grid, `cols` to a row, each pixel drawn as a `scale` x `scale` square with a
/// two-pixel gap between images: a generator's samples of a cluster. `images` are CHW values
/// in pixel units (`0..=255`, clamped) of one or three channels, `shape` `(channels, height,
/// width)`.
pub fn image_grid(
    path: &Path,
    images: &[&[f32]],
    (channels, height, width): (usize, usize, usize),
    cols: usize,
    scale: u32,
) -> Result<(), PlotError> {
    if !matches!(channels, 1 | 3) || height == 0 || width == 0 {
        return Err(PlotError::Input(format!(
            "{}: images of {channels} channels ({height}x{width}) are not pictures; \
             write CSV instead",
            path.display()
        )));
    }
    let len = channels * height * width;
    if images.is_empty() || cols == 0 || images.iter().any(|im| im.len() != len) {
        return Err(PlotError::Input(format!(
            "{}: {} images of {len} values each, {cols} to a row",
            path.display(),
            images.len()
        )));
    }
    let rows = images.len().div_ceil(cols);
    let gap = 2u32;
    let cell = |n: usize| n as u32 * scale + gap;
    let size = (
        gap + cols as u32 * cell(width),
        gap + rows as u32 * cell(height),
    );
    let e = draw_err(path);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let pixel = |v: f32| v.clamp(0.0, 255.0).round() as u8;
    for (i, im) in images.iter().enumerate() {
        let (x0, y0) = (
            gap + (i % cols) as u32 * cell(width),
            gap + (i / cols) as u32 * cell(height),
        );
        for y in 0..height {
            for x in 0..width {
                let at = |c: usize| pixel(im[(c * height + y) * width + x]);
                let colour = if channels == 1 {
                    RGBColor(at(0), at(0), at(0))
                } else {
                    RGBColor(at(0), at(1), at(2))
                };
                let (px, py) = (x0 + x as u32 * scale, y0 + y as u32 * scale);
                let square = Rectangle::new(
                    [
                        (px as i32, py as i32),
                        ((px + scale) as i32, (py + scale) as i32),
                    ],
                    colour.filled(),
                );
                root.draw(&square).map_err(&e)?;
            }
        }
    }
    root.present().map_err(&e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dekm_cluster::Points;
    use dekm_cluster::hierarchy::{Linkage, linkage};

    fn is_png(path: &Path) -> bool {
        std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG") && b.len() > 2000)
    }

    #[test]
    fn a_picture_in_a_missing_folder_names_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-folder").join("grid.png");
        let image = [0f32; 4];
        let err = image_grid(&path, &[&image], (1, 2, 2), 1, 1).unwrap_err();
        let folder = dir.path().join("no-such-folder");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: cannot write it: there is no folder {}",
                path.display(),
                folder.display()
            )
        );
    }

    #[test]
    fn every_picture_is_written_as_png() {
        let dir = tempfile::tempdir().unwrap();
        let xs: Vec<f32> = (0..300)
            .flat_map(|i| {
                let c = (i % 3) as f32;
                [
                    c * 5.0 + (i as f32 * 0.37).sin(),
                    c * 2.0 + (i as f32 * 0.11).cos(),
                    c,
                ]
            })
            .collect();
        let labels: Vec<u32> = (0..300).map(|i| (i % 3) as u32).collect();
        let pts = pca2(&xs, 3);
        assert_eq!(pts.len(), 300);
        let outliers: Vec<bool> = (0..300).map(|i| i % 50 == 0).collect();
        let p = |n: &str| dir.path().join(n);
        scatter(
            &p("latent.png"),
            ("latent space", "PC 1", "PC 2"),
            &pts,
            &labels,
            &outliers,
        )
        .unwrap();
        let x: Vec<f64> = (2..=8).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| 100.0 / v).collect();
        lines(
            &p("elbow.png"),
            "elbow",
            ("k", "inertia"),
            &x,
            &[("inertia", y)],
            Some(3.0),
        )
        .unwrap();
        let truth: Vec<u32> = labels.iter().map(|l| (l + 1) % 3).collect();
        confusion(&p("confusion.png"), &labels, &truth).unwrap();
        let tree = linkage(&Points::new(&xs, 3).unwrap(), Linkage::Ward).unwrap();
        dendrogram(&p("dendrogram.png"), &tree, 20).unwrap();
        for f in ["latent.png", "elbow.png", "confusion.png", "dendrogram.png"] {
            assert!(is_png(&p(f)), "{f}");
        }
        let digits: Vec<Vec<f32>> = (0..6)
            .map(|i| (0..28 * 28).map(|p| ((p * (i + 1)) % 256) as f32).collect())
            .collect();
        let views: Vec<&[f32]> = digits.iter().map(Vec::as_slice).collect();
        image_grid(&p("samples.png"), &views, (1, 28, 28), 3, 2).unwrap();
        assert!(is_png(&p("samples.png")));
        assert!(image_grid(&p("s.png"), &views, (2, 28, 14), 3, 2).is_err());
        assert!(image_grid(&p("s.png"), &views, (1, 27, 28), 3, 2).is_err());
        // Bad input and unwritable paths are errors, not panics.
        assert!(lines(&p("x.png"), "t", ("a", "b"), &x, &[("s", vec![1.0])], None).is_err());
        assert!(scatter(&p("y.png"), ("t", "x", "y"), &pts, &labels[..3], &outliers).is_err());
        let nowhere = dir.path().join("missing/dir/z.png");
        assert!(confusion(&nowhere, &labels, &truth).is_err());
    }

    #[test]
    fn model_pictures_writes_the_set_including_tsne() {
        use dekm_trainer::train::{History, IterationLog};
        let dir = tempfile::tempdir().unwrap();
        let z: Vec<f32> = (0..600)
            .map(|i| ((i * 7919) % 100) as f32 / 10.0 + (i % 2 * 20) as f32)
            .collect();
        let labels: Vec<u32> = (0..300).map(|i| (i % 2) as u32).collect();
        let outliers: Vec<bool> = (0..300).map(|i| i == 7).collect();
        let history = History {
            pretrain_loss: vec![0.5, 0.3, 0.2],
            iterations: vec![IterationLog {
                loss: 0.1,
                changed: 0.01,
                metrics: None,
            }],
            ..Default::default()
        };
        let view = ModelView {
            z: &z,
            d: 2,
            labels: &labels,
            outliers: &outliers,
            truth: Some(&labels),
            history: Some(&history),
            tsne_points: 100,
        };
        let files = model_pictures(dir.path(), &view, 1000).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "latent.png",
                "latent_tsne.png",
                "confusion.png",
                "training.png"
            ]
        );
        assert!(files.iter().all(|f| is_png(f)));
    }
}
