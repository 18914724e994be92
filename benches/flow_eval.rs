//! Mapping and flow evaluation throughput per core, with no I/O, and the
//! same field mapping done by `jq` on the same input in the same run.
//!
//! One mapping set, built from the inline YAML below: a Bitrix24-like deal
//! binding with 20 field maps (trim, decimals with comma and spaces,
//! dd.mm.yyyy dates, lookups, upper/lower, defaults, custom fields), a stage
//! map, people, a calendar and 3 flows on the `sales` pipeline.
//!
//! N distinct deals are generated deterministically. Each exists in two
//! versions: v0 creates the deal (untimed setup: it is mapped and run
//! through the engine, so every deal has the state a real one would have),
//! v1 is the update that is timed. The v1 stage differs from v0 for 7 in 8
//! records (eight transitions cycle; one is a field-only update), and the
//! transitions are chosen so that about 40 % of the events run flow actions.
//!
//! Like the real caller (`store::world::load_world`), each event runs
//! against a `World` that holds its own deal with that deal's timers and
//! tasks, and `take_dirty()` follows every event. The worlds are built
//! before the clock starts (that part is store I/O in the hub) and rebuilt
//! between passes, so every pass sees the same stage changes.
//!
//! Timed on one thread, each pass over all N records:
//! 1. `map_record` only (records already decoded as `serde_json::Value`);
//! 2. `Engine::process` only (events already mapped);
//! 3. `map_record` + `Engine::process` on records and worlds built during
//!    the setup, long before: each event waits on memory for both;
//! 4. JSON decoding of each line + `map_record`, to compare with jq;
//! 5. `map_record` + `Engine::process` in the hub's order, the target's
//!    figure: each record is decoded and each world copied (untimed) right
//!    before it runs, as `Runner::process` copies the loaded world before
//!    `Engine::process`, so both are as fresh in the caches as the hub's;
//! 6. `jq -c -f filter.jq records.jsonl > /dev/null`: the same 20-field
//!    mapping in jq (decode, map, encode), wall clock, one process. Its
//!    output is first checked against `map_record` on the first records;
//!    `jq -c .` on the same file shows jq's decode + encode floor.
//!
//! Run: `cargo bench --bench flow_eval` (bench profile = release).
//! `-- --quick` (or `FLOW_EVAL_QUICK=1`) runs 5,000 records once, as a
//! smoke run; `-- --records N` sets N (default 200,000) and `-- --repeat R`
//! how often each Rust pass runs (default 3; the fastest run is reported,
//! with the median beside it). CPU/wall shows whether the thread had its
//! core to itself: below ~100 % something else ran on it.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use dealbridge_core::flow::{Cause, Change, Effects, Engine, TraceKind, World};
use dealbridge_core::mapping::{MappedRecord, MappingSet};
use dealbridge_core::model::CanonicalEvent;
use serde_json::{Value, json};
use uuid::Uuid;

/// The hub binary's allocator (`src/main.rs`): the bench measures the code
/// path the hub runs, allocations included.
#[global_allocator]
static GLOBAL: dealbridge_core::allocator::HubAllocator = dealbridge_core::allocator::HubAllocator;

const TARGET: f64 = 200_000.0;
const CONNECTOR: &str = "bitrix24";
const KIND: &str = "deal";

const SET: &str = r#"
pipelines:
  sales: [new, qualification, calculation, proposal, payment, shipment, won, lost]

lookups:
  b24-currencies: { RUB: RUB, RUR: RUB, USD: USD, EUR: EUR }
  b24-sources: { CALL: phone, EMAIL: email, WEB: website, PARTNER: partner, OTHER: other }
  b24-deal-types: { SALE: sale, COMPLEX: complex, GOODS: goods, SERVICES: services }

stage_maps:
  b24-sales:
    pipeline: sales
    stages:
      NEW: new
      UC_QUALIFY: qualification
      PREPARATION: calculation
      UC_PROPOSAL: proposal
      PREPAYMENT_INVOICE: payment
      FINAL_INVOICE: payment
      EXECUTING: shipment
      WON: won
      LOSE: lost
      APOLOGY: lost
    outbound:
      payment: PREPAYMENT_INVOICE
      lost: LOSE

people:
  petrov: { name: Пётр Петров, ids: { bitrix24: "1" } }
  ivanov: { name: Иван Иванов, ids: { bitrix24: "7" }, supervisor: petrov }
  smirnova: { name: Анна Смирнова, ids: { bitrix24: "12" }, supervisor: petrov, flags: [new_manager] }
  sidorov: { name: Сергей Сидоров, ids: { bitrix24: "21" }, supervisor: petrov }
  kuznetsova: { name: Мария Кузнецова, ids: { bitrix24: "22" }, supervisor: petrov }

calendar:
  timezone: Europe/Moscow
  working_days: [mon, tue, wed, thu, fri]
  hours: "09:00-18:00"
  holidays: [2025-01-01, 2025-01-02, 2025-01-03, 2025-01-06, 2025-01-07, 2025-01-08, 2025-05-01, 2025-05-09]

bindings:
  - name: b24-deals
    connector: bitrix24
    system: bitrix24
    record: deal
    filter: "record.CATEGORY_ID == '0'"
    id: ID
    stage: { from: STAGE_ID, map: b24-sales }
    fields:
      title: { from: TITLE, convert: [trim], required: true }
      amount:
        from: OPPORTUNITY
        convert: [decimal]
        currency: { from: CURRENCY_ID, convert: [trim, upper, { lookup: b24-currencies }], default: RUB }
      client.name: { from: UF_CRM_CLIENT_NAME, convert: [trim] }
      client.inn: { from: UF_CRM_INN, convert: [trim] }
      client.kpp: { from: UF_CRM_KPP, convert: [trim] }
      client.emails: { from: "EMAIL[*].VALUE", convert: [trim, lower] }
      client.phones: { from: "PHONE[*].VALUE", convert: [trim] }
      responsible: { from: ASSIGNED_BY_ID }
      actor: { from: MODIFY_BY_ID }
      custom.description: { from: COMMENTS, convert: [trim] }
      custom.close_date: { from: CLOSEDATE, convert: [date] }
      custom.begin_date: { from: BEGINDATE, convert: [date] }
      custom.source: { from: SOURCE_ID, convert: [trim, upper, { lookup: b24-sources }], default: other }
      custom.deal_type: { from: TYPE_ID, convert: [upper, { lookup: b24-deal-types }], default: sale }
      custom.cost: { from: UF_CRM_COST, convert: [decimal] }
      custom.logistics_cost: { from: UF_CRM_LOGISTICS_COST, convert: [decimal], default: "0" }
      custom.region: { from: UF_CRM_REGION, convert: [trim, upper] }
      custom.contract: { from: UF_CRM_CONTRACT_NO, convert: [trim, upper] }
      custom.probability: { from: PROBABILITY, convert: [decimal] }
      custom.priority: { from: UF_CRM_PRIORITY, convert: [trim, lower], default: normal }
    create_with:
      CATEGORY_ID: "0"

flows:
  - name: large-deal-priority
    when: { deal_enters: { pipeline: sales, stage: payment } }
    if: "deal.amount > 500000 and deal.currency == 'RUB'"
    then:
      - set_field: { field: custom.priority, value: "'high'" }

  - name: left-new
    when: { deal_leaves: { pipeline: sales, stage: new } }
    then:
      - notify:
          to: responsible
          text: "Сделка «{{ deal.title }}» ушла из новых в {{ deal.stage }}: {{ deal.amount }} {{ deal.currency }}"

  - name: shipment-paperwork
    when: { deal_enters: { pipeline: sales, stage: shipment } }
    then:
      - create_task:
          title: "Оформить реализацию: {{ deal.title }}"
          assignee: responsible
          due: 1 working days
      - schedule_timer: { timer: delivery-check, after: 3d }
"#;

/// The same mapping in jq (1.6 compatible: no built-in `trim`).
const JQ_FILTER: &str = r#"
def trim: sub("^[\\s\u00a0]+"; "") | sub("[\\s\u00a0]+$"; "");
def set: if type == "string" and test("^[\\s\u00a0]*$") then null else . end;
def conv(f): set | if . == null then null else f end;
def text: if type == "string" then . else tostring end;
def decimal: if type == "number" then . else gsub("[\\s\u00a0']"; "") | sub(","; ".") | tonumber end;
def date: strptime("%d.%m.%Y") | strftime("%Y-%m-%d");
def lookup($table; $name): . as $k | $table[$k] // error("`\($k)` is not in lookup table `\($name)`");

{RUB: "RUB", RUR: "RUB", USD: "USD", EUR: "EUR"} as $currencies
| {CALL: "phone", EMAIL: "email", WEB: "website", PARTNER: "partner", OTHER: "other"} as $sources
| {SALE: "sale", COMPLEX: "complex", GOODS: "goods", SERVICES: "services"} as $types
| {NEW: "new", UC_QUALIFY: "qualification", PREPARATION: "calculation", UC_PROPOSAL: "proposal",
   PREPAYMENT_INVOICE: "payment", FINAL_INVOICE: "payment", EXECUTING: "shipment", WON: "won",
   LOSE: "lost", APOLOGY: "lost"} as $stages
| {"1": "petrov", "7": "ivanov", "12": "smirnova", "21": "sidorov", "22": "kuznetsova"} as $people
| select(.CATEGORY_ID == "0")
| {
    type: "deal_observed",
    source: {system: "bitrix24", instance: "bitrix24", id: (.ID | conv(text) // error("record id is missing"))},
    observed: {
      pipeline: "sales",
      stage: (.STAGE_ID | conv(text | lookup($stages; "b24-sales"))),
      title: ((.TITLE | conv(trim)) // error("title: required value is missing")),
      amount: {
        amount: (.OPPORTUNITY | conv(decimal)),
        currency: ((.CURRENCY_ID | conv(trim | ascii_upcase | lookup($currencies; "b24-currencies"))) // "RUB")
      },
      client: {
        name: (.UF_CRM_CLIENT_NAME | conv(trim)),
        inn: (.UF_CRM_INN | conv(trim)),
        kpp: (.UF_CRM_KPP | conv(trim)),
        emails: [.EMAIL[]?.VALUE | conv(trim | ascii_downcase) | values],
        phones: [.PHONE[]?.VALUE | conv(trim) | values]
      },
      responsible: (.ASSIGNED_BY_ID | conv(text | lookup($people; "people"))),
      actor: (.MODIFY_BY_ID | conv(text | lookup($people; "people"))),
      custom_fields: ({
        description: (.COMMENTS | conv(trim)),
        close_date: (.CLOSEDATE | conv(date)),
        begin_date: (.BEGINDATE | conv(date)),
        source: ((.SOURCE_ID | conv(trim | ascii_upcase | lookup($sources; "b24-sources"))) // "other"),
        deal_type: ((.TYPE_ID | conv(ascii_upcase | lookup($types; "b24-deal-types"))) // "sale"),
        cost: (.UF_CRM_COST | conv(decimal)),
        logistics_cost: ((.UF_CRM_LOGISTICS_COST | conv(decimal)) // 0),
        region: (.UF_CRM_REGION | conv(trim | ascii_upcase)),
        contract: (.UF_CRM_CONTRACT_NO | conv(trim | ascii_upcase)),
        probability: (.PROBABILITY | conv(decimal)),
        priority: ((.UF_CRM_PRIORITY | conv(trim | ascii_downcase)) // "normal")
      } | with_entries(select(.value != null)))
    }
  }
"#;

/// Eight stage transitions (system stage ids, v0 → v1), cycled by record.
/// Flows: leaving `new` notifies (0, 6), entering `payment` checks the
/// amount and may set a field (3), entering `shipment` creates a task and
/// schedules a timer (4); 7 stays in `payment` (fields change only).
const TRANSITIONS: [(&str, &str); 8] = [
    ("NEW", "UC_QUALIFY"),
    ("UC_QUALIFY", "PREPARATION"),
    ("PREPARATION", "UC_PROPOSAL"),
    ("UC_PROPOSAL", "PREPAYMENT_INVOICE"),
    ("PREPAYMENT_INVOICE", "EXECUTING"),
    ("EXECUTING", "WON"),
    ("NEW", "LOSE"),
    ("PREPAYMENT_INVOICE", "FINAL_INVOICE"),
];

struct Args {
    records: usize,
    repeat: usize,
    jq_check: usize,
}

fn args() -> Args {
    let quick = std::env::var("FLOW_EVAL_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut a = Args { records: 200_000, repeat: 3, jq_check: 2_000 };
    if quick {
        (a.records, a.repeat) = (5_000, 1);
    }
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut number = || it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{flag} N"));
        match flag.as_str() {
            "--quick" => (a.records, a.repeat) = (5_000, 1),
            "--records" => a.records = number(),
            "--repeat" => a.repeat = number().max(1),
            "--bench" => {}
            other => panic!("unknown argument {other} (expected --quick, --records N or --repeat N)"),
        }
    }
    a.jq_check = a.jq_check.min(a.records);
    a
}

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// `1 234 567,89`, thousands separated by a space (every fourth record a
/// no-break space, as 1C and Excel exports write them).
fn russian_amount(kopecks: u64, nbsp: bool) -> String {
    let (rub, kop) = (kopecks / 100, kopecks % 100);
    let digits = rub.to_string();
    let sep = if nbsp { '\u{00A0}' } else { ' ' };
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(sep);
        }
        out.push(c);
    }
    format!("{out},{kop:02}")
}

fn ru_date(day_of_year: u64) -> String {
    let date = chrono::NaiveDate::from_yo_opt(2025, (day_of_year % 365) as u32 + 1).expect("valid day");
    date.format("%d.%m.%Y").to_string()
}

/// The two versions (v0: creation, v1: the timed update) of record `i`.
fn record_pair(i: usize) -> (Value, Value) {
    let mut rng = Rng(0xDEA1_B41D_6E00_0000 ^ i as u64);
    let (from_stage, to_stage) = TRANSITIONS[i % TRANSITIONS.len()];
    let people = ["1", "7", "12", "21", "22"];
    let city = rng.pick(&["Казань", "Самара", "Тверь", "Пермь", "Омск", "Уфа"]);
    let client = rng.pick(&["Ромашка", "Вектор", "Север", "Альфа", "Гранит", "Меридиан"]);
    let kopecks = 1_000_000 + rng.below(100_000_000);
    let changed_kopecks = if i % 2 == 1 { kopecks + 150_000 } else { kopecks };
    let cost = kopecks / 3 + rng.below(1_000_000);
    let begin = rng.below(300);
    let close = begin + 10 + rng.below(50);
    let responsible = people[i % people.len()];
    let base = json!({
        "ID": (100_000 + i).to_string(),
        "CATEGORY_ID": "0",
        "TITLE": format!("  Поставка оборудования №{i}, {city} "),
        "CURRENCY_ID": rng.pick(&["RUB", "rub ", "RUR", "RUB", "USD", "RUB", "EUR", "RUB"]),
        "UF_CRM_CLIENT_NAME": format!(" ООО «{client}-{}» ", i % 997),
        "UF_CRM_INN": format!(" {} ", 7_700_000_000u64 + rng.below(99_999_999)),
        "UF_CRM_KPP": "770101001",
        "EMAIL": [
            {"ID": (i * 2).to_string(), "VALUE_TYPE": "WORK", "VALUE": format!(" Sales.{i}@Example.RU ")},
            {"ID": (i * 2 + 1).to_string(), "VALUE_TYPE": "HOME", "VALUE": if i.is_multiple_of(3) { " ".to_owned() } else { format!("boss{i}@mail.ru") }}
        ],
        "PHONE": [{"ID": i.to_string(), "VALUE_TYPE": "WORK", "VALUE": format!(" +7 (495) {:03}-{:02}-{:02}", i % 1000, i % 97, i % 89)}],
        "ASSIGNED_BY_ID": responsible,
        "CLOSEDATE": ru_date(close),
        "BEGINDATE": ru_date(begin),
        "SOURCE_ID": match rng.below(6) { 0 => json!("CALL"), 1 => json!("email"), 2 => json!("WEB "), 3 => json!(" PARTNER"), 4 => json!(""), _ => Value::Null },
        "TYPE_ID": rng.pick(&["SALE", "complex", "GOODS", "SERVICES", "SALE"]),
        "UF_CRM_COST": russian_amount(cost, false),
        "UF_CRM_LOGISTICS_COST": if i.is_multiple_of(4) { String::new() } else { russian_amount(rng.below(5_000_000), false) },
        "UF_CRM_REGION": rng.pick(&[" msk ", "spb", " kzn", "Nsk "]),
        "UF_CRM_CONTRACT_NO": format!(" d-2025/{:05} ", i % 100_000),
        "PROBABILITY": 10 + (i % 9) * 10,
        "UF_CRM_PRIORITY": if i % 16 == 15 { " High" } else { "" },
        "IS_NEW": "N", "OPENED": "Y", "CLOSED": "N",
        "COMPANY_ID": (5_000 + i % 3_000).to_string(), "CONTACT_ID": (9_000 + i).to_string(),
        "LEAD_ID": Value::Null, "ORIGINATOR_ID": Value::Null, "UTM_SOURCE": Value::Null,
        "DATE_CREATE": "2025-02-03T10:15:00+03:00",
    });
    let version = |stage: &str, kopecks: u64, modifier: &str, comment: &str, modified: &str| {
        let mut r = base.clone();
        let o = r.as_object_mut().expect("object");
        o.insert("STAGE_ID".into(), stage.into());
        o.insert("OPPORTUNITY".into(), russian_amount(kopecks, i % 4 == 1).into());
        o.insert("MODIFY_BY_ID".into(), modifier.into());
        o.insert("COMMENTS".into(), comment.into());
        o.insert("DATE_MODIFY".into(), modified.into());
        r
    };
    let v0 = version(from_stage, kopecks, responsible, "Запрос от клиента", "2025-02-03T10:15:00+03:00");
    let v1 = version(
        to_stage,
        changed_kopecks,
        people[(i + 1) % people.len()],
        &format!(" Клиент просит счёт до {}. ", ru_date(close)),
        "2025-03-04T11:00:00+03:00",
    );
    (v0, v1)
}

fn external_id(event: &CanonicalEvent) -> &str {
    match event {
        CanonicalEvent::DealObserved { source, .. } => &source.id,
        other => panic!("unexpected event {other:?}"),
    }
}

/// What the flows did, to show they really ran.
#[derive(Default)]
struct Stats {
    events: u64,
    stage_changes: u64,
    field_changes: u64,
    events_with_flow_actions: u64,
    notifications: u64,
    commands: u64,
    tasks_written: u64,
    timers_written: u64,
    problems: u64,
}

impl Stats {
    /// Every count, to compare two passes over the same records.
    fn summary(&self) -> [u64; 9] {
        [
            self.events,
            self.stage_changes,
            self.field_changes,
            self.events_with_flow_actions,
            self.notifications,
            self.commands,
            self.tasks_written,
            self.timers_written,
            self.problems,
        ]
    }

    fn add(&mut self, effects: &Effects, world: &mut World) {
        let dirty = world.take_dirty();
        self.events += 1;
        for change in &effects.changes {
            match &**change {
                Change::StageEntered { .. } => self.stage_changes += 1,
                Change::FieldChanged { .. } => self.field_changes += 1,
                Change::DealCreated { .. } => {}
            }
        }
        if effects.trace.iter().any(|t| matches!(&t.kind, TraceKind::Action { flow, .. } if !flow.is_empty())) {
            self.events_with_flow_actions += 1;
        }
        self.notifications += effects.notifications.len() as u64;
        self.commands += effects.commands.len() as u64;
        self.tasks_written += dirty.tasks.len() as u64;
        self.timers_written += dirty.timers.len() as u64;
        self.problems += effects.problems.len() as u64;
    }
}

struct Fixture {
    set: MappingSet,
    v1: Vec<Value>,
    /// One world per deal, after its v0 (creation) event.
    worlds: Vec<World>,
    /// Bitrix24 id → index of its world (the store's index in the hub).
    index: HashMap<String, usize>,
    lines: Vec<String>,
}

fn cause(i: usize, version: u128, at: DateTime<Utc>, binding: &Arc<str>) -> Cause {
    Cause {
        event_id: Uuid::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0000 | (version << 48) | i as u128),
        sequence: 0,
        at,
        binding: Some(Arc::clone(binding)),
    }
}

fn v0_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 2, 3, 7, 15, 0).single().expect("valid")
}

fn v1_time(i: usize) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 4, 8, 0, 0).single().expect("valid") + chrono::Duration::milliseconds(i as i64)
}

fn fixture(n: usize) -> Fixture {
    let set = MappingSet::from_sources(&[("bench.yaml".to_owned(), SET.to_owned())]).unwrap_or_else(|diags| {
        let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        panic!("the bench mapping set does not load:\n{}", text.join("\n"))
    });
    let engine = Engine::new(set.plan(), set.runtime(), &set);
    let mut v1 = Vec::with_capacity(n);
    let mut worlds = Vec::with_capacity(n);
    let mut index = HashMap::with_capacity(n);
    let mut lines = Vec::with_capacity(n);
    let mut setup = Stats::default();
    for i in 0..n {
        let (v0, update) = record_pair(i);
        let mut world = World::default();
        for mapped in set.map_record(CONNECTOR, KIND, &v0).expect("v0 maps") {
            let effects = engine
                .process(&mut world, &mapped.event, &cause(i, 0, v0_time(), &mapped.binding))
                .expect("v0 applies");
            setup.add(&effects, &mut world);
            index.insert(external_id(&mapped.event).to_owned(), i);
        }
        worlds.push(world);
        lines.push(serde_json::to_string(&update).expect("json"));
        v1.push(update);
    }
    assert_eq!(setup.problems, 0, "setup events reported problems");
    Fixture { set, v1, worlds, index, lines }
}

/// Wall clock and CPU time (user + system, from /proc, in USER_HZ = 100
/// ticks) of this process and of the children it waited for.
struct Clock {
    wall: Instant,
    cpu: Duration,
}

fn cpu_so_far() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`: utime, stime, cutime, cstime are 12–15.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect())
        .unwrap_or_default();
    let ticks: u64 = (11..15).map(|i| fields.get(i).copied().unwrap_or(0)).sum();
    Duration::from_millis(ticks * 10)
}

impl Clock {
    fn start() -> Self {
        Self { cpu: cpu_so_far(), wall: Instant::now() }
    }

    fn stop(&self) -> Timing {
        let wall = self.wall.elapsed();
        Timing { wall, cpu: cpu_so_far().saturating_sub(self.cpu) }
    }
}

#[derive(Clone, Copy)]
struct Timing {
    wall: Duration,
    cpu: Duration,
}

/// One pass, measured `runs.len()` times.
struct Row {
    name: String,
    events: usize,
    runs: Vec<Timing>,
}

impl Row {
    fn new(name: &str, events: usize) -> Self {
        Self { name: name.to_owned(), events, runs: Vec::new() }
    }

    fn best(&self) -> Timing {
        *self.runs.iter().min_by_key(|t| t.wall).expect("measured")
    }

    /// Events per second of the fastest run.
    fn rate(&self) -> f64 {
        self.events as f64 / self.best().wall.as_secs_f64()
    }

    fn median_rate(&self) -> f64 {
        let mut walls: Vec<Duration> = self.runs.iter().map(|t| t.wall).collect();
        walls.sort();
        self.events as f64 / walls[walls.len() / 2].as_secs_f64()
    }
}

// Kept out of line so a profiler can attribute each pass.
#[inline(never)]
fn pass_map_only(f: &Fixture) -> Timing {
    let clock = Clock::start();
    let mut produced = 0usize;
    for record in &f.v1 {
        let mapped = f.set.map_record(CONNECTOR, KIND, record).expect("maps");
        produced += mapped.len();
        black_box(mapped);
    }
    let timing = clock.stop();
    assert_eq!(produced, f.v1.len(), "every record maps to one event");
    timing
}

// Kept out of line so a profiler can attribute each pass.
#[inline(never)]
fn pass_parse_and_map(f: &Fixture) -> Timing {
    let clock = Clock::start();
    for line in &f.lines {
        let record: Value = serde_json::from_str(line).expect("json");
        black_box(f.set.map_record(CONNECTOR, KIND, &record).expect("maps"));
    }
    clock.stop()
}

// Kept out of line so a profiler can attribute each pass.
#[inline(never)]
fn pass_flows_only(f: &Fixture) -> (Timing, Stats) {
    let mapped: Vec<MappedRecord> =
        f.v1.iter().flat_map(|r| f.set.map_record(CONNECTOR, KIND, r).expect("maps")).collect();
    let mut worlds = f.worlds.clone();
    let engine = Engine::new(f.set.plan(), f.set.runtime(), &f.set);
    let mut stats = Stats::default();
    let clock = Clock::start();
    for (i, m) in mapped.iter().enumerate() {
        let world = &mut worlds[f.index[external_id(&m.event)]];
        let effects = engine.process(world, &m.event, &cause(i, 1, v1_time(i), &m.binding)).expect("applies");
        stats.add(&effects, world);
        black_box(effects);
    }
    let timing = clock.stop();
    drop(worlds);
    (timing, stats)
}

// Kept out of line so a profiler can attribute each pass.
#[inline(never)]
fn pass_full(f: &Fixture) -> (Timing, Stats) {
    let mut worlds = f.worlds.clone();
    let clock = Clock::start();
    let stats = full_events(f, &mut worlds);
    let timing = clock.stop();
    drop(worlds);
    (timing, stats)
}

/// The timed part of `pass_full`: every record mapped and run.
#[inline(never)]
fn full_events(f: &Fixture, worlds: &mut [World]) -> Stats {
    let engine = Engine::new(f.set.plan(), f.set.runtime(), &f.set);
    let mut stats = Stats::default();
    for (i, record) in f.v1.iter().enumerate() {
        for m in f.set.map_record(CONNECTOR, KIND, record).expect("maps") {
            let world = &mut worlds[f.index[external_id(&m.event)]];
            let effects = engine.process(world, &m.event, &cause(i, 1, v1_time(i), &m.binding)).expect("applies");
            stats.add(&effects, world);
            black_box(effects);
        }
    }
    stats
}

/// `map_record` + `Engine::process` in the hub's order: each record is
/// decoded from its JSON line, and its world copied, just before it runs,
/// so both are as fresh in the caches as the hub's own (it decodes the
/// webhook body and loads the world from the store right before mapping
/// and running). Decoding, copying and dropping them are not timed; the
/// clock runs around the same work as `full_events`, event by event.
/// The other passes read records and worlds built long before, which on
/// a machine with slow memory costs as much as the work itself.
#[inline(never)]
fn pass_fresh(f: &Fixture) -> (Timing, Stats) {
    let engine = Engine::new(f.set.plan(), f.set.runtime(), &f.set);
    let mut stats = Stats::default();
    let mut timed = Duration::ZERO;
    let whole = Clock::start();
    for (i, line) in f.lines.iter().enumerate() {
        let record: Value = serde_json::from_str(line).expect("json");
        let id = record.get("ID").and_then(Value::as_str).expect("record id");
        let mut world = f.worlds[f.index[id]].clone();
        let start = Instant::now();
        for m in f.set.map_record(CONNECTOR, KIND, &record).expect("maps") {
            let effects = engine.process(&mut world, &m.event, &cause(i, 1, v1_time(i), &m.binding)).expect("applies");
            stats.add(&effects, &mut world);
            black_box(effects);
        }
        timed += start.elapsed();
    }
    // CPU time is only known for the whole loop: its share of the wall
    // clock says whether the thread had its core.
    let all = whole.stop();
    let share = all.cpu.as_secs_f64() / all.wall.as_secs_f64().max(f64::MIN_POSITIVE);
    (Timing { wall: timed, cpu: timed.mul_f64(share) }, stats)
}

fn jq_version() -> Option<String> {
    let out = Command::new("jq").arg("--version").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Leaves of a JSON tree by path; nulls and empty containers are absent.
fn leaves(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Null => {}
        Value::Object(map) => map.iter().for_each(|(k, v)| leaves(&format!("{prefix}.{k}"), v, out)),
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| leaves(&format!("{prefix}[{i}]"), v, out)),
        scalar => {
            out.insert(prefix.to_owned(), scalar.clone());
        }
    }
}

/// Same leaf, numbers compared by value (the hub keeps decimals as exact
/// strings, jq has floats).
fn same(a: &Value, b: &Value) -> bool {
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    a == b || matches!((number(a), number(b)), (Some(x), Some(y)) if x == y)
}

/// Runs the jq filter over the first records and compares with `map_record`.
fn check_jq(f: &Fixture, filter: &Path, count: usize) {
    let mut child = Command::new("jq")
        .arg("-c")
        .arg("-f")
        .arg(filter)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("jq starts");
    let input: String = f.lines[..count].iter().map(|l| format!("{l}\n")).collect();
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).expect("write to jq"));
    let out = child.wait_with_output().expect("jq runs");
    writer.join().expect("writer");
    assert!(out.status.success(), "jq failed on the check input");
    let jq_lines: Vec<&str> = std::str::from_utf8(&out.stdout).expect("utf-8").lines().collect();
    assert_eq!(jq_lines.len(), count, "jq produced one line per record");
    for (i, (line, record)) in jq_lines.iter().zip(&f.v1).enumerate() {
        let ours = serde_json::to_value(&f.set.map_record(CONNECTOR, KIND, record).expect("maps")[0].event)
            .expect("event json");
        let theirs: Value = serde_json::from_str(line).expect("jq json");
        let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
        leaves("", &ours, &mut a);
        leaves("", &theirs, &mut b);
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for key in keys {
            match (a.get(key), b.get(key)) {
                (Some(x), Some(y)) if same(x, y) => {}
                (x, y) => panic!("record {i}: jq and map_record differ at `{key}`: dealbridge {x:?}, jq {y:?}"),
            }
        }
    }
}

fn run_jq(filter: &Path, input: &Path) -> Timing {
    let clock = Clock::start();
    let status =
        Command::new("jq").arg("-c").arg("-f").arg(filter).arg(input).stdout(Stdio::null()).status().expect("jq runs");
    let timing = clock.stop();
    assert!(status.success(), "jq failed");
    timing
}

fn main() {
    let args = args();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "flow_eval: {} records, best of {} runs per pass, 1 thread ({cpus} CPUs available; figures are per core)",
        args.records, args.repeat
    );
    println!("load average before the run: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));

    let t = Instant::now();
    let f = fixture(args.records);
    println!("setup: {} deals created through map_record + engine (v0) in {:.1?}", f.worlds.len(), t.elapsed());

    // Warm-up: caches, allocator and minijinja's template lookups.
    for record in f.v1.iter().take(2_000) {
        black_box(f.set.map_record(CONNECTOR, KIND, record).expect("maps"));
    }

    let n = f.v1.len();
    let mut map_only = Row::new("map_record (20 fields, filter, stage, people)", n);
    let mut flows_only = Row::new("Engine::process (3 flows)", n);
    let mut full = Row::new("map_record + Engine::process, records and worlds built long before", n);
    let mut parse_map = Row::new("JSON decode + map_record", n);
    let mut fresh =
        Row::new("map_record + Engine::process, record and world fresh (hub order): the target's figure", n);
    let mut stats = Stats::default();
    for _ in 0..args.repeat {
        map_only.runs.push(pass_map_only(&f));
        flows_only.runs.push(pass_flows_only(&f).0);
        let (timing, run_stats) = pass_full(&f);
        full.runs.push(timing);
        stats = run_stats;
        parse_map.runs.push(pass_parse_and_map(&f));
        let (timing, fresh_stats) = pass_fresh(&f);
        assert_eq!(fresh_stats.summary(), stats.summary(), "the fresh pass does the same work as the full one");
        fresh.runs.push(timing);
    }
    assert_eq!(stats.events as usize, n, "every record became one engine event");

    let dir = tempfile::tempdir().expect("temp dir");
    let jq = match jq_version() {
        None => {
            println!("jq is not installed (`apt-get install -y jq`): skipping the jq comparison");
            None
        }
        Some(version) => {
            let input = dir.path().join("records.jsonl");
            let mut file = std::io::BufWriter::new(std::fs::File::create(&input).expect("create jsonl"));
            for line in &f.lines {
                writeln!(file, "{line}").expect("write jsonl");
            }
            file.flush().expect("flush jsonl");
            drop(file);
            let filter = dir.path().join("filter.jq");
            std::fs::write(&filter, JQ_FILTER).expect("write filter");
            check_jq(&f, &filter, args.jq_check);
            println!("{version}: output equals map_record's on the first {} records", args.jq_check);
            let mut row = Row::new(&format!("{version} -c (decode + same 20-field map + encode), 1 run"), n);
            row.runs.push(run_jq(&filter, &input));
            // jq's floor on this input: decoding and encoding alone.
            let identity = dir.path().join("identity.jq");
            std::fs::write(&identity, ".").expect("write filter");
            let mut floor = Row::new(&format!("{version} -c . (decode + encode only, no mapping), 1 run"), n);
            floor.runs.push(run_jq(&identity, &input));
            Some((row, floor))
        }
    };

    println!();
    println!("| pass | events | runs (s) | events/s (best) | µs/event | events/s (median) | CPU/wall |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let jq_rows = jq.as_ref().map(|(row, floor)| [row, floor]);
    let rust_rows = [&map_only, &flows_only, &full, &parse_map, &fresh];
    for row in rust_rows.into_iter().chain(jq_rows.into_iter().flatten()) {
        let best = row.best();
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.0} | {:.0} % |",
            row.name,
            row.events,
            row.runs.iter().map(|t| format!("{:.2}", t.wall.as_secs_f64())).collect::<Vec<_>>().join(", "),
            row.rate(),
            1e6 / row.rate(),
            row.median_rate(),
            100.0 * best.cpu.as_secs_f64() / best.wall.as_secs_f64()
        );
    }
    println!();
    println!(
        "flows: {} events, {} stage changes, {} field changes, {} events ran flow actions \
         ({} notifications, {} commands, {} tasks, {} timers written), {} problems",
        stats.events,
        stats.stage_changes,
        stats.field_changes,
        stats.events_with_flow_actions,
        stats.notifications,
        stats.commands,
        stats.tasks_written,
        stats.timers_written,
        stats.problems
    );
    if let Some((jq, _)) = &jq {
        println!(
            "ratio to jq: map_record + Engine::process {:.2}x (hub order; {:.2}x with records and worlds built long \
             before), map_record {:.2}x, JSON decode + map_record {:.2}x",
            fresh.rate() / jq.rate(),
            full.rate() / jq.rate(),
            map_only.rate() / jq.rate(),
            parse_map.rate() / jq.rate()
        );
    }
    let verdict = if fresh.rate() >= TARGET { "met" } else { "NOT met" };
    println!(
        "target ≥ {TARGET:.0} events/s per core (map_record + Engine::process, hub order): {verdict} ({:.0}/s); \
         with records and worlds built long before: {:.0}/s",
        fresh.rate(),
        full.rate()
    );
}
