//! The forward pass against Keras' own features, and errors naming missing or misshapen
//! tensors.

use fruits_model::{MobileNetV2, FEATURES, INPUT_LEN};

#[test]
fn features_match_keras_on_sample_81() {
    let Some(shared) = fruits_testkit::shared("models/mobilenet_v2_1.0_224") else {
        return;
    };
    let dir = shared.join("reference/keras-mobilenet-v2/sample-81");
    let net = MobileNetV2::from_tensors(
        &fruits_weights::read(&shared.join("models/mobilenet_v2_1.0_224")).unwrap(),
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
    // Every kernel set this CPU runs keeps the bound; the fastest (the one runs use) is kept.
    let mut fastest: Option<(MobileNetV2, Vec<f32>)> = None;
    for kernels in MobileNetV2::kernel_sets() {
        let net = net.clone().with_kernels(kernels).unwrap();
        let mut features = vec![0.0f32; n * FEATURES];
        net.forward(&input, &mut features, 2);
        let max = features
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!("{kernels}: max |ours - keras| over {n} images x {FEATURES}: {max:e}");
        assert!(max < 8e-5, "{kernels}: max abs difference {max}");
        fastest.get_or_insert((net, features));
    }
    let (net, got) = fastest.unwrap();

    // Batch composition and threading do not change a feature row.
    let mut one = vec![0.0f32; FEATURES];
    net.forward(&input[5 * INPUT_LEN..6 * INPUT_LEN], &mut one, 1);
    assert_eq!(&one[..], &got[5 * FEATURES..6 * FEATURES]);
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    fruits_testkit::synthetic_weights(dir.path(), 7);
    let t = fruits_weights::read(dir.path()).unwrap();
    let net = MobileNetV2::from_tensors(&t).unwrap();
    let mut out = vec![0.0f32; FEATURES];
    net.forward(&vec![0.25f32; INPUT_LEN], &mut out, 1);
    assert!(out.iter().all(|v| v.is_finite() && (0.0..=6.0).contains(v)));

    std::fs::remove_file(dir.path().join("expanded_conv_3_project_weights.npy")).unwrap();
    let err = MobileNetV2::from_tensors(&fruits_weights::read(dir.path()).unwrap())
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
    let err = MobileNetV2::from_tensors(&fruits_weights::read(dir.path()).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "expanded_conv_3_project_weights has shape [1, 1, 144, 16], expected [1, 1, 144, 32]"
        ),
        "{err}"
    );
}
