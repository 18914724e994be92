//! Connector instances built from the `[connectors.<name>]` config blocks.
//!
//! Each connector crate owns its config struct; this registry only matches
//! a block's `kind` to the crate, reads the secrets it names from the
//! environment, and keeps the instances by name: the inbound halves for the
//! inbox, the outbound halves (with their rate budgets from
//! `[delivery.targets]`) for the dispatcher.
//!
//! A Bitrix24 instance's two halves share one [`PortalReader`]: the inbound
//! half reads the deals its events name (and catches up on lost events),
//! the outbound half looks stage names up in the same stage catalogue.
//! Reads take their tokens from the registry's [`TargetGates`], keyed like
//! the dispatcher's (`bitrix24:<portal>`); the dispatcher shares the
//! portal's budget with them when it is given the same gates
//! ([`ConnectorRegistry::gates`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use std::time::Duration;

use dealbridge_connector_amocrm::{AccessToken, AmocrmConfig, AmocrmInbound, AmocrmTarget, ApiClient, WebhookToken};
use dealbridge_connector_bitrix24::{
    ApplicationToken, Bitrix24Config, Bitrix24Inbound, Bitrix24Target, PortalReader, ReadBudget, RestClient, WebhookUrl,
};
use dealbridge_connector_http::{HttpConnector, HttpTarget, SigningSecret};
use dealbridge_core::connector::InboundConnector;
use dealbridge_core::delivery::{OutboundConnector, OutboundTarget, OutboundTargets, RateQuota, TargetGates};

use crate::settings::{ConnectorSettings, SecretError};

/// Configured connector instances by name.
#[derive(Clone, Default)]
pub struct ConnectorRegistry {
    by_name: HashMap<String, Arc<dyn InboundConnector>>,
    outbound: Arc<OutboundTargets>,
    gates: Arc<TargetGates>,
}

impl ConnectorRegistry {
    /// Builds every configured instance; `env` resolves secret variables.
    pub fn build(
        configs: &BTreeMap<String, ConnectorSettings>,
        quotas: &BTreeMap<String, RateQuota>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SecretError> {
        if let Some(name) = quotas.keys().find(|name| !configs.contains_key(*name)) {
            return Err(SecretError {
                var: format!("delivery.targets.{name}"),
                message: "names no configured connector".into(),
            });
        }
        let mut by_name: HashMap<String, Arc<dyn InboundConnector>> = HashMap::new();
        let mut outbound = OutboundTargets::default();
        let gates = Arc::new(TargetGates::default());
        for (name, config) in configs {
            if !valid_name(name) {
                return Err(SecretError {
                    var: format!("connectors.{name}"),
                    message: "connector names are lower-case letters, digits, `-` and `_`".into(),
                });
            }
            let (connector, target): (Arc<dyn InboundConnector>, Option<Arc<dyn OutboundConnector>>) = match config {
                ConnectorSettings::Http(c) => {
                    (Arc::new(build_http(c, env)?), build_http_target(name, c, env)?.map(|t| Arc::new(t) as _))
                }
                ConnectorSettings::Bitrix24(c) => {
                    let budget = ReadBudget { gates: gates.clone(), quota: quotas.get(name).copied() };
                    let (inbound, target) = build_bitrix24(name, c, budget, env)?;
                    (Arc::new(inbound), Some(Arc::new(target) as _))
                }
                ConnectorSettings::Amocrm(c) => {
                    let (inbound, target) = build_amocrm(name, c, env)?;
                    (Arc::new(inbound), Some(Arc::new(target) as _))
                }
                ConnectorSettings::Onec(c) => {
                    let (inbound, target) = build_onec(name, c, env)?;
                    (Arc::new(inbound), Some(Arc::new(target) as _))
                }
            };
            by_name.insert(name.clone(), connector);
            if let Some(connector) = target {
                let quota = quotas.get(name).copied().or_else(|| default_quota(config));
                outbound.insert(name.clone(), OutboundTarget { connector, quota });
            }
        }
        Ok(Self { by_name, outbound: Arc::new(outbound), gates })
    }

    /// The per-target budgets the connectors' own reads spend; give them to
    /// the dispatcher so reads and writes of one portal share one budget.
    pub fn gates(&self) -> Arc<TargetGates> {
        self.gates.clone()
    }

    /// The instances that perform commands, for the dispatcher.
    pub fn outbound(&self) -> Arc<OutboundTargets> {
        self.outbound.clone()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn InboundConnector>> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn build_http(
    config: &dealbridge_connector_http::HttpConnectorConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HttpConnector, SecretError> {
    let secrets = signing_secrets(&config.secret_env, env)?;
    Ok(HttpConnector::new(secrets, config.tolerance_secs))
}

fn build_http_target(
    name: &str,
    config: &dealbridge_connector_http::HttpConnectorConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<HttpTarget>, SecretError> {
    let Some(outbound) = &config.outbound else { return Ok(None) };
    // Outbound requests are signed with the first (current) secret.
    let secret = signing_secrets(&outbound.secret_env, env)?.remove(0);
    HttpTarget::new(outbound, secret)
        .map(Some)
        .map_err(|message| SecretError { var: format!("connectors.{name}.outbound"), message })
}

/// The `whsec_…` secrets a variable holds (two during a rotation).
fn signing_secrets(var: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<SigningSecret>, SecretError> {
    let raw = env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| SecretError {
        var: var.to_owned(),
        message: "not set: the http connector needs its signing secret (whsec_…)".into(),
    })?;
    raw.split_ascii_whitespace()
        .map(SigningSecret::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SecretError { var: var.to_owned(), message: e.to_string() })
}

/// Both halves of a Bitrix24 instance around one portal reader.
fn build_bitrix24(
    name: &str,
    config: &Bitrix24Config,
    budget: ReadBudget,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Bitrix24Inbound, Bitrix24Target), SecretError> {
    let var = &config.application_token_env;
    let token = env(var).as_deref().and_then(ApplicationToken::new).ok_or_else(|| SecretError {
        var: var.clone(),
        message: "not set: the bitrix24 connector needs the outgoing webhook's application token".into(),
    })?;
    let var = &config.webhook_url_env;
    let raw = env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| SecretError {
        var: var.clone(),
        message:
            "not set: the bitrix24 connector needs its incoming webhook URL (https://<portal>/rest/<user>/<code>/)"
                .into(),
    })?;
    let url = WebhookUrl::parse(&raw).map_err(|e| SecretError { var: var.clone(), message: e.to_string() })?;
    let invalid = |message: String| SecretError { var: format!("connectors.{name}"), message };
    let client = RestClient::new(
        url.clone(),
        Duration::from_secs(config.timeout_secs),
        Duration::from_secs(config.connect_timeout_secs),
    )
    .map_err(invalid)?;
    let reader = Arc::new(PortalReader::new(client, budget));
    let catch_up = (config.catch_up_secs > 0).then(|| Duration::from_secs(config.catch_up_secs));
    let inbound = Bitrix24Inbound::new(token, config.domain.clone())
        .integration_user(config.integration_user_id.clone())
        .reading(reader.clone(), catch_up)
        .checking_deletions((config.deletion_check_secs > 0).then(|| Duration::from_secs(config.deletion_check_secs)));
    let target = Bitrix24Target::new(config, url).map_err(invalid)?.with_reader(reader);
    Ok((inbound, target))
}

/// The budget of a target `[delivery.targets]` says nothing about: amoCRM
/// documents its limit (7 requests per second), so it is spent by default.
fn default_quota(config: &ConnectorSettings) -> Option<RateQuota> {
    match config {
        ConnectorSettings::Amocrm(_) => Some(dealbridge_connector_amocrm::DEFAULT_QUOTA),
        _ => None,
    }
}

/// Both halves of a 1C instance, around one OData client.
fn build_onec(
    name: &str,
    config: &dealbridge_connector_onec::OnecConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(dealbridge_connector_onec::OnecInbound, dealbridge_connector_onec::OnecTarget), SecretError> {
    let secret = |var: &String, what: &str| {
        env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| SecretError {
            var: var.clone(),
            message: format!("not set: the onec connector needs {what}"),
        })
    };
    let password = secret(&config.password_env, "the password of its 1C infobase user")?;
    let notify = secret(&config.notify_secret_env, "the password or token of the 1C HTTP service's notifications")?;
    dealbridge_connector_onec::build(config, &password, &notify)
        .map_err(|message| SecretError { var: format!("connectors.{name}"), message })
}

/// Both halves of an amoCRM instance.
fn build_amocrm(
    name: &str,
    config: &AmocrmConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(AmocrmInbound, AmocrmTarget), SecretError> {
    let var = &config.webhook_token_env;
    let token = env(var).as_deref().and_then(WebhookToken::new).ok_or_else(|| SecretError {
        var: var.clone(),
        message: "not set or shorter than 16 characters: the amocrm connector needs the secret of its webhook URL \
                  (`?token=…`)"
            .into(),
    })?;
    let var = &config.access_token_env;
    let access = env(var).as_deref().and_then(AccessToken::new).ok_or_else(|| SecretError {
        var: var.clone(),
        message: "not set: the amocrm connector needs the integration's access token".into(),
    })?;
    let invalid = |message: String| SecretError { var: format!("connectors.{name}"), message };
    let base = config.api_base().map_err(|e| invalid(e.to_string()))?;
    let client = ApiClient::new(
        base,
        access,
        Duration::from_secs(config.timeout_secs),
        Duration::from_secs(config.connect_timeout_secs),
    )
    .map_err(invalid)?;
    let inbound = AmocrmInbound::new(token, &config.subdomain, config.account_id);
    Ok((inbound, AmocrmTarget::new(client, config.parent_field_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitrix24(vars: &[(&str, &str)]) -> Result<ConnectorRegistry, SecretError> {
        let config: Bitrix24Config = serde_json::from_value(serde_json::json!({
            "webhook_url_env": "B24_WEBHOOK_URL", "application_token_env": "B24_APP_TOKEN"
        }))
        .unwrap();
        let configs = BTreeMap::from([("b24".to_owned(), ConnectorSettings::Bitrix24(config))]);
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        ConnectorRegistry::build(&configs, &BTreeMap::new(), &env)
    }

    #[test]
    fn a_bitrix24_instance_has_both_halves() {
        let registry =
            bitrix24(&[("B24_WEBHOOK_URL", "https://portal.bitrix24.ru/rest/1/secretcode/"), ("B24_APP_TOKEN", "tok")])
                .unwrap();
        assert_eq!(registry.get("b24").unwrap().kind(), "bitrix24");
        assert!(registry.outbound().get("b24").is_some());
    }

    #[test]
    fn missing_or_broken_bitrix24_secrets_name_their_variable() {
        let url = ("B24_WEBHOOK_URL", "https://portal.bitrix24.ru/rest/1/secretcode/");
        let err = bitrix24(&[url]).err().unwrap();
        assert_eq!(err.var, "B24_APP_TOKEN");
        let err = bitrix24(&[("B24_APP_TOKEN", "tok")]).err().unwrap();
        assert_eq!(err.var, "B24_WEBHOOK_URL");
        let err = bitrix24(&[("B24_APP_TOKEN", "tok"), ("B24_WEBHOOK_URL", "https://portal.bitrix24.ru/secretcode")])
            .err()
            .unwrap();
        assert_eq!(err.var, "B24_WEBHOOK_URL");
        assert!(!err.to_string().contains("secretcode"), "{err}");
    }

    fn amocrm(vars: &[(&str, &str)]) -> Result<ConnectorRegistry, SecretError> {
        let config: AmocrmConfig = serde_json::from_value(serde_json::json!({
            "subdomain": "example", "access_token_env": "AMO_TOKEN", "webhook_token_env": "AMO_HOOK"
        }))
        .unwrap();
        let configs = BTreeMap::from([("amo".to_owned(), ConnectorSettings::Amocrm(config))]);
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        ConnectorRegistry::build(&configs, &BTreeMap::new(), &env)
    }

    #[test]
    fn an_amocrm_instance_spends_seven_requests_a_second_unless_told_otherwise() {
        let registry = amocrm(&[("AMO_TOKEN", "eyJ0eXAi.long-lived"), ("AMO_HOOK", "0123456789abcdef0123")]).unwrap();
        assert_eq!(registry.get("amo").unwrap().kind(), "amocrm");
        let quota = registry.outbound().get("amo").unwrap().quota.unwrap();
        assert_eq!((quota.per_second, quota.burst), (7.0, 7));
        assert_eq!(amocrm(&[("AMO_HOOK", "0123456789abcdef0123")]).err().unwrap().var, "AMO_TOKEN");
        let short = amocrm(&[("AMO_TOKEN", "t"), ("AMO_HOOK", "short")]).err().unwrap();
        assert_eq!(short.var, "AMO_HOOK");
    }

    #[test]
    fn a_onec_instance_has_both_halves_and_names_missing_secrets() {
        let config: dealbridge_connector_onec::OnecConfig = serde_json::from_value(serde_json::json!({
            "base_url": "http://127.0.0.1:9001/trade", "user": "hub",
            "password_env": "ONEC_PASSWORD", "notify_secret_env": "ONEC_NOTIFY_TOKEN"
        }))
        .unwrap();
        let configs = BTreeMap::from([("onec".to_owned(), ConnectorSettings::Onec(Box::new(config)))]);
        let build = |vars: &'static [(&'static str, &'static str)]| {
            let env = move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
            ConnectorRegistry::build(&configs, &BTreeMap::new(), &env)
        };
        let registry = build(&[("ONEC_PASSWORD", "pw"), ("ONEC_NOTIFY_TOKEN", "tok")]).unwrap();
        assert_eq!(registry.get("onec").unwrap().kind(), "onec");
        assert!(registry.outbound().get("onec").is_some());
        assert_eq!(build(&[("ONEC_NOTIFY_TOKEN", "tok")]).err().unwrap().var, "ONEC_PASSWORD");
        assert_eq!(build(&[("ONEC_PASSWORD", "pw")]).err().unwrap().var, "ONEC_NOTIFY_TOKEN");
    }
}
