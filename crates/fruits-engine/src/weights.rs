//! Which weights a plan uses ([`ModelSource`]), loaded once per process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use fruits_model::MobileNetV2;
use fruits_store::S3Settings;

use crate::error::EngineError;

/// Which weights a plan's `featurize` uses: what the user gave (`None`: each process finds its
/// own, see [`fruits_weights::locate`]) and how to reach S3 for `s3://` weights.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ModelSource {
    /// A folder of `.npy` tensors or a Keras `.h5` file, local or `s3://`.
    pub weights: Option<String>,
    /// S3 settings for `s3://` weights.
    pub s3: S3Settings,
}

impl ModelSource {
    /// The weights `weights` names (see the field), reached with the settings of `s3`.
    pub fn new(weights: Option<String>, s3: &S3Settings) -> ModelSource {
        ModelSource {
            weights,
            s3: s3.clone(),
        }
    }

    /// Loads the network ([`fruits_weights::resolve`]: `s3://` weights are copied to the
    /// cache first).
    pub async fn load(&self) -> Result<MobileNetV2, EngineError> {
        let weights = fruits_weights::resolve(self.weights.as_deref(), &self.s3).await?;
        Ok(MobileNetV2::from_tensors(&weights.tensors)?)
    }

    /// The network for this source, loaded once per process and shared by every task that
    /// asks for it (callable from any thread, inside or outside an async runtime).
    pub fn shared(&self) -> Result<Arc<MobileNetV2>, EngineError> {
        static MODELS: OnceLock<Mutex<HashMap<ModelSource, Arc<MobileNetV2>>>> = OnceLock::new();
        // Held while loading: concurrent tasks wait for the one load instead of repeating it.
        let mut models = MODELS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(model) = models.get(self) {
            return Ok(model.clone());
        }
        // A thread of its own with its own runtime: this may be called from async code.
        let model = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| EngineError::Task(format!("starting a runtime: {e}")))?;
                rt.block_on(self.load())
            })
            .join()
            .unwrap_or_else(|_| Err(EngineError::Task("loading the weights panicked".into())))
        })?;
        let model = Arc::new(model);
        models.insert(self.clone(), model.clone());
        Ok(model)
    }
}
