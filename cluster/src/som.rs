//! A self-organising map (Kohonen): a `rows x cols` grid of prototypes pulled towards the data,
//! each sample moving its best-matching unit and, less and less, the unit's grid neighbours.
//! Each grid node is a cluster; neighbouring nodes hold similar samples, which makes the grid a
//! 2-D picture of the data.

use rand::seq::SliceRandom;

use crate::{ClusterError, Fit, Fitted, Points, Predict, rng, sq64};

/// SOM settings.
#[derive(Debug, Clone, Copy)]
pub struct SomConfig {
    /// Grid rows.
    pub rows: usize,
    /// Grid columns.
    pub cols: usize,
    /// Passes over the data.
    pub epochs: usize,
    /// Initial learning rate (decays linearly to 1% of it).
    pub learning_rate: f32,
    /// Seed of the initial prototypes and the sample order.
    pub seed: u64,
}

/// A trained map.
#[derive(Debug, Clone, PartialEq)]
pub struct Som {
    /// Grid shape.
    pub rows: usize,
    /// Grid shape.
    pub cols: usize,
    /// Prototypes, `[rows * cols, d]` row-major, node `r * cols + c`.
    pub weights: Vec<f32>,
    /// Best-matching node of each sample.
    pub labels: Vec<u32>,
    /// Mean distance of samples to their best-matching prototype.
    pub quantization_error: f64,
}

fn bmu(x: &[f32], weights: &[f32], d: usize) -> usize {
    weights
        .chunks_exact(d)
        .enumerate()
        .map(|(i, w)| (i, sq64(x, w)))
        .fold((0, f64::INFINITY), |b, c| if c.1 < b.1 { c } else { b })
        .0
}

impl Fit for SomConfig {
    type Model = Som;

    /// Trains a map.
    fn fit(&self, p: &Points<'_>) -> Result<Som, ClusterError> {
        fit(p, self)
    }
}

impl Fitted for Som {
    fn assignments(&self) -> Vec<Option<u32>> {
        self.labels.iter().copied().map(Some).collect()
    }
}

impl Predict for Som {
    /// The best-matching node of each point.
    fn predict(&self, p: &Points<'_>) -> Result<Vec<u32>, ClusterError> {
        let d = self.weights.len() / (self.rows * self.cols).max(1);
        if p.dim() != d {
            return Err(ClusterError::Shape {
                what: "point dimension",
                expected: d,
                got: p.dim(),
            });
        }
        Ok(p.rows().map(|x| bmu(x, &self.weights, d) as u32).collect())
    }
}

fn fit(p: &Points<'_>, cfg: &SomConfig) -> Result<Som, ClusterError> {
    let nodes = cfg.rows * cfg.cols;
    if nodes == 0 || nodes > p.len() {
        return Err(ClusterError::BadK {
            k: nodes,
            n: p.len(),
        });
    }
    if !(cfg.learning_rate > 0.0 && cfg.learning_rate <= 1.0) {
        return Err(ClusterError::Parameter {
            name: "learning_rate",
            value: cfg.learning_rate.to_string(),
            reason: "must be in (0, 1]",
        });
    }
    let (n, d) = (p.len(), p.dim());
    let mut r = rng(cfg.seed, 4000);
    let mut weights: Vec<f32> = Vec::with_capacity(nodes * d);
    for i in rand::seq::index::sample(&mut r, n, nodes) {
        weights.extend_from_slice(p.row(i));
    }
    let sigma0 = (cfg.rows.max(cfg.cols) as f32 / 2.0).max(1.0);
    let total = (cfg.epochs.max(1) * n) as f32;
    let mut order: Vec<usize> = (0..n).collect();
    let mut t = 0f32;
    for _ in 0..cfg.epochs.max(1) {
        order.shuffle(&mut r);
        for &i in &order {
            let frac = t / total;
            let lr = cfg.learning_rate * (1.0 - 0.99 * frac);
            // The neighbourhood shrinks from half the grid to under one node.
            let sigma = sigma0 * (0.5 / sigma0).powf(frac);
            let x = p.row(i);
            let b = bmu(x, &weights, d);
            let (br, bc) = ((b / cfg.cols) as f32, (b % cfg.cols) as f32);
            for (node, w) in weights.chunks_exact_mut(d).enumerate() {
                let (nr, nc) = ((node / cfg.cols) as f32, (node % cfg.cols) as f32);
                let g2 = (nr - br).powi(2) + (nc - bc).powi(2);
                let h = (-g2 / (2.0 * sigma * sigma)).exp();
                if h < 1e-4 {
                    continue;
                }
                for (wv, xv) in w.iter_mut().zip(x) {
                    *wv += lr * h * (xv - *wv);
                }
            }
            t += 1.0;
        }
    }
    let labels: Vec<u32> = p.rows().map(|x| bmu(x, &weights, d) as u32).collect();
    let quantization_error = p
        .rows()
        .zip(&labels)
        .map(|(x, &l)| sq64(x, &weights[l as usize * d..(l as usize + 1) * d]).sqrt())
        .sum::<f64>()
        / n as f64;
    Ok(Som {
        rows: cfg.rows,
        cols: cfg.cols,
        weights,
        labels,
        quantization_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_of_nodes_orders_itself_along_the_data() {
        // Points on a segment; a 1 x 5 map should cover it in order.
        let xs: Vec<f32> = (0..500).flat_map(|i| [i as f32 / 50.0, 0.0]).collect();
        let p = Points::new(&xs, 2).unwrap();
        let cfg = SomConfig {
            rows: 1,
            cols: 5,
            epochs: 10,
            learning_rate: 0.5,
            seed: 2,
        };
        let som = fit(&p, &cfg).unwrap();
        let xs_of_nodes: Vec<f32> = som.weights.chunks_exact(2).map(|w| w[0]).collect();
        let increasing = xs_of_nodes.windows(2).all(|w| w[0] < w[1]);
        let decreasing = xs_of_nodes.windows(2).all(|w| w[0] > w[1]);
        assert!(increasing || decreasing, "topology kept: {xs_of_nodes:?}");
        assert!(som.quantization_error < 0.6, "{}", som.quantization_error);
        assert_eq!(som, fit(&p, &cfg).unwrap());
        assert!(fit(&p, &SomConfig { rows: 0, ..cfg }).is_err());
        assert!(
            fit(
                &p,
                &SomConfig {
                    learning_rate: 0.0,
                    ..cfg
                }
            )
            .is_err()
        );
    }
}
