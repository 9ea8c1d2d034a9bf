//! Listing and the publish protocol on the local file system.

mod common;

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
    let images = loc.list_images().await.unwrap().images;
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
    // A listed URI names its object again, verbatim; another store's does not.
    for image in &images {
        assert_eq!(loc.path_of_uri(&image.uri), Some(image.path.clone()));
    }
    assert_eq!(loc.path_of_uri("s3://bucket/Test/top.jpg"), None);
    // The same folder as a file:// URI.
    let same = Location::parse(&format!("file://{}", root.display())).unwrap();
    assert_eq!(same.list_images().await.unwrap().images, images);

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
        !fruits_store::output_exists(&out).await.unwrap(),
        "nothing visible before commit"
    );
    s.commit(serde_json::json!({})).await.unwrap();
    assert_eq!(
        &out.get_rel("part-0-run1.parquet").await.unwrap()[..],
        b"one"
    );
    assert!(out.get_rel("_SUCCESS").await.is_ok());

    let err = Staging::begin(&out, false, "run2").await.unwrap_err();
    assert!(matches!(err, StoreError::OutputExists(_)), "{err}");

    // Overwrite: the old result stays whole until the new one commits.
    let s = Staging::begin(&out, true, "run3").await.unwrap();
    s.location()
        .put_rel("part-1.parquet", b"two".to_vec())
        .await
        .unwrap();
    assert_eq!(
        &out.get_rel("part-0-run1.parquet").await.unwrap()[..],
        b"one"
    );
    s.commit(serde_json::json!({})).await.unwrap();
    assert_eq!(
        &out.get_rel("part-1-run3.parquet").await.unwrap()[..],
        b"two"
    );
    assert_eq!(
        common::names(&out).await,
        ["_SUCCESS", "part-1-run3.parquet"]
    );

    // An aborted run leaves the committed result and no staging folder behind; a crashed
    // one's staging folder is deleted by the next run.
    let s = Staging::begin(&out, true, "run4").await.unwrap();
    s.location()
        .put_rel("part-9.parquet", b"x".to_vec())
        .await
        .unwrap();
    s.abort().await.unwrap();
    let crashed = dir.path().join(".out.fruits-staging-run5");
    std::fs::create_dir_all(&crashed).unwrap();
    std::fs::write(crashed.join("part-0.parquet"), "x").unwrap();
    let err = Staging::begin(&out, false, "run6").await.unwrap_err();
    assert!(matches!(err, StoreError::OutputExists(_)), "{err}");
    assert_eq!(
        &out.get_rel("part-1-run3.parquet").await.unwrap()[..],
        b"two"
    );
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".out.fruits-lock", "out"]);
}

#[tokio::test]
async fn a_fault_at_any_commit_step_leaves_the_old_or_the_new_result() {
    for exchange in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let out = Location::parse(dir.path().join("out").to_str().unwrap()).unwrap();
        let steps = common::every_step_leaves_old_or_new(&out, exchange).await;
        assert!(steps >= 4, "exchange {exchange}: {steps} steps");
        common::a_second_writer_is_refused(&out).await;
    }
}

#[tokio::test]
async fn odd_entries_are_set_aside_with_a_reason_and_the_listing_goes_on() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Test");
    let kiwi = root.join("Kiwi");
    std::fs::create_dir_all(&kiwi).unwrap();
    for name in ["a.jpg", "z.jpg"] {
        std::fs::write(kiwi.join(name), "x").unwrap();
    }
    // A name with a newline, one with bytes that are not UTF-8, a folder so named, a link
    // to nowhere, and a link back up the tree (a loop).
    std::fs::write(kiwi.join("line\nbreak.jpg"), "x").unwrap();
    let bad = std::ffi::OsStr::from_bytes(b"caf\xe9.jpg");
    std::fs::write(kiwi.join(bad), "x").unwrap();
    let bad_dir = root.join(std::ffi::OsStr::from_bytes(b"Pe\xf1a"));
    std::fs::create_dir_all(&bad_dir).unwrap();
    std::fs::write(bad_dir.join("p.jpg"), "x").unwrap();
    std::os::unix::fs::symlink(root.join("nowhere.jpg"), kiwi.join("gone.jpg")).unwrap();
    std::os::unix::fs::symlink(&root, kiwi.join("loop")).unwrap();
    std::os::unix::fs::symlink(kiwi.join("self.jpg"), kiwi.join("self.jpg")).unwrap();

    let listing = Location::parse(root.to_str().unwrap())
        .unwrap()
        .list_images()
        .await
        .unwrap();
    let names: Vec<&str> = listing
        .images
        .iter()
        .map(|i| i.uri.rsplit_once('/').unwrap().1)
        .collect();
    assert_eq!(names, ["a.jpg", "z.jpg"]);
    let reasons: Vec<String> = listing
        .unlisted
        .iter()
        .map(|u| format!("{} | {}", u.uri, u.error))
        .collect();
    let has = |name: &str, why: &str| {
        assert!(
            reasons.iter().any(|r| r.contains(name) && r.contains(why)),
            "{name} / {why} not in {reasons:#?}"
        )
    };
    has("line\nbreak.jpg", "control character");
    has("caf\u{fffd}.jpg", "not valid UTF-8");
    has("Pe\u{fffd}a", "folder name is not valid UTF-8");
    has("gone.jpg", "broken symbolic link");
    has("Kiwi/loop", "symbolic link loop");
    has("self.jpg", "Too many levels of symbolic links");
    assert_eq!(reasons.len(), 6, "{reasons:#?}");
}

#[test]
fn overlapping_locations() {
    let dir = tempfile::tempdir().unwrap();
    let at = |p: &str| Location::parse(dir.path().join(p).to_str().unwrap()).unwrap();
    assert!(at("a").overlaps(&at("a")));
    assert!(at("a").overlaps(&at("a/b/c")));
    assert!(at("a/b").overlaps(&at("a")));
    assert!(!at("a").overlaps(&at("ab")));
    assert!(!at("a/b").overlaps(&at("a/c")));
    let s3 = |u: &str| Location::parse(u).unwrap();
    assert!(s3("s3://b/Test").overlaps(&s3("s3://b/Test/x")));
    assert!(s3("s3://b").overlaps(&s3("s3://b/Test/")));
    assert!(s3("s3://b/Test/").overlaps(&s3("s3://b/Test")));
    assert!(!s3("s3://b/Test").overlaps(&s3("s3://b/Test2")));
    assert!(!s3("s3://b/Test").overlaps(&s3("s3://c/Test")));
    assert!(!s3("s3://b/Test").overlaps(&at("Test")));
}
