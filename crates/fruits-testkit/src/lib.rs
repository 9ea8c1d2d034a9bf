//! Test support for the fruits crates (a dev-dependency only).
//!
//! * [`shared`] finds the read-only `../shared` data folder, or prints why a test skips.
//! * [`write_photo_tree`] writes a small `<label>/<name>.jpg` tree of real JPEGs, so tests run
//!   on a machine without `../shared`.
//! * [`synthetic_weights`] writes a complete set of seeded MobileNetV2 `.npy` tensors (the
//!   names and shapes from `fruits_model::tensor_shapes`).
//! * [`S3Server`], [`flaky_proxy`], [`serve_http`]: real servers on loopback.
//! * [`hosts::Network`]: separate hosts (network namespaces) on one machine, for the cluster.
//! * [`damaged_jpegs`]: a seeded corpus of damaged photos.
//! * `read_rows` (feature `parquet`): a result's rows, for the crates whose tests read one;
//!   the others do not compile arrow and parquet for their tests.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let photos = fruits_testkit::write_photo_tree(dir.path(), 2, 3);
//! assert_eq!(photos.len(), 6);
//! # Ok::<(), std::io::Error>(())
//! ```

#![deny(missing_docs)]

pub mod hosts;

use std::path::{Path, PathBuf};

/// Says why the calling test skips, or, under `CI=true`, fails it: CI must never be green on a
/// check that did not run.
pub fn skip(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("CI=true and a prerequisite is missing: {why}");
    }
    // Straight to the stderr handle: the test harness captures print macros, not this.
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIP: {why}");
}

/// The `shared/` data folder (`$FRUITS_SHARED`, else `../shared` beside the repository), or
/// `None` after printing why the calling test skips (under `CI=true`: panics, see [`skip`]).
pub fn shared(what: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("FRUITS_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let probe = dir.join(what);
    if probe.exists() {
        Some(dir)
    } else {
        skip(&format!(
            "{} not found (set FRUITS_SHARED to the shared/ folder)",
            probe.display()
        ));
        None
    }
}

/// Sends signal `sig` (`libc::SIGTERM`, ...) to the child process `child`; panics if kill(2)
/// fails.
pub fn signal(child: &std::process::Child, sig: i32) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) takes plain integers. `child` is a `Child` borrowed from its owner, so
    // it has not been reaped: its pid names that process and no other.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// Encodes an RGB buffer as a baseline JPEG (quality 95, 4:2:0).
pub fn encode_jpeg(width: usize, height: usize, rgb: &[u8]) -> Vec<u8> {
    let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
    c.set_size(width, height);
    c.set_quality(95.0);
    let mut started = c.start_compress(Vec::new()).expect("start JPEG");
    started.write_scanlines(rgb).expect("write JPEG");
    started.finish().expect("finish JPEG")
}

/// A deterministic 100x100 photo-like RGB image: a coloured disc on a light background,
/// its hue and size set by `class` and `index`.
pub fn fruit_pixels(class: usize, index: usize) -> Vec<u8> {
    let (w, h) = (100usize, 100usize);
    let hue = [
        (220, 40, 40),
        (240, 200, 30),
        (60, 160, 50),
        (120, 60, 160),
        (250, 130, 20),
    ];
    let (r, g, b) = hue[class % hue.len()];
    let radius = 25.0 + (index % 7) as f32 * 3.0 + (class / hue.len()) as f32 * 5.0;
    let mut px = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let d = ((x as f32 - 50.0).powi(2) + (y as f32 - 50.0).powi(2)).sqrt();
            let shade = ((x + 2 * y + index * 13) % 23) as i32 - 11;
            let (pr, pg, pb) = if d < radius {
                (r, g, b)
            } else {
                (245, 245, 240)
            };
            let c = |v: i32| (v + shade).clamp(0, 255) as u8;
            px.extend_from_slice(&[c(pr), c(pg), c(pb)]);
        }
    }
    px
}

/// Writes `classes` folders (`Class 0`, `Class 1`, ...) of `per_class` 100x100 JPEGs each
/// under `root`; returns the paths written.
pub fn write_photo_tree(root: &Path, classes: usize, per_class: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for c in 0..classes {
        let dir = root.join(format!("Class {c}"));
        std::fs::create_dir_all(&dir).expect("create class folder");
        for i in 0..per_class {
            let path = dir.join(format!("r_{i}_100.jpg"));
            std::fs::write(&path, encode_jpeg(100, 100, &fruit_pixels(c, i))).expect("write JPEG");
            out.push(path);
        }
    }
    out
}

/// Writes seeded random MobileNetV2 weights (one `.npy` per tensor, TF-slim names) into `dir`:
/// the real architecture with made-up values, for tests without `../shared`.
pub fn synthetic_weights(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir).expect("create weights folder");
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    };
    for (name, shape) in fruits_model::tensor_shapes() {
        let n: usize = shape.iter().product();
        let fan_in: usize = shape[..shape.len().saturating_sub(1)]
            .iter()
            .product::<usize>()
            .max(1);
        let values: Vec<f32> = (0..n)
            .map(|_| {
                let r = next();
                if name.ends_with("moving_variance") {
                    0.5 + r.abs()
                } else if name.ends_with("gamma") {
                    1.0 + 0.1 * r
                } else if name.ends_with("beta") || name.ends_with("moving_mean") {
                    0.1 * r
                } else {
                    r * (3.0 / fan_in as f32).sqrt()
                }
            })
            .collect();
        std::fs::write(
            dir.join(format!("{name}.npy")),
            fruits_npy::to_bytes_f32(&shape, &values),
        )
        .expect("write tensor");
    }
}

/// Serves `body` over HTTP on a free loopback port for up to `requests` requests (each answered
/// `200` with the whole body); returns the base URL (`http://127.0.0.1:PORT`).
pub fn serve_http(body: Vec<u8>, requests: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream
                .write_all(head.as_bytes())
                .and_then(|()| stream.write_all(&body));
        }
    });
    url
}

/// A real S3-protocol server (`s3s-fs`, SigV4 auth, objects stored as files) on a free loopback
/// port (or on a host of a [`hosts::Network`]), stopped when dropped.
pub struct S3Server {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The folder the server stores buckets in (one sub-folder per bucket).
    pub root: PathBuf,
    _dir: tempfile::TempDir,
}

/// Access key the test server accepts.
pub const S3_ACCESS_KEY: &str = "fruits-test-key";
/// Secret key the test server accepts.
pub const S3_SECRET_KEY: &str = "fruits-test-secret";

impl S3Server {
    /// Starts `s3s-fs` ($FRUITS_S3S_FS, else on PATH, else where `.ci/run` installs it), or
    /// says why the calling test skips (see [`skip`]) and returns `None`.
    pub fn start() -> Option<S3Server> {
        let bin = S3Server::binary()?;
        let dir = tempfile::tempdir().expect("server folder");
        let root = dir.path().to_path_buf();
        // A free port can be taken by someone else before the server binds it: then the server
        // exits, and we try again with another.
        for _ in 0..10 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .expect("free port")
                .local_addr()
                .expect("addr")
                .port();
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let mut child = S3Server::spawn(std::process::Command::new(&bin), addr, &root);
            let mut listening = false;
            for _ in 0..200 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    listening = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            if listening && matches!(child.try_wait(), Ok(None)) {
                return Some(S3Server {
                    child,
                    endpoint: format!("http://127.0.0.1:{port}"),
                    root,
                    _dir: dir,
                });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("s3s-fs did not start (tried 10 ports)");
    }

    /// Starts `program` (`s3s-fs`, or a command that runs it) serving `root` on `addr`.
    fn spawn(
        mut program: std::process::Command,
        addr: std::net::SocketAddr,
        root: &Path,
    ) -> std::process::Child {
        program
            .args([
                "--host",
                &addr.ip().to_string(),
                "--port",
                &addr.port().to_string(),
            ])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start s3s-fs")
    }

    /// The `s3s-fs` program, or `None` after saying why the calling test skips.
    fn binary() -> Option<PathBuf> {
        let candidates = [
            std::env::var_os("FRUITS_S3S_FS").map(PathBuf::from),
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("s3s-fs"))
                    .find(|p| p.is_file())
            }),
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/fruits-ci/tools/bin/s3s-fs")),
        ];
        let found = candidates.into_iter().flatten().find(|p| p.is_file());
        if found.is_none() {
            skip("s3s-fs not found (cargo install s3s-fs --version 0.14.1 --features binary, or set FRUITS_S3S_FS)");
        }
        found
    }

    /// Starts `s3s-fs` on host `host` of `network`, port 9000 of its address; `None` as for
    /// [`S3Server::start`].
    pub fn start_on(network: &hosts::Network, host: &str) -> Option<S3Server> {
        let bin = S3Server::binary()?;
        let dir = tempfile::tempdir().expect("server folder");
        let root = dir.path().to_path_buf();
        let addr = std::net::SocketAddrV4::new(network.host(host).addr, 9000);
        let mut child = S3Server::spawn(network.command(host, &bin), addr.into(), &root);
        if !network.reachable(host, addr, std::time::Duration::from_secs(10)) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("s3s-fs did not start on {addr}");
        }
        Some(S3Server {
            child,
            endpoint: format!("http://{addr}"),
            root,
            _dir: dir,
        })
    }

    /// Creates an empty bucket.
    pub fn bucket(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).expect("bucket folder");
        dir
    }

    /// Environment variables that point an AWS client at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Every file below `bucket/prefix` on the server's disk, relative to the bucket.
    pub fn objects(&self, bucket: &str) -> Vec<String> {
        let base = self.root.join(bucket);
        files_below(&base)
            .iter()
            .filter_map(|p| Some(p.strip_prefix(&base).ok()?.to_string_lossy().into_owned()))
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP proxy to `target` whose first `fail_first` connections fail: each is answered
/// `503 Slow Down` (`drop_instead == false`) or closed before any answer (`true`); later ones
/// are piped through. Returns the proxy's `http://127.0.0.1:PORT`.
pub fn flaky_proxy(target: &str, fail_first: usize, drop_instead: bool) -> String {
    use std::io::{Read, Write};
    let target = target.trim_start_matches("http://").to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut client) = stream else { continue };
            if n < fail_first {
                let mut buf = [0u8; 4096];
                let _ = client.read(&mut buf);
                if drop_instead {
                    // A reset once the request is in: the client sees "connection reset", as
                    // from a server that dies mid-request (a plain close races the request).
                    reset_on_close(&client);
                } else {
                    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code></Error>";
                    let _ = write!(
                        client,
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
                continue; // dropping `client` closes the connection
            }
            let Ok(server) = std::net::TcpStream::connect(&target) else {
                continue;
            };
            let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            let mut server = server;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut server);
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut client);
                let _ = client.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    url
}

/// Makes closing `stream` send a TCP reset (`SO_LINGER` 0).
fn reset_on_close(stream: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is open for the call, and `linger` is a valid `struct linger`
    // whose size is passed with it.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// One row of a fruits result: `path`, `label`, `features`, `features_pca`.
#[cfg(feature = "parquet")]
pub type Row = (String, String, Vec<f32>, Vec<f32>);

/// Every row of every `part-*.parquet` under `dir`, sorted by path (panics on anything else,
/// including columns in another order than the documented one).
#[cfg(feature = "parquet")]
pub fn read_rows(dir: &Path) -> Vec<Row> {
    use arrow::array::AsArray;
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("part-")
        {
            continue;
        }
        let file = std::fs::File::open(&path).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch: arrow::array::RecordBatch = batch.unwrap();
            let names: Vec<_> = batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            assert_eq!(names, ["path", "label", "features", "features_pca"]);
            let column = |name: &str| batch.column_by_name(name).unwrap();
            let text = |name: &str, r: usize| column(name).as_string::<i32>().value(r).to_string();
            let list = |name: &str, r: usize| {
                let l = column(name).as_list::<i32>().value(r);
                l.as_primitive::<arrow::datatypes::Float32Type>()
                    .values()
                    .to_vec()
            };
            for r in 0..batch.num_rows() {
                rows.push((
                    text("path", r),
                    text("label", r),
                    list("features", r),
                    list("features_pca", r),
                ));
            }
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// Every file below `dir` (following links to folders), sorted by path; none if `dir` cannot
/// be read.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every `.jpg` below `dir`, sorted by path.
pub fn jpegs_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = files_below(dir);
    out.retain(|p| p.extension().is_some_and(|x| x == "jpg"));
    out
}

/// `n` damaged copies of the JPEGs in `sources`, made by a seeded generator: bit flips,
/// overwritten runs, truncation, damage in the first 600 bytes (markers and tables), and two
/// chunks swapped, in turn. Each is named `NNNN-kind.jpg`; the same inputs and seed give the
/// same files, byte for byte.
pub fn damaged_jpegs(sources: &[Vec<u8>], n: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut state = seed | 1;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let kinds = ["bitflip", "overwrite", "truncate", "header", "swap"];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let src = &sources[(next() % sources.len() as u64) as usize];
        let mut b = src.clone();
        let len = b.len();
        let mut pick = |lo: usize, hi: usize| lo + (next() % (hi - lo).max(1) as u64) as usize;
        let kind = kinds[i % kinds.len()];
        match kind {
            "bitflip" => {
                for _ in 0..pick(1, 9) {
                    let at = pick(2, len);
                    b[at] ^= 1 << pick(0, 8);
                }
            }
            "overwrite" => {
                let run = pick(1, 65);
                let at = pick(2, len.saturating_sub(run));
                for k in 0..run.min(len - at) {
                    b[at + k] = pick(0, 256) as u8;
                }
            }
            "truncate" => b.truncate(pick(len / 10, len)),
            "header" => {
                for _ in 0..pick(1, 4) {
                    let at = pick(2, len.min(600));
                    b[at] = pick(0, 256) as u8;
                }
            }
            _ => {
                let size = pick(16, 513).min(len / 4);
                let a = pick(2, len / 2 - size);
                let c = pick(len / 2, len - size);
                let (first, second) = b.split_at_mut(c);
                first[a..a + size].swap_with_slice(&mut second[..size]);
            }
        }
        out.push((format!("{i:04}-{kind}.jpg"), b));
    }
    out
}

/// CRC-32 of `bytes`, as hex: a short fingerprint of pixels to compare with Python's
/// `zlib.crc32`.
pub fn crc32_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// Runs `fruits extract --input INPUT --output OUTPUT ARGS...` (the binary at `bin`, which
/// a test of the `fruits` crate names with `env!("CARGO_BIN_EXE_fruits")`) on 2 threads with
/// seeded synthetic weights; panics unless it succeeds, and returns its stdout and stderr.
pub fn run_extract(bin: &str, input: &Path, output: &Path, args: &[&str]) -> (String, String) {
    let weights = tempfile::tempdir().expect("weights folder");
    synthetic_weights(weights.path(), 2);
    let run = std::process::Command::new(bin)
        .args(["extract", "--input"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(["--threads", "2"])
        .args(args)
        .env("FRUITS_WEIGHTS", weights.path())
        .output()
        .expect("run fruits");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(run.status.success(), "{}", text(&run.stderr));
    (text(&run.stdout), text(&run.stderr))
}
