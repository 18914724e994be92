//! The dealbridge hub: CLI and server wiring around `dealbridge-core`.
//!
//! `settings` loads and validates the config, `connectors` turns connector
//! config blocks into running connector instances, `server` is the HTTP
//! surface (webhook inbox, admin API, health and metrics), and `app` ties
//! them into one value that `serve` runs and tests spawn on a random port.

pub mod app;
pub mod cli;
pub mod connectors;
pub mod mapping_handler;
pub mod processor;
pub mod reload;
pub mod server;
pub mod settings;
pub mod telemetry;
