//! Both halves of a configured instance, built from its config block and
//! the secrets the hub read from the environment: they share one OData
//! client (one publication, one user).

use std::time::Duration;

use crate::catch_up::CatchUp;
use crate::config::{InboundCredentials, OnecConfig};
use crate::kinds::{EntitySets, RecordKind};
use crate::odata::{Credentials, ODataClient};
use crate::{OnecInbound, OnecTarget};

/// Builds an instance; the error names what is wrong (never a secret).
pub fn build(config: &OnecConfig, password: &str, notify_secret: &str) -> Result<(OnecInbound, OnecTarget), String> {
    let credentials = InboundCredentials::new(config.notify_user.as_deref(), notify_secret)
        .ok_or("the notification secret is empty")?;
    let client = ODataClient::new(
        &config.base_url,
        Credentials::new(config.user.clone(), password),
        Duration::from_secs(config.timeout_secs),
        Duration::from_secs(config.connect_timeout_secs),
    )?;
    let sets = EntitySets::with_overrides(&config.entity_sets)?;
    let kinds = |key: &str, names: &[String]| -> Result<Vec<RecordKind>, String> {
        names
            .iter()
            .map(|name| match RecordKind::parse(name) {
                Some(kind) if kind.has_ref() => Ok(kind),
                Some(_) => Err(format!("{key}: `{name}` has no Ref_Key to read it by")),
                None => Err(format!("{key}: `{name}` is not a record kind")),
            })
            .collect()
    };
    let polled: Vec<(RecordKind, String)> =
        kinds("catch_up_kinds", &config.catch_up_kinds)?.into_iter().map(|k| (k, sets.of(k).to_owned())).collect();
    let fetched = kinds("fetch_kinds", &config.fetch_kinds)?;
    let catch_up = (config.catch_up_secs > 0 && !polled.is_empty())
        .then(|| CatchUp::new(client.clone(), polled, Duration::from_secs(config.catch_up_secs), config.catch_up_days));
    let inbound = OnecInbound::new(credentials, catch_up).reading(client.clone(), sets, fetched);
    let target = OnecTarget::new(config, client)?;
    Ok((inbound, target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dealbridge_core::connector::InboundConnector;

    fn config(extra: serde_json::Value) -> OnecConfig {
        let mut block = serde_json::json!({
            "base_url": "http://127.0.0.1:9001/trade", "user": "hub",
            "password_env": "ONEC_PASSWORD", "notify_secret_env": "ONEC_NOTIFY"
        });
        block.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(block).unwrap()
    }

    #[test]
    fn an_instance_has_both_halves_and_its_catch_up() {
        let (inbound, _target) = build(&config(serde_json::json!({})), "pw", "token").unwrap();
        assert_eq!(inbound.kind(), "onec");
        assert!(inbound.reconciler().is_some());
        let (inbound, _) = build(&config(serde_json::json!({"catch_up_secs": 0})), "pw", "token").unwrap();
        assert!(inbound.reconciler().is_none());
    }

    #[test]
    fn mistakes_are_named() {
        assert!(build(&config(serde_json::json!({})), "pw", " ").err().unwrap().contains("empty"));
        let e = build(&config(serde_json::json!({"catch_up_kinds": ["stock"]})), "pw", "t").err().unwrap();
        assert!(e.contains("catch_up_kinds: `stock`"), "{e}");
        let e = build(&config(serde_json::json!({"timezone": "Mars/Olympus"})), "pw", "t").err().unwrap();
        assert!(e.contains("Mars/Olympus"), "{e}");
        let e = build(&config(serde_json::json!({"base_url": "ftp://x"})), "pw", "t").err().unwrap();
        assert!(e.contains("http"), "{e}");
    }
}
