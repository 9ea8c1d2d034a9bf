//! The cluster on separate hosts, with faults: a scheduler, two executors, an S3 server
//! (s3s-fs) and a client, each in its own network namespace with its own address, joined by a
//! private switch ([`fruits_testkit::hosts::Network`]). The scheduler and the executors run
//! with the command lines and settings of the systemd units in `deploy/systemd`.
//!
//! Every scenario is checked against an in-process run of the same input (same rows,
//! identical features, PCA to 1e-5 up to sign, every photo once) and prints its wall time.
//! Needs root (namespaces); under `CI=true` a machine without them fails the tests.

mod results;
mod units;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fruits_testkit::hosts::Network;
use fruits_testkit::{read_rows, S3Server};
use results::{assert_same_result, one_line_error, workers};

/// The cluster's shared secret.
const TOKEN: &str = "hosts-test-token-0123456789abcdef";
/// Ports, as in `deploy/systemd/fruits.env`.
const SCHEDULER_PORT: u16 = 50050;
const EXECUTOR_PORT: u16 = 50051;
/// The ports above and the executor's gRPC port after its Flight port, kept off each host's
/// outgoing connections: an executor connects to the scheduler before it binds, and such a
/// connection's ephemeral port can be one of them (seen once: `Address already in use`).
static CLUSTER_PORTS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{SCHEDULER_PORT}-{}", EXECUTOR_PORT + 1));
/// Seconds without a heartbeat before the scheduler declares an executor lost (executors beat
/// every second): short, so that faults resolve quickly, on a machine kept busy.
const EXECUTOR_TIMEOUT_S: u64 = 5;
/// The client's job timeout: every scenario ends well within it.
const JOB_TIMEOUT_S: u64 = 180;
/// The photos: 6 classes of 40, 4 per task (60 tasks).
const CLASSES: usize = 6;
const PER_CLASS: usize = 40;
const PHOTOS: usize = CLASSES * PER_CLASS;

/// One cluster at a time: the machine has few cores, and heartbeats are part of the test.
static SERIAL: Mutex<()> = Mutex::new(());

/// A process on a host, killed (SIGKILL) when dropped; its stderr goes to a log file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hosts, the S3 server and the cluster processes; dropped processes first, network last.
struct Hosts {
    procs: BTreeMap<String, Proc>,
    s3: S3Server,
    /// Each host's own disk: `etc/cluster.token`, `lib/work`, the weights cache, logs.
    disks: tempfile::TempDir,
    net: Network,
    /// Held from first to last: the next test's network starts after this one is gone.
    _serial: MutexGuard<'static, ()>,
}

impl Hosts {
    /// Hosts `scheduler`, `executor-1`, `executor-2`, `s3` and `client`; photos and synthetic
    /// weights on S3. `None` where namespaces or s3s-fs are missing (see `skip`).
    fn new() -> Option<Hosts> {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let hosts = ["scheduler", "executor-1", "executor-2", "s3", "client"];
        let net = Network::create(&hosts)?;
        for host in hosts {
            net.reserve_ports(host, &CLUSTER_PORTS);
        }
        let s3 = S3Server::start_on(&net, "s3")?;
        let bucket = s3.bucket("fruits");
        fruits_testkit::write_photo_tree(&bucket.join("Test"), CLASSES, PER_CLASS);
        fruits_testkit::synthetic_weights(&bucket.join("models/w"), 6);
        Some(Hosts {
            procs: BTreeMap::new(),
            s3,
            disks: tempfile::tempdir().unwrap(),
            net,
            _serial: serial,
        })
    }

    fn scheduler_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.net.host("scheduler").addr, SCHEDULER_PORT)
    }

    fn url(&self) -> String {
        format!("df://{}", self.scheduler_addr())
    }

    /// Host `host`'s disk, made on first use with the cluster token.
    fn disk(&self, host: &str) -> PathBuf {
        let disk = self.disks.path().join(host);
        std::fs::create_dir_all(disk.join("etc")).unwrap();
        std::fs::create_dir_all(disk.join("lib/work")).unwrap();
        std::fs::write(disk.join("etc/cluster.token"), TOKEN).unwrap();
        disk
    }

    /// The settings of `fruits.env` for host `host`, and the S3 server's.
    fn settings(&self, host: &str) -> BTreeMap<String, String> {
        let mut env = units::env_file(&units::deploy().join("systemd/fruits.env"));
        let scheduler = self.scheduler_addr().to_string();
        let mut set = |k: &str, v: String| env.insert(k.to_string(), v);
        set("FRUITS_SCHEDULER_BIND", scheduler.clone());
        set("FRUITS_EXECUTOR_TIMEOUT", EXECUTOR_TIMEOUT_S.to_string());
        set("FRUITS_SCHEDULER", scheduler);
        set("FRUITS_EXECUTOR_BIND", format!("0.0.0.0:{EXECUTOR_PORT}"));
        set("FRUITS_EXTERNAL_HOST", self.net.host(host).addr.to_string());
        set("FRUITS_HEARTBEAT", "1".to_string());
        set("FRUITS_WEIGHTS", "s3://fruits/models/w".to_string());
        for (k, v) in self.s3.env() {
            set(k, v);
        }
        env
    }

    /// `fruits ARGS` on host `host`, with its settings, its disk's weights cache and token.
    fn fruits(&self, host: &str, args: &[String]) -> Command {
        let disk = self.disk(host);
        let mut cmd = self.net.command(host, env!("CARGO_BIN_EXE_fruits"));
        cmd.args(args)
            .envs(self.settings(host))
            .env("XDG_CACHE_HOME", disk.join("cache"))
            .env_remove("RUST_LOG");
        cmd
    }

    /// Starts `unit`'s command line on `host` and waits for its first line (listening, or
    /// registered).
    fn start_unit(&mut self, unit: &str, host: &str) -> String {
        let args = units::args(unit, &self.settings(host), &self.disk(host));
        let log = self.disk(host).join("stderr.log");
        let mut child = self
            .fruits(host, &args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            lines.for_each(drop);
        });
        let first = rx.recv_timeout(Duration::from_secs(60));
        let line = match first {
            Ok(Some(Ok(line))) => line,
            other => panic!(
                "{unit} on {host} did not start ({other:?}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        };
        self.procs.insert(host.to_string(), Proc { child, log });
        line
    }

    fn start_scheduler(&mut self) {
        let line = self.start_unit("fruits-scheduler.service", "scheduler");
        assert!(
            line.contains(&format!("listening on {}", self.scheduler_addr())),
            "{line}"
        );
    }

    /// Starts the executor on `host`; its id (`ADDR:PORT/PID`).
    fn start_executor(&mut self, host: &str) -> String {
        let line = self.start_unit("fruits-executor.service", host);
        assert!(line.contains("registered with"), "{line}");
        // "fruits executor NAME registered with ..."
        line.split_whitespace().nth(2).unwrap().to_string()
    }

    /// A scheduler and executors on `executors`; their ids.
    fn start_cluster(&mut self, executors: &[&str]) -> Vec<String> {
        self.start_scheduler();
        executors.iter().map(|h| self.start_executor(h)).collect()
    }

    /// `fruits extract` of the photos to `s3://fruits/OUTPUT`, on the cluster or (`None`)
    /// in-process, from the client host.
    fn extract(&self, output: &str, cluster: Option<&str>) -> Command {
        let mut args: Vec<String> = [
            "extract",
            "--input",
            "s3://fruits/Test",
            "--output",
            &format!("s3://fruits/{output}"),
            "--weights",
            "s3://fruits/models/w",
            "--pca-k",
            "4",
        ]
        .map(String::from)
        .to_vec();
        if let Some(url) = cluster {
            let token = self.disk("client").join("etc/cluster.token");
            args.extend(
                [
                    "--cluster",
                    url,
                    "--images-per-task",
                    "4",
                    "--job-timeout",
                    &JOB_TIMEOUT_S.to_string(),
                    "--token-file",
                    token.to_str().unwrap(),
                ]
                .map(String::from),
            );
        }
        self.fruits("client", &args)
    }

    /// Starts the cluster run of the photos to `s3://fruits/out`.
    fn start_run(&self) -> Child {
        self.extract("out", Some(&self.url()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Starts the cluster run and waits until `n` tasks have staged their reports (the run
    /// is mid-featurise); the run and when it started.
    fn run_until(&self, n: usize) -> (Child, Instant) {
        let started = Instant::now();
        let mut run = self.start_run();
        loop {
            let staged = self
                .s3
                .objects("fruits")
                .iter()
                .filter(|o| o.starts_with("out/") && o.contains("_reports/"))
                .count();
            if staged >= n {
                break;
            }
            assert!(
                run.try_wait().unwrap().is_none(),
                "the run ended before {n} tasks"
            );
            assert!(started.elapsed() < Duration::from_secs(120), "no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
        (run, started)
    }

    /// The in-process result's rows beside the cluster's at `out`: equal, every photo once.
    fn assert_equals_in_process(&self) {
        let out = self.extract("local", None).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let bucket = self.s3.root.join("fruits");
        let (a, b) = (
            read_rows(&bucket.join("local")),
            read_rows(&bucket.join("out")),
        );
        assert_eq!(a.len(), PHOTOS);
        assert_same_result(&a, &b, 1e-5);
        let paths: std::collections::HashSet<_> = b.iter().map(|r| &r.0).collect();
        assert_eq!(paths.len(), PHOTOS, "every photo exactly once");
    }

    /// `GET PATH` of the scheduler's HTTP API, from the client host.
    fn http_get(&self, path: &str) -> String {
        let python = format!(
            "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://{}{path}', timeout=10).read().decode())",
            self.scheduler_addr()
        );
        let out = self
            .net
            .command("client", "python3")
            .args(["-c", &python])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    }

    /// What host `host`'s process wrote to stderr.
    fn log(&self, host: &str) -> String {
        std::fs::read_to_string(&self.procs[host].log).unwrap_or_default()
    }

    fn signal(&self, host: &str, sig: i32) {
        fruits_testkit::signal(&self.procs[host].child, sig);
    }

    /// Whether anything of `out` was published (beyond its staging area).
    fn published(&self) -> Vec<String> {
        self.s3
            .objects("fruits")
            .into_iter()
            .filter(|o| o.starts_with("out/") && !o.starts_with("out/_temporary"))
            .collect()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The run's output, which must have succeeded and written every photo.
fn finished(run: Child) -> String {
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("wrote {PHOTOS} rows to s3://fruits/out")),
        "{stdout}"
    );
    stdout
}

/// The one line a failed run printed, and how long it ran.
fn failed(run: Child, started: Instant) -> (String, Duration) {
    let out = run.wait_with_output().unwrap();
    let took = started.elapsed();
    (one_line_error(&out), took)
}

/// Prints a scenario's wall time (the README's table).
fn report(scenario: &str, took: Duration) {
    println!("scenario {scenario}: {:.1} s", took.as_secs_f64());
}

#[test]
fn plain_run_uses_both_executors_and_keeps_their_heartbeats() {
    let Some(mut h) = Hosts::new() else { return };
    let ids = h.start_cluster(&["executor-1", "executor-2"]);
    assert!(ids[0].starts_with("10.213.7.3:50051/"), "{ids:?}");
    let started = Instant::now();
    let stdout = finished(h.start_run());
    report("plain", started.elapsed());
    let per_worker = workers(&stdout);
    assert_eq!(per_worker.len(), 2, "{stdout}");
    assert!(per_worker.values().all(|&n| n > 0), "{stdout}");
    assert_eq!(per_worker.values().sum::<u64>(), PHOTOS as u64, "{stdout}");
    h.assert_equals_in_process();

    // Both executors ran every core on the model, and neither missed its heartbeats.
    let mut status = h.fruits("client", &["status".into(), "--cluster".into(), h.url()]);
    let out = status.output().unwrap();
    let listed = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(listed.contains(": 2 executors"), "{listed}");
    for id in &ids {
        assert!(listed.contains(id.as_str()), "{listed}");
    }
    // (An executor the scheduler declares lost is told to stop: these are the same processes.)
    let scheduler = h.log("scheduler");
    // A line per job on the scheduler, per task on the executors, each with its duration.
    assert!(scheduler.contains("completed in"), "{scheduler}");
    let tasks: usize = ["executor-1", "executor-2"]
        .iter()
        .map(|e| {
            h.log(e)
                .lines()
                .filter(|l| l.contains("fruits::task") && l.ends_with(" s"))
                .count()
        })
        .sum();
    assert!(tasks >= PHOTOS / 4, "{tasks} task lines");
    // The scheduler's Prometheus metrics, on its one port.
    let metrics = h.http_get("/api/metrics");
    assert!(metrics.contains("job_completed_total 2"), "{metrics}");
    // The liveness probe of deploy/kubernetes.
    assert_eq!(h.http_get("/healthz").trim(), "ok");
}

#[test]
fn an_executor_killed_mid_featurise() {
    let Some(mut h) = Hosts::new() else { return };
    h.start_cluster(&["executor-1", "executor-2"]);
    let (run, started) = h.run_until(6);
    h.procs.remove("executor-1");
    let stdout = finished(run);
    report("executor SIGKILLed", started.elapsed());
    assert_eq!(workers(&stdout).values().sum::<u64>(), PHOTOS as u64);
    h.assert_equals_in_process();
}

#[test]
fn an_executor_cut_off_mid_featurise() {
    let Some(mut h) = Hosts::new() else { return };
    let ids = h.start_cluster(&["executor-1", "executor-2"]);
    let (run, started) = h.run_until(6);
    // Its cable pulled: its connections hang, nothing fails on its side.
    h.net.set_link("executor-1", false);
    let stdout = finished(run);
    report("executor's link down", started.elapsed());
    let per_worker = workers(&stdout);
    assert_eq!(per_worker.values().sum::<u64>(), PHOTOS as u64);
    assert!(per_worker.get(&ids[1]).is_some_and(|&n| n > 0), "{stdout}");
    h.assert_equals_in_process();
}

#[test]
fn the_store_unreachable_for_seconds_mid_run() {
    let Some(mut h) = Hosts::new() else { return };
    h.start_cluster(&["executor-1", "executor-2"]);
    let (run, started) = h.run_until(6);
    h.net.set_link("s3", false);
    std::thread::sleep(Duration::from_secs(4));
    h.net.set_link("s3", true);
    finished(run);
    report("S3 unreachable for 4 s", started.elapsed());
    h.assert_equals_in_process();
}

#[test]
fn the_scheduler_killed_mid_run_then_restarted() {
    let Some(mut h) = Hosts::new() else { return };
    h.start_cluster(&["executor-1", "executor-2"]);
    let (run, started) = h.run_until(6);
    h.procs.remove("scheduler");
    let (line, took) = failed(run, started);
    report("scheduler SIGKILLed (client fails)", took);
    println!("  {line}");
    assert!(took < Duration::from_secs(JOB_TIMEOUT_S), "{took:?}");
    assert!(
        line.contains(&format!("cannot reach the scheduler at {}", h.url())),
        "{line}"
    );
    // The tasks finished before the loss stay staged (5 at least: `_reports/` holds the
    // owner mark too), for the same command to resume.
    let kept = results::kept(&line);
    assert!(kept >= 5 * 4, "{line}");
    assert!(h.published().is_empty(), "{:?}", h.published());

    // The scheduler comes back (systemd restarts it); the executors find it again by their
    // heartbeats, and the same command completes, featurising only what was not kept (tasks
    // the executors finished after the client failed are resumed too).
    h.start_scheduler();
    let again = Instant::now();
    let stdout = finished(h.start_run());
    report(
        "same command after the scheduler's restart",
        again.elapsed(),
    );
    let (resumed, featurised) =
        results::resumed(&stdout).unwrap_or_else(|| panic!("nothing resumed: {stdout}"));
    println!("  kept {kept}, resumed {resumed}, featurised {featurised}");
    assert!(resumed >= kept, "{stdout}");
    assert_eq!(resumed + featurised, PHOTOS as u64, "{stdout}");
    h.assert_equals_in_process();
}

#[test]
fn an_executor_joining_mid_run_takes_work() {
    let Some(mut h) = Hosts::new() else { return };
    h.start_cluster(&["executor-1"]);
    let (run, started) = h.run_until(4);
    h.net.add_host("executor-3");
    h.net.reserve_ports("executor-3", &CLUSTER_PORTS);
    let joined = h.start_executor("executor-3");
    let stdout = finished(run);
    report("executor joins mid-run", started.elapsed());
    let per_worker = workers(&stdout);
    assert!(per_worker.get(&joined).is_some_and(|&n| n > 0), "{stdout}");
    h.assert_equals_in_process();
}

#[test]
fn every_executor_lost_is_one_line_within_the_job_timeout() {
    let Some(mut h) = Hosts::new() else { return };
    h.start_cluster(&["executor-1", "executor-2"]);
    let (run, started) = h.run_until(4);
    // Both stop answering (as on a machine too busy to beat): the scheduler declares them lost.
    h.signal("executor-1", libc::SIGSTOP);
    h.signal("executor-2", libc::SIGSTOP);
    let (line, took) = failed(run, started);
    report("every executor lost (client fails)", took);
    println!("  {line}");
    assert!(line.contains("all executors were lost"), "{line}");
    assert!(took < Duration::from_secs(JOB_TIMEOUT_S), "{took:?}");
    assert!(results::kept(&line) >= 3 * 4, "{line}");
    assert!(h.published().is_empty(), "{:?}", h.published());
}

#[test]
fn a_network_is_private_and_removed() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(net) = Network::create(&["a", "b"]) else {
        return;
    };
    let b = SocketAddrV4::new(net.host("b").addr, 7);
    let listener = net
        .command("b", "python3")
        .args(["-c", "import socket,time; s=socket.socket(); s.bind(('0.0.0.0', 7)); s.listen(); time.sleep(60)"])
        .spawn()
        .unwrap();
    assert!(net.reachable("a", b, Duration::from_secs(10)));
    net.set_link("b", false);
    assert!(!net.reachable("a", b, Duration::from_millis(600)));
    net.set_link("b", true);
    assert!(net.reachable("a", b, Duration::from_secs(10)));
    let names: Vec<String> = [&net.host("a").ns, &net.host("b").ns]
        .map(|s| s.to_string())
        .to_vec();
    drop(listener);
    drop(net);
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = text(&left.stdout);
    for ns in names {
        assert!(!left.contains(&ns), "{ns} left behind: {left}");
    }
}
