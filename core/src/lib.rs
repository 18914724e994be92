//! dealbridge core: the canonical deal model every connector maps into, the
//! durable store behind one narrow trait, the inbox that accepts raw events
//! before anything else happens to them, the mapping files and the flow
//! engine, and the runner that drives the engine against the store.
//!
//! Nothing in this crate knows a CRM: stage names, field codes and rules live
//! in mapping files, and system-specific wire formats live in `connectors/`.

pub mod allocator;
pub mod bus;
pub mod connector;
pub mod delivery;
pub mod explain;
pub mod flow;
pub mod inbox;
pub mod mapping;
pub mod model;
pub mod outbox;
pub mod replay;
pub mod runner;
pub mod store;
pub mod testing;
