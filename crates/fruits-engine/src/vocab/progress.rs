//! Live counters of a run ([`Progress`]).

use std::sync::atomic::AtomicU64;

/// Live counters a progress display can poll.
#[derive(Debug, Default)]
pub struct Progress {
    /// Images listed (known after listing).
    pub total: AtomicU64,
    /// Images featurised or skipped so far.
    pub done: AtomicU64,
    /// Images skipped so far.
    pub skipped: AtomicU64,
    /// Images whose features an interrupted run of the same command had staged (counted in
    /// `done`).
    pub resumed: AtomicU64,
}
