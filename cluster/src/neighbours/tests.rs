use super::*;
use crate::rng;
use rand::Rng;

/// The brute-force scan for point `i`: every other point, ascending by (distance, index), the
/// first `m`.
pub(super) fn scan_row(p: &Points<'_>, i: usize, m: usize) -> Vec<(f32, u32)> {
    let x = p.row(i);
    let mut all: Vec<(f32, u32)> = p
        .rows()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .map(|(j, y)| {
            (
                x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum(),
                j as u32,
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.truncate(m);
    all
}

/// [`scan_row`] for every point.
fn scan(p: &Points<'_>, m: usize) -> Vec<Vec<(f32, u32)>> {
    (0..p.len()).map(|i| scan_row(p, i, m)).collect()
}

fn rows(nb: &Neighbours) -> Vec<Vec<(u32, f32)>> {
    let (idx, dist) = nb.parts();
    idx.chunks(nb.m())
        .zip(dist.chunks(nb.m()))
        .map(|(i, d)| i.iter().copied().zip(d.iter().copied()).collect())
        .collect()
}

#[test]
fn neighbours_are_the_nearest_others_in_order() {
    // Points on a line at 0, 1, 3, 6, 10.
    let xs = [0.0f32, 1.0, 3.0, 6.0, 10.0];
    let p = Points::new(&xs, 1).unwrap();
    for search in [Search::Auto, Search::Tree, Search::Products] {
        let nb = nearest(&p, 2, search).unwrap();
        assert_eq!(nb.parts().0, [1, 2, 0, 2, 1, 0, 2, 4, 3, 2]);
        assert_eq!(
            nb.parts().1,
            [1.0, 3.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 7.0]
        );
        // Every point has 4 others: asking for none or for 5 is an error, not ragged rows.
        for m in [0, 5] {
            match nearest(&p, m, search) {
                Err(ClusterError::Parameter { name, .. }) => assert_eq!(name, "neighbours"),
                other => panic!("m = {m}: {other:?}"),
            }
        }
    }
}

#[test]
fn every_search_answers_what_the_scan_answers() {
    // Low and high dimensions, clustered and uniform, with exact ties from a lattice.
    for (n, d) in [(300, 2), (700, 10), (400, 40), (130, 17)] {
        let mut r = rng(d as u64, 0);
        let centres: Vec<f32> = (0..4 * d).map(|_| r.random_range(-5.0..5.0f32)).collect();
        let xs: Vec<f32> = (0..n)
            .flat_map(|i| {
                let c = (i % 4) * d;
                let lattice = i % 7 == 0;
                (0..d)
                    .map(|k| {
                        if lattice {
                            (k % 3) as f32
                        } else {
                            centres[c + k] + r.random_range(-1.0..1.0f32)
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let p = Points::new(&xs, d).unwrap();
        let want = scan(&p, 12);
        for search in [Search::Auto, Search::Tree, Search::Products] {
            let got = nearest(&p, 12, search).unwrap();
            let want_rows: Vec<Vec<(u32, f32)>> = want
                .iter()
                .map(|r| r.iter().map(|&(d2, j)| (j, d2.sqrt())).collect())
                .collect();
            assert_eq!(rows(&got), want_rows, "n={n} d={d} {search:?}");
        }
    }
}

#[test]
fn queries_against_other_points_find_their_nearest() {
    let mut r = rng(3, 0);
    for d in [3, 24] {
        let reference: Vec<f32> = (0..200 * d).map(|_| r.random_range(-1.0..1.0f32)).collect();
        let queries: Vec<f32> = (0..50 * d).map(|_| r.random_range(-1.0..1.0f32)).collect();
        let (rp, qp) = (
            Points::new(&reference, d).unwrap(),
            Points::new(&queries, d).unwrap(),
        );
        for search in [Search::Tree, Search::Products] {
            let got = nearest_in(&rp, &qp, 5, search).unwrap();
            for (q, row) in qp.rows().zip(&got) {
                let mut all: Vec<(f32, u32)> = rp
                    .rows()
                    .enumerate()
                    .map(|(j, y)| {
                        (
                            q.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum(),
                            j as u32,
                        )
                    })
                    .collect();
                all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                assert_eq!(row[..], all[..5], "d={d} {search:?}");
            }
        }
        // A query point may be as close as a reference point: m up to all of them.
        assert_eq!(
            nearest_in(&rp, &qp, 200, Search::Auto).unwrap()[0].len(),
            200
        );
        assert!(nearest_in(&rp, &qp, 201, Search::Auto).is_err());
        assert!(nearest_in(&rp, &qp, 0, Search::Auto).is_err());
        let other = Points::new(&queries[..48], 4).unwrap();
        assert!(matches!(
            nearest_in(&rp, &other, 1, Search::Auto),
            Err(ClusterError::Shape { .. })
        ));
    }
}

#[test]
fn auto_takes_the_tree_in_few_dimensions_and_the_products_above() {
    assert_eq!(Search::Auto.resolve(10), Search::Tree);
    assert_eq!(Search::Auto.resolve(TREE_MAX_DIM), Search::Tree);
    assert_eq!(Search::Auto.resolve(TREE_MAX_DIM + 1), Search::Products);
    assert_eq!(Search::Products.resolve(2), Search::Products);
    assert_eq!(Search::Tree.resolve(784), Search::Tree);
}
