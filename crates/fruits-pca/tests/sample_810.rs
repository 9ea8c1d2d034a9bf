//! PCA on the real Keras features of sample-810 against the figures numpy gives.

use fruits_pca::{fit, Components, PartialSums};

#[test]
fn components_for_variance_targets_match_numpy() {
    let Some(shared) = fruits_testkit::shared("reference/keras-mobilenet-v2/sample-810") else {
        return;
    };
    let a = fruits_npy::Array::read(
        shared.join("reference/keras-mobilenet-v2/sample-810/features.npy"),
    )
    .unwrap();
    let x = a.to_f32().unwrap();
    let dim = a.shape[1];
    // Fold in uneven batches, as partitions would.
    let mut sums = PartialSums::new(dim);
    for chunk in x.chunks(dim * 97) {
        let mut part = PartialSums::new(dim);
        part.add_rows(chunk);
        sums.merge(&part).unwrap();
    }
    let t = std::time::Instant::now();
    let m90 = fit(&sums, Components::Variance(0.90)).unwrap();
    println!("fit 1280x1280 in {:?}", t.elapsed());
    let m95 = fit(&sums, Components::Variance(0.95)).unwrap();
    // shared/README.md: 181 components hold 90 %, 278 hold 95 % (numpy on the standardised features).
    assert_eq!((m90.k(), m95.k()), (181, 278));
    // Projected training rows have (sample) variance equal to the eigenvalue, and mean 0.
    let n = a.shape[0];
    let mut col0 = Vec::with_capacity(n);
    let mut y = vec![0.0f32; m90.k()];
    for row in x.chunks_exact(dim) {
        m90.project(row, &mut y);
        col0.push(y[0] as f64);
    }
    let mean = col0.iter().sum::<f64>() / n as f64;
    let var = col0.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let total: f64 = m90.std().iter().filter(|s| **s > 0.0).count() as f64;
    assert!(mean.abs() < 1e-4, "{mean}");
    assert!((var / total - m90.explained_variance_ratio()[0]).abs() < 1e-5);

    // Every explained variance ratio against numpy's (`tests/numpy/sample_810_evr.py`).
    let numpy = fruits_npy::Array::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/numpy/sample-810-evr.npy"
    ))
    .unwrap()
    .to_f64()
    .unwrap();
    let ours = m95.explained_variance_ratio();
    assert_eq!(numpy.len(), ours.len());
    let max = ours
        .iter()
        .zip(&numpy)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f64, f64::max);
    println!("explained variance ratios: max |fruits - numpy| = {max:e}");
    assert!(max < 2e-15, "{max:e}");
}
