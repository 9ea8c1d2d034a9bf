//! The `fruits` command as a user runs it: outputs, exit codes and one-line errors.

use std::path::Path;
use std::process::{Command, Output};

mod results;

fn fruits(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fruits"));
    cmd.args(args)
        .env_remove("FRUITS_WEIGHTS")
        .env("XDG_CACHE_HOME", "/nonexistent-fruits-cache");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run fruits")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts a failed run: exit code 1, one stderr line containing each of `parts`.
fn assert_fails(out: &Output, parts: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for p in parts {
        assert!(err.contains(p), "{p:?} not in {err}");
    }
}

#[test]
fn extract_then_project_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("photos");
    fruits_testkit::write_photo_tree(&input, 2, 3);
    std::fs::write(input.join("Class 1/broken.jpg"), b"not a jpeg").unwrap();
    let weights = dir.path().join("weights");
    fruits_testkit::synthetic_weights(&weights, 11);
    let out = dir.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());

    let run = fruits(
        &[
            "extract",
            "--input",
            i,
            "--output",
            o,
            "--pca-k",
            "3",
            "--batch-size",
            "2",
        ],
        &[("FRUITS_WEIGHTS", &weights)],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let stdout = text(&run.stdout);
    assert!(stdout.contains("wrote 6 rows"), "{stdout}");
    assert!(
        stdout.contains("images 7  classes 2  skipped 1  k 3"),
        "{stdout}"
    );
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains("1 image(s) skipped") && stderr.contains("broken.jpg"),
        "{stderr}"
    );

    // Existing output: refused, one line, exit 1.
    let again = fruits(
        &["extract", "--input", i, "--output", o],
        &[("FRUITS_WEIGHTS", &weights)],
    );
    assert_fails(&again, &["already exists", "--overwrite"]);

    let pca = out.join("_pca");
    let projected = dir.path().join("projected");
    let run = fruits(
        &[
            "project",
            "--pca",
            pca.to_str().unwrap(),
            "--input",
            i,
            "--output",
            projected.to_str().unwrap(),
            "--weights",
            weights.to_str().unwrap(),
        ],
        &[],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(text(&run.stdout).contains("wrote 6 rows"));
}

#[test]
fn bad_setup_gives_one_clear_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("photos");
    fruits_testkit::write_photo_tree(&input, 1, 2);
    let weights = dir.path().join("weights");
    fruits_testkit::synthetic_weights(&weights, 1);
    let (i, o) = (input.to_str().unwrap(), dir.path().join("out"));
    let o = o.to_str().unwrap();

    assert_fails(
        &fruits(&["extract", "--input", i, "--output", o], &[]),
        &["no model weights", "fruits weights fetch"],
    );
    let missing = dir.path().join("missing-weights");
    assert_fails(
        &fruits(
            &[
                "extract",
                "--input",
                i,
                "--output",
                o,
                "--weights",
                missing.to_str().unwrap(),
            ],
            &[],
        ),
        &["weights not found at", "missing-weights"],
    );
    std::fs::remove_file(weights.join("Conv_1_weights.npy")).unwrap();
    assert_fails(
        &fruits(
            &["extract", "--input", i, "--output", o],
            &[("FRUITS_WEIGHTS", &weights)],
        ),
        &["missing tensor Conv_1_weights"],
    );
    fruits_testkit::synthetic_weights(&weights, 1);
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_fails(
        &fruits(
            &["extract", "--input", empty.to_str().unwrap(), "--output", o],
            &[("FRUITS_WEIGHTS", &weights)],
        ),
        &["no images", "empty"],
    );
    assert_fails(
        &fruits(
            &["extract", "--input", "/no/such/folder", "--output", o],
            &[("FRUITS_WEIGHTS", &weights)],
        ),
        &["input not found", "/no/such/folder"],
    );
    assert_fails(
        &fruits(
            &[
                "extract",
                "--input",
                i,
                "--output",
                o,
                "--pca-variance",
                "1.5",
            ],
            &[("FRUITS_WEIGHTS", &weights)],
        ),
        &["variance target 1.5 not in (0, 1]"],
    );
    // An impossible --pca-k is refused before any photo is featurised.
    for k in ["0", "1281"] {
        assert_fails(
            &fruits(
                &["extract", "--input", i, "--output", o, "--pca-k", k],
                &[("FRUITS_WEIGHTS", &weights)],
            ),
            &[&format!("k = {k} not in 1..=1280")],
        );
    }
    // A tampered saved PCA (k > dim): one line, no panic.
    let tampered = dir.path().join("tampered");
    std::fs::create_dir_all(&tampered).unwrap();
    let mut sums = fruits_pca::PartialSums::new(3);
    sums.add_rows(&[1.0, 2.0, 3.0, 2.0, 2.0, 0.0, 5.0, 1.0, 1.0]);
    let model = fruits_pca::fit(&sums, fruits_pca::Components::K(2)).unwrap();
    for (name, bytes) in model.to_files() {
        std::fs::write(tampered.join(name), bytes).unwrap();
    }
    std::fs::write(
        tampered.join("pca.json"),
        r#"{"format":"fruits-pca/1","dim":3,"k":9,"count":2,"variance_kept":1,"projection":""}"#,
    )
    .unwrap();
    assert_fails(
        &fruits(
            &[
                "project",
                "--pca",
                tampered.to_str().unwrap(),
                "--input",
                i,
                "--output",
                o,
            ],
            &[("FRUITS_WEIGHTS", &weights)],
        ),
        &["k = 9", "tampered"],
    );
    assert_fails(
        &fruits(
            &["project", "--pca", "/no/pca", "--input", i, "--output", o],
            &[("FRUITS_WEIGHTS", &weights)],
        ),
        &["/no/pca"],
    );
    assert!(!Path::new(o).exists(), "no output from failed runs");
}

#[test]
fn weights_fetch_downloads_verifies_and_caches() {
    let cache = tempfile::tempdir().unwrap();
    // A download that is not weights is refused and leaves nothing in the cache.
    let url = fruits_testkit::serve_http(b"<html>rate limited</html>".to_vec(), 1);
    let out = fruits(
        &["weights", "fetch", "--url", &format!("{url}/w.h5")],
        &[("XDG_CACHE_HOME", cache.path())],
    );
    assert_fails(&out, &["not an HDF5 file"]);
    assert_eq!(
        std::fs::read_dir(cache.path().join("fruits"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );

    let Some(shared) = fruits_testkit::shared("models/keras") else {
        return;
    };
    let h5 = std::fs::read(
        shared
            .join("models/keras/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
    )
    .unwrap();
    let url = fruits_testkit::serve_http(h5.clone(), 1);
    let out = fruits(
        &["weights", "fetch", "--url", &format!("{url}/w.h5")],
        &[("XDG_CACHE_HOME", cache.path())],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cached = cache
        .path()
        .join("fruits/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5");
    assert_eq!(std::fs::read(&cached).unwrap(), h5);
    // With no --weights and no FRUITS_WEIGHTS, runs use the cached file.
    let out = fruits(&["weights", "path"], &[("XDG_CACHE_HOME", cache.path())]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), cached.display().to_string());
}

#[test]
fn bench_prints_one_json_object_with_the_figures() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("photos");
    fruits_testkit::write_photo_tree(&input, 2, 3);
    let weights = dir.path().join("weights");
    fruits_testkit::synthetic_weights(&weights, 5);
    // `fruits bench --json ARGS` on the kernel set `isa` (empty: the fastest).
    let bench = |args: &[&str], isa: &str| {
        let mut all = vec![
            "bench",
            "--input",
            input.to_str().unwrap(),
            "--weights",
            weights.to_str().unwrap(),
            "--json",
        ];
        all.extend_from_slice(args);
        fruits(&all, &[("FRUITS_ISA", Path::new(isa))])
    };
    let out = bench(&["--limit", "4"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "model_images_per_second",
        "end_to_end_images_per_second",
        "decode_resize_images_per_second",
    ] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key} in {v}");
    }
    assert!(v["peak_rss_bytes"].as_u64().unwrap() > 1 << 20, "{v}");
    assert_eq!(v["images_sampled"], 4);
    assert_eq!(v["end_to_end_images"], 6);
    assert!(v["kernels"].is_string(), "{v}");

    // FRUITS_ISA chooses the kernels, and a set the CPU does not run is one line.
    let out = bench(&["--limit", "2", "--no-end-to-end"], "portable");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kernels"], "portable", "{v}");
    assert_fails(
        &bench(&["--no-end-to-end"], "sse9"),
        &["FRUITS_ISA=sse9", "not a kernel set", "portable"],
    );
}

#[test]
fn extract_from_and_to_s3_with_weights_on_s3() {
    let Some(server) = fruits_testkit::S3Server::start() else {
        return;
    };
    let bucket = server.bucket("fruits");
    fruits_testkit::write_photo_tree(&bucket.join("Test"), 2, 3);
    // Keys in other scripts and with URL characters are read as stored.
    let odd = [("Maracujá 50%", "ä #1+~[x].jpg"), ("Яблоко", "a b%20c.jpg")];
    for (i, (label, file)) in odd.iter().enumerate() {
        let folder = bucket.join("Test").join(label);
        std::fs::create_dir_all(&folder).unwrap();
        let jpeg = fruits_testkit::encode_jpeg(100, 100, &fruits_testkit::fruit_pixels(i, 9));
        std::fs::write(folder.join(file), jpeg).unwrap();
    }
    fruits_testkit::synthetic_weights(&bucket.join("models/w"), 4);
    let cache = tempfile::tempdir().unwrap();
    let run = |args: &[&str], extra: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fruits"));
        cmd.args(args)
            .env_remove("FRUITS_WEIGHTS")
            .env("XDG_CACHE_HOME", cache.path());
        for (k, v) in server.env() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let args = [
        "extract",
        "--input",
        "s3://fruits/Test/",
        "--output",
        "s3://fruits/Results",
        "--weights",
        "s3://fruits/models/w/",
        "--pca-k",
        "2",
    ];
    // `weights path` checks the s3:// weights a run takes, and says where their copy is.
    let out = run(
        &["weights", "path", "--weights", "s3://fruits/models/w/"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.starts_with("s3://fruits/models/w/\n")
            && said.contains(&format!("cached at {}", cache.path().display())),
        "{said}"
    );
    let out = run(
        &["weights", "path", "--weights", "s3://fruits/models/none/"],
        &[],
    );
    assert_fails(&out, &["s3://fruits/models/none/"]);
    let out = run(&args, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("wrote 8 rows to s3://fruits/Results"),
        "{}",
        text(&out.stdout)
    );
    let paths: Vec<String> = fruits_testkit::read_rows(&bucket.join("Results"))
        .into_iter()
        .map(|r| r.0)
        .collect();
    for (label, file) in odd {
        let key = format!("s3://fruits/Test/{label}/{file}");
        assert!(paths.contains(&key), "{key} not in {paths:?}");
    }
    let results: Vec<String> = server
        .objects("fruits")
        .into_iter()
        .filter(|o| o.starts_with("Results/"))
        .collect();
    assert!(
        results.contains(&"Results/_SUCCESS".to_string()),
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .any(|o| o.starts_with("Results/part-") && o.ends_with(".parquet")),
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|o| !o.contains("_temporary") && !o.contains("_features")),
        "{results:?}"
    );
    // The run's report is published with it, a thumbnail of each class read from S3.
    let page = bucket.join("Results/_report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("(not readable)"));
    for (label, file) in odd {
        let shown = format!("alt=\"{label}/{file}\" src=\"data:image/jpeg;base64,");
        assert!(html.contains(&shown), "{shown}");
    }
    // `fruits report` on S3: the figures as JSON, naming photos by their keys, and the page.
    let out = run(&["report", "s3://fruits/Results", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let figures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(figures["checks"]["photos"], 8);
    let examples: Vec<&str> = figures["classes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["example"].as_str())
        .collect();
    assert!(
        examples.contains(&"s3://fruits/Test/Яблоко/a b%20c.jpg"),
        "{examples:?}"
    );
    std::fs::remove_file(&page).unwrap();
    let out = run(&["report", "s3://fruits/Results"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("wrote s3://fruits/Results/_report.html"));
    assert!(std::fs::read_to_string(&page)
        .unwrap()
        .contains("data:image/jpeg;base64,"));

    // An output over the input is refused, even with --overwrite, and the input is intact.
    let before = server.objects("fruits");
    for output in [
        "s3://fruits/Test",
        "s3://fruits",
        "s3://fruits/Test/Class 0",
    ] {
        let mut over = args.to_vec();
        over[4] = output;
        over.push("--overwrite");
        assert_fails(&run(&over, &[]), &["overlaps the input"]);
    }
    assert_eq!(server.objects("fruits"), before);

    // Overwrite, then project with the saved PCA read back from S3.
    let mut again = args.to_vec();
    again.push("--overwrite");
    assert!(run(&again, &[]).status.success());
    let out = run(
        &[
            "project",
            "--pca",
            "s3://fruits/Results/_pca",
            "--input",
            "s3://fruits/Test",
            "--output",
            "s3://fruits/New",
            "--weights",
            "s3://fruits/models/w",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Wrong secret: one line naming the bucket, no secret in it, exit 1, nothing written.
    let out = run(
        &[
            "extract",
            "--input",
            "s3://fruits/Test/",
            "--output",
            "s3://fruits/Other",
            "--weights",
            "s3://fruits/models/w/",
        ],
        &[("AWS_SECRET_ACCESS_KEY", "wrong-secret-123")],
    );
    assert_fails(&out, &["s3://fruits/"]);
    assert!(!text(&out.stderr).contains("wrong-secret-123"));
    assert!(server
        .objects("fruits")
        .iter()
        .all(|o| !o.starts_with("Other/")));
    let out = run(
        &[
            "extract",
            "--input",
            "s3://missing-bucket/Test/",
            "--output",
            "s3://fruits/Other",
            "--weights",
            "s3://fruits/models/w/",
        ],
        &[],
    );
    assert_fails(&out, &["s3://missing-bucket/Test", "NoSuchBucket"]);

    // A Delta table on S3: two versions, each commit file written once, the latest read back.
    for mode in ["new", "overwrite"] {
        let out = run(
            &[
                "extract",
                "--input",
                "s3://fruits/Test/",
                "--output",
                "s3://fruits/Table",
                "--weights",
                "s3://fruits/models/w/",
                "--pca-k",
                "2",
                "--format",
                "delta",
                "--mode",
                mode,
            ],
            &[],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let objects = server.objects("fruits");
    for v in 0..2 {
        let log = format!("Table/_delta_log/{v:020}.json");
        assert!(objects.contains(&log), "{log} in {objects:?}");
    }
    assert!(!objects
        .iter()
        .any(|o| o.contains("Table/_delta_log/00000000000000000002")));
    let out = run(&["report", "s3://fruits/Table", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
}

#[test]
fn s3_credentials_and_endpoint_from_the_shared_aws_files() {
    let Some(server) = fruits_testkit::S3Server::start() else {
        return;
    };
    let bucket = server.bucket("profiles");
    fruits_testkit::write_photo_tree(&bucket.join("Test"), 1, 3);
    let dir = tempfile::tempdir().unwrap();
    fruits_testkit::synthetic_weights(&dir.path().join("w"), 2);
    let credentials = dir.path().join("credentials");
    let config = dir.path().join("config");
    std::fs::write(
        &credentials,
        format!("[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n[ci]\naws_access_key_id = {}\naws_secret_access_key = {}\n", fruits_testkit::S3_ACCESS_KEY, fruits_testkit::S3_SECRET_KEY),
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "[profile ci]\nregion = us-east-1\nendpoint_url = {}\n",
            server.endpoint
        ),
    )
    .unwrap();
    let run = |profile: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fruits"))
            .args([
                "extract",
                "--input",
                "s3://profiles/Test",
                "--output",
                "s3://profiles/Out",
                "--pca-k",
                "1",
                "--allow-http",
            ])
            .args(extra)
            .args([
                "--weights",
                dir.path().join("w").to_str().unwrap(),
                "--profile",
                profile,
            ])
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env("AWS_CONFIG_FILE", &config)
            .env("HOME", dir.path())
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap()
    };
    let out = run("ci", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("wrote 3 rows to s3://profiles/Out"));
    // The default profile's keys are refused by the server: the profile really chose the keys.
    // (That section names no endpoint: give one, so that nothing leaves the loopback.)
    let out = run(
        "default",
        &[
            "--endpoint-url",
            &server.endpoint,
            "--region",
            "us-east-1",
            "--overwrite",
        ],
    );
    assert_fails(&out, &["s3://profiles/Test", "403 Forbidden"]);
}

#[test]
fn an_argument_that_is_not_utf8_gives_one_line_and_exit_1() {
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(env!("CARGO_BIN_EXE_fruits"))
        .args(["extract", "--input"])
        .arg(std::ffi::OsStr::from_bytes(b"/tmp/caf\xe9"))
        .args(["--output", "/tmp/out"])
        .output()
        .unwrap();
    assert_fails(&out, &["fruits: error:", "not valid UTF-8"]);
}

/// Task reports the run staging `out` has stored so far (its partitions done).
fn staged_reports(out: &Path) -> usize {
    let parent = out.parent().unwrap();
    let prefix = format!(
        ".{}.fruits-staging-",
        out.file_name().unwrap().to_str().unwrap()
    );
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| std::fs::read_dir(e.path().join("_reports")).ok())
        .flat_map(|r| r.flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with("features-"))
        .count()
}

/// The resume tests' photos (240 in 6 classes), synthetic weights, and their extract
/// command: 2 threads, tasks of 4 photos.
struct Resumable {
    dir: tempfile::TempDir,
}

impl Resumable {
    const N: usize = 240;
    const PER_TASK: usize = 4;
    const THREADS: usize = 2;

    fn new() -> Resumable {
        let dir = tempfile::tempdir().unwrap();
        fruits_testkit::write_photo_tree(&dir.path().join("photos"), 6, 40);
        fruits_testkit::synthetic_weights(&dir.path().join("weights"), 12);
        Resumable { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn extract(&self, out: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fruits"));
        cmd.args(["extract", "--input", self.path("photos").to_str().unwrap()])
            .args(["--output", out.to_str().unwrap(), "--pca-k", "4"])
            .args(["--threads", &Self::THREADS.to_string()])
            .args(["--images-per-task", &Self::PER_TASK.to_string()])
            .env("FRUITS_WEIGHTS", self.path("weights"))
            .env("XDG_CACHE_HOME", "/nonexistent-fruits-cache");
        cmd
    }

    /// Starts the command on `out` and waits until half its tasks have staged.
    fn start_until_half(&self, out: &Path) -> std::process::Child {
        let mut run = self
            .extract(out)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while staged_reports(out) < Self::N / Self::PER_TASK / 2 {
            assert!(run.try_wait().unwrap().is_none(), "the run ended first");
            assert!(started.elapsed().as_secs() < 120, "no progress");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        run
    }
}

#[test]
fn a_run_killed_at_half_resumes_with_the_same_command() {
    let r = Resumable::new();
    let (n, per_task, threads) = (Resumable::N, Resumable::PER_TASK, Resumable::THREADS);
    let dir = &r.dir;
    let extract = |out: &Path| r.extract(out);
    let out = dir.path().join("out");
    let mut first = r.start_until_half(&out);
    first.kill().unwrap();
    first.wait().unwrap();
    let done = staged_reports(&out);
    assert!(!out.exists(), "nothing published by the killed run");

    let again = extract(&out).output().unwrap();
    assert!(again.status.success(), "{}", text(&again.stderr));
    let stdout = text(&again.stdout);
    let resumed = done * per_task;
    assert!(
        stdout.contains(&format!(
            "resumed {resumed} images from an interrupted run, featurised {}",
            n - resumed
        )),
        "{stdout}"
    );
    assert!(text(&again.stderr).contains(&format!("resuming: {resumed} images")));
    let success: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    assert_eq!(success["resumed"], resumed as u64);
    assert_eq!(success["featurized"], (n - resumed) as u64);
    // The killed run finished `done` tasks and was at most one task into each thread; the
    // second run featurised the rest: at most 1.1 N in all.
    let at_most = resumed + threads * per_task + (n - resumed);
    assert!(at_most as f64 <= 1.1 * n as f64, "{at_most}");
    // Nothing of the interrupted run is left beside the result.
    let strays: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("staging"))
        .collect();
    assert!(strays.is_empty(), "{strays:?}");

    let whole = dir.path().join("whole");
    let full = extract(&whole).output().unwrap();
    assert!(full.status.success(), "{}", text(&full.stderr));
    results::assert_same_result(
        &fruits_testkit::read_rows(&out),
        &fruits_testkit::read_rows(&whole),
        1e-6,
    );
}

#[test]
fn ctrl_c_stops_a_run_keeping_its_finished_tasks() {
    let r = Resumable::new();
    let out = r.path("out");
    let run = r.start_until_half(&out);
    let seen = staged_reports(&out);
    fruits_testkit::signal(&run, libc::SIGINT);
    let stopped = run.wait_with_output().unwrap();
    // One line, the status of a process SIGINT ended, and the finished tasks kept.
    let err = text(&stopped.stderr).trim_end().to_string();
    assert_eq!(stopped.status.code(), Some(130), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("fruits: error: stopped by SIGINT (Ctrl-C) ("),
        "{err}"
    );
    let kept = results::kept(&err) as usize;
    assert!(kept >= seen * Resumable::PER_TASK, "{err}");
    assert!(!out.exists(), "nothing published by the stopped run");
    assert!(staged_reports(&out) * Resumable::PER_TASK >= kept);

    // The same command resumes them: at least those, and the rest featurised once.
    let again = r.extract(&out).output().unwrap();
    assert!(again.status.success(), "{}", text(&again.stderr));
    let stdout = text(&again.stdout);
    let (resumed, featurised) =
        results::resumed(&stdout).unwrap_or_else(|| panic!("nothing resumed: {stdout}"));
    assert!(resumed as usize >= kept, "{stdout}");
    assert_eq!((resumed + featurised) as usize, Resumable::N, "{stdout}");
    assert_eq!(fruits_testkit::read_rows(&out).len(), Resumable::N);
}
