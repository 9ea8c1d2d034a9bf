//! `--mode update`: after photos are added, changed and deleted, an update featurises only
//! the new and changed ones, and its result equals a full run on the final input.

use std::path::Path;
use std::sync::Arc;

use fruits_engine::{ExtractConfig, InProcess, PcaSpec, Progress, Summary};
use fruits_model::MobileNetV2;
use fruits_pca::Components;
use fruits_testkit::{read_rows, Row};

fn model(seed: u64) -> Arc<MobileNetV2> {
    let dir = tempfile::tempdir().unwrap();
    fruits_testkit::synthetic_weights(dir.path(), seed);
    Arc::new(MobileNetV2::from_tensors(&fruits_weights::read(dir.path()).unwrap()).unwrap())
}

async fn run(input: &Path, output: &Path, model: Arc<MobileNetV2>, update: bool) -> Summary {
    let cfg = ExtractConfig {
        input: input.display().to_string(),
        output: output.display().to_string(),
        weights: Default::default(),
        model: Some(model),
        pca: PcaSpec::Fit(Components::K(5)),
        overwrite: false,
        update,
        batch_size: 4,
        limits: Default::default(),
        s3: Default::default(),
        report: false,
        format: fruits_engine::Format::Parquet,
    };
    fruits_engine::extract(&cfg, &InProcess::new(2), Arc::new(Progress::default()))
        .await
        .unwrap()
}

/// Photos featurised by this run (not copied from the previous result).
fn featurised(s: &Summary) -> u64 {
    s.workers.values().sum()
}

fn photo(path: &Path, class: usize, index: usize) {
    let jpeg = fruits_testkit::encode_jpeg(100, 100, &fruits_testkit::fruit_pixels(class, index));
    std::fs::write(path, jpeg).unwrap();
}

/// Same rows, identical features, PCA equal up to the sign of each component.
fn assert_same(a: &[Row], b: &[Row]) {
    assert_eq!(a.len(), b.len());
    for j in 0..a[0].3.len() {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| (x.3[j] * y.3[j]) as f64).sum();
        let sign = if dot < 0.0 { -1.0 } else { 1.0 };
        for (x, y) in a.iter().zip(b) {
            let (p, q) = (x.3[j], sign * y.3[j]);
            assert!(
                (p - q).abs() <= 1e-6 * p.abs().max(1.0),
                "component {j} of {}: {p} vs {q}",
                x.0
            );
        }
    }
    for (x, y) in a.iter().zip(b) {
        assert_eq!((&x.0, &x.1), (&y.0, &y.1));
        assert_eq!(x.2, y.2, "features of {}", x.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_featurises_only_what_changed_and_equals_a_full_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("Test");
    fruits_testkit::write_photo_tree(&input, 4, 10);
    std::fs::write(input.join("Class 1/corrupt.jpg"), b"not a jpeg").unwrap();
    let out = dir.path().join("out");
    let weights = model(3);
    let first = run(&input, &out, weights.clone(), false).await;
    assert_eq!((first.rows, first.skipped), (40, 1));

    // 10 % new photos, two changed, two deleted.
    for i in 0..4 {
        photo(&input.join(format!("Class {i}/new_{i}.jpg")), i, 50 + i);
    }
    photo(&input.join("Class 0/r_0_100.jpg"), 3, 77);
    photo(&input.join("Class 2/r_1_100.jpg"), 1, 78);
    let gone = ["Class 3/r_2_100.jpg", "Class 1/r_3_100.jpg"];
    for g in gone {
        assert!(input.join(g).exists(), "{g}");
        std::fs::remove_file(input.join(g)).unwrap();
    }

    let updated = run(&input, &out, weights.clone(), true).await;
    let counts = updated.update.clone().unwrap();
    // The photo skipped last time has no stored features: it is tried again, as new.
    assert_eq!(
        (counts.reused, counts.new, counts.changed, counts.removed),
        (36, 5, 2, 2),
        "{counts:?}"
    );
    assert!(counts.stale.is_none());
    assert_eq!(featurised(&updated), 7, "only the new and changed photos");
    assert_eq!((updated.rows, updated.skipped), (42, 1));

    let full = dir.path().join("full");
    run(&input, &full, weights.clone(), false).await;
    assert_same(&read_rows(&out), &read_rows(&full));

    // An update with nothing to do featurises nothing and changes no row.
    let again = run(&input, &out, weights.clone(), true).await;
    assert_eq!(featurised(&again), 1, "the corrupt photo, tried again");
    assert_eq!(again.update.as_ref().unwrap().reused, 42);
    assert_same(&read_rows(&out), &read_rows(&full));

    // Other weights: nothing is reused, and the run says why.
    let other = run(&input, &out, model(4), true).await;
    let counts = other.update.clone().unwrap();
    assert_eq!(counts.reused, 0, "{counts:?}");
    assert!(
        counts
            .stale
            .as_deref()
            .is_some_and(|why| why.contains("other weights")),
        "{counts:?}"
    );
    assert_eq!(featurised(&other), 43);
    let other_full = dir.path().join("other-full");
    run(&input, &other_full, model(4), false).await;
    assert_same(&read_rows(&out), &read_rows(&other_full));
}
