//! What the runner stores with every committed batch so that a killed runtime
//! resumes exactly where the ledger ends.
//!
//! The checkpoint is written in the same transaction as the batch it follows
//! (see [`crate::ledger::LedgerStore::write_batch`]), so the stored rows and
//! the stored state always describe the same instant. Resuming rebuilds the
//! engine from [`Checkpoint::engine`] and skips the first
//! [`Checkpoint::feed_items`] items of the (deterministic) feed.

use serde::{Deserialize, Serialize};

use super::control::ReloadedStrategy;
use crate::engine::EngineCheckpoint;
use crate::figures::BenchmarkPrices;
use crate::types::Timestamp;

/// Version of the checkpoint format; a runtime refuses a checkpoint of
/// another version with a clear error instead of guessing.
pub const CHECKPOINT_VERSION: u32 = 1;

/// The runner's checkpoint (stored as JSON text).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// Market time between snapshots, ms: a run option that changes the
    /// records, so a resume with another value is refused.
    pub snapshot_interval_ms: i64,
    /// Items taken from the feed so far (candles, including ones the feed
    /// check rejected).
    pub feed_items: u64,
    /// Candles handed to the engine so far.
    pub candles: u64,
    /// Open time of the session's first candle (`stopAfter` counts from it).
    pub first_open: Option<Timestamp>,
    /// The engine's state after the batch.
    pub engine: EngineCheckpoint,
    /// The strategy in force when a hot reload replaced the manifest's
    /// (absent otherwise): a resumed session runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<ReloadedStrategy>,
    /// The report benchmark's inputs (each symbol's first open and last
    /// close, the fee rate); absent in checkpoints of older runtimes (their
    /// reports then have no benchmark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benchmark: Option<BenchmarkPrices>,
}

/// A stored checkpoint that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Not JSON of the expected shape.
    #[error("the stored checkpoint is not readable ({0}); the ledger row may be corrupt")]
    Parse(#[from] serde_json::Error),
    /// Written by another format version.
    #[error(
        "the stored checkpoint has format version {found}, this runtime reads version {CHECKPOINT_VERSION}"
    )]
    Version {
        /// The stored version.
        found: u32,
    },
}

impl Checkpoint {
    /// Serialize to the JSON text stored in the ledger.
    ///
    /// # Errors
    /// A serde error (not expected for these types).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Parse stored JSON text and check its version.
    ///
    /// # Errors
    /// [`CheckpointError`] when the text does not parse or has another version.
    pub fn from_json(text: &str) -> Result<Self, CheckpointError> {
        let cp: Checkpoint = serde_json::from_str(text)?;
        if cp.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Version { found: cp.version });
        }
        Ok(cp)
    }
}
