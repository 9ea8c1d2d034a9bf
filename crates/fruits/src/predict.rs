//! `fruits predict`: the most probable fruits in photos, through the same read, decode and
//! model as `extract`, and a classifier from `fruits train`.

use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use fruits_classify::Classifier;
use fruits_engine::featurize::{featurize_in_process, FeaturizeSpec, ImageFeatures};
use fruits_engine::{Limits, ModelSource};
use fruits_model::MobileNetV2;
use fruits_store::{ImageRef, Location, S3Settings, IMAGE_EXTENSIONS};

/// Options of `fruits predict`.
#[derive(Args)]
pub struct PredictArgs {
    /// The model folder `fruits train` wrote (folder, file:// or s3://).
    #[arg(long)]
    model: String,
    /// Weights, as for extract; they must be the ones the classifier was trained on.
    #[arg(long)]
    weights: Option<String>,
    /// Photos: files, folders (searched recursively) or s3:// URIs of either.
    #[arg(required = true)]
    photos: Vec<String>,
    /// Labels per photo.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// One JSON object per line and photo.
    #[arg(long)]
    json: bool,
    /// Images per model batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Threads [default: the number of cores].
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    s3: crate::S3Args,
}

/// A model folder read, and the network whose features it was trained on.
pub struct Loaded {
    /// The classifier.
    pub classifier: Arc<Classifier>,
    /// The network.
    pub model: Arc<MobileNetV2>,
    /// Where the weights came from.
    pub weights: ModelSource,
}

impl Loaded {
    /// The HTTP service of this classifier.
    pub fn service(self, options: fruits_serve::Options) -> fruits_serve::Service {
        fruits_serve::Service {
            model: self.model,
            classifier: self.classifier,
            options,
        }
    }
}

/// Reads the model folder at `uri` and loads the weights, refusing weights other than the
/// ones it was trained on.
pub fn load(
    rt: &tokio::runtime::Runtime,
    uri: &str,
    weights: Option<String>,
    s3: &S3Settings,
) -> Result<Loaded> {
    let at = Location::parse_with(uri, s3)?;
    // A model folder is small: read all of it, and let the classifier take what it needs.
    let files = rt
        .block_on(async {
            let mut files = std::collections::HashMap::new();
            for path in at.list_paths().await? {
                let name = at.relative(&path);
                files.insert(name, at.get(&path).await?.to_vec());
            }
            Ok::<_, fruits_store::StoreError>(files)
        })
        .with_context(|| format!("reading the model folder {uri}"))?;
    if !files.contains_key(fruits_store::SUCCESS) {
        bail!(
            "{uri} is not a complete model folder (no {})",
            fruits_store::SUCCESS
        );
    }
    let classifier = Classifier::from_files(|n| files.get(n).cloned().ok_or("absent"))
        .with_context(|| format!("reading the model folder {uri}"))?;
    let source = ModelSource::new(weights, s3);
    let model = crate::load_model(rt, &source)?;
    let want = &classifier.info.weights_hash;
    if model.weights_hash() != want {
        bail!(
            "the weights ({}) are not the ones the classifier {uri} was trained on ({want}): pass those with --weights",
            model.weights_hash()
        );
    }
    Ok(Loaded {
        classifier: Arc::new(classifier),
        model,
        weights: source,
    })
}

/// The location and images one argument names: a photo, or every photo below a folder.
async fn images_of(
    arg: &str,
    s3: &S3Settings,
) -> Result<(Location, Vec<ImageRef>, Vec<(String, String)>)> {
    let lower = arg.to_ascii_lowercase();
    if IMAGE_EXTENSIONS.iter().any(|e| lower.ends_with(e)) {
        let (parent, name) = match arg.rsplit_once('/') {
            Some((p, n)) if !p.is_empty() && !p.ends_with(':') && !p.ends_with("//") => {
                (p.to_string(), n)
            }
            _ => (".".to_string(), arg),
        };
        let at = Location::parse_with(&parent, s3)?;
        let path = at.child(name);
        let image = ImageRef {
            uri: at.uri_of(&path),
            label: String::new(),
            path,
            size: 0,
            version: None,
        };
        return Ok((at, vec![image], Vec::new()));
    }
    let at = Location::parse_with(arg, s3)?;
    let listing = at.list_images().await?;
    let unlisted = listing
        .unlisted
        .into_iter()
        .map(|u| (u.uri, u.error))
        .collect();
    Ok((at, listing.images, unlisted))
}

/// Runs `fruits predict`; fails (after printing every photo) if a photo could not be read.
pub fn run(a: PredictArgs) -> Result<()> {
    let threads = crate::default_threads(a.threads);
    let rt = crate::runtime(threads)?;
    let s3 = a.s3.settings();
    let loaded = load(&rt, &a.model, a.weights.clone(), &s3)?;
    let spec = FeaturizeSpec {
        weights: loaded.weights.clone(),
        model: Some(loaded.model.clone()),
        batch_size: a.batch_size.max(1),
        limits: Limits::DEFAULT,
    };
    let mut failed = 0usize;
    let mut predicted = 0usize;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for arg in &a.photos {
        let (at, images, unlisted) = rt.block_on(images_of(arg, &s3))?;
        if images.is_empty() && unlisted.is_empty() {
            bail!("no photos (.jpg, .jpeg, .png) at {arg}");
        }
        let mut print = |rows: Vec<ImageFeatures>| {
            let ok: Vec<&ImageFeatures> = rows.iter().filter(|r| r.features.is_ok()).collect();
            let features: Vec<f32> = ok
                .iter()
                .flat_map(|r| {
                    r.features
                        .as_ref()
                        .map(|f| f.as_slice())
                        .unwrap_or(&[])
                        .iter()
                        .copied()
                })
                .collect();
            let mut tops = loaded.classifier.top(&features, a.top).into_iter();
            for r in &rows {
                let line = match &r.features {
                    Ok(_) => {
                        predicted += 1;
                        let top = tops.next().unwrap_or_default();
                        if a.json {
                            serde_json::json!({"path": r.path, "predictions": top}).to_string()
                        } else {
                            let labels: Vec<String> = top
                                .iter()
                                .map(|p| format!("{} {:.4}", p.label, p.probability))
                                .collect();
                            format!("{}: {}", r.path, labels.join(", "))
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        if a.json {
                            serde_json::json!({"path": r.path, "error": e}).to_string()
                        } else {
                            format!("{}: error: {e}", r.path)
                        }
                    }
                };
                let _ = writeln!(out, "{line}");
            }
        };
        print(
            unlisted
                .into_iter()
                .map(|(path, e)| ImageFeatures {
                    path,
                    features: Err(e),
                })
                .collect(),
        );
        rt.block_on(featurize_in_process(
            &at, &s3, &images, &spec, threads, &mut print,
        ))?;
    }
    let _ = out.flush();
    if failed > 0 {
        bail!(
            "{failed} of {} photos could not be read (their lines say why)",
            failed + predicted
        );
    }
    Ok(())
}
