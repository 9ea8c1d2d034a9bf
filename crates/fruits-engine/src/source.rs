//! The image source: a listed set of images, split into partitions, read from the store as bytes.

use std::sync::Arc;

use arrow::array::{BinaryBuilder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;
use fruits_store::{ImageRef, Location};
use futures::StreamExt;

/// Objects read concurrently per partition (keeps an S3 pipe full; bounds memory).
const READ_AHEAD: usize = 16;

/// Schema of the source: `path`, `label`, `content` (null where the read failed) and
/// `read_error` (why).
pub fn source_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, false),
        Field::new("content", DataType::Binary, true),
        Field::new("read_error", DataType::Utf8, true),
    ]))
}

/// One partition of images: reads them in order, `batch_size` rows per batch.
#[derive(Debug)]
struct ImagePartition {
    schema: SchemaRef,
    location: Location,
    images: Arc<[ImageRef]>,
    batch_size: usize,
}

impl PartitionStream for ImagePartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let location = self.location.clone();
        let schema = self.schema.clone();
        let images = self.images.clone();
        let reads = futures::stream::iter(0..images.len())
            .map(move |i| {
                let location = location.clone();
                let images = images.clone();
                async move {
                    let img = &images[i];
                    let bytes = location.get(&img.path).await;
                    (img.uri.clone(), img.label.clone(), bytes)
                }
            })
            .buffered(READ_AHEAD)
            .chunks(self.batch_size.max(1));
        let batch_schema = schema.clone();
        let batches = reads.map(move |rows| -> Result<RecordBatch, DataFusionError> {
            let mut path = StringBuilder::new();
            let mut label = StringBuilder::new();
            let mut content = BinaryBuilder::new();
            let mut error = StringBuilder::new();
            for (uri, lab, bytes) in rows {
                path.append_value(&uri);
                label.append_value(&lab);
                match bytes {
                    Ok(b) => {
                        content.append_value(&b);
                        error.append_null();
                    }
                    Err(e) => {
                        content.append_null();
                        error.append_value(format!("read failed: {e}"));
                    }
                }
            }
            RecordBatch::try_new(
                batch_schema.clone(),
                vec![
                    Arc::new(path.finish()),
                    Arc::new(label.finish()),
                    Arc::new(content.finish()),
                    Arc::new(error.finish()),
                ],
            )
            .map_err(DataFusionError::from)
        });
        // Read ahead in a task of its own: the partition's own thread is busy running the
        // model, and reads must keep flowing meanwhile (S3 latency would stall it otherwise).
        let mut builder = RecordBatchReceiverStreamBuilder::new(schema, 2);
        let tx = builder.tx();
        builder.spawn(async move {
            let mut batches = std::pin::pin!(batches);
            while let Some(batch) = batches.next().await {
                if tx.send(batch).await.is_err() {
                    break; // the consumer is gone
                }
            }
            Ok(())
        });
        builder.build()
    }
}

/// A table over `images` split into at most `partitions` contiguous partitions.
pub fn image_table(
    location: &Location,
    images: &[ImageRef],
    partitions: usize,
    batch_size: usize,
) -> Result<StreamingTable, DataFusionError> {
    let schema = source_schema();
    let per = images.len().div_ceil(partitions.max(1)).max(1);
    let parts = images
        .chunks(per)
        .map(|chunk| {
            Arc::new(ImagePartition {
                schema: schema.clone(),
                location: location.clone(),
                images: chunk.to_vec().into(),
                batch_size,
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    StreamingTable::try_new(schema, parts)
}
