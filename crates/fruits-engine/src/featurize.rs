//! The featurise stage as a plan of its own: the images of a work list read, decoded and run
//! through the network, as rows of [`FeaturizedRows`]. `extract` writes these rows;
//! [`featurize_in_process`] hands them to a caller (`fruits predict`).

use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use fruits_model::MobileNetV2;
use fruits_store::{ImageRef, Location, S3Settings};
use futures::StreamExt;

use crate::error::EngineError;
use crate::plan::{image_list, with_udf_column, ImageReadExec, Limits};
use crate::store::Store;
use crate::udf::Featurize;
use crate::vocab::schema::{col, FeaturizedRows};
use crate::weights::ModelSource;

/// How images are featurised.
#[derive(Debug, Clone)]
pub struct FeaturizeSpec {
    /// The weights each process running the plan loads.
    pub weights: ModelSource,
    /// The network already loaded from `weights` in this process, if it was.
    pub model: Option<Arc<MobileNetV2>>,
    /// Images per model batch.
    pub batch_size: usize,
    /// What one image may cost.
    pub limits: Limits,
}

/// The plan: one partition per `(partition number, images)`, reading the images from `input`
/// and featurising them; the number names what the partition writes.
pub fn featurize_plan(
    input: &Store,
    partitions: &[(usize, &[ImageRef])],
    spec: &FeaturizeSpec,
) -> Result<Arc<dyn ExecutionPlan>, EngineError> {
    let scan = Arc::new(ImageReadExec::new(
        image_list(partitions)?,
        input,
        spec.batch_size,
        spec.limits,
    ));
    Ok(with_udf_column(
        scan,
        &FeaturizedRows::KEEP,
        Featurize::udf(spec.weights.clone(), spec.model.clone()),
        col::CONTENT,
        col::FEATURIZED,
    )?)
}

/// One image's features, or why it has none.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFeatures {
    /// Its URI.
    pub path: String,
    /// Its features, or one line saying why it could not be used.
    pub features: Result<Vec<f32>, String>,
}

/// Featurises `images` of `input` in this process, `threads` partitions at once, handing the
/// images of each batch to `each` as they are done (in no fixed order across partitions).
pub async fn featurize_in_process(
    input: &Location,
    s3: &S3Settings,
    images: &[ImageRef],
    spec: &FeaturizeSpec,
    threads: usize,
    mut each: impl FnMut(Vec<ImageFeatures>),
) -> Result<(), EngineError> {
    if images.is_empty() {
        return Ok(());
    }
    let per = images.len().div_ceil(threads.max(1)).max(1);
    let partitions: Vec<(usize, &[ImageRef])> = images.chunks(per).enumerate().collect();
    let plan = featurize_plan(&Store::new(input.clone(), s3), &partitions, spec)?;
    let ctx = SessionContext::new().task_ctx();
    // One task per partition (as `extract` runs them), merged: the model runs on the
    // runtime's workers, never on the thread that polls the merged stream.
    let mut all = datafusion::physical_plan::execute_stream(plan, ctx)?;
    while let Some(batch) = all.next().await {
        let batch = batch?;
        let f = FeaturizedRows::try_from(&batch)?;
        let rows = (0..batch.num_rows())
            .map(|i| {
                let features = match f.failure(i) {
                    Some(why) => Err(why.to_string()),
                    None => f
                        .features
                        .value(i)
                        .as_any()
                        .downcast_ref::<arrow::array::Float32Array>()
                        .map(|a| a.values().to_vec())
                        .ok_or_else(|| "features are not float32".to_string()),
                };
                ImageFeatures {
                    path: f.path.value(i).to_string(),
                    features,
                }
            })
            .collect();
        each(rows);
    }
    Ok(())
}
