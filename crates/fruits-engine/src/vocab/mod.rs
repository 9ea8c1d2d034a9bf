//! The words the plan nodes and the job share: schemas with their typed row views
//! ([`schema`]), object names ([`names`]), task reports ([`report`]), the run summary
//! ([`summary`]) and progress counters ([`progress`]). Nothing here knows a plan node.

pub mod names;
pub mod progress;
pub mod report;
pub mod schema;
pub mod summary;

pub use names::WriteKind;
pub use progress::Progress;
pub use report::{Skipped, TaskReport};
