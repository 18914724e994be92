//! Bitrix24 connector: outgoing-webhook events in, REST calls through an
//! incoming webhook out, and a portal emulator to rehearse both without a
//! real portal.
//!
//! - [`Bitrix24Inbound`] verifies outgoing-webhook events by their
//!   `auth[application_token]` and decodes them into `deal.event` /
//!   `item.event` records (events carry only ids).
//! - [`fetch`] reads the deal an event names (`crm.deal.get`) before it is
//!   mapped, through the portal's rate budget ([`reader`]); [`catch_up`]
//!   finds changes whose events were lost; [`stages`] caches the portal's
//!   pipelines and stages so mappings can name stages by name.
//! - [`RestClient`] speaks the REST envelope of an incoming webhook and
//!   classifies its errors into the dispatcher's failure classes.
//! - [`Bitrix24Target`] performs the hub's commands (`crm.deal.update`,
//!   `crm.deal.add`, `crm.item.add/update` for smart-process items,
//!   `tasks.task.add`, `im.notify.system.add`, `crm.timeline.comment.add`);
//!   [`records`] tells a deal's id from a smart-process item's.
//! - [`emulator`] is an in-memory portal with the real envelope, paging,
//!   error codes, leaky-bucket limit and outgoing-webhook events.

pub mod brackets;
pub mod catch_up;
mod config;
pub mod emulator;
pub mod fetch;
mod inbound;
mod outbound;
pub mod reader;
pub mod records;
pub mod rest;
pub mod stages;

pub use config::{Bitrix24Config, WebhookUrl, WebhookUrlError};
pub use inbound::{ApplicationToken, Bitrix24Inbound, EventForm, encode_event};
pub use outbound::Bitrix24Target;
pub use reader::{PortalReader, ReadBudget};
pub use rest::{RestClient, RestError};
