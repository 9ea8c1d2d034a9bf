//! The work lists: in-memory tables whose rows carry their partition number.
//!
//! A cluster scheduler hands each task only its own partitions of such a table (it cannot
//! split an unknown leaf, and would run all of them in every task), and the number in the
//! rows names the task's output wherever it runs.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use fruits_store::ImageRef;

use crate::vocab::schema::{image_list_schema, part_list_schema, ImageListRows, PartListRows};

/// The images to featurise ([`image_list_schema`]): one partition per `(partition number,
/// images)` (object paths of the store they are read from).
pub fn image_list(partitions: &[(usize, &[ImageRef])]) -> Result<Arc<dyn ExecutionPlan>> {
    let batches = partitions
        .iter()
        .map(|(p, images)| {
            let rows = images.iter().map(|i| (i.path.as_ref(), i.label.as_str()));
            Ok(vec![ImageListRows::batch(*p as u32, rows)?])
        })
        .collect::<Result<Vec<Vec<RecordBatch>>>>()?;
    Ok(MemorySourceConfig::try_new_exec(
        &batches,
        image_list_schema(),
        None,
    )?)
}

/// The staged parts to project ([`part_list_schema`]): one partition per
/// `(partition number, part name)`.
pub fn part_list(parts: &[(usize, String)]) -> Result<Arc<dyn ExecutionPlan>> {
    let batches = parts
        .iter()
        .map(|(p, name)| Ok(vec![PartListRows::batch(*p as u32, name)?]))
        .collect::<Result<Vec<_>>>()?;
    Ok(MemorySourceConfig::try_new_exec(
        &batches,
        part_list_schema(),
        None,
    )?)
}
