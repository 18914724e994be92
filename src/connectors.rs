//! Connector instances built from the `[connectors.<name>]` config blocks.
//!
//! Each connector crate owns its config struct; this registry only matches
//! a block's `kind` to the crate, reads the secrets it names from the
//! environment, and keeps the instances by name for the inbox to find.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dealbridge_connector_http::{HttpConnector, SigningSecret};
use dealbridge_core::connector::InboundConnector;

use crate::settings::{ConnectorSettings, SecretError};

/// Configured connector instances by name.
#[derive(Clone, Default)]
pub struct ConnectorRegistry {
    by_name: HashMap<String, Arc<dyn InboundConnector>>,
}

impl ConnectorRegistry {
    /// Builds every configured instance; `env` resolves secret variables.
    pub fn build(
        configs: &BTreeMap<String, ConnectorSettings>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SecretError> {
        let mut by_name: HashMap<String, Arc<dyn InboundConnector>> = HashMap::new();
        for (name, config) in configs {
            if !valid_name(name) {
                return Err(SecretError {
                    var: format!("connectors.{name}"),
                    message: "connector names are lower-case letters, digits, `-` and `_`".into(),
                });
            }
            let connector: Arc<dyn InboundConnector> = match config {
                ConnectorSettings::Http(c) => Arc::new(build_http(c, env)?),
            };
            by_name.insert(name.clone(), connector);
        }
        Ok(Self { by_name })
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
    let var = &config.secret_env;
    let raw = env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| SecretError {
        var: var.clone(),
        message: "not set: the http connector needs its signing secret (whsec_…)".into(),
    })?;
    let secrets = raw
        .split_ascii_whitespace()
        .map(SigningSecret::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SecretError { var: var.clone(), message: e.to_string() })?;
    Ok(HttpConnector::new(secrets, config.tolerance_secs))
}
