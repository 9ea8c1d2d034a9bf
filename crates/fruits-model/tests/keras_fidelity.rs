//! The forward pass against Keras' own features, and weight-loading errors.

use fruits_model::{MobileNetV2, Tensors, FEATURES, INPUT_LEN};

#[test]
fn features_match_keras_on_sample_81() {
    let Some(shared) = fruits_testkit::shared("models/mobilenet_v2_1.0_224") else {
        return;
    };
    let dir = shared.join("reference/keras-mobilenet-v2/sample-81");
    let net = MobileNetV2::from_tensors(
        &Tensors::read(&shared.join("models/mobilenet_v2_1.0_224")).unwrap(),
    )
    .unwrap();
    let pixels = fruits_npy::Array::read(dir.join("resized_u8.npy")).unwrap();
    let want = fruits_npy::Array::read(dir.join("features.npy"))
        .unwrap()
        .to_f32()
        .unwrap();
    let n = pixels.shape[0];
    let input: Vec<f32> = pixels
        .data
        .iter()
        .map(|&p| p as f32 / 127.5 - 1.0)
        .collect();
    assert_eq!(input.len(), n * INPUT_LEN);
    let mut got = vec![0.0f32; n * FEATURES];
    net.forward(&input, &mut got, 2);
    let max = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("max |ours - keras| over {n} images x {FEATURES}: {max:e}");
    assert!(max < 8e-5, "max abs difference {max}");

    // Batch composition and threading do not change a feature row.
    let mut one = vec![0.0f32; FEATURES];
    net.forward(&input[5 * INPUT_LEN..6 * INPUT_LEN], &mut one, 1);
    assert_eq!(&one[..], &got[5 * FEATURES..6 * FEATURES]);
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    fruits_testkit::synthetic_weights(dir.path(), 7);
    let t = Tensors::read(dir.path()).unwrap();
    let net = MobileNetV2::from_tensors(&t).unwrap();
    let mut out = vec![0.0f32; FEATURES];
    net.forward(&vec![0.25f32; INPUT_LEN], &mut out, 1);
    assert!(out.iter().all(|v| v.is_finite() && (0.0..=6.0).contains(v)));

    std::fs::remove_file(dir.path().join("expanded_conv_3_project_weights.npy")).unwrap();
    let err = MobileNetV2::from_tensors(&Tensors::read(dir.path()).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing tensor expanded_conv_3_project_weights"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("expanded_conv_3_project_weights.npy"),
        fruits_npy::to_bytes_f32(&[1, 1, 144, 16], &vec![0.0; 144 * 16]),
    )
    .unwrap();
    let err = MobileNetV2::from_tensors(&Tensors::read(dir.path()).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "expanded_conv_3_project_weights has shape [1, 1, 144, 16], expected [1, 1, 144, 32]"
        ),
        "{err}"
    );

    let err = fruits_model::load(Some(&dir.path().join("nope")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("weights not found at") && err.contains("nope"),
        "{err}"
    );
}

#[test]
fn keras_h5_holds_the_same_tensors_as_the_npy_folder() {
    let Some(shared) = fruits_testkit::shared("models/keras") else {
        return;
    };
    let h5 = shared
        .join("models/keras")
        .join(fruits_model::weights::KERAS_FILE);
    let from_h5 = Tensors::read(&h5).unwrap();
    let from_npy = Tensors::read(&shared.join("models/mobilenet_v2_1.0_224")).unwrap();
    let names = fruits_testkit::mobilenet_v2_tensors();
    assert_eq!(from_h5.len(), names.len(), "every tensor, nothing else");
    for (name, shape) in names {
        assert_eq!(
            from_h5.take(&name, &shape).unwrap(),
            from_npy.take(&name, &shape).unwrap(),
            "{name}"
        );
    }
    MobileNetV2::from_tensors(&from_h5).unwrap();
}
