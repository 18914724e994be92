//! Bitrix24 connector: outgoing-webhook events in, REST calls through an
//! incoming webhook out, and a portal emulator to rehearse both without a
//! real portal.
//!
//! - [`Bitrix24Inbound`] verifies outgoing-webhook events by their
//!   `auth[application_token]` and decodes them into `deal.event` /
//!   `item.event` records (events carry only ids).
//! - [`RestClient`] speaks the REST envelope of an incoming webhook and
//!   classifies its errors into the dispatcher's failure classes.
//! - [`Bitrix24Target`] performs the hub's commands (`crm.deal.update`,
//!   `crm.deal.add`, `tasks.task.add`, `im.notify.system.add`).
//! - [`emulator`] is an in-memory portal with the real envelope, paging,
//!   error codes, leaky-bucket limit and outgoing-webhook events.

pub mod brackets;
mod config;
pub mod emulator;
mod inbound;
mod outbound;
pub mod rest;

pub use config::{Bitrix24Config, WebhookUrl, WebhookUrlError};
pub use inbound::{ApplicationToken, Bitrix24Inbound, EventForm, encode_event};
pub use outbound::Bitrix24Target;
pub use rest::{RestClient, RestError};
