//! The whole pipeline on generated photos (no ../shared needed) and on real ones.

use std::path::Path;
use std::sync::Arc;

use fruits_engine::{EngineError, ExtractConfig, InProcess, PcaSpec, Progress, Summary};
use fruits_model::MobileNetV2;
use fruits_pca::{Components, PcaModel};

fn synthetic_model() -> Arc<MobileNetV2> {
    let dir = tempfile::tempdir().unwrap();
    fruits_testkit::synthetic_weights(dir.path(), 3);
    Arc::new(MobileNetV2::from_tensors(&fruits_weights::read(dir.path()).unwrap()).unwrap())
}

/// Runs the job in-process on 2 threads.
async fn extract(cfg: &ExtractConfig, progress: Arc<Progress>) -> Result<Summary, EngineError> {
    fruits_engine::extract(cfg, &InProcess::new(2), progress).await
}

fn config(input: &Path, output: &Path, model: Arc<MobileNetV2>, pca: PcaSpec) -> ExtractConfig {
    ExtractConfig {
        input: input.display().to_string(),
        output: output.display().to_string(),
        weights: Default::default(),
        model: Some(model),
        pca,
        overwrite: false,
        update: false,
        batch_size: 4,
        limits: Default::default(),
        s3: Default::default(),
        report: true,
        format: fruits_engine::Format::Parquet,
    }
}

use fruits_testkit::read_rows;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extract_skips_bad_images_and_commits_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("Test");
    fruits_testkit::write_photo_tree(&input, 3, 4);
    let good = std::fs::read(input.join("Class 0/r_0_100.jpg")).unwrap();
    std::fs::write(
        input.join("Class 1/corrupt.jpg"),
        b"\xFF\xD8\xFF\xE0garbage",
    )
    .unwrap();
    std::fs::write(input.join("Class 1/empty.jpg"), b"").unwrap();
    std::fs::write(input.join("Class 2/text.jpg"), b"this is not an image").unwrap();
    std::fs::write(input.join("Class 2/truncated.jpg"), &good[..good.len() / 2]).unwrap();
    std::fs::write(input.join("Class 2/readme.txt"), b"ignored").unwrap();
    let output = dir.path().join("out");
    let model = synthetic_model();

    let cfg = config(
        &input,
        &output,
        model.clone(),
        PcaSpec::Fit(Components::K(5)),
    );
    let progress = Arc::new(Progress::default());
    let s = extract(&cfg, progress.clone()).await.unwrap();
    assert_eq!(
        (s.images, s.rows, s.skipped, s.classes, s.k),
        (16, 12, 4, 3, 5)
    );
    assert_eq!(progress.done.load(std::sync::atomic::Ordering::Relaxed), 16);

    let rows = read_rows(&output);
    assert_eq!(rows.len(), 12);
    assert!(rows.iter().all(|r| r.2.len() == 1280 && r.3.len() == 5));
    assert!(
        rows[0].0.starts_with("file:///") && rows[0].0.ends_with("/Test/Class 0/r_0_100.jpg"),
        "{}",
        rows[0].0
    );
    assert_eq!(rows[0].1, "Class 0");
    // features_pca is the saved PCA applied to features.
    let pca = PcaModel::from_files(|n| std::fs::read(output.join("_pca").join(n))).unwrap();
    let mut y = vec![0.0f32; 5];
    pca.project(&rows[7].2, &mut y);
    assert_eq!(y, rows[7].3);
    // The errors name each bad file; the marker is there; no staging folder is left.
    let errors: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join("_errors.json")).unwrap()).unwrap();
    let errors = errors.as_array().unwrap();
    assert_eq!(errors.len(), 4);
    let text = serde_json::to_string(errors).unwrap();
    for bad in ["corrupt.jpg", "empty.jpg", "text.jpg", "truncated.jpg"] {
        assert!(text.contains(bad), "{bad} missing from {text}");
    }
    assert!(
        text.contains("truncated")
            && text.contains("not a JPEG or PNG")
            && text.contains("empty file"),
        "{text}"
    );
    assert!(output.join("_SUCCESS").is_file());
    // Beside the input and the output only the (empty, hidden) lock file: no staging.
    let mut leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    leftovers.sort();
    assert_eq!(leftovers, [".out.fruits-lock", "Test", "out"]);

    // A second run refuses to replace the result unless asked, and leaves it intact.
    let before = std::fs::read(output.join("_SUCCESS")).unwrap();
    let err = extract(&cfg, Arc::default()).await.unwrap_err();
    assert!(
        err.to_string().contains("already exists") && err.to_string().contains("--overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read(output.join("_SUCCESS")).unwrap(), before);
    let mut again = cfg.clone();
    again.overwrite = true;
    again.pca = PcaSpec::Fit(Components::Variance(0.9));
    let s2 = extract(&again, Arc::default()).await.unwrap();
    assert_eq!(s2.rows, 12);
    let rows2 = read_rows(&output);
    assert_eq!(rows2.len(), 12, "old parts replaced, not added to");
    assert_eq!(rows2[3].2, rows[3].2, "features do not depend on the run");
    assert_eq!(rows2[0].3.len(), s2.k);

    // `project`: the saved PCA applied to photos gives the same features_pca.
    let projected = dir.path().join("projected");
    let p = config(
        &input,
        &projected,
        model,
        PcaSpec::Apply {
            model: Arc::new(pca),
            from: output.join("_pca").display().to_string(),
        },
    );
    let s3 = extract(&p, Arc::default()).await.unwrap();
    assert_eq!((s3.rows, s3.k), (12, 5));
    let rows3 = read_rows(&projected);
    for (a, b) in rows3.iter().zip(&rows) {
        assert_eq!(a.0, b.0);
        assert_eq!(a.3, b.3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_or_missing_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("Kiwi")).unwrap();
    std::fs::write(empty.join("Kiwi/notes.txt"), b"x").unwrap();
    let model = synthetic_model();
    let out = dir.path().join("out");
    let err = extract(
        &config(&empty, &out, model.clone(), PcaSpec::Fit(Components::K(2))),
        Arc::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, EngineError::NoImages(_)), "{err}");
    assert!(err.to_string().contains("/empty"), "{err}");
    let err = extract(
        &config(
            &dir.path().join("nope"),
            &out,
            model,
            PcaSpec::Fit(Components::K(2)),
        ),
        Arc::default(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("input not found") && err.to_string().contains("/nope"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written for a failed run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_features_match_keras_on_sample_810() {
    let Some(shared) = fruits_testkit::shared("reference/keras-mobilenet-v2/sample-810") else {
        return;
    };
    let reference = shared.join("reference/keras-mobilenet-v2/sample-810");
    let paths = std::fs::read_to_string(reference.join("paths.txt")).unwrap();
    let want = fruits_npy::Array::read(reference.join("features.npy"))
        .unwrap()
        .to_f32()
        .unwrap();
    // Lay the 810 photos out as <label>/<file>, as the pipeline reads them.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("Test");
    let mut expected = std::collections::HashMap::new();
    for (i, rel) in paths.lines().filter(|l| !l.is_empty()).enumerate() {
        let src = shared.join(rel);
        let label = src.parent().unwrap().file_name().unwrap();
        let dst = input.join(label).join(src.file_name().unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&src, &dst).unwrap();
        expected.insert(
            format!(
                "{}/{}",
                label.to_str().unwrap(),
                src.file_name().unwrap().to_str().unwrap()
            ),
            i,
        );
    }
    let weights = shared.join("models/mobilenet_v2_1.0_224");
    let model =
        Arc::new(MobileNetV2::from_tensors(&fruits_weights::read(&weights).unwrap()).unwrap());
    let output = dir.path().join("out");
    let mut cfg = config(
        &input,
        &output,
        model,
        PcaSpec::Fit(Components::Variance(0.95)),
    );
    cfg.batch_size = 32;
    let s = extract(&cfg, Arc::default()).await.unwrap();
    assert_eq!((s.rows, s.skipped, s.classes), (810, 0, 81));
    // shared/README.md: 278 components hold 95 % of the variance of these features.
    assert_eq!(s.k, 278);
    let mut max = 0.0f32;
    for (path, _, features, _) in read_rows(&output) {
        let key = path.rsplit_once("/Test/").unwrap().1;
        let i = expected[key];
        for (a, b) in features.iter().zip(&want[i * 1280..(i + 1) * 1280]) {
            max = max.max((a - b).abs());
        }
    }
    println!("end to end from JPEG files: max |ours - keras| = {max:e}");
    assert!(max < 8e-5, "{max}");
}

/// Every file below `dir` with its bytes, sorted.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    fruits_testkit::files_below(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_over_the_input_weights_or_pca_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("data/Test");
    fruits_testkit::write_photo_tree(&input, 2, 2);
    let weights = dir.path().join("data/weights");
    fruits_testkit::synthetic_weights(&weights, 3);
    let model = synthetic_model();
    let before = snapshot(dir.path());
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path().join("data"), &link).unwrap();
    for (output, what) in [
        (input.clone(), "input"),
        (dir.path().join("data"), "input"),
        (input.join("Class 0"), "input"),
        (input.join("new/out"), "input"),
        (link.join("Test"), "input"),
        (weights.join("out"), "weights"),
    ] {
        let mut cfg = config(
            &input,
            &output,
            model.clone(),
            PcaSpec::Fit(Components::K(1)),
        );
        cfg.overwrite = true;
        cfg.weights = fruits_engine::ModelSource::new(
            Some(weights.display().to_string()),
            &Default::default(),
        );
        let err = extract(&cfg, Arc::default()).await.unwrap_err().to_string();
        assert!(
            err.contains("overlaps the") && err.contains(what),
            "{}: {err}",
            output.display()
        );
        std::fs::remove_file(&link).ok();
        assert_eq!(snapshot(dir.path()), before, "{}", output.display());
        std::os::unix::fs::symlink(dir.path().join("data"), &link).unwrap();
    }
    // A saved PCA read by `project` is protected the same way.
    let pca_dir = dir.path().join("result/_pca");
    let mut sums = fruits_pca::PartialSums::new(4);
    sums.add_rows(&[1., 2., 3., 4., 2., 1., 0., 1., 0., 0., 1., 3.]);
    std::fs::create_dir_all(&pca_dir).unwrap();
    let mut cfg = config(
        &input,
        &dir.path().join("result"),
        model,
        PcaSpec::Apply {
            model: Arc::new(fruits_pca::fit(&sums, Components::K(1)).unwrap()),
            from: pca_dir.display().to_string(),
        },
    );
    cfg.overwrite = true;
    let err = extract(&cfg, Arc::default()).await.unwrap_err().to_string();
    assert!(err.contains("overlaps the saved PCA"), "{err}");
    // A sibling whose name starts like the input is not inside it.
    let mut ok = config(
        &input,
        &dir.path().join("data/Test-features"),
        synthetic_model(),
        PcaSpec::Fit(Components::K(1)),
    );
    ok.overwrite = true;
    extract(&ok, Arc::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_in_any_script_and_with_url_characters_are_read_and_shown_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("josé [1] 50%/Test #2");
    let names = [
        ("Maracujá", "1.jpg"),
        ("Maracujá", "50%.jpg"),
        ("Яблоко 50%", "a b+c.jpg"),
        ("橙子 #1+~[x]", "c#d+e~f[g].jpg"),
        ("مانجو", "%C3%A9.jpg"),
        ("Kiwi", "ü ñ ß.JPG"),
    ];
    for (i, (label, file)) in names.iter().enumerate() {
        let folder = input.join(label);
        std::fs::create_dir_all(&folder).unwrap();
        let jpeg = fruits_testkit::encode_jpeg(100, 100, &fruits_testkit::fruit_pixels(i, i));
        std::fs::write(folder.join(file), jpeg).unwrap();
    }
    let output = dir.path().join("out é");
    let cfg = config(
        &input,
        &output,
        synthetic_model(),
        PcaSpec::Fit(Components::K(2)),
    );
    let s = extract(&cfg, Arc::default()).await.unwrap();
    assert_eq!(
        (s.images, s.rows, s.skipped),
        (6, 6, 0),
        "{:?}",
        s.skipped_sample
    );
    let rows = read_rows(&output);
    let mut got: Vec<(String, String)> = rows.iter().map(|r| (r.0.clone(), r.1.clone())).collect();
    got.sort();
    let mut want: Vec<(String, String)> = names
        .iter()
        .map(|(label, file)| {
            (
                format!("file://{}/{label}/{file}", input.display()),
                label.to_string(),
            )
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
}
