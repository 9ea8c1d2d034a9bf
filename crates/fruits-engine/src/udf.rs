//! The scalar UDFs of the plan: `featurize(content)` and `pca_project(features)`, and the
//! [`FunctionSpec`] that carries either to another process.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Builder, ListBuilder, StringBuilder, StructArray,
};
use arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use fruits_model::{MobileNetV2, FEATURES, INPUT_LEN};
use fruits_pca::PcaModel;
use serde::{Deserialize, Serialize};

use crate::vocab::schema::{featurized_fields, float_list};
use crate::weights::ModelSource;

/// `featurize(content: binary) -> struct<features: list<float32>, error: utf8>`:
/// decode + Pillow resize + MobileNetV2 on a whole batch of rows; one bad image yields a null
/// `features` and its `error`, never a failed batch. Null content yields nulls in both.
///
/// The network comes from its [`ModelSource`], loaded on first use and shared by every task
/// of the process ([`ModelSource::shared`]), unless one was handed over already.
#[derive(Debug)]
pub struct Featurize {
    source: ModelSource,
    model: OnceLock<Arc<MobileNetV2>>,
    signature: Signature,
}

impl Featurize {
    /// A UDF using the weights of `source`; `model`, if given, is those weights already
    /// loaded (nothing is loaded until a batch arrives otherwise).
    pub fn new(source: ModelSource, model: Option<Arc<MobileNetV2>>) -> Featurize {
        let cell = OnceLock::new();
        if let Some(model) = model {
            let _ = cell.set(model);
        }
        Featurize {
            source,
            model: cell,
            signature: Signature::exact(vec![DataType::Binary], Volatility::Immutable),
        }
    }

    /// As a DataFusion `ScalarUDF`.
    pub fn udf(source: ModelSource, model: Option<Arc<MobileNetV2>>) -> ScalarUDF {
        ScalarUDF::new_from_impl(Featurize::new(source, model))
    }

    /// Where its weights come from.
    pub fn source(&self) -> &ModelSource {
        &self.source
    }

    fn model(&self) -> Result<Arc<MobileNetV2>> {
        if let Some(model) = self.model.get() {
            return Ok(model.clone());
        }
        let model = self
            .source
            .shared()
            .map_err(|e| DataFusionError::Execution(format!("featurize: {e}")))?;
        Ok(self.model.get_or_init(|| model).clone())
    }
}

impl PartialEq for Featurize {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for Featurize {}
impl Hash for Featurize {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}

impl ScalarUDFImpl for Featurize {
    fn name(&self) -> &str {
        "featurize"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(featurized_fields()))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let content = arrays[0].as_binary_opt::<i32>().ok_or_else(|| {
            DataFusionError::Execution(format!(
                "featurize expects binary, got {}",
                arrays[0].data_type()
            ))
        })?;
        let n = content.len();
        let started = std::time::Instant::now();
        let images = (0..n).map(|i| (!content.is_null(i)).then(|| content.value(i)));
        let Batch {
            outcome,
            features,
            model,
        } = featurize_bytes(images, || self.model())?;
        let good = features.len() / FEATURES;

        let mut list =
            ListBuilder::with_capacity(Float32Builder::with_capacity(good * FEATURES), n);
        let mut errors = StringBuilder::new();
        let mut weights = StringBuilder::new();
        for o in &outcome {
            match (o, &model) {
                (Some(Ok(row)), Some(model)) => {
                    list.values()
                        .append_slice(&features[row * FEATURES..(row + 1) * FEATURES]);
                    list.append(true);
                    errors.append_null();
                    weights.append_value(model.weights_hash());
                }
                (Some(Err(e)), _) => {
                    list.append(false);
                    errors.append_value(e);
                    weights.append_null();
                }
                _ => {
                    list.append(false);
                    errors.append_null();
                    weights.append_null();
                }
            }
        }
        tracing::debug!(
            rows = n,
            images = good,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "featurize batch"
        );
        let s = StructArray::try_new(
            featurized_fields(),
            vec![
                Arc::new(list.finish()) as ArrayRef,
                Arc::new(errors.finish()),
                Arc::new(weights.finish()),
            ],
            None,
        )?;
        Ok(ColumnarValue::Array(Arc::new(s)))
    }
}

/// Featurised images: what [`featurize_bytes`] returns.
pub struct Batch {
    /// Per image: `None` (no content), the row of its features, or why it failed.
    pub outcome: Vec<Option<std::result::Result<usize, String>>>,
    /// The features of the images that decoded, row after row.
    pub features: Vec<f32>,
    /// The network that ran, if any image decoded.
    pub model: Option<Arc<MobileNetV2>>,
}

/// The one featurisation of fruits, used by the plan's `featurize`, by `fruits predict` and by
/// `fruits serve`: each image decoded, resized as Pillow does and scaled
/// ([`fruits_image::preprocess`]), then one forward pass over the images that decoded, on the
/// calling thread. `model` is asked for only if an image decoded.
pub fn featurize_bytes<'a>(
    images: impl ExactSizeIterator<Item = Option<&'a [u8]>>,
    model: impl FnOnce() -> Result<Arc<MobileNetV2>>,
) -> Result<Batch> {
    let n = images.len();
    let mut input = vec![0.0f32; n * INPUT_LEN];
    let mut outcome = Vec::with_capacity(n);
    let mut good = 0;
    for image in images {
        let Some(bytes) = image else {
            outcome.push(None);
            continue;
        };
        let slot = &mut input[good * INPUT_LEN..(good + 1) * INPUT_LEN];
        match fruits_image::preprocess(bytes, slot) {
            Ok(()) => {
                outcome.push(Some(Ok(good)));
                good += 1;
            }
            Err(e) => outcome.push(Some(Err(e.to_string()))),
        }
    }
    let mut features = vec![0.0f32; good * FEATURES];
    let model = if good > 0 { Some(model()?) } else { None };
    if let Some(model) = &model {
        model.forward(&input[..good * INPUT_LEN], &mut features, 1);
    }
    Ok(Batch {
        outcome,
        features,
        model,
    })
}

/// `pca_project(features: list<float32>) -> list<float32>`: the fitted scaler + PCA.
#[derive(Debug)]
pub struct PcaProject {
    model: Arc<PcaModel>,
    signature: Signature,
}

impl PcaProject {
    /// As a DataFusion `ScalarUDF`.
    pub fn udf(model: Arc<PcaModel>) -> ScalarUDF {
        ScalarUDF::new_from_impl(PcaProject {
            model,
            signature: Signature::exact(vec![float_list()], Volatility::Immutable),
        })
    }
}

impl PcaProject {
    /// The fitted scaler + PCA it applies.
    pub fn model(&self) -> &Arc<PcaModel> {
        &self.model
    }
}

impl PartialEq for PcaProject {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.model, &other.model)
    }
}
impl Eq for PcaProject {}
impl Hash for PcaProject {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl ScalarUDFImpl for PcaProject {
    fn name(&self) -> &str {
        "pca_project"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(float_list())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let lists = arrays[0].as_list_opt::<i32>().ok_or_else(|| {
            DataFusionError::Execution("pca_project expects list<float32>".into())
        })?;
        let (dim, k) = (self.model.dim(), self.model.k());
        let mut out =
            ListBuilder::with_capacity(Float32Builder::with_capacity(lists.len() * k), lists.len());
        // The non-null rows, checked and gathered, projected as one matrix product.
        let mut rows = Vec::with_capacity(lists.len() * dim);
        for i in (0..lists.len()).filter(|&i| !lists.is_null(i)) {
            let row = lists.value(i);
            let row = row
                .as_primitive_opt::<arrow::datatypes::Float32Type>()
                .ok_or_else(|| {
                    DataFusionError::Execution("pca_project expects list<float32>".into())
                })?;
            if row.len() != dim || row.null_count() > 0 {
                return Err(DataFusionError::Execution(format!(
                    "pca_project: a row has {} values ({} null), the PCA was fitted on {dim}",
                    row.len(),
                    row.null_count()
                )));
            }
            rows.extend_from_slice(row.values());
        }
        let mut y = vec![0.0f32; rows.len() / dim.max(1) * k];
        self.model.project_rows(&rows, &mut y);
        let mut projected = y.chunks_exact(k.max(1));
        for i in 0..lists.len() {
            if lists.is_null(i) {
                out.append(false);
                continue;
            }
            if let (true, Some(y)) = (k > 0, projected.next()) {
                out.values().append_slice(y);
            }
            out.append(true);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// What a fruits function is: enough to rebuild it in another process. The fitted PCA of
/// `pca_project` travels beside the spec, as bytes ([`PcaModel::to_bytes`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "function")]
pub enum FunctionSpec {
    /// `featurize`, with the weights each process loads.
    Featurize {
        /// Where the weights are.
        source: ModelSource,
    },
    /// `pca_project`; the body holds the PCA.
    PcaProject,
}

impl FunctionSpec {
    /// The spec of `udf` and its body, if it is a fruits function.
    pub fn of(udf: &ScalarUDF) -> Option<(FunctionSpec, Vec<u8>)> {
        if let Some(f) = udf.inner().downcast_ref::<Featurize>() {
            let spec = FunctionSpec::Featurize {
                source: f.source().clone(),
            };
            return Some((spec, Vec::new()));
        }
        udf.inner()
            .downcast_ref::<PcaProject>()
            .map(|p| (FunctionSpec::PcaProject, p.model().to_bytes()))
    }

    /// The function this spec (and `body`) describes.
    pub fn into_udf(self, body: &[u8]) -> Result<ScalarUDF> {
        Ok(match self {
            FunctionSpec::Featurize { source } => Featurize::udf(source, None),
            FunctionSpec::PcaProject => {
                let model = PcaModel::from_bytes(body)
                    .map_err(|e| DataFusionError::Internal(format!("a fruits PCA: {e}")))?;
                PcaProject::udf(Arc::new(model))
            }
        })
    }
}
