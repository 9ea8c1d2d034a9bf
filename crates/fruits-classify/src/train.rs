//! Training: split, pick `C` on the validation rows, keep the best head.

use std::time::Instant;

use fruits_pca::PcaModel;

use crate::metrics::{evaluate, Metrics};
use crate::model::{Classifier, Input, ModelInfo, Space, FORMAT};
use crate::softmax::{FitOptions, FitReport, Softmax};
use crate::ClassifyError;

/// The `C` values tried when none is given, from strong to weak regularisation (each fit
/// starts from the previous one's head).
pub const C_GRID: [f64; 4] = [0.01, 0.1, 1.0, 10.0];

/// Labelled feature rows.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Image URIs.
    pub paths: Vec<String>,
    /// Labels.
    pub labels: Vec<String>,
    /// 1280 MobileNetV2 features per row, back to back.
    pub features: Vec<f32>,
}

/// How to train.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Which features the head reads; `Pca` needs `pca`.
    pub space: Space,
    /// The saved PCA of the features' `extract` output.
    pub pca: Option<PcaModel>,
    /// A fixed `C`, or `None` to pick one of [`C_GRID`] on the validation rows.
    pub c: Option<f64>,
    /// L-BFGS settings (its `c` is set per fit).
    pub fit: FitOptions,
    /// How the validation rows were chosen, for `model.json`.
    pub split: String,
    /// The hash of the weights the features came from.
    pub weights_hash: String,
    /// Where the features came from.
    pub trained_on: Vec<String>,
}

/// One fit of the search.
#[derive(Debug, Clone)]
pub struct Trial {
    /// Its `C`.
    pub c: f64,
    /// How L-BFGS ended.
    pub fit: FitReport,
    /// Validation top-1.
    pub top1: f64,
    /// Seconds.
    pub seconds: f64,
}

/// What training did.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The classifier (the best trial's head).
    pub classifier: Classifier,
    /// Its validation metrics.
    pub metrics: Metrics,
    /// Every fit, in order.
    pub trials: Vec<Trial>,
    /// Seconds spent fitting (all trials).
    pub fit_seconds: f64,
}

/// Trains on `train`, picks `C` and reports on `validation`.
pub fn train(
    train: &Rows,
    validation: &Rows,
    opts: &TrainOptions,
) -> Result<Trained, ClassifyError> {
    let dim = fruits_dim(train)?;
    let mut classes: Vec<String> = train.labels.clone();
    classes.sort();
    classes.dedup();
    if classes.len() < 2 {
        return Err(ClassifyError::Data(format!(
            "training needs at least two classes, found {}",
            classes.len()
        )));
    }
    if validation.labels.is_empty() {
        return Err(ClassifyError::Data("no validation rows".into()));
    }
    let class_of = |label: &str| classes.binary_search_by(|c| c.as_str().cmp(label)).ok();
    let y: Vec<u32> = train
        .labels
        .iter()
        .map(|l| class_of(l).map(|k| k as u32))
        .collect::<Option<_>>()
        .ok_or_else(|| ClassifyError::Data("a training label without a class".into()))?;
    // Validation rows of classes never trained on cannot be right; they count as wrong.
    let unknown = classes.len() as u32;
    let yv: Vec<u32> = validation
        .labels
        .iter()
        .map(|l| class_of(l).map_or(unknown, |k| k as u32))
        .collect();
    let input = match (opts.space, &opts.pca) {
        (Space::Features, _) => Input::scaler_of(&train.features, dim),
        (Space::Pca, Some(p)) if p.dim() == dim => Input::Pca(p.clone()),
        (Space::Pca, Some(p)) => {
            return Err(ClassifyError::Data(format!(
                "the saved PCA reads {} features, the rows have {dim}",
                p.dim()
            )))
        }
        (Space::Pca, None) => {
            return Err(ClassifyError::Data(
                "--space pca needs the result's _pca".into(),
            ))
        }
    };
    let x = input.apply(&train.features);
    let xv = input.apply(&validation.features);
    let grid: Vec<f64> = match opts.c {
        Some(c) => vec![c],
        None => C_GRID.to_vec(),
    };
    let started = Instant::now();
    let mut head = Softmax::zeros(input.width(), classes.len());
    let mut best: Option<(Softmax, f64, f64)> = None;
    let mut trials = Vec::new();
    for c in grid {
        let t = Instant::now();
        let fit = head.fit(&x, &y, &FitOptions { c, ..opts.fit });
        let p = head.probabilities(&xv);
        let top1 = evaluate_with_unknown(&p, &yv, &classes).top1;
        trials.push(Trial {
            c,
            fit,
            top1,
            seconds: t.elapsed().as_secs_f64(),
        });
        if best.as_ref().is_none_or(|b| top1 > b.1) {
            best = Some((head.clone(), top1, c));
        }
    }
    let fit_seconds = started.elapsed().as_secs_f64();
    let (head, _, c) = best.ok_or_else(|| ClassifyError::Data("no C to try".into()))?;
    let p = head.probabilities(&xv);
    let metrics = evaluate_with_unknown(&p, &yv, &classes);
    let info = ModelInfo {
        format: FORMAT.into(),
        fruits_version: env!("CARGO_PKG_VERSION").into(),
        weights_hash: opts.weights_hash.clone(),
        space: opts.space,
        c,
        validation_top1: metrics.top1,
        validation_top5: metrics.top5,
        train_rows: train.labels.len(),
        validation_rows: validation.labels.len(),
        split: opts.split.clone(),
        trained_on: opts.trained_on.clone(),
    };
    Ok(Trained {
        classifier: Classifier {
            classes,
            input,
            head,
            info,
        },
        metrics,
        trials,
        fit_seconds,
    })
}

fn fruits_dim(rows: &Rows) -> Result<usize, ClassifyError> {
    let n = rows.labels.len();
    if n == 0 || !rows.features.len().is_multiple_of(n) || rows.paths.len() != n {
        return Err(ClassifyError::Data(format!(
            "{n} labels, {} paths and {} feature values do not make rows",
            rows.paths.len(),
            rows.features.len()
        )));
    }
    Ok(rows.features.len() / n)
}

/// [`evaluate`], where a truth of `classes.len()` (a class never trained on) counts as wrong.
fn evaluate_with_unknown(p: &[f64], y: &[u32], classes: &[String]) -> Metrics {
    let c = classes.len();
    let known: Vec<usize> = (0..y.len()).filter(|&i| (y[i] as usize) < c).collect();
    let pk: Vec<f64> = known
        .iter()
        .flat_map(|&i| p[i * c..(i + 1) * c].to_vec())
        .collect();
    let yk: Vec<u32> = known.iter().map(|&i| y[i]).collect();
    let mut m = evaluate(&pk, &yk, classes);
    let scale = known.len() as f64 / y.len().max(1) as f64;
    m.top1 *= scale;
    m.top5 *= scale;
    m.rows = y.len();
    m
}
