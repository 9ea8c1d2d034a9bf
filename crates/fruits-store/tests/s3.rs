//! Listing, reading and the publish protocol against a real S3 server (s3s-fs) on loopback.

mod common;

use fruits_store::{Location, S3Credentials, S3Settings, Staging, StoreError};
use fruits_testkit::{S3Server, S3_ACCESS_KEY, S3_SECRET_KEY};

fn settings(server: &S3Server) -> S3Settings {
    S3Settings {
        endpoint: Some(server.endpoint.clone()),
        region: Some("us-east-1".into()),
        allow_http: true,
        ..S3Settings::default()
    }
}

/// `uri` on the test server, signed with `secret`.
fn open_signed(uri: &str, settings: &S3Settings, secret: &str) -> Location {
    let keys = S3Credentials {
        access_key_id: S3_ACCESS_KEY.into(),
        secret_access_key: secret.into(),
    };
    Location::parse_with_credentials(uri, settings, Some(&keys)).unwrap()
}

/// `uri` on the test server.
fn open(uri: &str, server: &S3Server) -> Location {
    open_signed(uri, &settings(server), S3_SECRET_KEY)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_more_than_a_page_and_reads_objects() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let bucket = server.bucket("photos");
    // 1,100 objects: more than one 1,000-key listing page.
    for i in 0..1100 {
        let dir = bucket.join("Test").join(format!("Class {}", i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("img_{i:04}.jpg")), format!("{i}")).unwrap();
    }
    std::fs::write(bucket.join("Test/readme.md"), "x").unwrap();
    let loc = open("s3://photos/Test/", &server);
    let images = loc.list_images().await.unwrap().images;
    assert_eq!(images.len(), 1100);
    assert_eq!(images[0].uri, "s3://photos/Test/Class 0/img_0000.jpg");
    assert_eq!(images[0].label, "Class 0");
    assert_eq!(&loc.get(&images[5].path).await.unwrap()[..], b"15");

    // Permanent failures name the bucket and stop: no such bucket, wrong secret.
    let missing = open("s3://no-such-bucket/Test", &server);
    let err = missing.list_images().await.unwrap_err().to_string();
    assert!(err.contains("s3://no-such-bucket/Test"), "{err}");
    let err = open_signed("s3://photos/Test", &settings(&server), "not-the-secret")
        .list_images()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("s3://photos/Test"), "{err}");
    assert!(!err.contains("not-the-secret"), "secret leaked: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_s3_leaves_one_complete_result_and_no_strays() {
    let Some(server) = S3Server::start() else {
        return;
    };
    server.bucket("results");
    let out = open("s3://results/Results", &server);

    let s = Staging::begin(&out, false, "run1").await.unwrap();
    s.location()
        .put_rel("part-00000.parquet", b"one".to_vec())
        .await
        .unwrap();
    // Staged parts are hidden under _temporary/ until the commit.
    assert!(server
        .objects("results")
        .iter()
        .all(|o| o.starts_with("Results/_temporary/")));
    s.commit(serde_json::json!({})).await.unwrap();
    assert_eq!(
        server.objects("results"),
        ["Results/_SUCCESS", "Results/part-00000-run1.parquet"]
    );
    let err = Staging::begin(&out, false, "run2").await.unwrap_err();
    assert!(matches!(err, StoreError::OutputExists(_)), "{err}");

    // A dead run's staging does not make a fresh output look existing, and is cleaned.
    let fresh = open("s3://results/Fresh", &server);
    fresh
        .put_rel("_temporary/dead/part-00000.parquet", b"x".to_vec())
        .await
        .unwrap();
    let s = Staging::begin(&fresh, false, "run3").await.unwrap();
    s.abort().await.unwrap();
    assert!(common::names(&fresh).await.is_empty());

    // A fault at every step of the commit.
    let faults = open("s3://results/Faults", &server);
    let steps = common::every_step_leaves_old_or_new(&faults, false).await;
    assert!(steps >= 9, "{steps} steps");
    common::a_second_writer_is_refused(&faults).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let bucket = server.bucket("flaky");
    std::fs::create_dir_all(bucket.join("Test/Kiwi")).unwrap();
    std::fs::write(bucket.join("Test/Kiwi/a.jpg"), b"kiwi").unwrap();
    for drop_instead in [false, true] {
        let mut opts = settings(&server);
        opts.endpoint = Some(fruits_testkit::flaky_proxy(
            &server.endpoint,
            2,
            drop_instead,
        ));
        let loc = open_signed("s3://flaky/Test", &opts, S3_SECRET_KEY);
        let images = loc.list_images().await.unwrap().images;
        assert_eq!(
            images.len(),
            1,
            "503 / dropped connections retried (drop: {drop_instead})"
        );
        assert_eq!(&loc.get(&images[0].path).await.unwrap()[..], b"kiwi");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_resumes_its_keyed_staging_and_its_dead_lease_is_ignored() {
    let Some(server) = S3Server::start() else {
        return;
    };
    server.bucket("results");
    let out = open("s3://results/Resumed", &server);
    let read = |path: &str| std::fs::read_to_string(path).unwrap().trim().to_string();
    // A process of this machine that has ended.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let lease = |host: &str, pid: u32| {
        serde_json::json!({
            "run": "killed", "host": host, "boot": read("/proc/sys/kernel/random/boot_id"), "pid": pid
        })
        .to_string()
        .into_bytes()
    };
    // What a killed run left: its lease, its keyed staging; and another run's staging.
    out.put_rel("_temporary/killed.lease", lease("elsewhere", dead))
        .await
        .unwrap();
    out.put_rel(
        "_temporary/key1/_features/part-00000.parquet",
        b"f".to_vec(),
    )
    .await
    .unwrap();
    out.put_rel(
        "_temporary/key0/_features/part-00000.parquet",
        b"g".to_vec(),
    )
    .await
    .unwrap();
    // A lease of another machine is honoured: its process may live.
    let err = Staging::begin_keyed(&out, false, "again", "key1")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Busy { .. }), "{err}");
    // Of a process of this machine that has ended: ignored at once.
    let host = read("/proc/sys/kernel/hostname");
    out.put_rel("_temporary/killed.lease", lease(&host, dead))
        .await
        .unwrap();
    let s = Staging::begin_keyed(&out, false, "again", "key1")
        .await
        .unwrap();
    assert!(s.resumed());
    assert_eq!(
        &s.location()
            .get_rel("_features/part-00000.parquet")
            .await
            .unwrap()[..],
        b"f"
    );
    let left = server.objects("results");
    assert!(
        left.iter()
            .all(|o| !o.contains("key0") && !o.contains("killed")),
        "the other staging and the dead lease are gone: {left:?}"
    );
    s.abort().await.unwrap();
    // A fresh key is not a resume.
    let s = Staging::begin_keyed(&out, false, "third", "key2")
        .await
        .unwrap();
    assert!(!s.resumed());
    s.abort().await.unwrap();
}
