//! `fruits extract --cluster` against a real cluster: a `fruits scheduler` and two
//! `fruits executor`s started as separate processes on 127.0.0.1, input, weights and output on
//! a real S3 server (s3s-fs).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod results;

use fruits_testkit::{read_rows, S3Server};
use results::{assert_same_result, one_line_error, workers};

/// The test cluster's shared secret.
const TOKEN: &str = "test-cluster-token-0123456789";

/// A child process killed (SIGKILL) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `fruits` command with the S3 server's settings and a private weights cache.
fn fruits(server: &S3Server, cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fruits"));
    cmd.args(args)
        .env_remove("FRUITS_WEIGHTS")
        .env("XDG_CACHE_HOME", cache);
    for (k, v) in server.env() {
        cmd.env(k, v);
    }
    cmd.env("FRUITS_CLUSTER_TOKEN", TOKEN);
    cmd
}

/// Starts `cmd` and returns it with the first line it prints.
fn start(mut cmd: Command) -> (Proc, String) {
    cmd.stderr(Stdio::null());
    start_logged(cmd)
}

/// [`start`], leaving `cmd`'s stderr as set.
fn start_logged(mut cmd: Command) -> (Proc, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("start fruits");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    (Proc(child), line)
}

/// A scheduler (lost executors detected after 3 s) and `n` executors (1 task at a time,
/// heartbeat every second, logging to `<cache>/work-<i>/log`); returns them, the `df://`
/// URL and the executors' names.
fn cluster(server: &S3Server, cache: &Path, n: usize) -> (Vec<Proc>, String, Vec<String>) {
    let args = [
        "scheduler",
        "--bind",
        "127.0.0.1:0",
        "--executor-timeout",
        "3",
    ];
    let (scheduler, line) = start(fruits(server, cache, &args));
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("listening on ADDR")
        .to_string();
    assert!(line.contains("listening on 127.0.0.1:"), "{line}");
    let mut procs = vec![scheduler];
    let mut names = Vec::new();
    for i in 0..n {
        let work = cache.join(format!("work-{i}"));
        let args = [
            "executor",
            "--scheduler",
            &addr,
            "--concurrency",
            "1",
            "--heartbeat",
            "1",
            "--work-dir",
            work.to_str().unwrap(),
        ];
        std::fs::create_dir_all(&work).unwrap();
        // Each executor logs a line per task into its work folder.
        let log = std::fs::File::create(work.join("log")).unwrap();
        let mut cmd = fruits(server, cache, &args);
        cmd.stderr(log);
        let (executor, line) = start_logged(cmd);
        assert!(line.contains("registered"), "{line}");
        // "fruits executor NAME registered with ..."
        names.push(
            line.split_whitespace()
                .nth(2)
                .unwrap_or_default()
                .to_string(),
        );
        procs.push(executor);
    }
    (procs, format!("df://{addr}"), names)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn succeed(mut cmd: Command) -> Output {
    let out = cmd.output().expect("run fruits");
    assert!(out.status.success(), "{}", text(&out.stderr));
    out
}

/// A cluster of `executors` beside a real S3 server whose bucket `fruits` holds `classes` x
/// `per_class` photos under `Test/` and synthetic weights (`seed`) under `models/w/`. The
/// processes go first when it is dropped.
struct Fixture {
    procs: Vec<Proc>,
    url: String,
    names: Vec<String>,
    cache: tempfile::TempDir,
    bucket: std::path::PathBuf,
    server: S3Server,
}

fn fixture(classes: usize, per_class: usize, seed: u64, executors: usize) -> Option<Fixture> {
    let server = S3Server::start()?;
    let bucket = server.bucket("fruits");
    fruits_testkit::write_photo_tree(&bucket.join("Test"), classes, per_class);
    fruits_testkit::synthetic_weights(&bucket.join("models/w"), seed);
    let cache = tempfile::tempdir().unwrap();
    let (procs, url, names) = cluster(&server, cache.path(), executors);
    Some(Fixture {
        procs,
        url,
        names,
        cache,
        bucket,
        server,
    })
}

impl Fixture {
    /// `fruits args` with the fixture's settings.
    fn fruits(&self, args: &[&str]) -> Command {
        fruits(&self.server, self.cache.path(), args)
    }

    /// `extract` of `Test/` to `output` on the cluster, with the fixture's weights, `k`
    /// components and `per_task` images per task.
    fn extract(&self, output: &str, k: usize, per_task: u64) -> Command {
        let mut cmd = self.fruits(&["extract", "--input", "s3://fruits/Test", "--output", output]);
        cmd.args([
            "--weights",
            "s3://fruits/models/w",
            "--pca-k",
            &k.to_string(),
        ])
        .args(["--cluster", &self.url])
        .args(["--images-per-task", &per_task.to_string()]);
        cmd
    }
}

#[test]
fn cluster_result_equals_the_in_process_result() {
    let Some(f) = fixture(3, 8, 5, 2) else {
        return;
    };
    let (bucket, url) = (&f.bucket, &f.url);
    std::fs::write(bucket.join("Test/Class 2/broken.jpg"), b"not a jpeg").unwrap();
    let common = [
        "extract",
        "--input",
        "s3://fruits/Test",
        "--weights",
        "s3://fruits/models/w",
        "--pca-k",
        "4",
        "--batch-size",
        "3",
    ];

    let mut local = f.fruits(&common);
    local.args(["--output", "s3://fruits/local"]);
    succeed(local);
    let mut remote = f.fruits(&common);
    remote.args(["--output", "s3://fruits/cluster", "--cluster", url]);
    // 13 tasks of at most 2 images, on 2 executors.
    remote.args(["--images-per-task", "2"]);
    let out = succeed(remote);

    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("wrote 24 rows to s3://fruits/cluster"),
        "{stdout}"
    );
    let per_worker = workers(&stdout);
    assert_eq!(per_worker.len(), 2, "{stdout}");
    assert!(per_worker.values().all(|&n| n > 0), "{stdout}");
    assert_eq!(per_worker.values().sum::<u64>(), 25, "{stdout}");

    let (a, b) = (
        read_rows(&bucket.join("local")),
        read_rows(&bucket.join("cluster")),
    );
    assert_eq!(a.len(), 24);
    assert_same_result(&a, &b, 1e-5);
    let errors = std::fs::read_to_string(bucket.join("cluster/_errors.json")).unwrap();
    assert!(errors.contains("broken.jpg"), "{errors}");

    // The PCA reduction moved one partial-sums snapshot per executor process (or a few, if
    // one paused between tasks), not one per task: 13 tasks used to store 13 x 13.1 MB.
    let success: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bucket.join("cluster/_SUCCESS")).unwrap()).unwrap();
    let reduction = &success["reduction"];
    let (objects, bytes) = (
        reduction["objects"].as_u64().unwrap(),
        reduction["bytes"].as_u64().unwrap(),
    );
    println!("reduction: {reduction} for 13 tasks");
    assert_eq!(reduction["recomputed"], 0, "{reduction}");
    assert!((2..=4).contains(&objects), "{reduction}");
    let sums = 16 + 8 * 1280 * 1281;
    assert!(
        bytes >= objects * sums && bytes < objects * (sums + 1024),
        "{reduction}"
    );

    // A client that does not know the cluster's token is refused, in one line.
    let mut stranger = f.fruits(&common);
    stranger.args(["--output", "s3://fruits/stranger", "--cluster", url]);
    stranger.env("FRUITS_CLUSTER_TOKEN", "not-the-cluster-token");
    let out = stranger.output().unwrap();
    let err = one_line_error(&out);
    assert!(
        err.contains("not signed with this cluster's token"),
        "{err}"
    );
    assert!(
        !err.contains(TOKEN) && !err.contains("not-the-cluster-token"),
        "{err}"
    );
    let objects = f.server.objects("fruits");
    assert!(
        !objects.iter().any(|o| o.starts_with("stranger/")),
        "nothing written for a stranger: {objects:?}"
    );
    assert!(
        !objects.iter().any(|o| o.contains("_temporary/")),
        "staging left behind: {objects:?}"
    );
}

#[test]
fn cluster_processes_refuse_to_start_without_a_token() {
    for args in [
        vec!["scheduler", "--bind", "127.0.0.1:0"],
        vec!["executor", "--scheduler", "127.0.0.1:1"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_fruits"))
            .args(&args)
            .env_remove("FRUITS_CLUSTER_TOKEN")
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("FRUITS_CLUSTER_TOKEN"), "{err}");
    }
}

#[test]
fn losing_an_executor_mid_run_still_gives_a_complete_duplicate_free_result() {
    let Some(mut f) = fixture(6, 40, 6, 2) else {
        return;
    };
    let (server, bucket, names) = (&f.server, &f.bucket, &f.names);
    let mut job = f
        .extract("s3://fruits/out", 4, 4)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Once a few tasks have staged their results, kill the first executor outright.
    let started = Instant::now();
    loop {
        let staged = server
            .objects("fruits")
            .iter()
            .filter(|o| o.contains("_temporary") && o.contains("_reports/"))
            .count();
        if staged >= 4 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        job.try_wait().unwrap().is_none(),
        "killed before the job ended"
    );
    let victim = f.procs.remove(1);
    drop(victim);

    let out = job.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("wrote 240 rows"), "{stdout}");
    let rows = read_rows(&bucket.join("out"));
    assert_eq!(rows.len(), 240, "no row lost, none written twice");
    let paths: std::collections::HashSet<_> = rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!(paths.len(), 240, "every image exactly once");
    // The killed executor's work was redone: it was killed after at most a few tasks, yet
    // the per-worker counts add up to every image, so the survivor ran the rest, beyond the
    // even share (30 tasks of 4 images) it would have had with both alive.
    let per_worker = workers(&stdout);
    assert_eq!(per_worker.values().sum::<u64>(), 240, "{stdout}");
    let images = |name: &String| per_worker.get(name).copied().unwrap_or(0);
    let (victim, survivor) = (images(&names[0]), images(&names[1]));
    assert_eq!(victim + survivor, 240, "{stdout}");
    assert!(
        victim < 120 && survivor > 120,
        "lost tasks not redone: {stdout}"
    );
    let stray: Vec<_> = server
        .objects("fruits")
        .into_iter()
        .filter(|o| o.starts_with("out/") && !o.contains("part-") && !o.contains("_pca/"))
        .filter(|o| {
            ![
                "out/_SUCCESS",
                "out/_errors.json",
                "out/_report.html",
                "out/_inputs/inputs.parquet",
            ]
            .contains(&o.as_str())
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    // The killed executor's sums died with it: its partitions were summed again from their
    // staged features (or it had flushed them), and the result above is whole either way.
    let success: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bucket.join("out/_SUCCESS")).unwrap()).unwrap();
    println!("reduction after a lost executor: {}", success["reduction"]);
}

#[test]
fn an_unreachable_scheduler_is_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_fruits"))
        .args(["extract", "--input", "/nonexistent", "--output", "/tmp/x"])
        .args(["--cluster", "df://127.0.0.1:1"])
        .env("FRUITS_CLUSTER_TOKEN", TOKEN)
        .output()
        .unwrap();
    let err = one_line_error(&out);
    assert!(
        err.contains("cannot reach the scheduler at df://127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn sigterm_stops_an_executor_even_when_its_scheduler_is_unreachable() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let (mut procs, _, _) = cluster(&server, cache.path(), 1);
    // The scheduler hangs (its connections stay open, nothing answers), as behind a lost link.
    fruits_testkit::signal(&procs[0].0, libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    fruits_testkit::signal(&procs[1].0, libc::SIGTERM);
    let grace = Duration::from_secs(fruits_cluster::defaults::STOP_GRACE_S);
    let status = loop {
        if let Some(status) = procs[1].0.try_wait().unwrap() {
            break status;
        }
        assert!(
            asked.elapsed() < grace + Duration::from_secs(10),
            "the executor ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    fruits_testkit::signal(&procs[0].0, libc::SIGCONT);
    assert!(status.success(), "{status}");
    println!(
        "executor stopped {:.1} s after SIGTERM",
        asked.elapsed().as_secs_f64()
    );
    // A scheduler that answers lets it stop at once.
    let (mut procs, _, _) = cluster(&server, cache.path(), 1);
    let asked = Instant::now();
    fruits_testkit::signal(&procs[1].0, libc::SIGTERM);
    let status = procs[1].0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn a_cluster_without_executors_is_one_line_not_a_hang() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let bucket = server.bucket("fruits");
    fruits_testkit::write_photo_tree(&bucket.join("Test"), 2, 2);
    let cache = tempfile::tempdir().unwrap();
    let (_procs, url, _) = cluster(&server, cache.path(), 0);
    let mut run = fruits(
        &server,
        cache.path(),
        &[
            "extract",
            "--input",
            "s3://fruits/Test",
            "--output",
            "s3://fruits/out",
        ],
    );
    run.args(["--cluster", &url, "--pca-k", "2"]);
    let started = Instant::now();
    let out = run.output().unwrap();
    let err = one_line_error(&out);
    assert!(err.contains("has no executors"), "{err}");
    let wait = Duration::from_secs(fruits_cluster::defaults::EXECUTOR_WAIT_S);
    assert!(
        started.elapsed() < wait + Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_update_on_the_cluster_featurises_only_new_photos() {
    let Some(f) = fixture(2, 10, 5, 2) else {
        return;
    };
    let bucket = &f.bucket;
    let extract = |output: &str, extra: &[&str]| {
        let mut cmd = f.extract(output, 3, 3);
        cmd.args(extra);
        text(&succeed(cmd).stdout)
    };
    extract("s3://fruits/out", &[]);
    // Two new photos (10 %), one changed (new bytes, so a new ETag), one deleted.
    let jpeg = |c, i| fruits_testkit::encode_jpeg(100, 100, &fruits_testkit::fruit_pixels(c, i));
    std::fs::write(bucket.join("Test/Class 0/new_a.jpg"), jpeg(0, 40)).unwrap();
    std::fs::write(bucket.join("Test/Class 1/new_b.jpg"), jpeg(1, 41)).unwrap();
    std::fs::write(bucket.join("Test/Class 1/r_0_100.jpg"), jpeg(0, 42)).unwrap();
    std::fs::remove_file(bucket.join("Test/Class 0/r_1_100.jpg")).unwrap();

    let stdout = extract("s3://fruits/out", &["--mode", "update"]);
    assert!(
        stdout.contains("update: 18 reused, 2 new, 1 changed, 1 removed"),
        "{stdout}"
    );
    assert_eq!(workers(&stdout).values().sum::<u64>(), 3, "{stdout}");
    extract("s3://fruits/full", &[]);
    assert_same_result(
        &read_rows(&bucket.join("out")),
        &read_rows(&bucket.join("full")),
        1e-5,
    );
}

/// Images the executors' featurize tasks finished, from their logs (one line per task).
fn featurised_by_executors(cache: &Path, n: usize) -> u64 {
    (0..n)
        .map(|i| std::fs::read_to_string(cache.join(format!("work-{i}/log"))).unwrap())
        .flat_map(|log| {
            log.lines()
                .filter_map(|l| {
                    let rest = l.split("Features of partition ").nth(1)?;
                    // "P: K images, S skipped, R rows in T s"
                    rest.split(": ")
                        .nth(1)?
                        .split(" images")
                        .next()?
                        .parse()
                        .ok()
                })
                .collect::<Vec<u64>>()
        })
        .sum()
}

#[test]
fn a_client_killed_at_half_resumes_on_the_cluster() {
    let Some(f) = fixture(6, 40, 7, 2) else {
        return;
    };
    let (server, bucket) = (&f.server, &f.bucket);
    let (n, per_task) = (240u64, 4u64);
    let extract = |output: &str| f.extract(output, 4, per_task);
    let staged = || {
        server
            .objects("fruits")
            .iter()
            .filter(|o| o.starts_with("out/_temporary/") && o.contains("_reports/features-"))
            .count() as u64
    };
    let mut client = extract("s3://fruits/out")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while staged() < n / per_task / 2 {
        assert!(client.try_wait().unwrap().is_none(), "the run ended first");
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    client.kill().unwrap();
    client.wait().unwrap();

    // The same command: its job's tasks skip what is staged, and the killed client's job,
    // which the scheduler still runs, stops at its next task.
    let stdout = text(&succeed(extract("s3://fruits/out")).stdout);
    let (resumed, featurized) =
        results::resumed(&stdout).unwrap_or_else(|| panic!("nothing resumed: {stdout}"));
    let line = format!("resumed {resumed}, featurised {featurized}");
    assert_eq!(resumed + featurized, n, "{line}");
    assert!(resumed >= n / 2, "{line}");
    // Give the killed client's job time to end, then count every task the executors ran.
    std::thread::sleep(Duration::from_secs(3));
    let total = featurised_by_executors(f.cache.path(), 2);
    println!("{line}; the executors featurised {total} images in all");
    assert!(
        total as f64 <= 1.1 * n as f64,
        "{total} images featurised for {n}"
    );
    assert!(
        server
            .objects("fruits")
            .iter()
            .all(|o| !o.contains("_temporary")),
        "staging left behind"
    );
    let whole = succeed(extract("s3://fruits/whole"));
    assert!(text(&whole.stdout).contains("wrote 240 rows"));
    assert_same_result(
        &read_rows(&bucket.join("out")),
        &read_rows(&bucket.join("whole")),
        1e-5,
    );
}
