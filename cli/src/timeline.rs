//! The picture a person looks at for a sensor stream: the channels along time, and under them
//! the cluster of every window and the windows flagged as outliers.

use std::path::Path;

use plotters::prelude::*;

use crate::plots::{PlotError, bounds, colour, draw_err, font, xy_chart};

/// One assigned window of the stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimelineWindow {
    /// Index of its first reading.
    pub start: u64,
    /// Its cluster.
    pub cluster: u32,
    /// Whether it was flagged.
    pub outlier: bool,
}

/// Draws `readings` (reading-major, one value per channel) as stacked, per-channel standardised
/// lines, and below them one bar per window from its start over `hop` readings in its
/// cluster's colour, outliers marked with a red cross on a row of their own (row `k`).
pub fn stream_timeline(
    path: &Path,
    channels: &[String],
    readings: &[f32],
    windows: &[TimelineWindow],
    hop: usize,
    k: usize,
) -> Result<(), PlotError> {
    let c = channels.len();
    if c == 0 || readings.is_empty() || !readings.len().is_multiple_of(c) {
        return Err(PlotError::Input(format!(
            "{}: {} values are not whole readings of {c} channels",
            path.display(),
            readings.len()
        )));
    }
    font(path)?;
    let e = draw_err(path);
    let n = readings.len() / c;
    let root = BitMapBackend::new(path, (1400, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let (top, bottom) = root.split_vertically(560);
    // Each channel standardised and stacked 4 units below the previous one.
    let series: Vec<Vec<(f64, f64)>> = (0..c)
        .map(|ch| {
            let xs: Vec<f64> = (0..n).map(|t| f64::from(readings[t * c + ch])).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64)
                .sqrt()
                .max(1e-12);
            let offset = -4.0 * ch as f64;
            xs.iter()
                .enumerate()
                .map(|(t, x)| (t as f64, offset + ((x - mean) / sd).clamp(-3.0, 3.0)))
                .collect()
        })
        .collect();
    let (y0, y1) = bounds(series.iter().flatten().map(|p| p.1));
    let mut chart = xy_chart(
        &top,
        path,
        (
            "stream: channels (standardised), clusters and outliers",
            "",
            "channel",
        ),
        (0.0..n as f64, y0..y1),
        40,
    )?;
    for (ch, pts) in series.into_iter().enumerate() {
        let colour = colour(ch);
        let name = channels[ch].clone();
        chart
            .draw_series(LineSeries::new(pts, colour.stroke_width(1)))
            .map_err(&e)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(&e)?;
    let mut strip = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(40)
        .build_cartesian_2d(0.0..n as f64, -0.5..(k as f64 + 0.5))
        .map_err(&e)?;
    strip
        .configure_mesh()
        .x_desc("reading")
        .y_desc("cluster")
        .y_labels(k + 2)
        .draw()
        .map_err(&e)?;
    strip
        .draw_series(windows.iter().map(|w| {
            let (x0, y) = (w.start as f64, f64::from(w.cluster));
            Rectangle::new(
                [(x0, y - 0.35), (x0 + hop as f64, y + 0.35)],
                colour(w.cluster as usize).filled(),
            )
        }))
        .map_err(&e)?;
    strip
        .draw_series(
            windows
                .iter()
                .filter(|w| w.outlier)
                .map(|w| Cross::new((w.start as f64, k as f64), 5, RED.stroke_width(2))),
        )
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_and_refuses_ragged_readings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stream.png");
        let readings: Vec<f32> = (0..200)
            .flat_map(|t| [t as f32, (t as f32).sin()])
            .collect();
        let windows: Vec<TimelineWindow> = (0..18)
            .map(|i| TimelineWindow {
                start: i * 10,
                cluster: (i % 3) as u32,
                outlier: i == 7,
            })
            .collect();
        let names = ["a".to_string(), "b".to_string()];
        stream_timeline(&path, &names, &readings, &windows, 10, 3).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let err = stream_timeline(&path, &names, &readings[1..], &windows, 10, 3).unwrap_err();
        assert!(err.to_string().contains("not whole readings"), "{err}");
    }
}
