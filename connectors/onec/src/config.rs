//! Configuration of a `onec` connector instance. Secrets never live in the
//! file: the `*_env` keys name the environment variables that hold them.

use std::collections::BTreeMap;

use serde::Deserialize;
use subtle::ConstantTimeEq;

/// `[connectors.<name>]` with `kind = "onec"`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OnecConfig {
    /// The infobase's web publication, e.g. `https://erp.example.ru/trade`:
    /// OData lives at `<base_url>/odata/standard.odata/`, HTTP services at
    /// `<base_url>/hs/`.
    pub base_url: String,
    /// The 1C infobase user the hub reads and writes as (HTTP Basic).
    pub user: String,
    /// Environment variable holding that user's password.
    pub password_env: String,
    /// The user the 1C HTTP service's notifications authenticate as (Basic);
    /// without it notifications carry `Authorization: Bearer <secret>`.
    #[serde(default)]
    pub notify_user: Option<String>,
    /// Environment variable holding the notifications' password or token.
    pub notify_secret_env: String,
    /// Root of the integration HTTP service under `/hs/` that takes the
    /// hub's notifications for users, e.g. `dealbridge/v1`.
    #[serde(default = "default_http_service")]
    pub http_service: String,
    /// Entity sets by record kind where the configuration's names differ
    /// from the defaults (`interest = "Document_CRM_Интерес"`, …).
    #[serde(default)]
    pub entity_sets: BTreeMap<String, String>,
    /// The Interest's stage attribute the stage maps' codes are written to.
    #[serde(default = "default_stage_field")]
    pub stage_field: String,
    /// Where a child Interest names its parent.
    #[serde(default = "default_parent_field")]
    pub parent_field: String,
    /// Where an Interest names its responsible user.
    #[serde(default = "default_responsible_field")]
    pub responsible_field: String,
    /// A string attribute of the Interest (and of documents the hub
    /// creates) that receives the creating command's id, so a retried
    /// create finds what an earlier attempt made instead of making it
    /// twice. Without it a create whose answer was lost may be repeated.
    #[serde(default)]
    pub origin_field: Option<String>,
    /// The task entity set `create_task` writes to.
    #[serde(default = "default_task_set")]
    pub task_set: String,
    /// The infobase's time zone: 1C dates carry no offset.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Every this many seconds, read the objects of `catch_up_kinds` dated
    /// within `catch_up_days` through OData and process the versions no
    /// notification brought. 0 turns the catch-up off.
    #[serde(default = "default_catch_up")]
    pub catch_up_secs: u64,
    #[serde(default = "default_catch_up_days")]
    pub catch_up_days: u32,
    #[serde(default = "default_catch_up_kinds")]
    pub catch_up_kinds: Vec<String>,
    /// Kinds whose notifications are read again through OData just before
    /// they are mapped (see the inbound half: a queued notification can be
    /// older than the hub's last write). Empty: map them as sent.
    #[serde(default = "default_catch_up_kinds")]
    pub fetch_kinds: Vec<String>,
}

fn default_http_service() -> String {
    "dealbridge/v1".into()
}
fn default_stage_field() -> String {
    "Этап".into()
}
fn default_parent_field() -> String {
    "Основание_Key".into()
}
fn default_responsible_field() -> String {
    "Ответственный_Key".into()
}
fn default_task_set() -> String {
    "Task_ЗадачаИсполнителя".into()
}
fn default_timezone() -> String {
    "Europe/Moscow".into()
}
const fn default_timeout() -> u64 {
    30
}
const fn default_connect_timeout() -> u64 {
    10
}
const fn default_catch_up() -> u64 {
    300
}
const fn default_catch_up_days() -> u32 {
    30
}
fn default_catch_up_kinds() -> Vec<String> {
    vec!["interest".into()]
}

/// What the 1C HTTP service's notifications must present. `Debug` never
/// shows a secret.
#[derive(Clone)]
pub enum InboundCredentials {
    /// `Authorization: Basic base64(user:password)`.
    Basic { expected: Vec<u8> },
    /// `Authorization: Bearer <token>`.
    Bearer { token: Vec<u8> },
}

impl std::fmt::Debug for InboundCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InboundCredentials::Basic { .. } => f.write_str("InboundCredentials::Basic(***)"),
            InboundCredentials::Bearer { .. } => f.write_str("InboundCredentials::Bearer(***)"),
        }
    }
}

impl InboundCredentials {
    /// Basic when a user is configured, else bearer. `None` for an empty secret.
    pub fn new(user: Option<&str>, secret: &str) -> Option<Self> {
        let secret = secret.trim();
        if secret.is_empty() {
            return None;
        }
        Some(match user {
            Some(user) => InboundCredentials::Basic { expected: format!("{user}:{secret}").into_bytes() },
            None => InboundCredentials::Bearer { token: secret.as_bytes().to_vec() },
        })
    }

    /// Whether an `Authorization` header value carries these credentials.
    /// Compared in constant time; `ct_eq` of different lengths is false
    /// without looking at the bytes (the length is no secret worth hiding).
    pub fn admits(&self, authorization: &str) -> Result<(), String> {
        let (scheme, value) = authorization.trim().split_once(' ').unwrap_or((authorization.trim(), ""));
        let value = value.trim();
        match self {
            InboundCredentials::Basic { expected } => {
                if !scheme.eq_ignore_ascii_case("basic") {
                    return Err("expected `Authorization: Basic`".into());
                }
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .map_err(|_| "the Basic credentials are not base64".to_owned())?;
                if bool::from(expected.as_slice().ct_eq(&decoded)) {
                    Ok(())
                } else {
                    Err("wrong user or password".into())
                }
            }
            InboundCredentials::Bearer { token } => {
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err("expected `Authorization: Bearer`".into());
                }
                if bool::from(token.as_slice().ct_eq(value.as_bytes())) { Ok(()) } else { Err("wrong token".into()) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    }

    #[test]
    fn a_minimal_block_takes_the_1c_defaults() {
        let c: OnecConfig = serde_json::from_value(serde_json::json!({
            "base_url": "https://erp.example.ru/trade", "user": "dealbridge",
            "password_env": "ONEC_PASSWORD", "notify_secret_env": "ONEC_NOTIFY_TOKEN"
        }))
        .unwrap();
        assert_eq!(c.stage_field, "Этап");
        assert_eq!(c.parent_field, "Основание_Key");
        assert_eq!(c.task_set, "Task_ЗадачаИсполнителя");
        assert_eq!((c.catch_up_secs, c.catch_up_days), (300, 30));
        assert_eq!(c.catch_up_kinds, ["interest"]);
        assert_eq!(c.origin_field, None);
    }

    #[test]
    fn basic_credentials_are_compared_whole() {
        let creds = InboundCredentials::new(Some("crm"), "s3cret").unwrap();
        assert_eq!(creds.admits(&basic("crm", "s3cret")), Ok(()));
        assert!(creds.admits(&basic("crm", "s3cre")).is_err());
        assert!(creds.admits(&basic("other", "s3cret")).is_err());
        assert!(creds.admits("Bearer s3cret").is_err());
        assert!(creds.admits("Basic !!!").unwrap_err().contains("base64"));
        assert!(!format!("{creds:?}").contains("s3cret"));
    }

    #[test]
    fn bearer_tokens_are_compared_and_empty_secrets_refused() {
        let creds = InboundCredentials::new(None, "tok-123").unwrap();
        assert_eq!(creds.admits("Bearer tok-123"), Ok(()));
        assert_eq!(creds.admits("bearer  tok-123 "), Ok(()));
        assert!(creds.admits("Bearer tok-124").is_err());
        assert!(creds.admits("tok-123").is_err());
        assert!(InboundCredentials::new(None, "  ").is_none());
    }
}
