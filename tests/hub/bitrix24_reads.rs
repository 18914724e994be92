//! What the hub does with a Bitrix24 deal it read, over real HTTP against
//! the portal emulator:
//!
//! - the optional second echo guard (`integration_user_id`): a deal read
//!   with `MODIFY_BY_ID` = the integration user that shows the hub's last
//!   write as written changes nothing — even a field someone changed before
//!   the hub's write, whose own event was lost. Without the guard, the same
//!   read takes that field in;
//! - replay of thin events: the processor keeps each read beside its event,
//!   and `dealbridge replay` maps those reads, never the portal as it is by
//!   then (it makes no call at all);
//! - a deal deleted in the portal whose `ONCRMDEALDELETE` was lost: the
//!   deletion check finds it gone and the hub records the deletion.
//!
//! The emulator sends no events here: the test plays the portal's outgoing
//! webhook, so it decides which events arrive.

use std::time::{Duration, Instant};

use dealbridge_connector_bitrix24::emulator::{self, CallRecord, EmulatorConfig, RunningEmulator};
use dealbridge_connector_bitrix24::{RestClient, WebhookUrl, encode_event};
use serde_json::{Map, Value, json};

use crate::support::*;

const TOKEN: &str = "test-b24-application-token";
const HUB_USER: u64 = 1;
const MANAGER: (u64, &str) = (7, "manager-webhook");
const LOGISTICIAN: (u64, &str) = (31, "logistician-webhook");

struct Rig {
    hub: TestHub,
    emu: RunningEmulator,
    webhook: String,
    dir: tempfile::TempDir,
}

impl Rig {
    /// A hub whose `[connectors.bitrix24]` block ends with `settings`.
    async fn start(settings: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"
[connectors.bitrix24]
kind = "bitrix24"
webhook_url_env = "TEST_B24_WEBHOOK_URL"
application_token_env = "TEST_B24_APP_TOKEN"
timeout_secs = 5
{settings}
[engine]
event_poll_ms = 50
[delivery]
resume_poll_ms = 20
max_inline_wait_ms = 100
"#
        );
        write_config(dir.path(), &StoreKind::Sqlite, &config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let emulated = EmulatorConfig {
            webhook_user: HUB_USER,
            user_webhooks: vec![(MANAGER.0, MANAGER.1.into()), (LOGISTICIAN.0, LOGISTICIAN.1.into())],
            application_token: TOKEN.into(),
            ..EmulatorConfig::default()
        };
        let webhook = format!("http://{}/rest/{HUB_USER}/{}/", listener.local_addr().unwrap(), emulated.webhook_code);
        let env = [("TEST_B24_WEBHOOK_URL", webhook.clone()), ("TEST_B24_APP_TOKEN", TOKEN.to_owned())];
        let hub = TestHub::start_with_env(dir.path(), &StoreKind::Sqlite, &env).await;
        let emu = emulator::spawn(emulated, listener).unwrap();
        Self { hub, emu, webhook, dir }
    }

    fn person(&self, (user, code): (u64, &str)) -> RestClient {
        let url = WebhookUrl::parse(&format!("http://{}/rest/{user}/{code}/", self.emu.addr)).unwrap();
        RestClient::new(url, Duration::from_secs(5), Duration::from_secs(2)).unwrap()
    }

    /// Delivers the portal's event about deal `id`; the stored event's id.
    async fn event(&self, name: &str, id: &str) -> String {
        let ts = chrono::Utc::now().timestamp();
        let body = encode_event(name, &[("ID", id)], ts, "emulator.bitrix24.test", "m", TOKEN);
        accepted_id(self.hub.client.post(self.hub.url("/hooks/bitrix24")).body(body).send().await.unwrap()).await
    }

    /// The stored event once processed: its `processing` block.
    async fn processed(&self, event: &str) -> Value {
        eventually("the event is processed", async || {
            let stored: Value =
                self.hub.get_with_token(&format!("/api/v1/events/{event}"), Some(VIEWER)).await.json().await.unwrap();
            (stored["processing"]["state"] != "pending").then(|| stored["processing"].clone())
        })
        .await
    }

    async fn canonical(&self, id: &str) -> Option<Value> {
        let path = format!("/api/v1/deals?system=bitrix24&instance=bitrix24&external_id={id}");
        let response = self.hub.get_with_token(&path, Some(VIEWER)).await;
        (response.status() == 200).then_some(())?;
        Some(response.json().await.unwrap())
    }

    async fn calls(&self) -> Vec<CallRecord> {
        reqwest::get(format!("{}/_emulator/calls", self.emu.base_url())).await.unwrap().json().await.unwrap()
    }

    async fn hub_updated(&self, id: &str, field: &str, value: &str) {
        eventually(&format!("the hub writes {field} = {value}"), async || {
            self.calls()
                .await
                .iter()
                .any(|c| {
                    c.user == HUB_USER
                        && c.method == "crm.deal.update"
                        && c.params["id"] == json!(id)
                        && c.params["fields"][field] == json!(value)
                })
                .then_some(())
        })
        .await;
        // The write's delivery is recorded just after the portal answered.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    async fn stop(self) {
        self.hub.stop().await;
        self.emu.stop().await;
    }
}

async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// A sales deal with a logistics child whose stage the hub mirrors on it;
/// the manager retitles the deal (that event is lost), the logistician
/// moves the child and the hub mirrors it on the parent. Returns the hub
/// and the processing of the mirror's echo.
async fn retitled_before_the_hubs_write(integration_user: Option<u64>) -> (Rig, String, Value) {
    let guard = integration_user.map(|u| format!("integration_user_id = \"{u}\"")).unwrap_or_default();
    let rig = Rig::start(&format!("catch_up_secs = 0\n{guard}")).await;
    let manager = rig.person(MANAGER);
    let sale =
        manager.deal_add(&fields(json!({"TITLE": "Станки", "CATEGORY_ID": 0, "ASSIGNED_BY_ID": 7}))).await.unwrap();
    rig.processed(&rig.event("ONCRMDEALADD", &sale).await).await;
    manager.deal_update(&sale, &fields(json!({"STAGE_ID": "UC_EVALUATE"}))).await.unwrap();
    rig.processed(&rig.event("ONCRMDEALUPDATE", &sale).await).await;
    rig.hub_updated(&sale, "UF_CRM_LOGISTICS_STAGE", "new").await;
    let child = manager.deal_list(&json!({"CATEGORY_ID": 1}), &["ID"], &json!({}), 0).await.unwrap().items[0]["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    rig.processed(&rig.event("ONCRMDEALADD", &child).await).await;

    // The manager's retitle: its event never arrives.
    manager.deal_update(&sale, &fields(json!({"TITLE": "Станки (изм.)"}))).await.unwrap();
    // The logistician's move arrives; the hub mirrors it on the parent,
    // which now shows MODIFY_BY_ID = the hub's user.
    rig.person(LOGISTICIAN).deal_update(&child, &fields(json!({"STAGE_ID": "C1:PREPARATION"}))).await.unwrap();
    rig.processed(&rig.event("ONCRMDEALUPDATE", &child).await).await;
    rig.hub_updated(&sale, "UF_CRM_LOGISTICS_STAGE", "in_progress").await;
    assert_eq!(manager.deal_get(&sale).await.unwrap()["MODIFY_BY_ID"], "1");

    // The mirror's echo.
    let echo = rig.processed(&rig.event("ONCRMDEALUPDATE", &sale).await).await;
    (rig, sale, echo)
}

#[tokio::test]
async fn with_the_guard_the_echo_of_the_hubs_write_changes_nothing() {
    let (rig, sale, echo) = retitled_before_the_hubs_write(Some(HUB_USER)).await;
    assert_eq!(echo["state"], "ignored", "{echo}");
    assert!(echo["reason"].as_str().unwrap().contains("integration user"), "{echo}");
    let deal = rig.canonical(&sale).await.unwrap();
    assert_eq!(deal["title"], "Станки", "the read showed the hub's write as written: nothing taken in");
    assert_eq!(deal["custom_fields"]["logistics_stage"], "in_progress");

    // Once someone else changed the deal last, a read is mapped as usual:
    // their change and the lost retitle are taken in.
    rig.person(MANAGER).deal_update(&sale, &fields(json!({"UF_CRM_LOGISTICS_STAGE": "approval"}))).await.unwrap();
    let changed = rig.processed(&rig.event("ONCRMDEALUPDATE", &sale).await).await;
    assert_eq!(changed["state"], "processed", "{changed}");
    let deal = rig.canonical(&sale).await.unwrap();
    assert_eq!(
        (deal["title"].as_str(), deal["custom_fields"]["logistics_stage"].as_str()),
        (Some("Станки (изм.)"), Some("approval"))
    );
    rig.stop().await;
}

#[tokio::test]
async fn without_the_guard_the_same_read_takes_the_lost_change_in() {
    let (rig, sale, echo) = retitled_before_the_hubs_write(None).await;
    assert_eq!(echo["state"], "processed", "{echo}");
    assert_eq!(rig.canonical(&sale).await.unwrap()["title"], "Станки (изм.)");
    rig.stop().await;
}

/// `dealbridge replay --dry-run --json` on the stopped hub's store.
fn replay(rig_dir: &std::path::Path, webhook: &str, mappings: Option<&std::path::Path>) -> Value {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dealbridge"));
    command.arg("--config").arg(rig_dir.join("dealbridge.toml")).args([
        "replay",
        "--since",
        "1h",
        "--dry-run",
        "--json",
    ]);
    if let Some(dir) = mappings {
        command.arg("--mappings").arg(dir);
    }
    let out = command
        .env_clear()
        .envs(test_env(&StoreKind::Sqlite))
        .env("TEST_B24_WEBHOOK_URL", webhook)
        .env("TEST_B24_APP_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn replay_maps_the_deals_as_they_were_read_and_never_calls_the_portal() {
    let rig = Rig::start("catch_up_secs = 0").await;
    let manager = rig.person(MANAGER);
    let sale =
        manager.deal_add(&fields(json!({"TITLE": "Станки", "CATEGORY_ID": 0, "ASSIGNED_BY_ID": 7}))).await.unwrap();
    rig.processed(&rig.event("ONCRMDEALADD", &sale).await).await;
    manager.deal_update(&sale, &fields(json!({"STAGE_ID": "UC_EVALUATE"}))).await.unwrap();
    rig.processed(&rig.event("ONCRMDEALUPDATE", &sale).await).await;
    rig.hub_updated(&sale, "UF_CRM_LOGISTICS_STAGE", "new").await;
    let Rig { hub, emu, webhook, dir } = rig;
    hub.stop().await;

    // The portal moves on; replay must not see it.
    manager.deal_update(&sale, &fields(json!({"STAGE_ID": "WON", "TITLE": "Станки (продано)"}))).await.unwrap();
    let calls_before = reqwest::get(format!("{}/_emulator/calls", emu.base_url())).await.unwrap().text().await.unwrap();

    let same = replay(dir.path(), &webhook, None);
    assert_eq!(same["events"], 2, "{same:#}");
    assert_eq!(same["differences"], json!([]), "the kept reads replay what happened: {same:#}");

    // An edited stage map changes what the kept read of the move maps to.
    let edited = dir.path().join("edited-mappings");
    std::fs::create_dir(&edited).unwrap();
    for entry in std::fs::read_dir("mappings").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.replace("UC_EVALUATE: evaluation", "UC_EVALUATE: calculation");
            std::fs::write(edited.join(path.file_name().unwrap()), text).unwrap();
        }
    }
    let report = replay(dir.path(), &webhook, Some(&edited));
    let differences = report["differences"].as_array().unwrap();
    assert_eq!(differences.len(), 1, "{report:#}");
    let text = differences[0].to_string();
    assert!(text.contains("sales/new → sales/evaluation") && text.contains("sales/new → sales/calculation"), "{text}");
    assert!(!text.contains("won"), "the portal's later state is never read: {text}");

    let calls_after = reqwest::get(format!("{}/_emulator/calls", emu.base_url())).await.unwrap().text().await.unwrap();
    assert_eq!(calls_before, calls_after, "replay made no call to the portal");
    emu.stop().await;
}

#[tokio::test]
async fn a_deletion_whose_event_was_lost_is_found_by_the_deletion_check() {
    let rig = Rig::start("catch_up_secs = 1\ndeletion_check_secs = 1").await;
    let manager = rig.person(MANAGER);
    let kept =
        manager.deal_add(&fields(json!({"TITLE": "Остаётся", "CATEGORY_ID": 0, "ASSIGNED_BY_ID": 7}))).await.unwrap();
    let doomed =
        manager.deal_add(&fields(json!({"TITLE": "Удалят", "CATEGORY_ID": 0, "ASSIGNED_BY_ID": 7}))).await.unwrap();
    for id in [&kept, &doomed] {
        rig.processed(&rig.event("ONCRMDEALADD", id).await).await;
    }
    // Deleted in the portal; its ONCRMDEALDELETE never arrives.
    manager.call("crm.deal.delete", &json!({"id": doomed})).await.unwrap();
    let trace_of = async |id: &str| {
        let deal = rig.canonical(id).await.unwrap();
        let path = format!("/api/v1/deals/{}/trace", deal["id"].as_str().unwrap());
        rig.hub.get_with_token(&path, Some(VIEWER)).await.text().await.unwrap()
    };
    eventually("the hub records the deletion", async || {
        trace_of(&doomed).await.contains(&format!("deleted in bitrix24 ({doomed})")).then_some(())
    })
    .await;
    assert!(!trace_of(&kept).await.contains("deleted in bitrix24"), "a deal the portal still has is not deleted");
    let checks = rig
        .calls()
        .await
        .into_iter()
        .filter(|c| c.method == "crm.deal.list" && c.params["filter"].get("@ID").is_some());
    assert!(checks.count() >= 1);
    rig.stop().await;
}
