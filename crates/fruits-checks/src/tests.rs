use super::*;

/// Seeded uniform values in [-1, 1).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

#[test]
fn nearest_equals_brute_force() {
    let (n, d, k) = (700, 33, 4);
    let x = noise(1, n * d);
    let unit = Unit::new(&x, d);
    let nn = nearest(&unit, &unit, k, true);
    let cos = |i: usize, j: usize| {
        let (a, b) = (&x[i * d..(i + 1) * d], &x[j * d..(j + 1) * d]);
        let dot: f32 = a.iter().zip(b).map(|(p, q)| p * q).sum();
        let na: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|v| v * v).sum::<f32>().sqrt();
        dot / na / nb
    };
    for i in 0..n {
        let mut all: Vec<(f32, usize)> =
            (0..n).filter(|&j| j != i).map(|j| (cos(i, j), j)).collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (idx, sim) = nn.of(i);
        for r in 0..k {
            assert_eq!(idx[r] as usize, all[r].1, "row {i} rank {r}");
            assert!((sim[r] - all[r].0).abs() < 1e-5);
        }
    }
}

/// A fixture: `classes` clusters of `per` photos, far apart.
fn clusters(classes: usize, per: usize, d: usize) -> (Vec<f32>, Vec<String>) {
    let centres = noise(7, classes * d);
    let mut x = Vec::new();
    let mut labels = Vec::new();
    for c in 0..classes {
        for p in 0..per {
            let jitter = noise((c * 1000 + p) as u64 + 11, d);
            x.extend(
                centres[c * d..(c + 1) * d]
                    .iter()
                    .zip(&jitter)
                    .map(|(m, j)| m + 0.6 * j),
            );
            labels.push(format!("class {c}"));
        }
    }
    (x, labels)
}

#[test]
fn planted_duplicates_near_duplicates_and_swapped_labels_are_all_found() {
    let (d, per) = (64, 20);
    let (mut x, mut labels) = clusters(6, per, d);
    let base_near = (0..labels.len())
        .filter(|&i| {
            let n = nearest(&Unit::new(&x, d), &Unit::new(&x, d), 1, true);
            n.of(i).1[0] >= NEAR_DUPLICATE_COSINE
        })
        .count();
    assert_eq!(base_near, 0, "the fixture itself has no near-duplicates");
    let n = labels.len();
    // Exact duplicates: row 3 copied to the end twice; row 50 once.
    for src in [3, 3, 50] {
        let row = x[src * d..(src + 1) * d].to_vec();
        x.extend(row);
        labels.push(labels[src].clone());
    }
    // Near-duplicates: rows 70 and 90 with a little noise, 90's copy under another label.
    for (src, label) in [(70, labels[70].clone()), (90, "class 0".to_string())] {
        let row: Vec<f32> = x[src * d..(src + 1) * d]
            .iter()
            .zip(noise(src as u64, d))
            .map(|(v, e)| v + 0.02 * e)
            .collect();
        x.extend(row);
        labels.push(label);
    }
    // Swapped labels: rows 5 and 105 (classes 0 and 5).
    labels.swap(5, 105);
    let rows = Rows::new(&x, d, &labels).unwrap();
    let found = check(&rows, &Settings::default());
    assert_eq!(
        found.identical_features,
        vec![vec![3, n, n + 1], vec![50, n + 2]]
    );
    let mut groups = found.near_duplicate_groups.clone();
    groups.sort();
    assert_eq!(
        groups,
        vec![
            vec![3, n, n + 1],
            vec![50, n + 2],
            vec![70, n + 3],
            vec![90, n + 4]
        ]
    );
    assert_eq!(found.near_duplicate_rows, 9);
    assert_eq!(
        found
            .cross_label_pairs
            .iter()
            .map(|p| (p.a, p.b))
            .collect::<Vec<_>>(),
        vec![(90, n + 4)]
    );
    let mut suspects: Vec<(usize, &str)> = found
        .mislabels
        .iter()
        .map(|m| (m.row, m.suggested.as_str()))
        .collect();
    suspects.sort();
    // The copy of row 90 filed under "class 0" is a planted mislabel too.
    assert_eq!(
        suspects,
        vec![(5, "class 0"), (105, "class 5"), (n + 4, "class 4")]
    );
}

#[test]
fn a_planted_overlap_leaks_and_nothing_else() {
    let d = 64;
    let (train, _) = clusters(4, 30, d);
    let (mut test, _) = clusters(4, 30, d);
    // The "test" clusters are the same classes with other jitter: similar, not duplicates.
    for v in test.iter_mut() {
        *v = -*v;
    }
    assert!(leakage(&test, &train, d, &Settings::default()).is_empty());
    for src in [7usize, 77] {
        let row: Vec<f32> = train[src * d..(src + 1) * d]
            .iter()
            .map(|v| v * 1.01)
            .collect();
        test.extend(row);
    }
    let leaks = leakage(&test, &train, d, &Settings::default());
    let mut got: Vec<(usize, usize)> = leaks.iter().map(|p| (p.a, p.b)).collect();
    got.sort();
    assert_eq!(got, vec![(120, 7), (121, 77)]);
    assert!(leaks.iter().all(|p| p.cosine > 0.9999));
}

#[test]
fn samples_are_even_and_whole_when_small() {
    assert_eq!(sample(5, 10), vec![0, 1, 2, 3, 4]);
    assert_eq!(sample(10, 4), vec![0, 2, 5, 7]);
}

#[test]
fn rows_of_the_wrong_shape_are_refused() {
    assert!(Rows::new(&[1.0; 5], 2, &["a", "b"]).is_err());
}
