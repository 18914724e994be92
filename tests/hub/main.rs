//! End-to-end tests of the hub over real HTTP: one test binary, one module
//! per story, so the whole suite links once.

mod bitrix24;
mod cli;
mod crash;
mod delivery;
mod engine;
mod inbox;
mod lifecycle;
mod replicas;
mod security;
mod statements;
mod support;
