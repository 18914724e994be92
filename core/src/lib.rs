//! dealbridge core: the canonical deal model every connector maps into, the
//! durable store behind one narrow trait, and the inbox that accepts raw
//! events before anything else happens to them.
//!
//! Nothing in this crate knows a CRM: stage names, field codes and rules live
//! in mapping files, and system-specific wire formats live in `connectors/`.

pub mod connector;
pub mod flow;
pub mod inbox;
pub mod mapping;
pub mod model;
pub mod store;
pub mod testing;
