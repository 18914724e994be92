//! The flow engine: applies canonical events to canonical state and runs
//! the company's flows on what really changed.
//!
//! - `plan`: the compiled, validated flows — the contract between the
//!   mapping loader (which builds it) and the engine (which executes it);
//! - `world`: the slice of state one event works on, and what it changed;
//! - `engine`: event in → changes, cascading flows, effects out;
//! - `observe`, `documents`, `actions`, `guards`: what each kind of event
//!   and action does;
//! - `context`: minijinja conditions and templates over deals;
//! - `outbound`: canonical writes → commands in each system's terms;
//! - `calendar`: working-time arithmetic for delays and due dates.

mod actions;
pub mod calendar;
pub mod context;
pub mod deal_fields;
mod documents;
pub mod effects;
pub mod engine;
mod guards;
mod native_text;
mod observe;
pub mod outbound;
pub mod plan;
#[cfg(test)]
mod tests;
pub mod world;

pub use context::FlowRuntime;
pub use effects::{Change, Command, CommandOp, Effects, Notification, Problem, TraceKind, TraceStep};
pub use engine::{Cause, Engine, EngineError};
pub use outbound::{NoSystems, OutboundMap};
pub use world::{DealTotals, Dirty, IdSource, World};
