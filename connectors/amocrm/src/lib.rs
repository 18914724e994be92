//! amoCRM connector: lead webhooks in, API v4 calls with a bearer token
//! out, and an account emulator to rehearse both without a real account.
//!
//! - [`AmocrmInbound`] checks a webhook's URL token and account, and
//!   decodes its lead entries (`leads[status|add|update|delete|…][N][…]`,
//!   several per POST) into `lead` records ([`webhook`]).
//! - [`ApiClient`] speaks API v4 (HAL answers, problem-JSON errors) and
//!   classifies its errors into the dispatcher's failure classes.
//! - [`AmocrmTarget`] performs the hub's commands (`PATCH /api/v4/leads/{id}`,
//!   `POST /api/v4/leads`, tasks, notes).
//! - [`emulator`] is an in-memory account with the real envelope, errors,
//!   the 7 requests per second limit and lead webhooks.

pub mod api;
mod config;
pub mod emulator;
mod inbound;
mod outbound;
pub mod webhook;

use dealbridge_core::delivery::RateQuota;

pub use api::{AccessToken, ApiClient, ApiError};
pub use config::{AmocrmConfig, BaseUrlError};
pub use inbound::{AmocrmInbound, TOKEN_PARAM, WebhookLeads, WebhookToken};
pub use outbound::{AmocrmTarget, CUSTOM_FIELD_PREFIX};
pub use webhook::{LeadAction, WebhookForm, encode_webhook};

/// amoCRM's documented limit: at most 7 requests per second per account.
/// The dispatcher spends it unless `[delivery.targets.<name>]` says otherwise.
pub const DEFAULT_QUOTA: RateQuota = RateQuota { per_second: 7.0, burst: 7 };
