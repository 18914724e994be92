//! Configuration of a `bitrix24` connector instance and the incoming-webhook
//! URL it calls, which is a secret (its path carries the webhook code).

use serde::Deserialize;

/// `[connectors.<name>]` with `kind = "bitrix24"`. Secrets never live in the
/// file: the `*_env` keys name the environment variables that hold them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Bitrix24Config {
    /// Environment variable holding the incoming webhook's URL,
    /// `https://<portal>/rest/<user id>/<webhook code>/`.
    pub webhook_url_env: String,
    /// Environment variable holding the outgoing webhook's application token
    /// (`auth[application_token]` of every event).
    pub application_token_env: String,
    /// When set, events whose `auth[domain]` differs are refused (401).
    #[serde(default)]
    pub domain: Option<String>,
    /// Whole-request timeout of a REST call. The cloud cuts requests at 60 s.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Deal user field a child deal's parent is written to by `create_deal`.
    #[serde(default = "default_parent_field")]
    pub parent_field: String,
    /// Written before the parent's id in `parent_field`: `D_` for a
    /// `crm`-type field bound to deals, empty for an integer/string field.
    #[serde(default = "default_parent_prefix")]
    pub parent_value_prefix: String,
    /// Every this many seconds, list the deals modified since the last pass
    /// and process the changes whose events never arrived (Bitrix24 does not
    /// redeliver). 0 turns the catch-up off.
    #[serde(default = "default_catch_up")]
    pub catch_up_secs: u64,
    /// The integration user (the `<user id>` of the incoming webhook's URL):
    /// a second echo guard. A deal read with `MODIFY_BY_ID` = this user
    /// that shows the hub's last writes as written changes nothing, even
    /// where other fields differ from the hub's state. Unset: echoes are
    /// told apart by diffing alone.
    #[serde(default)]
    pub integration_user_id: Option<String>,
    /// Every this many seconds (with the catch-up on), ask the portal which
    /// of the deals the hub knows it still has (`crm.deal.list` by `@ID`,
    /// 50 ids a request): a deal it no longer has was deleted, and its
    /// lost `ONCRMDEALDELETE` is made up for. 0 turns the check off.
    #[serde(default = "default_deletion_check")]
    pub deletion_check_secs: u64,
}

const fn default_deletion_check() -> u64 {
    3600
}

const fn default_catch_up() -> u64 {
    300
}

const fn default_timeout() -> u64 {
    30
}

const fn default_connect_timeout() -> u64 {
    10
}

fn default_parent_field() -> String {
    "UF_CRM_PARENT_DEAL".into()
}

fn default_parent_prefix() -> String {
    "D_".into()
}

/// Why an incoming-webhook URL is unusable. Never shows the URL itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookUrlError {
    #[error("not a URL")]
    NotAUrl,
    #[error("must be http or https")]
    Scheme,
    #[error("must look like https://<portal>/rest/<user id>/<webhook code>/")]
    Shape,
}

/// The incoming webhook's base URL. `Debug` shows only the portal host.
#[derive(Clone)]
pub struct WebhookUrl {
    base: reqwest::Url,
    portal: String,
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookUrl({}/rest/***)", self.portal)
    }
}

impl WebhookUrl {
    pub fn parse(text: &str) -> Result<Self, WebhookUrlError> {
        let mut text = text.trim().to_owned();
        if !text.ends_with('/') {
            text.push('/');
        }
        let base = reqwest::Url::parse(&text).map_err(|_| WebhookUrlError::NotAUrl)?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(WebhookUrlError::Scheme);
        }
        let segments: Vec<&str> =
            base.path_segments().map(|s| s.filter(|p| !p.is_empty()).collect()).unwrap_or_default();
        let shaped = segments.len() >= 3
            && segments[segments.len() - 3] == "rest"
            && segments[segments.len() - 2].bytes().all(|b| b.is_ascii_digit())
            && !segments[segments.len() - 1].is_empty();
        if !shaped || base.query().is_some() {
            return Err(WebhookUrlError::Shape);
        }
        let host = base.host_str().ok_or(WebhookUrlError::NotAUrl)?;
        let portal = match base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Self { base, portal })
    }

    /// The portal's host (and port when not the default): the rate key.
    pub fn portal(&self) -> &str {
        &self.portal
    }

    /// `…/rest/<user>/<code>/<method>.json`.
    pub(crate) fn method_url(&self, method: &str) -> reqwest::Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{method}.json", self.base.path()));
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_checked_and_never_printed() {
        let url = WebhookUrl::parse("https://portal.bitrix24.ru/rest/1/abc123xyz").unwrap();
        assert_eq!(url.portal(), "portal.bitrix24.ru");
        assert_eq!(
            url.method_url("crm.deal.get").as_str(),
            "https://portal.bitrix24.ru/rest/1/abc123xyz/crm.deal.get.json"
        );
        assert!(!format!("{url:?}").contains("abc123xyz"));
        assert_eq!(WebhookUrl::parse("https://portal.bitrix24.ru/").unwrap_err(), WebhookUrlError::Shape);
        assert_eq!(WebhookUrl::parse("ftp://x/rest/1/a/").unwrap_err(), WebhookUrlError::Scheme);
        assert_eq!(WebhookUrl::parse("not a url").unwrap_err(), WebhookUrlError::NotAUrl);
        assert_eq!(WebhookUrl::parse("http://127.0.0.1:9000/rest/1/c/").unwrap().portal(), "127.0.0.1:9000");
    }

    #[test]
    fn a_minimal_block_takes_defaults() {
        let c: Bitrix24Config = toml_like(r#"{"webhook_url_env":"B24_URL","application_token_env":"B24_TOKEN"}"#);
        assert_eq!(c.timeout_secs, 30);
        assert_eq!(c.parent_field, "UF_CRM_PARENT_DEAL");
        assert_eq!(c.parent_value_prefix, "D_");
        assert_eq!(c.catch_up_secs, 300);
        assert_eq!(c.integration_user_id, None);
        assert_eq!(c.deletion_check_secs, 3600);
    }

    fn toml_like(json: &str) -> Bitrix24Config {
        serde_json::from_str(json).unwrap()
    }
}
