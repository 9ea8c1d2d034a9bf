//! Listing and the publish protocol on the local file system.

use fruits_store::{Location, Staging, StoreError};

#[tokio::test]
async fn lists_images_recursively_with_parent_folder_labels() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Test");
    for (rel, body) in [
        ("Apple Golden 1/r_87_100.jpg", "a"),
        ("Apple Golden 1/b.JPEG", "b"),
        ("Kiwi/deeper/k.png", "c"),
        ("Kiwi/notes.txt", "d"),
        ("Kiwi/.hidden.jpg", "e"),
        ("_staging/x.jpg", "f"),
        ("top.jpg", "g"),
    ] {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let loc = Location::parse(root.to_str().unwrap()).unwrap();
    let images = loc.list_images().await.unwrap();
    let got: Vec<(String, String)> = images
        .iter()
        .map(|i| {
            (
                i.uri.rsplit_once("/Test/").unwrap().1.to_string(),
                i.label.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("Apple Golden 1/b.JPEG".into(), "Apple Golden 1".into()),
            (
                "Apple Golden 1/r_87_100.jpg".into(),
                "Apple Golden 1".into()
            ),
            ("Kiwi/deeper/k.png".into(), "deeper".into()),
            ("top.jpg".into(), "Test".into()),
        ]
    );
    assert!(images[0].uri.starts_with("file:///"));
    assert_eq!(&loc.get(&images[0].path).await.unwrap()[..], b"b");
    // The same folder as a file:// URI.
    let same = Location::parse(&format!("file://{}", root.display())).unwrap();
    assert_eq!(same.list_images().await.unwrap(), images);

    let missing = Location::parse(dir.path().join("nope").to_str().unwrap()).unwrap();
    let err = missing.list_images().await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound(ref u) if u.ends_with("/nope")),
        "{err}"
    );
    assert!(Location::parse("ftp://x/y").is_err());
}

#[tokio::test]
async fn staging_publishes_atomically_and_never_clobbers_silently() {
    let dir = tempfile::tempdir().unwrap();
    let out = Location::parse(dir.path().join("out").to_str().unwrap()).unwrap();

    let s = Staging::begin(&out, false, "run1").await.unwrap();
    s.location()
        .put_rel("part-0.parquet", b"one".to_vec())
        .await
        .unwrap();
    assert!(
        !out.exists().await.unwrap(),
        "nothing visible before commit"
    );
    s.commit(b"".to_vec()).await.unwrap();
    assert_eq!(&out.get_rel("part-0.parquet").await.unwrap()[..], b"one");
    assert!(out.get_rel("_SUCCESS").await.is_ok());

    let err = Staging::begin(&out, false, "run2").await.unwrap_err();
    assert!(matches!(err, StoreError::OutputExists(_)), "{err}");

    // Overwrite: the old result stays whole until the new one commits.
    let s = Staging::begin(&out, true, "run3").await.unwrap();
    s.location()
        .put_rel("part-1.parquet", b"two".to_vec())
        .await
        .unwrap();
    assert_eq!(&out.get_rel("part-0.parquet").await.unwrap()[..], b"one");
    s.commit(b"".to_vec()).await.unwrap();
    assert_eq!(&out.get_rel("part-1.parquet").await.unwrap()[..], b"two");
    assert!(
        out.get_rel("part-0.parquet").await.is_err(),
        "no stray part of the old run"
    );

    // An aborted run leaves the committed result and no staging folder behind.
    let s = Staging::begin(&out, true, "run4").await.unwrap();
    s.location()
        .put_rel("part-9.parquet", b"x".to_vec())
        .await
        .unwrap();
    s.abort().await.unwrap();
    assert_eq!(&out.get_rel("part-1.parquet").await.unwrap()[..], b"two");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("out")]);
}
