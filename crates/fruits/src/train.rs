//! `fruits train`: a classifier on `extract` outputs, written as a model folder.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use fruits_classify::softmax::FitOptions;
use fruits_classify::split::{split, RUN_FRAMES};
use fruits_classify::{Rows, Space, TrainOptions};
use fruits_engine::result::{read_published, ResultRows};
use fruits_engine::PcaSpec;
use fruits_store::{Location, Staging};

/// Options of `fruits train`.
#[derive(Args)]
pub struct TrainArgs {
    /// One or more `extract` outputs (folder, file:// or s3://); labels from their `label`.
    #[arg(long, required = true, num_args = 1..)]
    features: Vec<String>,
    /// Where to write the model folder (folder, file:// or s3://).
    #[arg(long)]
    output: String,
    /// An `extract` output to validate on, instead of a split of the features.
    #[arg(long, conflicts_with = "validation_fraction")]
    validation: Option<String>,
    /// Share of each class held out for validation, whole runs of frames at a time.
    #[arg(long, default_value_t = 0.2)]
    validation_fraction: f64,
    /// Which features the classifier reads.
    #[arg(long, value_enum, default_value_t = SpaceArg::Features)]
    space: SpaceArg,
    /// Inverse regularisation (scikit-learn's C) [default: the best of 0.01, 0.1, 1, 10 on the
    /// validation rows].
    #[arg(long)]
    c: Option<f64>,
    /// Seed of the split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads [default: the number of cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Replace an existing model folder.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    s3: crate::S3Args,
}

#[derive(Clone, Copy, ValueEnum)]
enum SpaceArg {
    /// The 1280 MobileNetV2 features, standardised.
    Features,
    /// The output's PCA features.
    Pca,
}

/// Golden examples written with a model: photos an app can run through its own preprocessing
/// and compare with the expected probabilities.
const GOLDEN: usize = 5;

/// Runs `fruits train`.
pub fn run(a: TrainArgs) -> Result<()> {
    if !(a.validation_fraction > 0.0 && a.validation_fraction < 1.0) {
        bail!(
            "--validation-fraction must be between 0 and 1, got {}",
            a.validation_fraction
        );
    }
    let threads = crate::default_threads(a.threads);
    let rt = crate::runtime(threads)?;
    let s3 = a.s3.settings();
    let output = Location::parse_with(&a.output, &s3)?;
    let started = Instant::now();

    // Read every input; they must come from the same weights.
    let mut rows = ResultRows::default();
    let mut weights: Option<String> = None;
    for uri in &a.features {
        let at = Location::parse_with(uri, &s3)?;
        let published = rt.block_on(read_published(&at))?;
        let hash = published.weights.clone().with_context(|| {
            format!("{uri} does not record the hash of its weights (an older fruits wrote it): extract it again")
        })?;
        match &weights {
            Some(w) if *w != hash => bail!(
                "{uri} was featurised with other weights ({hash}) than {} ({w})",
                a.features[0]
            ),
            _ => weights = Some(hash),
        }
        rows.extend(published.rows)?;
    }
    let weights = weights.context("no features given")?;
    let read_seconds = started.elapsed().as_secs_f64();

    // Train and validation rows.
    let (train, validation, split_rule) = match &a.validation {
        Some(uri) => {
            let at = Location::parse_with(uri, &s3)?;
            let v = rt.block_on(read_published(&at))?;
            if v.weights.as_deref() != Some(weights.as_str()) {
                bail!("the validation result {uri} was featurised with other weights than the features");
            }
            (
                to_rows(&rows, |_| true),
                to_rows(&v.rows, |_| true),
                format!("validation set {uri}"),
            )
        }
        None => {
            let held = split(&rows.path, &rows.label, a.validation_fraction, a.seed);
            (
                to_rows(&rows, |i| !held[i]),
                to_rows(&rows, |i| held[i]),
                format!(
                    "runs of {RUN_FRAMES} frames of one film (label, file-name prefix, frame number), {:.0} % of each class's photos held out, seed {}",
                    a.validation_fraction * 100.0,
                    a.seed
                ),
            )
        }
    };
    let pca = match a.space {
        SpaceArg::Features => None,
        SpaceArg::Pca => {
            let [uri] = &a.features[..] else {
                bail!("--space pca reads the PCA of one extract output; give one --features");
            };
            let pca_uri = format!("{}/_pca", uri.trim_end_matches('/'));
            match rt.block_on(PcaSpec::load(&pca_uri, &s3))? {
                PcaSpec::Apply { model, .. } => Some((*model).clone()),
                PcaSpec::Fit(_) => None,
            }
        }
    };
    let opts = TrainOptions {
        space: match a.space {
            SpaceArg::Features => Space::Features,
            SpaceArg::Pca => Space::Pca,
        },
        pca,
        c: a.c,
        fit: FitOptions {
            threads,
            ..FitOptions::default()
        },
        split: split_rule,
        weights_hash: weights,
        trained_on: a.features.clone(),
    };
    let trained = fruits_classify::train(&train, &validation, &opts)?;

    // Golden examples: the first validation photo of the first classes.
    let mut golden = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, label) in validation.labels.iter().enumerate() {
        if golden.len() == GOLDEN || !seen.insert(label.clone()) {
            continue;
        }
        let path = &validation.paths[i];
        let bytes = rt
            .block_on(read_uri(path, &s3))
            .with_context(|| format!("reading the golden example {path}"))?;
        let features =
            &validation.features[i * fruits_model::FEATURES..(i + 1) * fruits_model::FEATURES];
        let ext = path
            .rsplit_once('.')
            .map_or("jpg", |(_, e)| e)
            .to_ascii_lowercase();
        golden.push((
            format!("golden/{}.{ext}", golden.len()),
            bytes,
            serde_json::json!({
                "source": path,
                "label": label,
                "predictions": trained.classifier.top(features, 5).remove(0),
            }),
        ));
    }

    // Publish the model folder.
    let run_id = format!("train-{}", std::process::id());
    rt.block_on(async {
        let mut staging = Staging::begin(&output, a.overwrite, &run_id).await?;
        staging.keep_names();
        let at = staging.location().clone();
        let mut files = trained.classifier.to_files();
        files.push((
            "metrics.json".into(),
            serde_json::to_vec_pretty(&trained.metrics).unwrap_or_default(),
        ));
        let examples: Vec<serde_json::Value> = golden
            .iter()
            .map(|(name, _, v)| {
                let mut v = v.clone();
                v["file"] = serde_json::Value::from(name.clone());
                v
            })
            .collect();
        files.push((
            "golden.json".into(),
            serde_json::to_vec_pretty(&examples).unwrap_or_default(),
        ));
        // The held-out photos, so that the split can be checked or repeated elsewhere.
        files.push((
            "validation.json".into(),
            serde_json::to_vec_pretty(&validation.paths).unwrap_or_default(),
        ));
        for (name, bytes, _) in golden {
            files.push((name, bytes.to_vec()));
        }
        for (name, bytes) in files {
            if let Err(e) = at.put_rel(&name, bytes).await {
                let _ = staging.abort().await;
                return Err(e);
            }
        }
        staging
            .commit(serde_json::to_value(&trained.classifier.info).unwrap_or_default())
            .await
    })?;

    let m = &trained.metrics;
    let info = &trained.classifier.info;
    println!("wrote the model to {}", output.uri());
    println!(
        "train {} rows, validation {} rows, {} classes ({})",
        info.train_rows,
        info.validation_rows,
        trained.classifier.classes.len(),
        info.split
    );
    for t in &trained.trials {
        println!(
            "  C {:<5} validation top-1 {:.4}  ({} iterations, {:.1} s{})",
            t.c,
            t.top1,
            t.fit.iterations,
            t.seconds,
            if t.fit.converged {
                ""
            } else {
                ", not converged"
            }
        );
    }
    println!(
        "chosen C {}: validation top-1 {:.4}, top-5 {:.4}",
        info.c, m.top1, m.top5
    );
    if !m.most_confused.is_empty() {
        println!("most confused (truth -> predicted: photos):");
        for (t, p, n) in &m.most_confused {
            println!("  {t} -> {p}: {n}");
        }
    }
    println!(
        "time: read {:.1} s, fit {:.1} s, total {:.1} s",
        read_seconds,
        trained.fit_seconds,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The rows of `all` for which `keep(i)`.
fn to_rows(all: &ResultRows, keep: impl Fn(usize) -> bool) -> Rows {
    let d = fruits_model::FEATURES;
    let mut rows = Rows::default();
    for i in (0..all.len()).filter(|&i| keep(i)) {
        rows.paths.push(all.path[i].clone());
        rows.labels.push(all.label[i].clone());
        rows.features
            .extend_from_slice(&all.features[i * d..(i + 1) * d]);
    }
    rows
}

/// The bytes of the object a result's `path` names.
async fn read_uri(uri: &str, s3: &fruits_store::S3Settings) -> Result<bytes::Bytes> {
    let (parent, name) = uri.rsplit_once('/').context("a path without a folder")?;
    let at = Location::parse_with(parent, s3)?;
    let path = fruits_store::stored_path(&format!("{}/{name}", at.prefix().as_ref()))?;
    Ok(at.get(&path).await?)
}
