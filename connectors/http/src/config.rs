//! Configuration of an `http` connector instance.

use serde::Deserialize;

/// `[connectors.<name>]` with `kind = "http"`. The secret itself never lives
/// in the file: `secret_env` names the environment variable that holds it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpConnectorConfig {
    /// Environment variable holding the signing secret (`whsec_…`). During
    /// a rotation it may hold two secrets separated by a space.
    pub secret_env: String,
    /// Accepted clock difference between sender and hub, in seconds.
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: u32,
    /// Where the hub sends this instance's commands, if anywhere.
    #[serde(default)]
    pub outbound: Option<crate::HttpOutboundConfig>,
}

const fn default_tolerance() -> u32 {
    300
}
