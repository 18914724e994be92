//! Configuration of an `amocrm` connector instance: which account it
//! talks to and the environment variables holding its secrets.

use serde::Deserialize;

/// `[connectors.<name>]` with `kind = "amocrm"`. Secrets never live in the
/// file: the `*_env` keys name the environment variables that hold them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AmocrmConfig {
    /// The account's subdomain (`example` of `example.amocrm.ru`). Every
    /// webhook's `account[subdomain]` must be this one.
    pub subdomain: String,
    /// When set, every webhook's `account[id]` must be this one too.
    #[serde(default)]
    pub account_id: Option<u64>,
    /// The API's base URL; default `https://<subdomain>.amocrm.ru`
    /// (Kommo accounts: `https://<subdomain>.kommo.com`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the integration's access token (a
    /// long-lived token of a private integration), sent as
    /// `Authorization: Bearer`.
    pub access_token_env: String,
    /// Environment variable holding the secret of the webhook URL: amoCRM
    /// does not sign its webhooks, so the URL given to it carries
    /// `?token=<secret>` and a webhook without it is refused.
    pub webhook_token_env: String,
    /// Lead custom field (id) a child lead's parent lead id is written to
    /// by `create_deal`; none: the link lives only in the hub.
    #[serde(default)]
    pub parent_field_id: Option<u64>,
    /// Whole-request timeout of an API call.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
}

const fn default_timeout() -> u64 {
    30
}

const fn default_connect_timeout() -> u64 {
    10
}

/// Why the account's base URL is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BaseUrlError {
    #[error("`{0}` is not a URL")]
    NotAUrl(String),
    #[error("must be http or https")]
    Scheme,
    #[error("must be the account's root, like https://example.amocrm.ru, without a path or query")]
    Shape,
    #[error("`subdomain` must be letters, digits and `-`")]
    Subdomain,
}

impl AmocrmConfig {
    /// The API's base URL, checked.
    pub fn api_base(&self) -> Result<reqwest::Url, BaseUrlError> {
        let subdomain = self.subdomain.trim();
        if subdomain.is_empty() || !subdomain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(BaseUrlError::Subdomain);
        }
        let text = match &self.base_url {
            Some(url) => url.trim().trim_end_matches('/').to_owned(),
            None => format!("https://{subdomain}.amocrm.ru"),
        };
        let url = reqwest::Url::parse(&text).map_err(|_| BaseUrlError::NotAUrl(text.clone()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BaseUrlError::Scheme);
        }
        if url.path() != "/" || url.query().is_some() || url.host_str().is_none() {
            return Err(BaseUrlError::Shape);
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> AmocrmConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_base_url_defaults_to_the_accounts_amocrm_host() {
        let c = config(serde_json::json!({"subdomain": "example", "access_token_env": "A", "webhook_token_env": "W"}));
        assert_eq!(c.api_base().unwrap().as_str(), "https://example.amocrm.ru/");
        assert_eq!((c.timeout_secs, c.parent_field_id, c.account_id), (30, None, None));
    }

    #[test]
    fn a_given_base_url_is_checked() {
        let with = |url: &str| {
            config(serde_json::json!({"subdomain": "ex", "base_url": url, "access_token_env": "A", "webhook_token_env": "W"}))
                .api_base()
        };
        assert_eq!(with("http://127.0.0.1:9070/").unwrap().as_str(), "http://127.0.0.1:9070/");
        assert_eq!(with("https://ex.kommo.com").unwrap().as_str(), "https://ex.kommo.com/");
        assert_eq!(with("ftp://ex.amocrm.ru").unwrap_err(), BaseUrlError::Scheme);
        assert_eq!(with("https://ex.amocrm.ru/api/v4").unwrap_err(), BaseUrlError::Shape);
        assert!(matches!(with("not a url").unwrap_err(), BaseUrlError::NotAUrl(_)));
        let bad =
            config(serde_json::json!({"subdomain": "ex/../x", "access_token_env": "A", "webhook_token_env": "W"}));
        assert_eq!(bad.api_base().unwrap_err(), BaseUrlError::Subdomain);
    }
}
