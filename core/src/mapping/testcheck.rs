//! The `expect` half of a mapping test case: compares a finished run with
//! what the case says must hold, and words each mismatch so an admin sees
//! what differs without reading the engine's output.

use serde_json::Value;

use super::testcase::Expect;
use super::testrun::{FinishedRun, parse_money};
use crate::flow::deal_fields;
use crate::model::{TaskKind, TimerStatus};

pub(crate) fn deals(run: &dyn FinishedRun, expect: &Expect, failures: &mut Vec<String>) {
    for expected in &expect.deals {
        let key = expected.key.as_str();
        let Some(deal) = run.deal_id(key).and_then(|id| run.world().deals.get(&id)) else {
            failures.push(format!("deal `{key}` does not exist"));
            continue;
        };
        let mut differs = |what: &str, want: &dyn std::fmt::Debug, got: &dyn std::fmt::Debug| {
            failures.push(format!("deal `{key}`: {what} is {got:?}, expected {want:?}"));
        };
        if let Some(pipeline) = expected.pipeline.as_ref().filter(|p| p.value != deal.pipeline) {
            differs("pipeline", &pipeline.value, &deal.pipeline);
        }
        if let Some(stage) = expected.stage.as_ref().filter(|s| s.value != deal.stage) {
            differs("stage", &stage.value, &deal.stage);
        }
        if let Some(title) = expected.title.as_ref().filter(|t| **t != deal.title) {
            differs("title", title, &deal.title);
        }
        if let Some(responsible) = expected.responsible.as_ref().filter(|r| Some(&r.value) != deal.responsible.as_ref())
        {
            differs("responsible", &responsible.value, &deal.responsible);
        }
        if let Some(amount) = &expected.amount {
            match parse_money(amount) {
                Ok(want) if Some(&want) == deal.amount.as_ref() => {}
                Ok(want) => differs("amount", &want.to_string(), &deal.amount.as_ref().map(ToString::to_string)),
                Err(e) => failures.push(format!("deal `{key}`: {e}")),
            }
        }
        for (name, want) in &expected.custom {
            let got = deal_fields::read(deal, &format!("custom.{name}"));
            if !same_value(want, &got) {
                failures.push(format!("deal `{key}`: custom.{name} is {got}, expected {want}"));
            }
        }
        if let Some(history) = &expected.stage_history {
            let got: Vec<&str> = deal.stage_history.iter().map(|e| e.stage.as_str()).collect();
            if got != history.iter().map(String::as_str).collect::<Vec<_>>() {
                failures.push(format!("deal `{key}`: stage history is {got:?}, expected {history:?}"));
            }
        }
    }
}

/// Values compare as JSON, except that a decimal written as a string and
/// the same decimal as a number are equal (`18500.00` vs `"18500.00"`).
fn same_value(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            match (n.to_string().parse::<rust_decimal::Decimal>(), s.parse::<rust_decimal::Decimal>()) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            }
        }
        _ => want == got,
    }
}

pub(crate) fn tasks_and_notifications(run: &dyn FinishedRun, expect: &Expect, failures: &mut Vec<String>) {
    for expected in &expect.tasks {
        let deal = run.deal_id(&expected.deal);
        let kind = expected.kind.unwrap_or(TaskKind::Todo);
        let found = run.world().tasks.values().any(|t| {
            t.deal_id == deal
                && t.assignee == expected.assignee.value
                && t.kind == kind
                && t.title.contains(&expected.title_contains)
        });
        if !found {
            let have: Vec<String> = run
                .world()
                .tasks
                .values()
                .filter(|t| t.deal_id == deal)
                .map(|t| format!("{:?} for {}: {}", t.kind, t.assignee, t.title))
                .collect();
            failures.push(format!(
                "no {kind:?} task for `{}` on `{}` containing «{}»; the deal has: {have:?}",
                expected.assignee.value, expected.deal.value, expected.title_contains
            ));
        }
    }
    for expected in &expect.notifications {
        let found =
            run.notifications().iter().any(|n| n.to == expected.to.value && n.text.contains(&expected.text_contains));
        if !found {
            let sent: Vec<String> = run.notifications().iter().map(|n| format!("{}: {}", n.to, n.text)).collect();
            failures.push(format!(
                "no notification to `{}` containing «{}»; sent: {sent:?}",
                expected.to.value, expected.text_contains
            ));
        }
    }
}

pub(crate) fn timers(run: &dyn FinishedRun, expect: &Expect, failures: &mut Vec<String>) {
    let pending = |deal: &str, name: &str| {
        let deal = run.deal_id(deal);
        run.world()
            .timers
            .values()
            .any(|t| Some(t.deal_id) == deal && t.name == name && t.status == TimerStatus::Pending)
    };
    for timer in &expect.timers {
        if !pending(&timer.deal, &timer.timer) {
            failures.push(format!("timer `{}` of `{}` is not pending", timer.timer, timer.deal.value));
        }
    }
    for timer in &expect.no_timers {
        if pending(&timer.deal, &timer.timer) {
            failures.push(format!("timer `{}` of `{}` is still pending", timer.timer, timer.deal.value));
        }
    }
}

/// Expected commands must appear in order (others may come between them,
/// unless `exact_commands`); each is a JSON subset of the real command with
/// deal ids shown as the case's keys.
pub(crate) fn commands(run: &dyn FinishedRun, expect: &Expect, failures: &mut Vec<String>) {
    let actual: Vec<Value> = run.commands().iter().map(|c| with_keys(run, c)).collect();
    let mut position = 0;
    for (index, want) in expect.commands.iter().enumerate() {
        match actual[position..].iter().position(|got| is_subset(want, got)) {
            Some(found) => position += found + 1,
            None => {
                failures.push(format!(
                    "command #{} {want} was not produced (in order); commands: {}",
                    index + 1,
                    Value::from(actual.clone())
                ));
                return;
            }
        }
    }
    if expect.exact_commands && actual.len() != expect.commands.len() {
        failures.push(format!(
            "{} commands produced, {} expected: {}",
            actual.len(),
            expect.commands.len(),
            Value::from(actual)
        ));
    }
}

fn with_keys(run: &dyn FinishedRun, command: &crate::flow::Command) -> Value {
    let mut json = serde_json::to_value(command).unwrap_or_default();
    if let Some(deal) = command.deal
        && let Some(key) = run.deal_key(deal)
    {
        json["deal"] = Value::from(key);
    }
    json
}

fn is_subset(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w.iter().all(|(k, v)| g.get(k).is_some_and(|gv| is_subset(v, gv))),
        _ => same_value(want, got),
    }
}

pub(crate) fn errors(errors: &[String], expected: &[String], failures: &mut Vec<String>) {
    if expected.is_empty() {
        failures.extend(errors.iter().map(|e| format!("unexpected error: {e}")));
        return;
    }
    for text in expected {
        if !errors.iter().any(|e| e.contains(text)) {
            failures.push(format!("no error containing «{text}»; errors: {errors:?}"));
        }
    }
}
