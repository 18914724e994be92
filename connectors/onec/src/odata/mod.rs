//! Client of the standard OData interface (`<base>/odata/standard.odata/`,
//! OData v3, `$format=json`) and of the integration HTTP service
//! (`<base>/hs/<root>/…`), both as the 1C infobase user the hub is
//! configured with (HTTP Basic).
//!
//! - [`query`]: entity paths, `$filter` literals, the query string;
//! - [`envelope`]: the JSON envelope (`odata.metadata`, `value`);
//! - [`error`]: `odata.error` answers and their failure classes.

pub mod envelope;
pub mod error;
pub mod query;

use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::{Map, Value};

pub use envelope::Collection;
pub use error::ODataError;
pub use query::{Query, is_entity_set_name};

/// Most objects one page asks for; 1C answers large pages slowly.
pub const PAGE_SIZE: u32 = 500;

/// The infobase user. `Debug` never shows the password.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    password: String,
}

impl Credentials {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self { user: user.into(), password: password.into() }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:***)", self.user)
    }
}

/// Talks to one infobase publication.
#[derive(Clone)]
pub struct ODataClient {
    http: reqwest::Client,
    odata_root: Url,
    hs_root: Url,
    credentials: Credentials,
    host: String,
}

impl std::fmt::Debug for ODataClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ODataClient({}, {:?})", self.odata_root, self.credentials)
    }
}

impl ODataClient {
    /// `base_url` is the publication, e.g. `https://erp.example.ru/trade`.
    pub fn new(
        base_url: &str,
        credentials: Credentials,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let mut base = Url::parse(base_url.trim()).map_err(|_| format!("base_url `{base_url}` is not a URL"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err("base_url must be http or https".into());
        }
        if base.query().is_some() || !base.username().is_empty() {
            return Err("base_url must carry no query and no credentials (the password comes from password_env)".into());
        }
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let odata_root = base.join("odata/standard.odata/").map_err(|e| e.to_string())?;
        let hs_root = base.join("hs/").map_err(|e| e.to_string())?;
        let host = match (base.host_str(), base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err("base_url has no host".into()),
        };
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(connect_timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { http, odata_root, hs_root, credentials, host })
    }

    /// The publication's host (and port): the rate key.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn url(&self, path: &str, query: &str) -> Url {
        // Paths and queries are encoded by `query::encode` already; set
        // them raw so the quotes and `$` stay as they are.
        let mut url = self.odata_root.clone();
        url.set_path(&format!("{}{path}", self.odata_root.path()));
        url.set_query(Some(query));
        url
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        operation: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Vec<u8>, ODataError> {
        let mut request = self
            .http
            .request(method, url)
            .basic_auth(&self.credentials.user, Some(&self.credentials.password))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(version) = if_match {
            request = request.header(reqwest::header::IF_MATCH, version);
        }
        let response = request.send().await.map_err(|e| ODataError::network(operation, e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let after = error::retry_after(response.headers());
        let bytes = response.bytes().await.map_err(|e| ODataError::network(operation, e.without_url().to_string()))?;
        if (200..300).contains(&status) {
            Ok(bytes.to_vec())
        } else {
            Err(ODataError::from_answer(operation, status, after, &bytes))
        }
    }

    /// One page of `set`.
    pub async fn list(&self, set: &str, query: &Query) -> Result<Collection, ODataError> {
        let operation = format!("GET {set}");
        let body = self
            .send(
                Method::GET,
                self.url(&query::entity_path(set, None, None), &query.to_query_string()),
                &operation,
                None,
                None,
            )
            .await?;
        envelope::parse_collection(&body, set).map_err(|m| ODataError::malformed(&operation, m))
    }

    /// Every object `query` selects, `page` at a time (`$top`/`$skip`),
    /// at most `max_pages` pages; the flag says whether the end was reached.
    pub async fn list_all(
        &self,
        set: &str,
        query: &Query,
        page: u32,
        max_pages: usize,
    ) -> Result<(Vec<Map<String, Value>>, bool), ODataError> {
        let mut all = Vec::new();
        for n in 0..max_pages {
            let paged = Query { top: Some(page), skip: Some(n as u32 * page), ..query.clone() };
            let rows = self.list(set, &paged).await?.value;
            let last = (rows.len() as u32) < page;
            all.extend(rows);
            if last {
                return Ok((all, true));
            }
        }
        Ok((all, false))
    }

    /// One object by its `Ref_Key`.
    pub async fn get(&self, set: &str, ref_key: &str) -> Result<Map<String, Value>, ODataError> {
        let path = query::entity_path(set, Some(ref_key), None);
        let operation = format!("GET {set}(guid'{ref_key}')");
        let body = self.send(Method::GET, self.url(&path, "$format=json"), &operation, None, None).await?;
        envelope::parse_entity(&body, set).map_err(|m| ODataError::malformed(&operation, m))
    }

    /// Creates an object; the answer is the object with its new `Ref_Key`.
    pub async fn create(&self, set: &str, object: &Map<String, Value>) -> Result<Map<String, Value>, ODataError> {
        let operation = format!("POST {set}");
        let body = Value::Object(object.clone());
        let answer = self
            .send(
                Method::POST,
                self.url(&query::entity_path(set, None, None), "$format=json"),
                &operation,
                Some(&body),
                None,
            )
            .await?;
        envelope::parse_entity(&answer, set).map_err(|m| ODataError::malformed(&operation, m))
    }

    /// Changes the given attributes of an object (`PATCH`); a tabular
    /// section given is replaced whole. With `if_match` (a `DataVersion`)
    /// 1C refuses the change (412) when the object changed meanwhile.
    pub async fn update(
        &self,
        set: &str,
        ref_key: &str,
        changes: &Map<String, Value>,
        if_match: Option<&str>,
    ) -> Result<Map<String, Value>, ODataError> {
        let path = query::entity_path(set, Some(ref_key), None);
        let operation = format!("PATCH {set}(guid'{ref_key}')");
        let body = Value::Object(changes.clone());
        let answer =
            self.send(Method::PATCH, self.url(&path, "$format=json"), &operation, Some(&body), if_match).await?;
        envelope::parse_entity(&answer, set).map_err(|m| ODataError::malformed(&operation, m))
    }

    /// Posts a document. Non-operational mode: operational posting is
    /// refused for documents of past days.
    pub async fn post_document(&self, set: &str, ref_key: &str) -> Result<(), ODataError> {
        let path = query::entity_path(set, Some(ref_key), Some("Post"));
        let operation = format!("POST {set}(guid'{ref_key}')/Post");
        self.send(Method::POST, self.url(&path, "PostingModeOperational=false"), &operation, None, None).await?;
        Ok(())
    }

    /// POSTs JSON to the HTTP service at `<base>/hs/<path>`.
    pub async fn call_service(&self, path: &str, body: &Value) -> Result<Vec<u8>, ODataError> {
        let mut url = self.hs_root.clone();
        let encoded: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(query::encode).collect();
        url.set_path(&format!("{}{}", self.hs_root.path(), encoded.join("/")));
        let operation = format!("POST /hs/{path}");
        self.send(Method::POST, url, &operation, Some(body), None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_odata_punctuation() {
        let client = ODataClient::new(
            "http://10.0.1.22/1c",
            Credentials::new("hub", "pw"),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap();
        let url = client
            .url(&query::entity_path("Document_X", Some("8b9660f6-6332-11ec-ad72-000c29b45b09"), None), "$format=json");
        assert_eq!(
            url.as_str(),
            "http://10.0.1.22/1c/odata/standard.odata/Document_X(guid'8b9660f6-6332-11ec-ad72-000c29b45b09')?$format=json"
        );
        assert_eq!(client.host(), "10.0.1.22");
        assert!(!format!("{client:?}").contains("pw"));
    }

    #[test]
    fn base_urls_are_checked() {
        let new = |url: &str| {
            ODataClient::new(url, Credentials::new("u", "p"), Duration::from_secs(1), Duration::from_secs(1))
        };
        assert!(new("ftp://x/base").is_err());
        assert!(new("http://user:pw@x/base").unwrap_err().contains("no credentials"));
        assert!(new("not a url").is_err());
        assert_eq!(new("http://127.0.0.1:9001/trade/").unwrap().host(), "127.0.0.1:9001");
    }
}
