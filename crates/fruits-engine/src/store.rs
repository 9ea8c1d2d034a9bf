//! Store locations as plans name them: a URI and the non-secret S3 settings, so that a plan
//! can be sent to another process that opens the store with its own credentials.

use datafusion::error::{DataFusionError, Result};
use fruits_store::{Location, S3Settings};
use serde::{Deserialize, Serialize};

/// A store location as a plan names it: its URI and S3 settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoreRef {
    /// `file:///...` or `s3://bucket/prefix`.
    pub uri: String,
    /// How to reach S3.
    pub s3: S3Settings,
}

impl StoreRef {
    /// Opens the location with this process's credentials.
    pub fn open(&self) -> Result<Location> {
        Location::parse_with(&self.uri, &self.s3).map_err(|e| DataFusionError::External(e.into()))
    }
}

/// An already opened location and how to name it to another process.
#[derive(Debug, Clone)]
pub struct Store {
    /// How a plan names it.
    pub reference: StoreRef,
    /// The open store.
    pub location: Location,
}

impl Store {
    /// `location`, opened with `s3` (only the settings travel, never credentials).
    pub fn new(location: Location, s3: &S3Settings) -> Store {
        Store {
            reference: StoreRef {
                uri: location.uri(),
                s3: s3.clone(),
            },
            location,
        }
    }

    /// Opens `reference` (in a process that received a plan).
    pub fn open(reference: StoreRef) -> Result<Store> {
        let location = reference.open()?;
        Ok(Store {
            reference,
            location,
        })
    }
}
