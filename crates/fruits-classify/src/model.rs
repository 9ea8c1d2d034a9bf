//! A trained classifier: its input transform (scaler, or the saved PCA), its softmax head and
//! class names, and the files of its model folder.

use fruits_pca::PcaModel;
use serde::{Deserialize, Serialize};

use crate::metrics::ranked;
use crate::softmax::Softmax;
use crate::ClassifyError;

/// The format of the model folder this build writes and reads.
pub const FORMAT: &str = "fruits-classifier/1";

/// Which features a head reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Space {
    /// The 1280 MobileNetV2 features, standardised with the training rows' mean and std.
    Features,
    /// The PCA features of the `extract` output (its saved scaler + PCA).
    Pca,
}

/// What turns 1280 MobileNetV2 features into the head's inputs.
#[derive(Debug, Clone)]
pub enum Input {
    /// `(x - mean) / std` (0 where std is 0).
    Scaler {
        /// Per feature.
        mean: Vec<f64>,
        /// Per feature.
        std: Vec<f64>,
    },
    /// The saved scaler + PCA of an `extract` output.
    Pca(PcaModel),
}

impl Input {
    /// The standardiser of `rows` (`n x dim`).
    pub fn scaler_of(rows: &[f32], dim: usize) -> Input {
        let n = (rows.len() / dim.max(1)).max(1) as f64;
        let mut mean = vec![0.0; dim];
        for row in rows.chunks_exact(dim) {
            mean.iter_mut()
                .zip(row)
                .for_each(|(m, &v)| *m += f64::from(v));
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; dim];
        for row in rows.chunks_exact(dim) {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                let d = f64::from(v) - m;
                *s += d * d;
            }
        }
        let std = var.into_iter().map(|s| (s / n).sqrt()).collect();
        Input::Scaler { mean, std }
    }

    /// Inputs of the head.
    pub fn width(&self) -> usize {
        match self {
            Input::Scaler { mean, .. } => mean.len(),
            Input::Pca(p) => p.k(),
        }
    }

    /// Features it reads.
    pub fn dim(&self) -> usize {
        match self {
            Input::Scaler { mean, .. } => mean.len(),
            Input::Pca(p) => p.dim(),
        }
    }

    /// The head's inputs for `rows` (`n x dim` features).
    pub fn apply(&self, rows: &[f32]) -> Vec<f64> {
        match self {
            Input::Scaler { mean, std } => rows
                .chunks_exact(mean.len())
                .flat_map(|row| {
                    row.iter().zip(mean).zip(std).map(|((&v, m), s)| {
                        if *s > 0.0 {
                            (f64::from(v) - m) / s
                        } else {
                            0.0
                        }
                    })
                })
                .collect(),
            Input::Pca(p) => {
                // Row by row, so a row's inputs never depend on the rows beside it.
                let mut out = vec![0.0f32; p.k()];
                rows.chunks_exact(p.dim())
                    .flat_map(|row| {
                        p.project(row, &mut out);
                        out.iter().map(|&v| f64::from(v)).collect::<Vec<_>>()
                    })
                    .collect()
            }
        }
    }
}

/// What `model.json` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// [`FORMAT`].
    pub format: String,
    /// The fruits version that trained it.
    pub fruits_version: String,
    /// The hash of the MobileNetV2 weights its features came from.
    pub weights_hash: String,
    /// Which features it reads.
    pub space: Space,
    /// The regularisation it was fitted with (scikit-learn's `C`).
    pub c: f64,
    /// Top-1 accuracy on the validation rows.
    pub validation_top1: f64,
    /// Top-5 accuracy on the validation rows.
    pub validation_top5: f64,
    /// Rows it was fitted on.
    pub train_rows: usize,
    /// Rows it was validated on.
    pub validation_rows: usize,
    /// How the validation rows were chosen.
    pub split: String,
    /// Where its features came from.
    pub trained_on: Vec<String>,
}

/// A trained classifier.
#[derive(Debug, Clone)]
pub struct Classifier {
    /// Class names, in head order.
    pub classes: Vec<String>,
    /// Features → head inputs.
    pub input: Input,
    /// The head.
    pub head: Softmax,
    /// Its description.
    pub info: ModelInfo,
}

/// One class and its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The class.
    pub label: String,
    /// Its probability.
    pub probability: f64,
}

impl Classifier {
    /// Class probabilities of `rows` (`n x 1280` MobileNetV2 features): `n x classes`.
    pub fn probabilities(&self, rows: &[f32]) -> Vec<f64> {
        self.head.probabilities(&self.input.apply(rows))
    }

    /// The `k` most probable classes of each row, most probable first.
    pub fn top(&self, rows: &[f32], k: usize) -> Vec<Vec<Prediction>> {
        let c = self.classes.len();
        self.probabilities(rows)
            .chunks_exact(c)
            .map(|row| {
                ranked(row)
                    .into_iter()
                    .take(k.max(1))
                    .map(|i| Prediction {
                        label: self.classes[i].clone(),
                        probability: row[i],
                    })
                    .collect()
            })
            .collect()
    }

    /// The model folder's files (names relative to it): `model.json`, `classes.json`, the
    /// input transform (`scaler/mean.npy` and `scaler/std.npy`, or the PCA's files under
    /// `pca/`) and the head (`head/weights.npy`, `d x classes`, and `head/biases.npy`, f64).
    pub fn to_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut files = vec![
            ("model.json".to_string(), json(&self.info)),
            ("classes.json".to_string(), json(&self.classes)),
        ];
        match &self.input {
            Input::Scaler { mean, std } => {
                let d = mean.len();
                files.push((
                    "scaler/mean.npy".into(),
                    fruits_npy::to_bytes_f64(&[d], mean),
                ));
                files.push(("scaler/std.npy".into(), fruits_npy::to_bytes_f64(&[d], std)));
            }
            Input::Pca(p) => {
                for (name, bytes) in p.to_files() {
                    files.push((format!("pca/{name}"), bytes));
                }
            }
        }
        let (d, c) = (self.head.inputs(), self.head.classes());
        files.push((
            "head/weights.npy".into(),
            fruits_npy::to_bytes_f64(&[d, c], self.head.weights()),
        ));
        files.push((
            "head/biases.npy".into(),
            fruits_npy::to_bytes_f64(&[c], self.head.biases()),
        ));
        files
    }

    /// Loads a model folder written by [`Classifier::to_files`]; `read(name)` returns a file.
    pub fn from_files<E: std::fmt::Display>(
        mut read: impl FnMut(&str) -> Result<Vec<u8>, E>,
    ) -> Result<Classifier, ClassifyError> {
        let mut get =
            |name: &str| read(name).map_err(|e| ClassifyError::Format(format!("{name}: {e}")));
        let info: ModelInfo = parse_json("model.json", &get("model.json")?)?;
        if info.format != FORMAT {
            return Err(ClassifyError::Format(format!(
                "model.json: format {:?}, this build reads {FORMAT:?}",
                info.format
            )));
        }
        let classes: Vec<String> = parse_json("classes.json", &get("classes.json")?)?;
        let input = match info.space {
            Space::Features => {
                let (_, mean) = array(&mut get, "scaler/mean.npy")?;
                let (_, std) = array(&mut get, "scaler/std.npy")?;
                if mean.len() != std.len() {
                    return Err(ClassifyError::Format(
                        "scaler: mean and std differ in length".into(),
                    ));
                }
                Input::Scaler { mean, std }
            }
            Space::Pca => {
                let mut files = std::collections::HashMap::new();
                for name in fruits_pca::FILES {
                    files.insert(name, get(&format!("pca/{name}"))?);
                }
                Input::Pca(
                    PcaModel::from_files(|n| files.get(n).cloned().ok_or("absent"))
                        .map_err(|e| ClassifyError::Format(format!("pca: {e}")))?,
                )
            }
        };
        let (shape, w) = array(&mut get, "head/weights.npy")?;
        let (_, b) = array(&mut get, "head/biases.npy")?;
        let [d, c] = shape[..] else {
            return Err(ClassifyError::Format(format!(
                "head/weights.npy: shape {shape:?}, expected [inputs, classes]"
            )));
        };
        if d != input.width() || c != classes.len() {
            return Err(ClassifyError::Format(format!(
                "head/weights.npy is {d} x {c}; the input gives {} values and there are {} classes",
                input.width(),
                classes.len()
            )));
        }
        let head = Softmax::new(d, c, w, b).ok_or_else(|| {
            ClassifyError::Format("head: sizes disagree or a value is not finite".into())
        })?;
        Ok(Classifier {
            classes,
            input,
            head,
            info,
        })
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    name: &str,
    bytes: &[u8],
) -> Result<T, ClassifyError> {
    serde_json::from_slice(bytes).map_err(|e| ClassifyError::Format(format!("{name}: {e}")))
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

/// The `.npy` file `name`: its shape and values.
fn array(
    get: &mut impl FnMut(&str) -> Result<Vec<u8>, ClassifyError>,
    name: &str,
) -> Result<(Vec<usize>, Vec<f64>), ClassifyError> {
    let a = fruits_npy::Array::parse(&get(name)?)
        .map_err(|e| ClassifyError::Format(format!("{name}: {e}")))?;
    let v = a
        .to_f64()
        .map_err(|e| ClassifyError::Format(format!("{name}: {e}")))?;
    Ok((a.shape, v))
}
