//! The layout against k-means on shapes it must keep apart, N2D on blobs, the neighbour search
//! and precomputed neighbourhoods, the graph's strengths and symmetry, umap-learn's curve.

use super::*;
use crate::Fit;
use crate::kmeans::KMeansConfig;
use crate::metrics::accuracy;

fn n2d(p: &Points<'_>, k: usize, seed: u64, mixture: Mixture) -> Result<Vec<u32>, ClusterError> {
    Ok(N2dConfig {
        k,
        seed,
        mixture,
        neighbours: None,
    }
    .fit(p)?
    .labels)
}
use rand_distr::{Distribution, Normal};

/// Two parallel strokes 20 long and 3 apart, `per` points each: k-means with k = 2 cuts
/// them across (left half against right half has the lower inertia), while every point's
/// neighbours lie on its own stroke.
fn strokes(per: usize) -> (Vec<f32>, Vec<u32>) {
    let mut r = rng(7, 0);
    let noise = Normal::new(0.0f32, 0.05).unwrap();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for s in 0..2u32 {
        for i in 0..per {
            xs.push(20.0 * i as f32 / per as f32 + noise.sample(&mut r));
            xs.push(3.0 * s as f32 + noise.sample(&mut r));
            ys.push(s);
        }
    }
    (xs, ys)
}

fn two_means(xs: &[f32], d: usize) -> Vec<u32> {
    let cfg = KMeansConfig {
        restarts: 5,
        max_iter: 100,
        ..KMeansConfig::new(2)
    };
    cfg.fit(&Points::new(xs, d).unwrap()).unwrap().labels
}

#[test]
fn the_layout_keeps_strokes_apart_that_kmeans_cuts_across() {
    let (xs, truth) = strokes(200);
    let p = Points::new(&xs, 2).unwrap();
    assert!(accuracy(&two_means(&xs, 2), &truth) < 0.75);
    let cfg = UmapConfig {
        neighbors: 10,
        ..UmapConfig::new(2)
    };
    let y = layout(&p, &cfg).unwrap();
    assert_eq!(y.len(), 400 * 2);
    assert!(y.iter().all(|v| v.is_finite()));
    // In the layout, every point's nearest neighbours are on its own stroke, so the two
    // strokes are the two branches of the single-linkage tree.
    let found = nearest(&Points::new(&y, 2).unwrap(), 5, Search::Auto).unwrap();
    for (i, row) in found.parts().0.chunks(5).enumerate() {
        assert!(
            row.iter().all(|&j| truth[j as usize] == truth[i]),
            "point {i}"
        );
    }
    let tree = crate::hierarchy::linkage(
        &Points::new(&y, 2).unwrap(),
        crate::hierarchy::Linkage::Single,
    )
    .unwrap();
    assert_eq!(accuracy(&tree.cut(2).unwrap(), &truth), 1.0);
    // Same seed, same layout, to the bit; another seed, another layout.
    assert_eq!(layout(&p, &cfg).unwrap(), y);
    assert_ne!(layout(&p, &UmapConfig { seed: 1, ..cfg }).unwrap(), y);
}

#[test]
fn a_mixture_on_the_layout_of_blobs_finds_them() {
    let mut r = rng(3, 0);
    let noise = Normal::new(0.0f32, 1.0).unwrap();
    let (mut xs, mut truth) = (Vec::new(), Vec::new());
    for i in 0..600 {
        let c = i % 4;
        for j in 0..6 {
            xs.push(if j == c { 12.0 } else { 0.0 } + noise.sample(&mut r));
        }
        truth.push(c as u32);
    }
    let y = layout(&Points::new(&xs, 6).unwrap(), &UmapConfig::new(4)).unwrap();
    let cfg = crate::gmm::GmmConfig::new(4, crate::gmm::Covariance::Full);
    let g = cfg.fit(&Points::new(&y, 4).unwrap()).unwrap();
    assert_eq!(accuracy(&g.labels, &truth), 1.0);
    // N2D whole, with either choice of mixture: where one partition stands out both find
    // it.
    let p = Points::new(&xs, 6).unwrap();
    for mixture in [Mixture::BestStart, Mixture::Likeliest(5)] {
        assert_eq!(
            accuracy(&n2d(&p, 4, 0, mixture).unwrap(), &truth),
            1.0,
            "{mixture:?}"
        );
    }
}

#[test]
fn past_the_limit_a_sample_is_laid_out_and_the_others_placed_by_their_neighbours() {
    let mut r = rng(5, 0);
    let noise = Normal::new(0.0f32, 1.0).unwrap();
    let (mut xs, mut truth) = (Vec::new(), Vec::new());
    for i in 0..2000 {
        let c = i % 4;
        for j in 0..5 {
            xs.push(if j == c { 9.0 } else { 0.0 } + noise.sample(&mut r));
        }
        truth.push(c as u32);
    }
    let p = Points::new(&xs, 5).unwrap();
    let cfg = N2dConfig {
        k: 4,
        seed: 1,
        mixture: Mixture::BestStart,
        neighbours: None,
    };
    let umap = UmapConfig {
        seed: 1,
        neighbors: N2dConfig::neighbours_needed(p.len(), 4) + 1,
        ..UmapConfig::new(4)
    };
    let sampled = cfg.fit_sampled(&p, &umap, 400).unwrap();
    assert_eq!(sampled.labels.len(), 2000);
    // The 1,600 points placed, not laid out, land in their blob's component.
    assert!(accuracy(&sampled.labels, &truth) > 0.99);
    assert_eq!(cfg.fit_sampled(&p, &umap, 400).unwrap(), sampled);
    assert!(N2dConfig::lays_out_all(N2dConfig::LAYOUT_MAX));
    assert!(!N2dConfig::lays_out_all(N2dConfig::LAYOUT_MAX + 1));
}

#[test]
fn a_path_graph_of_three_points_gets_a_finite_layout() {
    // Each point's one neighbour makes the path 0 - 2 - 1: bipartite, so -1 is in its
    // spectrum, and the 3-column block spans the whole graph. Both once made NaN.
    let xs = [0.0f32, 0.0, 5.0, 5.0, 0.5, 0.2];
    let p = Points::new(&xs, 2).unwrap();
    let cfg = UmapConfig {
        neighbors: 2,
        ..UmapConfig::new(2)
    };
    let y = layout(&p, &cfg).unwrap();
    assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
    for mixture in [Mixture::BestStart, Mixture::Likeliest(3)] {
        assert_eq!(n2d(&p, 2, 0, mixture).unwrap().len(), 3);
    }
}

#[test]
fn strengths_sum_to_log2_of_the_neighbourhood() {
    let ds = [0.5f32, 0.9, 1.4, 2.0, 2.2, 3.5];
    let mut out = [0f32; 6];
    strengths(&ds, 7, 1.0, &mut out);
    // The nearest neighbour is fully connected; the rest fall off with distance.
    assert_eq!(out[0], 1.0);
    assert!(out.windows(2).all(|w| w[0] >= w[1]));
    let sum: f32 = out.iter().sum();
    assert!((sum - 7f32.log2()).abs() < 1e-4, "{sum}");
}

#[test]
fn precomputed_neighbours_give_the_exact_searchs_layout_and_bad_ones_are_refused() {
    let (xs, _) = strokes(100);
    let p = Points::new(&xs, 2).unwrap();
    let cfg = UmapConfig {
        neighbors: 10,
        ..UmapConfig::new(2)
    };
    let found = nearest(&p, 9, Search::Auto).unwrap();
    let (idx, dist) = (found.parts().0.to_vec(), found.parts().1.to_vec());
    let known = Neighbours::new(p.len(), 9, idx.clone(), dist.clone()).unwrap();
    assert_eq!(
        layout_with(&p, &cfg, Some(&known)).unwrap(),
        layout(&p, &cfg).unwrap()
    );
    let n2d_known = N2dConfig {
        k: 2,
        seed: 0,
        mixture: Mixture::BestStart,
        neighbours: None,
    };
    let needed = N2dConfig::neighbours_needed(p.len(), 2);
    let known2 = nearest(&p, needed, Search::Auto).unwrap();
    assert_eq!(
        N2dConfig {
            neighbours: Some(&known2),
            ..n2d_known
        }
        .fit(&p)
        .unwrap(),
        n2d_known.fit(&p).unwrap()
    );
    // Too few per point for the graph, a point among its own neighbours, a row out of order.
    let fewer = Neighbours::new(
        p.len(),
        1,
        idx.iter().step_by(9).copied().collect(),
        dist.iter().step_by(9).copied().collect(),
    )
    .unwrap();
    assert!(layout_with(&p, &cfg, Some(&fewer)).is_err());
    let mut own = idx.clone();
    own[0] = 0;
    assert!(Neighbours::new(p.len(), 9, own, dist.clone()).is_err());
    let mut unordered = dist.clone();
    unordered[0] = unordered[1] + 1.0;
    assert!(Neighbours::new(p.len(), 9, idx.clone(), unordered).is_err());
    assert!(Neighbours::new(p.len(), 9, idx, vec![0.0; 3]).is_err());
}

#[test]
fn the_graph_is_symmetric_and_unions_both_directions() {
    let (xs, _) = strokes(30);
    let found = nearest(&Points::new(&xs, 2).unwrap(), 4, Search::Auto).unwrap();
    let edges = graph(found.parts().0, found.parts().1, 5);
    let mut seen = std::collections::HashMap::new();
    for &(i, j, w) in &edges {
        assert_ne!(i, j);
        assert!(w > 0.0 && w <= 1.0, "{w}");
        assert!(seen.insert((i, j), w).is_none(), "edge {i}->{j} twice");
    }
    for (&(i, j), &w) in &seen {
        assert_eq!(seen.get(&(j, i)), Some(&w));
    }
}

#[test]
fn the_similarity_curve_matches_umap_learn() {
    // umap-learn 0.5.12: find_ab_params(1.0, 0.0) and find_ab_params(1.0, 0.1).
    for (min_dist, want) in [(0.0, (1.932808, 0.790495)), (0.1, (1.576943, 0.895061))] {
        let (a, b) = curve(min_dist);
        assert!(
            (a - want.0).abs() < 1e-3 && (b - want.1).abs() < 1e-3,
            "{a} {b}"
        );
    }
}

#[test]
fn bad_settings_are_named() {
    let xs = [0.0f32, 1.0, 2.0, 3.0];
    let p = Points::new(&xs, 1).unwrap();
    for (cfg, name) in [
        (UmapConfig::new(0), "components"),
        (UmapConfig::new(2), "neighbors"),
        (
            UmapConfig {
                neighbors: 2,
                min_dist: -0.5,
                ..UmapConfig::new(2)
            },
            "min_dist",
        ),
        (
            UmapConfig {
                neighbors: 2,
                epochs: 0,
                ..UmapConfig::new(2)
            },
            "epochs",
        ),
    ] {
        match layout(&p, &cfg) {
            Err(ClusterError::Parameter { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}
