//! Both weight formats, and how lookup and reading fail.

#[test]
fn keras_h5_holds_the_same_tensors_as_the_npy_folder() {
    let Some(shared) = fruits_testkit::shared("models/keras") else {
        return;
    };
    let h5 = shared.join("models/keras").join(fruits_weights::KERAS_FILE);
    let from_h5 = fruits_weights::read(&h5).unwrap();
    let from_npy = fruits_weights::read(&shared.join("models/mobilenet_v2_1.0_224")).unwrap();
    let names = fruits_model::tensor_shapes();
    assert_eq!(from_h5.len(), names.len(), "every tensor, nothing else");
    for (name, shape) in names {
        assert_eq!(
            from_h5.take(&name, &shape).unwrap(),
            from_npy.take(&name, &shape).unwrap(),
            "{name}"
        );
    }
    fruits_model::MobileNetV2::from_tensors(&from_h5).unwrap();
}

#[test]
fn missing_weights_are_named_and_given_weights_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let err = fruits_weights::read(&dir.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("weights not found at") && err.contains("nope"),
        "{err}"
    );
    let given = dir.path().join("w").display().to_string();
    assert_eq!(fruits_weights::locate(Some(&given)).unwrap(), given);
}

#[tokio::test]
async fn resolve_reads_a_local_npy_folder() {
    let dir = tempfile::tempdir().unwrap();
    fruits_testkit::synthetic_weights(dir.path(), 7);
    let uri = dir.path().display().to_string();
    let s3 = fruits_store::S3Settings::default();
    let w = fruits_weights::resolve(Some(&uri), &s3).await.unwrap();
    assert_eq!(w.uri, uri);
    assert_eq!(w.local, dir.path());
    assert_eq!(w.tensors.len(), fruits_model::tensor_shapes().len());
    fruits_model::MobileNetV2::from_tensors(&w.tensors).unwrap();
}
