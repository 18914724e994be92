//! End-to-end tests of the hub over real HTTP: one test binary, one module
//! per story, so the whole suite links once.

mod amocrm;
mod bitrix24;
mod bitrix24_reads;
mod cli;
mod crash;
mod delivery;
mod engine;
mod erp_sync;
mod inbox;
mod lifecycle;
mod onec;
mod onec_payments;
mod replicas;
mod security;
mod statements;
mod support;
