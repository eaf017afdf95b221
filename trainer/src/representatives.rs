//! The members that stand for each cluster: the few nearest its centre, which is what a person
//! reads to name a group of documents (a topic).

/// For each of the `k` clusters, up to `n` member indices in order of decreasing cosine
/// similarity to the mean of the members' vectors (`xs`, `dim` values per sample). The centre
/// is taken where the samples live (the sentence embeddings for texts), not in the model's
/// latent space, so the answer does not depend on the model's scale.
pub fn nearest_to_centres(
    xs: &[f32],
    dim: usize,
    labels: &[u32],
    k: usize,
    n: usize,
) -> Vec<Vec<usize>> {
    let mut centres = vec![0f64; k * dim];
    let mut sizes = vec![0usize; k];
    for (x, &c) in xs.chunks_exact(dim).zip(labels) {
        let c = c as usize;
        if c < k {
            sizes[c] += 1;
            for (m, v) in centres[c * dim..(c + 1) * dim].iter_mut().zip(x) {
                *m += f64::from(*v);
            }
        }
    }
    let mut scored: Vec<Vec<(f64, usize)>> = vec![Vec::new(); k];
    for (i, (x, &c)) in xs.chunks_exact(dim).zip(labels).enumerate() {
        let c = c as usize;
        if c >= k {
            continue;
        }
        let centre = &centres[c * dim..(c + 1) * dim];
        let dot: f64 = centre.iter().zip(x).map(|(m, v)| m * f64::from(*v)).sum();
        let norm: f64 = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        // The centre's own norm is common to the cluster and does not change the order.
        scored[c].push((if norm > 0.0 { dot / norm } else { f64::MIN }, i));
    }
    scored
        .into_iter()
        .map(|mut s| {
            s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            s.into_iter().take(n).map(|(_, i)| i).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_typical_members_first() {
        // Cluster 0 around (1, 0), cluster 1 around (0, 1); sample 2 is cluster 0's odd one.
        let xs = [
            1.0, 0.1, //
            1.0, -0.1, //
            0.2, 1.0, //
            0.0, 1.0, //
            1.0, 0.0, //
        ];
        let labels = [0, 0, 0, 1, 0];
        let r = nearest_to_centres(&xs, 2, &labels, 3, 2);
        assert_eq!(r, vec![vec![0, 4], vec![3], vec![]]);
    }
}
