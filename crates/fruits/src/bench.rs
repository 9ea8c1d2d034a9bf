//! `fruits bench`: images/s of each stage and peak memory, on real images.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use fruits_engine::{ExtractConfig, PcaSpec, Progress};
use fruits_model::{FEATURES, INPUT_LEN};
use fruits_pca::Components;

/// Options of `fruits bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Folder (or URI) of images; the end-to-end run uses all of them.
    #[arg(long)]
    input: String,
    /// Weights [default: as for extract].
    #[arg(long)]
    weights: Option<String>,
    #[command(flatten)]
    s3: crate::S3Args,
    /// Images used for the decode and model stages.
    #[arg(long, default_value_t = 256)]
    limit: usize,
    /// Images per model batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Threads [default: the number of cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Skip the end-to-end run.
    #[arg(long)]
    no_end_to_end: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs the benchmark and prints its figures.
pub fn run(a: BenchArgs) -> Result<()> {
    let threads = crate::default_threads(a.threads);
    let rt = crate::runtime(threads)?;
    let s3 = a.s3.settings();
    let source = fruits_engine::ModelSource::new(a.weights.clone(), &s3);
    let model = crate::load_model(&rt, &source)?;
    let location = fruits_store::Location::parse_with(&a.input, &s3)?;
    let images = rt.block_on(location.list_images())?.images;
    if images.is_empty() {
        bail!("no images under {}", location.uri());
    }
    let sample: Vec<_> = images.iter().take(a.limit.max(1)).collect();
    let t = Instant::now();
    let bytes: Vec<bytes::Bytes> = rt.block_on(async {
        let mut out = Vec::with_capacity(sample.len());
        for img in &sample {
            out.push(location.get(&img.path).await?);
        }
        Ok::<_, fruits_store::StoreError>(out)
    })?;
    let read_ips = sample.len() as f64 / t.elapsed().as_secs_f64();

    // Decode + resize + scale, `threads` at a time.
    let n = bytes.len();
    let mut inputs = vec![0.0f32; n * INPUT_LEN];
    let t = Instant::now();
    let per = n.div_ceil(threads);
    let failed: usize = std::thread::scope(|s| {
        let handles: Vec<_> = bytes
            .chunks(per)
            .zip(inputs.chunks_mut(per * INPUT_LEN))
            .map(|(src, dst)| {
                s.spawn(move || {
                    src.iter()
                        .zip(dst.chunks_mut(INPUT_LEN))
                        .map(|(b, slot)| fruits_image::preprocess(b, slot).is_err())
                        .filter(|failed| *failed)
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    if failed > 0 {
        eprintln!("note: {failed} of {n} images failed to decode (timed all the same)");
    }
    let decode_ips = n as f64 / t.elapsed().as_secs_f64();

    // Model alone, on the preprocessed inputs, in batches.
    let mut features = vec![0.0f32; n * FEATURES];
    let batch = a.batch_size.max(1);
    model.forward(
        &inputs[..INPUT_LEN.min(inputs.len())],
        &mut features[..FEATURES],
        1,
    ); // warm-up
    let t = Instant::now();
    for (x, y) in inputs
        .chunks(batch * INPUT_LEN)
        .zip(features.chunks_mut(batch * FEATURES))
    {
        model.forward(x, y, threads);
    }
    let model_ips = n as f64 / t.elapsed().as_secs_f64();

    // End to end, into a temporary output.
    let end_to_end = if a.no_end_to_end {
        None
    } else {
        let dir = tempfile::tempdir().context("creating a temporary output folder")?;
        let cfg = ExtractConfig {
            input: a.input.clone(),
            output: dir.path().join("out").display().to_string(),
            weights: source.clone(),
            model: Some(model.clone()),
            pca: PcaSpec::Fit(Components::Variance(0.95)),
            overwrite: false,
            update: false,
            batch_size: batch,
            limits: fruits_engine::Limits::default(),
            s3: s3.clone(),
            report: false,
            format: fruits_engine::Format::Parquet,
        };
        let progress = Arc::new(Progress::default());
        let engine = fruits_engine::InProcess::new(threads);
        let summary = rt.block_on(crate::with_progress_bar(
            progress.clone(),
            fruits_engine::extract(&cfg, &engine, progress),
        ))?;
        Some(summary)
    };
    let peak = peak_rss_bytes();

    let e2e_ips = end_to_end.as_ref().map(|s| s.images_per_second());
    if a.json {
        let obj = serde_json::json!({
            "images_sampled": n,
            "threads": threads,
            "kernels": model.kernels(),
            "batch_size": batch,
            "read_images_per_second": read_ips,
            "decode_resize_images_per_second": decode_ips,
            "model_images_per_second": model_ips,
            "end_to_end_images": end_to_end.as_ref().map(|s| s.images),
            "end_to_end_images_per_second": e2e_ips,
            "end_to_end_seconds": end_to_end.as_ref().map(|s| &s.seconds),
            "end_to_end_vs_model_alone": e2e_ips.map(|e| e / model_ips),
            "peak_rss_bytes": peak,
        });
        println!("{obj}");
    } else {
        println!(
            "threads {threads}, batch {batch}, kernels {}, {n} images sampled",
            model.kernels()
        );
        println!("read (one by one)        {read_ips:>9.1} images/s");
        println!("decode + resize + scale  {decode_ips:>9.1} images/s");
        println!("model alone              {model_ips:>9.1} images/s");
        if let Some(s) = &end_to_end {
            println!(
                "end to end ({} images) {:>9.1} images/s ({:.0} % of the model alone)",
                s.images,
                s.images_per_second(),
                100.0 * s.images_per_second() / model_ips
            );
        }
        if let Some(p) = peak {
            println!(
                "peak RSS                 {:>9.1} MiB",
                p as f64 / (1 << 20) as f64
            );
        }
    }
    Ok(())
}
