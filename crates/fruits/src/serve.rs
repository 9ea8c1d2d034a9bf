//! `fruits serve`: the classifier over HTTP, with a page for a phone.

use anyhow::{Context, Result};
use clap::Args;

/// Options of `fruits serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// The model folder `fruits train` wrote (folder, file:// or s3://).
    #[arg(long)]
    model: String,
    /// HOST:PORT to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// Weights, as for extract; they must be the ones the classifier was trained on.
    #[arg(long)]
    weights: Option<String>,
    /// The largest request body, in bytes.
    #[arg(long, default_value_t = fruits_serve::Options::default().max_body)]
    max_body: usize,
    /// Requests waiting for a model worker before the service answers 503.
    #[arg(long, default_value_t = fruits_serve::Options::default().queue)]
    queue: usize,
    /// Model workers [default: the number of cores].
    #[arg(long)]
    workers: Option<usize>,
    #[command(flatten)]
    s3: crate::S3Args,
}

/// Runs `fruits serve` until SIGTERM or Ctrl-C, then finishes what is in flight.
pub fn run(a: ServeArgs) -> Result<()> {
    let workers = crate::default_threads(a.workers);
    let rt = crate::runtime(2)?;
    let loaded = crate::predict::load(&rt, &a.model, a.weights.clone(), &a.s3.settings())?;
    let service = loaded.service(fruits_serve::Options {
        max_body: a.max_body,
        queue: a.queue.max(1),
        workers,
        ..fruits_serve::Options::default()
    });
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&a.bind)
            .await
            .with_context(|| format!("cannot listen on {}", a.bind))?;
        let addr = listener.local_addr()?;
        println!(
            "fruits serve listening on http://{addr}/ ({} classes, {workers} model workers)",
            service.classifier.classes.len()
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        fruits_serve::serve(listener, service, async {
            crate::signals::stop().await;
        })
        .await?;
        println!("fruits serve stopped");
        Ok(())
    })
}
