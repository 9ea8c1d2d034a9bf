//! [`ImageReadExec`]: reads the images a work list names, as bytes, within a memory budget.

use std::fmt;
use std::sync::Arc;

use arrow::array::{BinaryBuilder, RecordBatch, StringBuilder, UInt32Array};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use fruits_store::Location;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{only_child, properties, unary_node};
use crate::process::io_runtime;
use crate::store::{Store, StoreRef};
use crate::vocab::schema::{image_schema, ImageListRows};

/// Objects read concurrently per partition (keeps an S3 pipe full).
const READ_AHEAD: usize = 16;

/// Bytes of image files read ahead per partition and not yet in a batch (bounds memory
/// whatever the files' sizes; a file larger than this is read alone).
const READ_BUDGET: u64 = 32 << 20;

/// A batch of image bytes is closed before it would grow past this (or `batch_size` rows).
const BATCH_BYTES: u64 = 32 << 20;

/// What one image may cost, checked before its bytes are read (file size, from the store's
/// answer) and before it is decoded (pixels, from its header). With the read budget and
/// batch cap above they bound a run's memory on any input (README, "Bad input").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limits {
    /// Largest image file read, in bytes.
    pub max_file_bytes: u64,
    /// Largest image decoded, in pixels (width x height).
    pub max_pixels: u64,
}

impl Limits {
    /// The defaults: 32 MiB files, 40 million pixels (a 7,300 x 5,480 photo).
    pub const DEFAULT: Limits = Limits {
        max_file_bytes: 32 << 20,
        max_pixels: 40_000_000,
    };

    /// Why `bytes` may not be decoded (too large a file, or too many pixels in its header), if
    /// it may not: the check an image read from a store gets, for images from elsewhere.
    pub fn refuse_bytes(&self, bytes: &[u8]) -> Option<String> {
        self.refuse(bytes.len() as u64, Some(bytes))
    }

    /// Why `bytes` (of a file of `size` bytes) may not be decoded, if it may not.
    fn refuse(&self, size: u64, bytes: Option<&[u8]>) -> Option<String> {
        if size > self.max_file_bytes {
            return Some(format!(
                "file of {size} bytes exceeds the {} MiB limit (--max-file-mb)",
                self.max_file_bytes >> 20
            ));
        }
        let (w, h) = fruits_image::dimensions(bytes?).ok()?;
        ((w as u64).saturating_mul(h as u64) > self.max_pixels).then(|| {
            format!(
                "image of {w}x{h} pixels exceeds the {}-pixel limit (--max-pixels)",
                self.max_pixels
            )
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// What an [`ImageReadExec`] is, apart from its input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageReadSpec {
    /// Where the images are.
    pub store: StoreRef,
    /// Rows per batch.
    pub batch_size: usize,
    /// What one image may cost.
    pub limits: Limits,
}

/// Reads the images its input lists ([`image_list`](super::image_list)) as bytes,
/// `batch_size` rows per batch, as rows of [`image_schema`]; images over the limits are set
/// aside with the reason, unread or undecoded.
#[derive(Debug)]
pub struct ImageReadExec {
    input: Arc<dyn ExecutionPlan>,
    spec: ImageReadSpec,
    location: Location,
    props: Arc<PlanProperties>,
}

impl ImageReadExec {
    /// Reads from `store` what `input` names.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        store: &Store,
        batch_size: usize,
        limits: Limits,
    ) -> Self {
        let spec = ImageReadSpec {
            store: store.reference.clone(),
            batch_size: batch_size.max(1),
            limits,
        };
        ImageReadExec::with_location(input, spec, store.location.clone())
    }

    /// The node `spec` describes, its store opened in this process.
    pub fn from_spec(input: Arc<dyn ExecutionPlan>, spec: ImageReadSpec) -> Result<Self> {
        let location = spec.store.open()?;
        Ok(ImageReadExec::with_location(input, spec, location))
    }

    fn with_location(
        input: Arc<dyn ExecutionPlan>,
        spec: ImageReadSpec,
        location: Location,
    ) -> Self {
        let props = properties(
            image_schema(),
            input.properties().output_partitioning().partition_count(),
        );
        ImageReadExec {
            input,
            spec,
            location,
            props,
        }
    }

    /// What it is.
    pub fn spec(&self) -> &ImageReadSpec {
        &self.spec
    }
}

impl DisplayAs for ImageReadExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ImageReadExec: from {}", self.spec.store.uri)
    }
}

impl ExecutionPlan for ImageReadExec {
    unary_node!("ImageReadExec");

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(ImageReadExec::with_location(
            only_child(children)?,
            self.spec.clone(),
            self.location.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        tracing::debug!(partition, "image read");
        let location = self.location.clone();
        let schema = image_schema();
        let batch_size = self.spec.batch_size;
        // One (partition, path, label) per image, in order.
        let rows = self
            .input
            .execute(partition, ctx)?
            .and_then(|batch| async move {
                let rows = ImageListRows::try_from(&batch)?;
                let rows: Vec<_> = (0..batch.num_rows())
                    .map(|i| {
                        Ok::<_, DataFusionError>((
                            rows.partition.value(i),
                            rows.path.value(i).to_string(),
                            rows.label.value(i).to_string(),
                        ))
                    })
                    .collect();
                Ok(futures::stream::iter(rows))
            })
            .try_flatten();
        let limits = self.spec.limits;
        // Open up to READ_AHEAD objects at once (their sizes known, bytes not yet read), take
        // each one's bytes from the read budget in list order (so the oldest read can always
        // proceed), then read the bodies concurrently.
        let budget = Arc::new(tokio::sync::Semaphore::new((READ_BUDGET >> 10) as usize));
        let reads = rows
            .map(move |row| {
                let location = location.clone();
                async move {
                    let (p, path, label) = row?;
                    // The listed path, verbatim: re-encoding it would name another object.
                    let opened = match fruits_store::stored_path(&path) {
                        Ok(path) => (location.uri_of(&path), location.open(&path).await),
                        Err(e) => (path, Err(e)),
                    };
                    Ok::<_, DataFusionError>((p, opened.0, label, opened.1))
                }
            })
            .buffered(READ_AHEAD)
            .and_then(move |(p, uri, label, opened)| {
                let budget = budget.clone();
                async move {
                    // A file refused for its size is never read: it needs no budget.
                    let opened = match opened {
                        Err(e) => Err(format!("read failed: {e}")),
                        Ok(o) => match limits.refuse(o.size(), None) {
                            Some(why) => Err(why),
                            None => Ok(o),
                        },
                    };
                    let size = opened.as_ref().map_or(0, |o| o.size());
                    let kib = (size.min(READ_BUDGET) >> 10).max(1) as u32;
                    let permit = budget.acquire_many_owned(kib).await.map_err(|e| {
                        DataFusionError::Internal(format!("read budget closed: {e}"))
                    })?;
                    Ok((p, uri, label, opened, permit))
                }
            })
            .map_ok(move |(p, uri, label, opened, permit)| async move {
                let bytes = match opened {
                    Err(why) => Err(why),
                    Ok(o) => match o.bytes().await {
                        Err(e) => Err(format!("read failed: {e}")),
                        Ok(b) => match limits.refuse(b.len() as u64, Some(&b)) {
                            Some(why) => Err(why),
                            None => Ok(b),
                        },
                    },
                };
                Ok::<_, DataFusionError>(Read {
                    partition: p,
                    uri,
                    label,
                    bytes,
                    permit: Some(permit),
                })
            })
            .try_buffered(READ_AHEAD);
        let batch_schema = schema.clone();
        let batches = batches_of(reads, batch_size, BATCH_BYTES).map(move |rows| {
            let rows = rows?;
            let mut part = Vec::with_capacity(rows.len());
            let mut path = StringBuilder::new();
            let mut label = StringBuilder::new();
            let mut content = BinaryBuilder::new();
            let mut error = StringBuilder::new();
            for row in rows {
                part.push(row.partition);
                path.append_value(&row.uri);
                label.append_value(&row.label);
                match &row.bytes {
                    Ok(b) => {
                        content.append_value(b);
                        error.append_null();
                    }
                    Err(e) => {
                        content.append_null();
                        error.append_value(e);
                    }
                }
                // `row`'s bytes are released here (the builder holds a copy).
            }
            Ok(RecordBatch::try_new(
                batch_schema.clone(),
                vec![
                    Arc::new(UInt32Array::from(part)),
                    Arc::new(path.finish()),
                    Arc::new(label.finish()),
                    Arc::new(content.finish()),
                    Arc::new(error.finish()),
                ],
            )?)
        });
        // Produce on the I/O runtime, one batch ahead; stops when the consumer goes away.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let producer = io_runtime()?.spawn(async move {
            let mut batches = std::pin::pin!(batches);
            while let Some(batch) = batches.next().await {
                if tx.send(batch).await.is_err() {
                    break;
                }
            }
        });
        let guard = AbortOnDrop(producer);
        let stream = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
            rx.recv().await.map(|b| (b, (rx, guard)))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// One image read (or refused), holding its share of the read budget until it is batched.
struct Read {
    partition: u32,
    uri: String,
    label: String,
    bytes: std::result::Result<bytes::Bytes, String>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// `reads` in order, grouped into batches of at most `rows` reads and, where a batch has
/// more than one, at most `max_bytes` bytes; an error ends the stream. A read gives its share
/// of the read budget back as it is taken into a batch (from then on the batch cap bounds
/// it), so the oldest read waiting for budget is never blocked by a batch waiting for it.
fn batches_of(
    reads: impl futures::Stream<Item = Result<Read>> + Send + 'static,
    rows: usize,
    max_bytes: u64,
) -> impl futures::Stream<Item = Result<Vec<Read>>> + Send + 'static {
    let reads = Box::pin(reads);
    futures::stream::unfold(
        (reads, None::<Read>, false),
        move |(mut reads, mut next, done)| async move {
            if done && next.is_none() {
                return None;
            }
            let mut batch: Vec<Read> = Vec::new();
            let mut bytes = 0u64;
            let size = |r: &Read| r.bytes.as_ref().map(|b| b.len() as u64).unwrap_or(0);
            let mut finished = done;
            loop {
                let read = match next.take() {
                    Some(r) => r,
                    None if finished => break,
                    None => match reads.next().await {
                        Some(Ok(mut r)) => {
                            r.permit = None;
                            r
                        }
                        Some(Err(e)) => return Some((Err(e), (reads, None, true))),
                        None => {
                            finished = true;
                            break;
                        }
                    },
                };
                if !batch.is_empty() && bytes + size(&read) > max_bytes {
                    next = Some(read);
                    break;
                }
                bytes += size(&read);
                batch.push(read);
                if batch.len() >= rows {
                    break;
                }
            }
            if batch.is_empty() {
                return None;
            }
            Some((Ok(batch), (reads, next, finished)))
        },
    )
}

/// Aborts a spawned task when the stream that consumes it is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(i: u32, len: usize) -> Result<Read> {
        Ok(Read {
            partition: 0,
            uri: i.to_string(),
            label: String::new(),
            bytes: Ok(bytes::Bytes::from(vec![0u8; len])),
            permit: None,
        })
    }

    #[tokio::test]
    async fn batches_close_at_rows_or_bytes_and_keep_order() {
        let reads = futures::stream::iter(vec![
            read(0, 10),
            read(1, 10),
            read(2, 100),
            read(3, 1),
            read(4, 1),
            read(5, 1),
            read(6, 1),
        ]);
        let batches: Vec<Vec<String>> = batches_of(reads, 3, 50)
            .map(|b| b.unwrap().into_iter().map(|r| r.uri).collect())
            .collect()
            .await;
        assert_eq!(
            batches,
            [vec!["0", "1"], vec!["2"], vec!["3", "4", "5"], vec!["6"]]
        );
    }

    #[test]
    fn limits_refuse_big_files_unread_and_big_images_undecoded() {
        let limits = Limits {
            max_file_bytes: 1 << 20,
            max_pixels: 100,
        };
        assert!(limits
            .refuse(2 << 20, None)
            .unwrap()
            .contains("1 MiB limit"));
        assert_eq!(limits.refuse(10, None), None);
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&11u32.to_be_bytes());
        png.extend_from_slice(&10u32.to_be_bytes());
        let why = limits.refuse(30, Some(&png)).unwrap();
        assert!(
            why.contains("11x10 pixels exceeds the 100-pixel limit"),
            "{why}"
        );
        png[19] = 9;
        assert_eq!(limits.refuse(30, Some(&png)), None);
    }
}
