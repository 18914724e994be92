//! Smart-process children and timeline comments against the portal
//! emulator over real HTTP: a flow's comment lands on the timeline of the
//! right deal (or item); a child whose binding creates it in a smart
//! process is added with `crm.item.add`, linked to its parent deal by
//! `parentId2`, known by its item code, and written later through
//! `crm.item.update`; an item event reads back with that code.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use dealbridge_connector_bitrix24::emulator::{self, CallRecord, EmulatorConfig, RunningEmulator};
use dealbridge_connector_bitrix24::{
    ApplicationToken, Bitrix24Config, Bitrix24Inbound, Bitrix24Target, PortalReader, ReadBudget, RestClient, WebhookUrl,
};
use dealbridge_core::connector::{InboundConnector, SourceRecord};
use dealbridge_core::delivery::{AttemptContext, FailureClass, OutboundConnector, Performed};
use dealbridge_core::flow::{Command, CommandOp};
use serde_json::{Value, json};
use uuid::Uuid;

/// The smart process «Монтаж» (entityTypeId 1032 = 0x408), pipeline 5.
const INSTALLATION: u32 = 1032;

const FIRST: AttemptContext = AttemptContext { attempt: 1, possibly_applied: false };
const RETRY: AttemptContext = AttemptContext { attempt: 2, possibly_applied: true };

struct Portal {
    emu: RunningEmulator,
    config: EmulatorConfig,
    target: Bitrix24Target,
}

impl Portal {
    async fn start() -> Self {
        let config = EmulatorConfig { burst: 10_000.0, ..EmulatorConfig::default() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let emu = emulator::spawn(config.clone(), listener).unwrap();
        let connector: Bitrix24Config =
            serde_json::from_value(json!({"webhook_url_env": "X", "application_token_env": "Y", "timeout_secs": 5}))
                .unwrap();
        let target = Bitrix24Target::new(&connector, WebhookUrl::parse(&emu.webhook_url(&config)).unwrap()).unwrap();
        Self { emu, config, target }
    }

    fn client(&self) -> RestClient {
        let url = WebhookUrl::parse(&self.emu.webhook_url(&self.config)).unwrap();
        RestClient::new(url, Duration::from_secs(5), Duration::from_secs(2)).unwrap()
    }

    async fn deal(&self, title: &str) -> String {
        self.target.client().deal_add(json!({"TITLE": title}).as_object().unwrap()).await.unwrap()
    }

    async fn calls(&self) -> Vec<CallRecord> {
        reqwest::get(format!("{}/_emulator/calls", self.emu.base_url())).await.unwrap().json().await.unwrap()
    }

    async fn clear_calls(&self) {
        reqwest::Client::new().delete(format!("{}/_emulator/calls", self.emu.base_url())).send().await.unwrap();
    }

    async fn timeline(&self) -> Vec<Value> {
        reqwest::get(format!("{}/_emulator/timeline", self.emu.base_url())).await.unwrap().json().await.unwrap()
    }
}

fn command(op: CommandOp) -> Command {
    Command {
        id: Uuid::now_v7(),
        idempotency_key: format!("evt:{}:flow:action:0", Uuid::now_v7()),
        connector: "b24".into(),
        system: "bitrix24".into(),
        deal: Some(Uuid::now_v7()),
        cause_event: Uuid::now_v7(),
        flow: "test".into(),
        op,
    }
}

fn comment(external_id: &str, text: &str) -> Command {
    command(CommandOp::Comment { external_id: external_id.into(), text: text.into() })
}

/// The child a flow spawns in the installation pipeline of a sales deal.
fn installation_child(parent: &str) -> Command {
    command(CommandOp::CreateDeal {
        create: BTreeMap::from([("entityTypeId".into(), "1032".into()), ("categoryId".into(), "5".into())]),
        parent_external_id: Some(parent.to_owned()),
        stage: Some("DT1032_5:NEW".into()),
        responsible: Some("21".into()),
        fields: BTreeMap::from([("title".into(), json!("Монтаж: Насосная станция"))]),
        document: None,
    })
}

fn move_item(code: &str, stage: &str) -> Command {
    command(CommandOp::UpdateDeal { external_id: code.into(), stage: Some(stage.into()), fields: BTreeMap::new() })
}

#[tokio::test]
async fn a_flow_comment_lands_on_the_timeline_of_the_deal_it_names() {
    let portal = Portal::start().await;
    let sale = portal.deal("Поставка в Казань").await;
    let other = portal.deal("Другая сделка").await;

    let written = portal.target.perform(&comment(&sale, "Оценка логистики: 18500.00"), FIRST).await.unwrap();

    assert_eq!(written, Performed::Applied { created: None });
    let timeline = portal.timeline().await;
    assert_eq!(timeline.len(), 1);
    assert_eq!(timeline[0]["ENTITY_TYPE"], "deal");
    assert_eq!(timeline[0]["ENTITY_ID"].to_string(), sale, "the sale's timeline, not {other}'s");
    assert_eq!(timeline[0]["COMMENT"], "Оценка логистики: 18500.00");
    let log = portal.calls().await;
    let call = log.iter().find(|c| c.method == "crm.timeline.comment.add").unwrap();
    assert_eq!(
        call.params,
        json!({"fields": {"ENTITY_TYPE": "deal", "ENTITY_ID": sale, "COMMENT": "Оценка логистики: 18500.00"}})
    );

    // A deal that is gone cannot take a comment; retrying would not help.
    let failure = portal.target.perform(&comment("999", "Никому"), FIRST).await.unwrap_err();
    assert_eq!(failure.class, FailureClass::Permanent, "{}", failure.message);
    portal.emu.stop().await;
}

#[tokio::test]
async fn a_child_in_a_smart_process_is_an_item_linked_to_its_parent_deal_and_moves_as_an_item() {
    let portal = Portal::start().await;
    let sale = portal.deal("Насосная станция").await;
    portal.clear_calls().await;

    // The flow spawns the installation child: one `crm.item.add`, camelCase,
    // linked to the sale by `parentId2`.
    let create = installation_child(&sale);
    let performed = portal.target.perform(&create, FIRST).await.unwrap();
    let Performed::Applied { created: Some(child) } = performed else { panic!("{performed:?}") };
    let log = portal.calls().await;
    assert_eq!(log.iter().map(|c| c.method.as_str()).collect::<Vec<_>>(), ["crm.item.add"]);
    assert_eq!(log[0].params["entityTypeId"], 1032);
    let fields = &log[0].params["fields"];
    assert_eq!(fields["title"], "Монтаж: Насосная станция");
    assert_eq!(fields["stageId"], "DT1032_5:NEW");
    assert_eq!(fields["categoryId"], "5");
    assert_eq!(fields["assignedById"], "21");
    assert_eq!(fields["parentId2"], json!(sale));
    assert!(fields.get("entityTypeId").is_none(), "the smart process is the call's, not a field");
    assert!(fields.get("CATEGORY_ID").is_none() && fields.get("STAGE_ID").is_none(), "no deal fields: {fields}");

    // The hub knows the child by its item code: item ids repeat across
    // smart processes and deals.
    let item_id = child.id.strip_prefix("T408_").expect("an item code").to_owned();
    let item = portal.client().item_get(INSTALLATION, &item_id).await.unwrap();
    assert_eq!(item["parentId2"], json!(sale));
    assert_eq!(item["stageId"], "DT1032_5:NEW");

    // A retry after a lost answer finds the item instead of adding another.
    portal.clear_calls().await;
    let again = portal.target.perform(&create, RETRY).await.unwrap();
    assert_eq!(again, Performed::AlreadyApplied { created: Some(child.clone()) });
    assert_eq!(portal.calls().await.iter().map(|c| c.method.as_str()).collect::<Vec<_>>(), ["crm.item.list"]);

    // The installers start: the move goes through `crm.item.update` of the
    // same smart process, never `crm.deal.update`.
    portal.clear_calls().await;
    let moved = portal.target.perform(&move_item(&child.id, "DT1032_5:PREPARATION"), FIRST).await.unwrap();
    assert_eq!(moved, Performed::Applied { created: None });
    let log = portal.calls().await;
    assert_eq!(log.iter().map(|c| c.method.as_str()).collect::<Vec<_>>(), ["crm.item.update"]);
    assert_eq!(
        log[0].params,
        json!({"entityTypeId": 1032, "id": item_id, "fields": {"stageId": "DT1032_5:PREPARATION"}})
    );
    let item = portal.client().item_get(INSTALLATION, &item_id).await.unwrap();
    assert_eq!(item["stageId"], "DT1032_5:PREPARATION");
    // Retried, the move finds it already made.
    let again = portal.target.perform(&move_item(&child.id, "DT1032_5:PREPARATION"), RETRY).await.unwrap();
    assert_eq!(again, Performed::AlreadyApplied { created: None });

    // Comments and tasks on the child go to the item, not to deal `item_id`.
    portal.target.perform(&comment(&child.id, "Монтажники выехали"), FIRST).await.unwrap();
    let timeline = portal.timeline().await;
    assert_eq!(
        (timeline[0]["ENTITY_TYPE"].as_str(), timeline[0]["ENTITY_ID"].to_string()),
        (Some("dynamic_1032"), item_id.clone())
    );
    let task = command(CommandOp::CreateTask {
        task: Uuid::now_v7(),
        external_id: Some(child.id.clone()),
        title: "Подписать акт".into(),
        description: String::new(),
        responsible: "21".into(),
        deadline: Some(Utc::now()),
    });
    portal.target.perform(&task, FIRST).await.unwrap();
    let log = portal.calls().await;
    let added = log.iter().find(|c| c.method == "tasks.task.add").unwrap();
    assert_eq!(added.params["fields"]["UF_CRM_TASK"], json!([child.id]));
    portal.emu.stop().await;
}

#[tokio::test]
async fn comments_and_item_writes_of_several_deals_go_out_in_one_batch() {
    let portal = Portal::start().await;
    let sale = portal.deal("Насосная станция").await;
    let Performed::Applied { created: Some(child) } =
        portal.target.perform(&installation_child(&sale), FIRST).await.unwrap()
    else {
        panic!("an item")
    };
    let other_sale = portal.deal("Котельная").await;
    portal.clear_calls().await;

    let commands = [
        comment(&sale, "Расчёт готов: 245000.50"),
        move_item(&child.id, "DT1032_5:PREPARATION"),
        installation_child(&other_sale),
    ];
    let batch: Vec<(&Command, AttemptContext)> = commands.iter().map(|c| (c, FIRST)).collect();
    let results = portal.target.perform_all(&batch).await;

    let log = portal.calls().await;
    let outside: Vec<&str> = log.iter().filter(|c| !c.in_batch).map(|c| c.method.as_str()).collect();
    assert_eq!(outside, ["batch"], "one request for all three");
    let inside: Vec<&str> = log.iter().filter(|c| c.in_batch).map(|c| c.method.as_str()).collect();
    assert_eq!(inside, ["crm.timeline.comment.add", "crm.item.update", "crm.item.add"]);
    assert_eq!(results[0], Ok(Performed::Applied { created: None }));
    assert_eq!(results[1], Ok(Performed::Applied { created: None }));
    let Ok(Performed::Applied { created: Some(second) }) = &results[2] else { panic!("{:?}", results[2]) };
    assert!(second.id.starts_with("T408_") && second.id != child.id, "{second:?}");
    let added = log.iter().find(|c| c.method == "crm.item.add").unwrap();
    assert_eq!(added.params["fields"]["parentId2"], json!(other_sale));
    assert_eq!(portal.timeline().await[0]["COMMENT"], "Расчёт готов: 245000.50");
    portal.emu.stop().await;
}

#[tokio::test]
async fn an_item_event_reads_back_with_the_code_the_hub_knows_the_item_by() {
    let portal = Portal::start().await;
    let sale = portal.deal("Насосная станция").await;
    let Performed::Applied { created: Some(child) } =
        portal.target.perform(&installation_child(&sale), FIRST).await.unwrap()
    else {
        panic!("an item")
    };
    let item_id = child.id.strip_prefix("T408_").unwrap();
    let reader = std::sync::Arc::new(PortalReader::new(portal.client(), ReadBudget::default()));
    let inbound = Bitrix24Inbound::new(ApplicationToken::new("t").unwrap(), None).reading(reader, None);
    let event = SourceRecord {
        kind: "item.event".into(),
        data: json!({"event": "ONCRMDYNAMICITEMUPDATE", "action": "update", "id": item_id, "entity_type_id": "1032"}),
    };

    let fetched = inbound.fetcher().unwrap().fetch(vec![event], Utc::now()).await.unwrap();

    assert_eq!(fetched.records.len(), 1);
    let item = &fetched.records[0];
    assert_eq!(item.kind, "item");
    assert_eq!(item.data["ref"], json!(child.id), "an item binding reads `id: ref`");
    assert_eq!(item.data["parentId2"], json!(sale));
    portal.emu.stop().await;
}
