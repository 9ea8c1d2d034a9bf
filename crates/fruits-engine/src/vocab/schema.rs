//! Every schema of a run, each with its typed row view.
//!
//! A view is built from a batch with `TryFrom<&RecordBatch>`: it finds each column by its
//! name (the constants in [`col`]) and checks its type, so code that reads a batch never
//! depends on the order of its columns. A schema and its view sit side by side: a column
//! added to one and not the other is an error on the first batch, never wrong data.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float32Array, ListArray, RecordBatch, StringArray, StructArray, UInt32Array,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};

/// Column names.
pub mod col {
    /// The partition (task) a row belongs to.
    pub const PARTITION: &str = "partition";
    /// The image's URI.
    pub const PATH: &str = "path";
    /// Its class: the name of its parent folder.
    pub const LABEL: &str = "label";
    /// The image file's bytes (null where it could not be read).
    pub const CONTENT: &str = "content";
    /// Why it could not be read.
    pub const READ_ERROR: &str = "read_error";
    /// The 1280 MobileNetV2 features.
    pub const FEATURES: &str = "features";
    /// The PCA projection of the features.
    pub const FEATURES_PCA: &str = "features_pca";
    /// `featurize`'s result: a struct of [`FEATURES`] and [`ERROR`].
    pub const FEATURIZED: &str = "featurized";
    /// Why an image could not be featurised.
    pub const ERROR: &str = "error";
    /// A staged part's name.
    pub const PART: &str = "part";
    /// Rows a task wrote.
    pub const ROWS: &str = "rows";
    /// Images a task was given.
    pub const IMAGES: &str = "images";
    /// The images a task set aside, as JSON.
    pub const SKIPPED: &str = "skipped";
    /// The distinct labels of a task's rows, as JSON.
    pub const LABELS: &str = "labels";
    /// The process that ran a task.
    pub const WORKER: &str = "worker";
    /// The hash of the MobileNetV2 weights that featurised an image (or a task's images).
    pub const WEIGHTS: &str = "weights";
    /// An input photo's size in bytes.
    pub const SIZE: &str = "size";
    /// An input photo's version: its ETag (S3) or modification time (local).
    pub const VERSION: &str = "version";
}

/// `List<Float32>` as written to Parquet (`features`, `features_pca`).
pub fn float_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true)))
}

fn schema(fields: Vec<Field>) -> SchemaRef {
    Arc::new(Schema::new(fields))
}

fn partition_field() -> Field {
    Field::new(col::PARTITION, DataType::UInt32, false)
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

/// The column `name` of `batch` as a `T`.
fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            DataFusionError::Internal(format!(
                "a batch without a {name} column of the expected type"
            ))
        })
}

/// A row view: a struct of typed columns, each found in a batch by its name.
macro_rules! row_view {
    (
        $(#[$doc:meta])*
        $name:ident {
            $( $(#[$fdoc:meta])* $field:ident: $ty:ty = $col:expr, )*
        }
    ) => {
        $(#[$doc])*
        pub struct $name<'a> {
            $( $(#[$fdoc])* pub $field: &'a $ty, )*
        }

        impl<'a> TryFrom<&'a RecordBatch> for $name<'a> {
            type Error = DataFusionError;
            fn try_from(b: &'a RecordBatch) -> Result<Self> {
                Ok($name {
                    $( $field: column(b, $col)?, )*
                })
            }
        }
    };
}

/// The partition number every row of `batch` carries (`None` for an empty batch).
pub fn partition_of(batch: &RecordBatch) -> Result<Option<u32>> {
    let partition = column::<UInt32Array>(batch, col::PARTITION)?;
    Ok((!partition.is_empty()).then(|| partition.value(0)))
}

/// The images to featurise: `partition`, `path` (object path in the input store), `label`.
pub fn image_list_schema() -> SchemaRef {
    schema(vec![partition_field(), text(col::PATH), text(col::LABEL)])
}

row_view! {
    /// A row view of [`image_list_schema`].
    ImageListRows {
        /// Partition of each row.
        partition: UInt32Array = col::PARTITION,
        /// Object path.
        path: StringArray = col::PATH,
        /// Label.
        label: StringArray = col::LABEL,
    }
}

impl ImageListRows<'_> {
    /// Builds a batch of [`image_list_schema`].
    pub fn batch<'s>(
        partition: u32,
        rows: impl ExactSizeIterator<Item = (&'s str, &'s str)> + Clone,
    ) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            image_list_schema(),
            vec![
                Arc::new(UInt32Array::from(vec![partition; rows.len()])) as ArrayRef,
                Arc::new(StringArray::from_iter_values(rows.clone().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.map(|r| r.1))),
            ],
        )?)
    }
}

/// The staged parts to project: `partition`, `part` (its name below the staging location).
pub fn part_list_schema() -> SchemaRef {
    schema(vec![partition_field(), text(col::PART)])
}

row_view! {
    /// A row view of [`part_list_schema`].
    PartListRows {
        /// Partition of each row.
        partition: UInt32Array = col::PARTITION,
        /// The part's name.
        part: StringArray = col::PART,
    }
}

impl PartListRows<'_> {
    /// A batch of [`part_list_schema`] naming one part.
    pub fn batch(partition: u32, part: &str) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            part_list_schema(),
            vec![
                Arc::new(UInt32Array::from(vec![partition])) as ArrayRef,
                Arc::new(StringArray::from(vec![part])),
            ],
        )?)
    }
}

/// Images read: `partition`, `path` (URI), `label`, `content` (null where the read failed),
/// `read_error` (why).
pub fn image_schema() -> SchemaRef {
    schema(vec![
        partition_field(),
        text(col::PATH),
        text(col::LABEL),
        Field::new(col::CONTENT, DataType::Binary, true),
        Field::new(col::READ_ERROR, DataType::Utf8, true),
    ])
}

/// Fields of `featurize`'s struct result: `features` (null if the image failed), `error`, and
/// `weights`, the hash of the weights that featurised it.
pub fn featurized_fields() -> Fields {
    Fields::from(vec![
        Field::new(col::FEATURES, float_list(), true),
        Field::new(col::ERROR, DataType::Utf8, true),
        Field::new(col::WEIGHTS, DataType::Utf8, true),
    ])
}

/// A view of featurised rows: the image rows [`FeaturizedRows::KEEP`] with
/// `featurize(content)` as [`col::FEATURIZED`].
pub struct FeaturizedRows<'a> {
    /// Partition.
    pub partition: &'a UInt32Array,
    /// URI.
    pub path: &'a StringArray,
    /// Label.
    pub label: &'a StringArray,
    /// Why the read failed.
    pub read_error: &'a StringArray,
    /// The features (null where the image failed).
    pub features: &'a ListArray,
    /// Why it failed.
    pub error: &'a StringArray,
    /// The hash of the weights that featurised it.
    pub weights: &'a StringArray,
}

impl FeaturizedRows<'_> {
    /// Why row `i` has no features (the read's error, else the decoder's), or `None` if it
    /// has them.
    pub fn failure(&self, i: usize) -> Option<&str> {
        if self.features.is_valid(i) {
            None
        } else if self.read_error.is_valid(i) {
            Some(self.read_error.value(i))
        } else if self.error.is_valid(i) {
            Some(self.error.value(i))
        } else {
            Some("no content")
        }
    }

    /// The image columns the featurise stage passes through beside `featurize(content)`.
    pub const KEEP: [&'static str; 4] = [col::PARTITION, col::PATH, col::LABEL, col::READ_ERROR];
}

impl<'a> TryFrom<&'a RecordBatch> for FeaturizedRows<'a> {
    type Error = DataFusionError;
    fn try_from(b: &'a RecordBatch) -> Result<Self> {
        let f: &StructArray = column(b, col::FEATURIZED)?;
        let field = |name: &str| {
            f.column_by_name(name).ok_or_else(|| {
                DataFusionError::Internal(format!("featurize's result has no {name}"))
            })
        };
        let bad = |name: &str| DataFusionError::Internal(format!("featurize's {name}: bad type"));
        Ok(FeaturizedRows {
            partition: column(b, col::PARTITION)?,
            path: column(b, col::PATH)?,
            label: column(b, col::LABEL)?,
            read_error: column(b, col::READ_ERROR)?,
            features: field(col::FEATURES)?
                .as_any()
                .downcast_ref()
                .ok_or_else(|| bad(col::FEATURES))?,
            error: field(col::ERROR)?
                .as_any()
                .downcast_ref()
                .ok_or_else(|| bad(col::ERROR))?,
            weights: field(col::WEIGHTS)?
                .as_any()
                .downcast_ref()
                .ok_or_else(|| bad(col::WEIGHTS))?,
        })
    }
}

/// Staged features, one part per partition: `path`, `label`, `features`.
pub fn features_schema() -> SchemaRef {
    schema(vec![
        text(col::PATH),
        text(col::LABEL),
        Field::new(col::FEATURES, float_list(), false),
    ])
}

row_view! {
    /// A row view of [`features_schema`] (and of any batch with those columns).
    FeatureRows {
        /// URI.
        path: StringArray = col::PATH,
        /// Label.
        label: StringArray = col::LABEL,
        /// The features.
        features: ListArray = col::FEATURES,
    }
}

impl FeatureRows<'_> {
    /// The rows as a batch of [`features_schema`], with `partition` in front when given
    /// ([`staged_schema`]).
    pub fn batch(&self, partition: Option<u32>) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(4);
        if let Some(p) = partition {
            columns.push(Arc::new(UInt32Array::from(vec![p; self.path.len()])));
        }
        columns.push(Arc::new(self.path.clone()));
        columns.push(Arc::new(self.label.clone()));
        columns.push(Arc::new(self.features.clone()));
        let schema = match partition {
            Some(_) => staged_schema(),
            None => features_schema(),
        };
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// The feature values of every row, back to back (each row has the same width).
    pub fn values(&self) -> Result<&[f32]> {
        list_values(self.features)
    }
}

/// The values of every row of a `List<Float32>` column, back to back.
pub fn list_values(list: &ListArray) -> Result<&[f32]> {
    let values = list
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| DataFusionError::Internal("a list of values is not float32".into()))?;
    let offsets = list.value_offsets();
    let (from, to) = (offsets[0] as usize, offsets[list.len()] as usize);
    Ok(&values.values()[from..to])
}

/// Staged features read back for projection: `partition` and the [`features_schema`] columns.
pub fn staged_schema() -> SchemaRef {
    let mut fields = vec![partition_field()];
    fields.extend(
        features_schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone()),
    );
    schema(fields)
}

/// The staged columns the project stage passes through beside `pca_project(features)`.
pub const STAGED_KEEP: [&str; 4] = [col::PARTITION, col::PATH, col::LABEL, col::FEATURES];

/// The result: the staged features plus `features_pca`.
pub fn output_schema() -> SchemaRef {
    let mut fields: Vec<Field> = features_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(col::FEATURES_PCA, float_list(), false));
    schema(fields)
}

row_view! {
    /// A row view of [`output_schema`] (and of projected rows, which also carry `partition`).
    OutputRows {
        /// URI.
        path: StringArray = col::PATH,
        /// Label.
        label: StringArray = col::LABEL,
        /// The features.
        features: ListArray = col::FEATURES,
        /// Their projection.
        features_pca: ListArray = col::FEATURES_PCA,
    }
}

impl OutputRows<'_> {
    /// The rows as a batch of [`output_schema`] (its columns declared non-null, as they are).
    pub fn batch(&self) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            output_schema(),
            vec![
                Arc::new(self.path.clone()) as ArrayRef,
                Arc::new(self.label.clone()),
                Arc::new(self.features.clone()),
                Arc::new(self.features_pca.clone()),
            ],
        )?)
    }
}

/// The one row each write task returns (see [`crate::vocab::TaskReport`]).
pub fn report_schema() -> SchemaRef {
    schema(vec![
        partition_field(),
        Field::new(col::ROWS, DataType::UInt64, false),
        Field::new(col::IMAGES, DataType::UInt64, false),
        text(col::SKIPPED),
        text(col::LABELS),
        text(col::WORKER),
        Field::new(col::WEIGHTS, DataType::Utf8, true),
    ])
}

row_view! {
    /// A row view of [`report_schema`].
    ReportRows {
        /// Partition.
        partition: UInt32Array = col::PARTITION,
        /// Rows written.
        rows: UInt64Array = col::ROWS,
        /// Images given.
        images: UInt64Array = col::IMAGES,
        /// Skipped images, as JSON.
        skipped: StringArray = col::SKIPPED,
        /// Distinct labels, as JSON.
        labels: StringArray = col::LABELS,
        /// Worker name.
        worker: StringArray = col::WORKER,
        /// Hash of the weights used.
        weights: StringArray = col::WEIGHTS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_find_columns_by_name_whatever_their_order() {
        let batch = PartListRows::batch(7, "_features/part-00007.parquet").unwrap();
        // The same columns, the other way round.
        let swapped = RecordBatch::try_new(
            schema(vec![text(col::PART), partition_field()]),
            vec![batch.column(1).clone(), batch.column(0).clone()],
        )
        .unwrap();
        let rows = PartListRows::try_from(&swapped).unwrap();
        assert_eq!(rows.partition.value(0), 7);
        assert_eq!(rows.part.value(0), "_features/part-00007.parquet");
        assert_eq!(partition_of(&swapped).unwrap(), Some(7));
        // A missing column is an error naming it.
        let err = ImageListRows::try_from(&batch).err().unwrap().to_string();
        assert!(err.contains("path"), "{err}");
    }
}

/// The photos a result's rows came from, as listed (`_inputs/inputs.parquet`): what
/// `--mode update` compares the input with.
pub fn inputs_schema() -> SchemaRef {
    schema(vec![
        text(col::PATH),
        Field::new(col::SIZE, DataType::UInt64, false),
        Field::new(col::VERSION, DataType::Utf8, true),
    ])
}

row_view! {
    /// A row view of [`inputs_schema`].
    InputRows {
        /// URI.
        path: StringArray = col::PATH,
        /// Size in bytes.
        size: UInt64Array = col::SIZE,
        /// ETag or modification time (null: unknown).
        version: StringArray = col::VERSION,
    }
}
