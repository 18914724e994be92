//! Bus errors: the broker or store is unavailable, a message was not
//! accepted, or the topology could lose messages.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The embedded queue's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker cannot be reached or the channel/connection failed.
    #[error("message broker unavailable: {0}")]
    Unavailable(String),
    /// The broker did not take responsibility for a message (nack, or it
    /// could not be routed to any queue).
    #[error("message not accepted by the broker: {0}")]
    NotAccepted(String),
    /// The topology could lose messages or does not match what the hub
    /// needs; the hub refuses to start on it.
    #[error("unsafe or mismatched bus topology: {0}")]
    Topology(String),
    /// A caller mistake, e.g. a partition number out of range.
    #[error("invalid bus request: {0}")]
    Invalid(String),
}

impl From<lapin::Error> for BusError {
    fn from(e: lapin::Error) -> Self {
        BusError::Unavailable(e.to_string())
    }
}
