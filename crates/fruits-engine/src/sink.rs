//! The Parquet sink: one part file per partition, streamed to the store.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use fruits_store::Location;
use object_store::buffered::BufWriter;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::error::EngineError;

/// Rows per Parquet row group: ~10 MB of features, so a writer's memory stays small.
const ROW_GROUP_ROWS: usize = 2048;

/// A Parquet file being written to a store.
pub struct PartWriter {
    writer: AsyncArrowWriter<BufWriter>,
    uri: String,
    rows: u64,
}

impl PartWriter {
    /// Starts `rel` below `location`.
    pub fn create(
        location: &Location,
        rel: &str,
        schema: SchemaRef,
    ) -> Result<PartWriter, EngineError> {
        let path = location.child(rel);
        let uri = location.uri_of(&path);
        // Dictionaries pay off for the repeated strings (labels), not for the feature floats,
        // where the writer would build one per page only to give it up.
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_dictionary_enabled(false);
        for field in schema.fields() {
            if matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8) {
                let column = ColumnPath::new(vec![field.name().clone()]);
                props = props.set_column_dictionary_enabled(column, true);
            }
        }
        let props = props.build();
        let object = BufWriter::new(location.store().clone(), path);
        let writer = AsyncArrowWriter::try_new(object, schema, Some(props)).map_err(|source| {
            EngineError::Parquet {
                uri: uri.clone(),
                source,
            }
        })?;
        Ok(PartWriter {
            writer,
            uri,
            rows: 0,
        })
    }

    /// Appends a batch.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), EngineError> {
        self.writer
            .write(batch)
            .await
            .map_err(|source| EngineError::Parquet {
                uri: self.uri.clone(),
                source,
            })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Finishes the file; returns the rows written.
    pub async fn close(self) -> Result<u64, EngineError> {
        self.writer
            .close()
            .await
            .map_err(|source| EngineError::Parquet {
                uri: self.uri,
                source,
            })?;
        Ok(self.rows)
    }
}
