//! Test harness: the real hub on a random port (in-process, or as a child
//! process for crash tests), a signing client, and well-known test secrets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use dealbridge::app::Hub;
use dealbridge_connector_http::{SigningSecret, sign};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const ADMIN: &str = "admin-token-for-tests-0001";
pub const VIEWER: &str = "viewer-token-for-tests-0001";
pub const ACCOUNTANT: &str = "accountant-token-for-tests-01";

/// Which store the hub under test uses.
#[derive(Clone, Debug)]
pub enum StoreKind {
    Sqlite,
    Postgres { url: String },
}

/// Writes a config file for a hub whose data lives in `dir`.
pub fn write_config(dir: &Path, store: &StoreKind, extra: &str) -> PathBuf {
    let backend = match store {
        StoreKind::Sqlite => "sqlite",
        StoreKind::Postgres { .. } => "postgres",
    };
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 65536
shutdown_grace_secs = 5
[store]
backend = "{backend}"
data_dir = "{data}"
url_env = "TEST_DATABASE_URL"
[log]
format = "json"
level = "warn"
[connectors.http]
kind = "http"
secret_env = "TEST_HTTP_SECRET"
{extra}
"#,
        data = dir.join("data").display()
    );
    let path = dir.join("dealbridge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The secrets every test hub gets, as environment variables.
pub fn test_env(store: &StoreKind) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = [
        ("TEST_HTTP_SECRET", SECRET),
        ("DEALBRIDGE_ADMIN_TOKENS", ADMIN),
        ("DEALBRIDGE_VIEWER_TOKENS", VIEWER),
        ("DEALBRIDGE_ACCOUNTANT_TOKENS", ACCOUNTANT),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let StoreKind::Postgres { url } = store {
        env.insert("TEST_DATABASE_URL".into(), url.clone());
    }
    env
}

/// A hub running inside the test process.
pub struct TestHub {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestHub {
    /// Starts a hub with the config in `dir` (written by `write_config`).
    pub async fn start(dir: &Path, store: &StoreKind) -> Self {
        Self::start_with_env(dir, store, &[]).await
    }

    /// Like `start`, with more environment variables (e.g. a broker URL).
    pub async fn start_with_env(dir: &Path, store: &StoreKind, extra: &[(&str, String)]) -> Self {
        let settings = dealbridge::settings::load(&dir.join("dealbridge.toml"), std::iter::empty()).unwrap();
        let mut env = test_env(store);
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let hub = Hub::start(settings, &|k: &str| env.get(k).cloned()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(hub.run(listener, async move {
            let _ = stopped.await;
        }));
        Self { addr, client: reqwest::Client::new(), stop: Some(stop), task: Some(task) }
    }

    /// Graceful shutdown, as on SIGTERM.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post_signed(&self, connector: &str, id: &str, body: &str) -> reqwest::Response {
        post_signed(&self.client, self.addr, connector, id, body).await
    }

    pub async fn get_with_token(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }
}

/// Standard Webhooks headers for `body`, signed now with the test secret.
pub fn signed_headers(id: &str, body: &str) -> Vec<(&'static str, String)> {
    let secret = SigningSecret::parse(SECRET).unwrap();
    let ts = chrono::Utc::now().timestamp();
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", sign(&secret, id, ts, body.as_bytes())),
        ("content-type", "application/json".to_owned()),
    ]
}

pub async fn post_signed(
    client: &reqwest::Client,
    addr: SocketAddr,
    connector: &str,
    id: &str,
    body: &str,
) -> reqwest::Response {
    let mut req = client.post(format!("http://{addr}/hooks/{connector}")).body(body.to_owned());
    for (k, v) in signed_headers(id, body) {
        req = req.header(k, v);
    }
    req.send().await.unwrap()
}

/// The event id of a 202 answer.
pub async fn accepted_id(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 202, "expected 202");
    let body: serde_json::Value = response.json().await.unwrap();
    body["event_id"].as_str().unwrap().to_owned()
}

/// A fresh PostgreSQL database when the test server is configured.
pub async fn postgres(test: &str) -> Option<(StoreKind, dealbridge_core::testing::TestDatabase)> {
    let admin = dealbridge_core::testing::pg_admin_url(test)?;
    let db = dealbridge_core::testing::TestDatabase::create(&admin).await;
    Some((StoreKind::Postgres { url: db.url.clone() }, db))
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Pays a 1C order as an accountant does: a bank receipt («Поступление
/// безналичных денежных средств») from the client's payment order
/// `number`, paying `amount` of the order in «Расшифровка платежа», then
/// posted.
pub async fn pay_order_in_1c(onec: &dealbridge_connector_onec::ODataClient, order: &str, amount: f64, number: &str) {
    const RECEIPTS: &str = "Document_ПоступлениеБезналичныхДенежныхСредств";
    let receipt = serde_json::json!({
        "ХозяйственнаяОперация": "ПоступлениеОплатыОтКлиента",
        "НомерВходящегоДокумента": number,
        "ДатаВходящегоДокумента": "2026-02-05T00:00:00",
        "СуммаДокумента": amount,
        "Валюта": "RUB",
        "НазначениеПлатежа": format!("Оплата по платёжному поручению № {number}"),
        "РасшифровкаПлатежа": [{"Заказ": order, "Заказ_Type": "StandardODATA.Document_ЗаказКлиента", "Сумма": amount}],
    });
    let created = onec.create(RECEIPTS, receipt.as_object().unwrap()).await.unwrap();
    let key = created["Ref_Key"].as_str().unwrap().to_owned();
    onec.post_document(RECEIPTS, &key).await.unwrap();
}
