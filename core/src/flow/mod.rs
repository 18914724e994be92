//! The flow engine: applies canonical events to canonical state and runs
//! the company's flows on what really changed.
//!
//! `plan` is the compiled, validated form of the flows in the mapping
//! files — the contract between the mapping loader (which builds it) and
//! the engine (which executes it).

pub mod plan;
