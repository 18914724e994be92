//! "Why is this deal where it is?" — the deal's timeline from the store:
//! raw event → mapping version → canonical change → flow and action →
//! command, plus how long each stage took. Served by
//! `GET /api/v1/deals/{id}/trace` and printed by `dealbridge explain`.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::flow::{Command, TraceKind, TraceStep};
use crate::model::{Deal, Money, Task, Timer};
use crate::store::{AttemptRecord, DeliveryState, EventState, Store, StoreError};

/// Everything known about how a deal got where it is.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DealTrace {
    pub deal: Deal,
    pub children: Vec<ChildSummary>,
    /// Each stage the deal was in, with how long it stayed.
    pub stages: Vec<StageSpan>,
    /// Tasks and approvals the hub created for the deal.
    pub tasks: Vec<Task>,
    /// Its timers: pending, fired and cancelled.
    pub timers: Vec<Timer>,
    /// What happened, grouped by the event that caused it, oldest first.
    pub timeline: Vec<TimelineEntry>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChildSummary {
    pub id: Uuid,
    pub pipeline: String,
    pub stage: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responsible: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StageSpan {
    pub pipeline: String,
    pub stage: String,
    pub entered_at: DateTime<Utc>,
    /// `None` while the deal is still there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_at: Option<DateTime<Utc>>,
    /// Until it left, or until now.
    pub seconds: i64,
    pub actor: String,
}

/// One cause (a raw event, a fired timer, a decision) and what it did to
/// this deal.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub cause_event: Uuid,
    pub at: DateTime<Utc>,
    /// The stored raw event, when the cause was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<EventSource>,
    /// The bank payment and the statement it came in, when the cause was
    /// an imported payment (its id is the cause).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentSource>,
    #[schema(value_type = Vec<Object>)]
    pub steps: Vec<TraceStep>,
    #[schema(value_type = Vec<Object>)]
    pub commands: Vec<Command>,
    /// How each of those commands is getting on, with every attempt.
    pub deliveries: Vec<CommandDelivery>,
}

/// One command's way out: its delivery state (none yet while it waits to
/// be dispatched) and each attempt's time, outcome, error and latency.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CommandDelivery {
    pub command_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<DeliveryState>,
    pub attempts: Vec<AttemptRecord>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventSource {
    pub connector: String,
    pub received_at: DateTime<Utc>,
    pub state: EventState,
}

/// A payment that moved the deal, as its statement shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PaymentSource {
    pub payment_id: Uuid,
    pub document_number: String,
    pub date: NaiveDate,
    pub amount: Money,
    pub payer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payer_inn: Option<String>,
    pub purpose: String,
    /// The invoices it was applied to (several when split).
    pub invoices: Vec<String>,
    pub statement_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Format and version as read, e.g. `1CClientBankExchange 1.03`.
    pub format: String,
    /// The days the statement covers, as its summary gives them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_from: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_to: Option<NaiveDate>,
    pub imported_at: DateTime<Utc>,
    /// `upload`, `cli` or `watch`.
    pub import_source: String,
}

/// The payment `id` and its statement, when `id` is an imported payment.
async fn payment_source(store: &dyn Store, id: Uuid) -> Result<Option<PaymentSource>, StoreError> {
    let Some(stored) = store.get_payment(id).await? else { return Ok(None) };
    let Some(statement) = store.get_statement(stored.statement_id).await? else { return Ok(None) };
    let p = stored.payment;
    let period = |end: &str| {
        statement.summary.get("period").and_then(|p| p.get(end)).and_then(|d| d.as_str()).and_then(|d| d.parse().ok())
    };
    Ok(Some(PaymentSource {
        payment_id: p.id,
        document_number: p.document_number,
        date: p.date,
        amount: p.amount,
        payer: p.payer.name,
        payer_inn: p.payer.inn.map(|i| i.as_str().to_owned()),
        purpose: p.purpose,
        invoices: stored.matched.iter().chain(&stored.also_matched).map(|m| m.invoice_number.clone()).collect(),
        statement_id: statement.id,
        file_name: statement.file_name.clone(),
        format: statement.format.clone(),
        statement_from: period("from"),
        statement_to: period("to"),
        imported_at: statement.imported_at,
        import_source: statement.source.clone(),
    }))
}

/// The deal's trace, or `None` when no such deal is stored.
pub async fn deal_trace(store: &dyn Store, id: Uuid, now: DateTime<Utc>) -> Result<Option<DealTrace>, StoreError> {
    let Some(deal) = store.get_deal(id).await? else { return Ok(None) };
    let children = store
        .child_deals(id)
        .await?
        .into_iter()
        .map(|c| ChildSummary {
            id: c.id,
            pipeline: c.pipeline,
            stage: c.stage,
            title: c.title,
            responsible: c.responsible,
        })
        .collect();
    let steps = store.trace_of_deal(id).await?;
    let commands = store.commands_of_deal(id).await?;
    let mut timeline = timeline(store, steps, commands).await?;
    attach_deliveries(store, id, &mut timeline).await?;
    let tasks = store.tasks_of_deals(&[id], false).await?;
    let timers = store.timers_of_deals(&[id], false).await?;
    Ok(Some(DealTrace { stages: stage_spans(&deal, now), deal, children, tasks, timers, timeline }))
}

/// The stage history as spans with durations.
pub fn stage_spans(deal: &Deal, now: DateTime<Utc>) -> Vec<StageSpan> {
    let history = &deal.stage_history;
    history
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let left_at = history.get(i + 1).map(|next| next.entered_at);
            StageSpan {
                pipeline: entry.pipeline.clone(),
                stage: entry.stage.clone(),
                entered_at: entry.entered_at,
                left_at,
                seconds: (left_at.unwrap_or(now) - entry.entered_at).num_seconds().max(0),
                actor: entry.actor.clone(),
            }
        })
        .collect()
}

async fn timeline(
    store: &dyn Store,
    steps: Vec<TraceStep>,
    commands: Vec<Command>,
) -> Result<Vec<TimelineEntry>, StoreError> {
    let mut order: Vec<Uuid> = Vec::new();
    let mut by_cause: BTreeMap<Uuid, TimelineEntry> = BTreeMap::new();
    for step in steps {
        let entry = by_cause.entry(step.cause_event).or_insert_with(|| {
            order.push(step.cause_event);
            TimelineEntry {
                cause_event: step.cause_event,
                at: step.at,
                source: None,
                payment: None,
                steps: Vec::new(),
                commands: Vec::new(),
                deliveries: Vec::new(),
            }
        });
        entry.steps.push(step);
    }
    for command in commands {
        if let Some(entry) = by_cause.get_mut(&command.cause_event) {
            entry.commands.push(command);
        }
    }
    let mut entries = Vec::with_capacity(order.len());
    for cause in order {
        let mut entry = by_cause.remove(&cause).expect("ordered");
        entry.source = store.get_event(cause).await?.map(|raw| EventSource {
            connector: raw.connector,
            received_at: raw.received_at,
            state: raw.state,
        });
        if entry.source.is_none() {
            entry.payment = payment_source(store, cause).await?;
        }
        entries.push(entry);
    }
    entries.sort_by_key(|e| e.at);
    Ok(entries)
}

/// Fills each timeline entry's `deliveries` from the delivery log.
async fn attach_deliveries(store: &dyn Store, deal: Uuid, timeline: &mut [TimelineEntry]) -> Result<(), StoreError> {
    let states: BTreeMap<Uuid, DeliveryState> =
        store.deliveries_of_deal(deal).await?.into_iter().map(|d| (d.command.id, d.state)).collect();
    let mut attempts: BTreeMap<Uuid, Vec<AttemptRecord>> = BTreeMap::new();
    for attempt in store.attempts_of_deal(deal).await? {
        attempts.entry(attempt.command_id).or_default().push(attempt);
    }
    for entry in timeline {
        entry.deliveries = entry
            .commands
            .iter()
            .map(|c| CommandDelivery {
                command_id: c.id,
                state: states.get(&c.id).copied(),
                attempts: attempts.remove(&c.id).unwrap_or_default(),
            })
            .collect();
    }
    Ok(())
}

/// The trace as a person reads it, for `dealbridge explain`.
pub fn render_text(trace: &DealTrace) -> String {
    let deal = &trace.deal;
    let mut out = String::new();
    let amount = deal.amount.as_ref().map(ToString::to_string).unwrap_or_else(|| "—".into());
    out.push_str(&format!("Deal {} «{}»\n", deal.id, deal.title));
    out.push_str(&format!("  now:         {}/{}\n", deal.pipeline, deal.stage));
    out.push_str(&format!("  amount:      {amount}\n"));
    out.push_str(&format!("  responsible: {}\n", deal.responsible.as_deref().unwrap_or("—")));
    if let Some(client) = &deal.client {
        let inn = client.inn.as_ref().map(|i| format!(", ИНН {}", i.as_str())).unwrap_or_default();
        out.push_str(&format!("  client:      {}{inn}\n", client.name));
    }
    if let Some(parent) = deal.parent_id {
        out.push_str(&format!("  parent:      {parent}\n"));
    }
    for r in &deal.external_refs {
        let what = r.document.as_deref().map(|kind| format!(" ({kind} made for the deal)")).unwrap_or_default();
        out.push_str(&format!("  in {} ({}): {}{what}\n", r.system, r.instance, r.id));
    }
    for (name, value) in &deal.custom_fields {
        out.push_str(&format!("  custom.{name}: {value}\n"));
    }
    if !trace.children.is_empty() {
        out.push_str("\nChild deals:\n");
        for c in &trace.children {
            let who = c.responsible.as_deref().unwrap_or("—");
            out.push_str(&format!("  {} {}/{} «{}», responsible {who}\n", c.id, c.pipeline, c.stage, c.title));
        }
    }
    out.push_str("\nStages:\n");
    for span in &trace.stages {
        let still = if span.left_at.is_none() { " (so far)" } else { "" };
        out.push_str(&format!(
            "  {:<28} {} by {:<18} {}{still}\n",
            format!("{}/{}", span.pipeline, span.stage),
            span.entered_at.format("%Y-%m-%d %H:%M"),
            span.actor,
            human_duration(span.seconds)
        ));
    }
    if !trace.tasks.is_empty() {
        out.push_str("\nTasks:\n");
        for t in &trace.tasks {
            let due = t.due.map(|d| format!(", due {}", d.format("%Y-%m-%d %H:%M"))).unwrap_or_default();
            out.push_str(&format!("  {:?} {:?} for {}{due}: {}\n", t.status, t.kind, t.assignee, t.title));
        }
    }
    if !trace.timers.is_empty() {
        out.push_str("\nTimers:\n");
        for t in &trace.timers {
            out.push_str(&format!("  {} {:?}, due {}\n", t.name, t.status, t.due_at.format("%Y-%m-%d %H:%M")));
        }
    }
    out.push_str("\nTimeline:\n");
    for entry in &trace.timeline {
        let source = match (&entry.source, &entry.payment) {
            (Some(s), _) => format!("event from `{}` ({})", s.connector, state_text(&s.state)),
            (None, Some(p)) => payment_text(p),
            (None, None) => "hub (timer or decision)".to_owned(),
        };
        out.push_str(&format!("  {} {} — {source}\n", entry.at.format("%Y-%m-%d %H:%M:%S"), entry.cause_event));
        for step in &entry.steps {
            out.push_str(&format!("    {}\n", step_text(step)));
        }
        for c in &entry.commands {
            let op = serde_json::to_value(&c.op).unwrap_or_default();
            out.push_str(&format!("    → {} {} (key {})\n", c.connector, op, c.idempotency_key));
            if let Some(delivery) = entry.deliveries.iter().find(|d| d.command_id == c.id) {
                out.push_str(&delivery_text(delivery));
            }
        }
    }
    out
}

/// «payment № 501 of 05.02.2024, 40000.00 RUB from ООО "Ромашка" (ИНН …) to
/// invoice № 123, statement kl_to_1c.txt (1CClientBankExchange 1.03,
/// 01.02.2024–05.02.2024, imported by upload 2026-12-02 19:00)».
fn payment_text(p: &PaymentSource) -> String {
    let inn = p.payer_inn.as_deref().map(|i| format!(" (ИНН {i})")).unwrap_or_default();
    let invoices = match p.invoices.as_slice() {
        [] => String::new(),
        [one] => format!(" to invoice № {one}"),
        several => format!(" split over invoices № {}", several.join(", ")),
    };
    let day = |d: NaiveDate| d.format("%d.%m.%Y").to_string();
    let period = match (p.statement_from, p.statement_to) {
        (Some(from), Some(to)) if from == to => format!(", {}", day(from)),
        (Some(from), Some(to)) => format!(", {}–{}", day(from), day(to)),
        _ => String::new(),
    };
    format!(
        "bank payment № {} of {}, {} from {}{inn}{invoices}; statement {} ({}{period}, imported by {} {})",
        p.document_number,
        day(p.date),
        p.amount,
        p.payer,
        p.file_name.as_deref().unwrap_or("(no file name)"),
        p.format,
        p.import_source,
        p.imported_at.format("%Y-%m-%d %H:%M")
    )
}

fn delivery_text(delivery: &CommandDelivery) -> String {
    let state = delivery.state.map_or("not dispatched yet", DeliveryState::as_str);
    let mut out = format!("      delivery: {state}\n");
    for a in &delivery.attempts {
        let class = a.class.as_deref().map(|c| format!(" ({c})")).unwrap_or_default();
        let error = a.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        out.push_str(&format!(
            "        attempt {} at {} {}{class} in {} ms{error}\n",
            a.attempt,
            a.at.format("%Y-%m-%d %H:%M:%S"),
            a.outcome,
            a.latency_us / 1000
        ));
    }
    out
}

fn state_text(state: &EventState) -> String {
    match state {
        EventState::Processed { mapping_version } => format!("mapping version {mapping_version}"),
        EventState::Pending => "pending".into(),
        EventState::Ignored { reason } => format!("ignored: {reason}"),
        EventState::Failed { error } => format!("failed: {error}"),
    }
}

fn step_text(step: &TraceStep) -> String {
    let indent = "  ".repeat(step.depth as usize);
    let text = match &step.kind {
        TraceKind::Change { binding, change } => {
            let via = binding.as_ref().map(|b| format!(" [binding {b}]")).unwrap_or_default();
            format!("change{via}: {}", serde_json::to_string(&**change).unwrap_or_default())
        }
        TraceKind::Action { flow, action, detail } if flow.is_empty() => format!("{action}: {detail}"),
        TraceKind::Action { flow, action, detail } => format!("flow `{flow}` → {action}: {detail}"),
        TraceKind::Command { connector, op, .. } => format!("command {op} for `{connector}` queued"),
        TraceKind::Refused { flow, stage, reason } => format!("flow `{flow}` refused «{stage}»: {reason}"),
        TraceKind::Problem { problem } => format!("PROBLEM: {problem}"),
    };
    format!("{indent}{text}")
}

/// `3d 4h`, `2h 5m`, `40s`.
pub fn human_duration(seconds: i64) -> String {
    let (d, h, m) = (seconds / 86_400, seconds % 86_400 / 3600, seconds % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_measure_each_stage_until_the_next_or_now() {
        let t0: DateTime<Utc> = "2025-03-03T09:00:00Z".parse().unwrap();
        let mut deal = Deal::new("engineering", "new", t0, "flow:engineer-calculation");
        deal.move_to("engineering", "in_progress", t0 + chrono::Duration::hours(2), "sidorov");
        let spans = stage_spans(&deal, t0 + chrono::Duration::hours(5));
        assert_eq!((spans[0].seconds, spans[1].seconds), (7200, 10800));
        assert_eq!(spans[1].left_at, None);
        assert_eq!(human_duration(7200), "2h 0m");
        assert_eq!(human_duration(90_000), "1d 1h");
    }

    #[test]
    fn a_payment_cause_names_its_document_and_statement() {
        let day = |d| NaiveDate::from_ymd_opt(2024, 2, d).unwrap();
        let mut payment = PaymentSource {
            payment_id: Uuid::nil(),
            document_number: "622".into(),
            date: day(12),
            amount: "60000.00 RUB".parse().unwrap(),
            payer: "ООО Ромашка".into(),
            payer_inn: Some("7707083893".into()),
            purpose: "Доплата по сч.123".into(),
            invoices: vec!["123".into()],
            statement_id: Uuid::nil(),
            file_name: Some("kl_to_1c_0212.txt".into()),
            format: "1CClientBankExchange 1.03".into(),
            statement_from: Some(day(12)),
            statement_to: Some(day(12)),
            imported_at: "2024-02-12T10:00:00Z".parse().unwrap(),
            import_source: "upload".into(),
        };
        let text = payment_text(&payment);
        for part in ["№ 622 of 12.02.2024", "ООО Ромашка (ИНН 7707083893)", "to invoice № 123", "kl_to_1c_0212.txt"]
        {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(
            text.contains("(1CClientBankExchange 1.03, 12.02.2024, imported by upload 2024-02-12 10:00)"),
            "{text}"
        );
        payment.invoices.push("124".into());
        payment.statement_from = Some(day(1));
        assert!(payment_text(&payment).contains("split over invoices № 123, 124"));
        assert!(payment_text(&payment).contains("01.02.2024–12.02.2024"));
    }
}
