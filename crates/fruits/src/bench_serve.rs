//! `fruits bench-serve`: latency and throughput of `fruits serve`, on a real socket.
//!
//! Starts the service in this process on a free loopback port, then measures with plain
//! HTTP/1.1 clients (keep-alive): one client on an idle server (p50/p99 latency), then N
//! concurrent clients for a while (images/s, p50/p99, errors, 503s), and the process's peak
//! resident memory.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Options of `fruits bench-serve`.
#[derive(Args)]
pub struct BenchServeArgs {
    /// The model folder `fruits train` wrote.
    #[arg(long)]
    model: String,
    /// Weights, as for serve.
    #[arg(long)]
    weights: Option<String>,
    /// The photo every request sends.
    #[arg(long)]
    image: String,
    /// Requests of the idle, one-client phase.
    #[arg(long, default_value_t = 200)]
    idle_requests: usize,
    /// Concurrent clients of the load phase.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds of the load phase.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Model workers [default: the number of cores].
    #[arg(long)]
    workers: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    s3: crate::S3Args,
}

/// One keep-alive HTTP/1.1 connection sending the same request.
struct Client {
    stream: TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr, image: &[u8]) -> Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut request = format!(
            "POST /v1/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            image.len()
        )
        .into_bytes();
        request.extend_from_slice(image);
        Ok(Client {
            stream,
            request,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends the request; the status and the time to the whole answer.
    async fn send(&mut self) -> Result<(u16, Duration)> {
        let started = Instant::now();
        self.stream.write_all(&self.request).await?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        let (head_end, length) = loop {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..at]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .context("an answer without content-length")?;
                break (at + 4, length);
            }
        };
        while self.buf.len() < head_end + length {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the server closed the connection mid-answer");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let status = std::str::from_utf8(&self.buf[9..12])
            .ok()
            .and_then(|s| s.parse().ok())
            .context("an answer without a status")?;
        Ok((status, started.elapsed()))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Runs `fruits bench-serve`.
pub fn run(a: BenchServeArgs) -> Result<()> {
    let workers = crate::default_threads(a.workers);
    let rt = crate::runtime(2)?;
    let loaded = crate::predict::load(&rt, &a.model, a.weights.clone(), &a.s3.settings())?;
    let image = std::fs::read(&a.image).with_context(|| format!("reading {}", a.image))?;
    let service = loaded.service(fruits_serve::Options {
        workers,
        ..fruits_serve::Options::default()
    });
    let report = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(fruits_serve::serve(listener, service, async {
            let _ = stopped.await;
        }));

        // Idle: one client, one request at a time (after a few to warm up).
        let mut client = Client::connect(addr, &image).await?;
        for _ in 0..5 {
            client.send().await?;
        }
        let mut idle = Vec::with_capacity(a.idle_requests);
        for _ in 0..a.idle_requests.max(1) {
            let (status, took) = client.send().await?;
            if status != 200 {
                bail!("the idle phase got status {status}");
            }
            idle.push(took);
        }
        idle.sort();

        // Load: `clients` connections, each sending as fast as it is answered.
        let until = Instant::now() + Duration::from_secs(a.seconds.max(1));
        let mut tasks = Vec::new();
        for _ in 0..a.clients.max(1) {
            let image = image.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = Client::connect(addr, &image).await?;
                let mut seen = (Vec::new(), 0usize, 0usize);
                while Instant::now() < until {
                    match c.send().await? {
                        (200, took) => seen.0.push(took),
                        (503, _) => seen.1 += 1,
                        _ => seen.2 += 1,
                    }
                }
                Ok::<_, anyhow::Error>(seen)
            }));
        }
        let started = Instant::now();
        let (mut ok, mut busy, mut errors) = (Vec::new(), 0, 0);
        for t in tasks {
            let (o, b, e) = t.await??;
            ok.extend(o);
            busy += b;
            errors += e;
        }
        let elapsed = started.elapsed().as_secs_f64();
        ok.sort();
        let _ = stop.send(());
        server.await??;
        Ok::<_, anyhow::Error>(serde_json::json!({
            "workers": workers,
            "image_bytes": image.len(),
            "idle": {
                "requests": idle.len(),
                "p50_ms": percentile(&idle, 0.5),
                "p99_ms": percentile(&idle, 0.99),
            },
            "load": {
                "clients": a.clients,
                "seconds": elapsed,
                "answered": ok.len(),
                "images_per_second": ok.len() as f64 / elapsed,
                "p50_ms": percentile(&ok, 0.5),
                "p99_ms": percentile(&ok, 0.99),
                "busy_503": busy,
                "errors": errors,
            },
            "peak_rss_bytes": crate::bench::peak_rss_bytes(),
        }))
    })?;
    if a.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
