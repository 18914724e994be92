//! A flow's timeline comment and 1C: an Interest has no timeline, so the
//! command is refused for good, saying why, and 1C is not called.

use std::time::Duration;

use dealbridge_connector_onec::emulator::{self, CallRecord, EmulatorConfig};
use dealbridge_connector_onec::{Credentials, ODataClient, OnecConfig, OnecTarget};
use dealbridge_core::delivery::{AttemptContext, FailureClass, OutboundConnector};
use dealbridge_core::flow::{Command, CommandOp};
use serde_json::json;

#[tokio::test]
async fn a_comment_for_an_interest_is_refused_for_good_without_calling_1c() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emu = emulator::spawn(EmulatorConfig::default(), listener).unwrap();
    let config: OnecConfig = serde_json::from_value(json!({
        "base_url": emu.base_url(), "user": "dealbridge", "password_env": "X", "notify_secret_env": "Y"
    }))
    .unwrap();
    let client = ODataClient::new(
        &emu.base_url(),
        Credentials::new("dealbridge", "emulator-password"),
        Duration::from_secs(5),
        Duration::from_secs(2),
    )
    .unwrap();
    let target = OnecTarget::new(&config, client).unwrap();
    let interest = "a0000000-0000-0000-0000-000000000004";
    let comment = Command {
        id: uuid::Uuid::new_v4(),
        idempotency_key: "e1/estimate-ready/2.1/onec".into(),
        connector: "onec".into(),
        system: "onec".into(),
        deal: None,
        cause_event: uuid::Uuid::new_v4(),
        flow: "estimate-ready".into(),
        op: CommandOp::Comment { external_id: interest.into(), text: "Оценка логистики: 18500".into() },
    };

    let failure = target.perform(&comment, AttemptContext { attempt: 1, possibly_applied: false }).await.unwrap_err();

    assert_eq!(failure.class, FailureClass::Permanent, "retrying cannot help");
    assert!(failure.message.contains("no timeline") && failure.message.contains(interest), "{}", failure.message);
    let calls: Vec<CallRecord> = reqwest::get(emu.control_url("calls")).await.unwrap().json().await.unwrap();
    assert!(calls.is_empty(), "{calls:#?}");
    emu.stop().await;
}
