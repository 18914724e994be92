//! Runs the flows' minijinja conditions and templates.
//!
//! The mapping loader already compiled every expression once to report
//! mistakes at their line; `FlowRuntime` keeps them compiled in one
//! environment, keyed by their source, so evaluating a condition is a
//! hash lookup and a render — no parsing per event.
//!
//! What a flow reads is a `Scope`: `deal`, `parent`, `event` and
//! `responsible`. Deals are exposed as lazy objects, so an event that
//! evaluates one condition does not pay for copying every field.
//!
//! Money has two faces. In conditions an amount is a number (`deal.amount >
//! 500000` must compare), in templates it is the exact decimal as stored
//! (`40000.00`, never `40000.0`): a float is never shown to a person and
//! never stored.

use std::sync::Arc;

use minijinja::value::{Enumerator, Object, Serde, Value};
use minijinja::{Environment, UndefinedBehavior};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::plan::{Action, Expr, FlowPlan, Person};
use super::world::DealTotals;
use crate::model::{Deal, Money};

/// Evaluation budget per expression: bounds loops in admins' templates.
const FUEL: u64 = 50_000;

/// How amounts appear in a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbers {
    /// Numbers, for comparisons in conditions.
    Compare,
    /// Exact decimal text, for templates shown to people and stored values.
    Exact,
}

/// The compiled conditions and templates of a plan.
#[derive(Debug)]
pub struct FlowRuntime {
    env: Environment<'static>,
}

impl FlowRuntime {
    /// Compiles every condition and template of the plan. The loader has
    /// validated them, so an error here means a bug, reported as text.
    pub fn compile(plan: &FlowPlan) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        let mut runtime = Self { env };
        for flow in &plan.flows {
            if let Some(condition) = &flow.condition {
                runtime.add_condition(condition)?;
            }
            for action in &flow.actions {
                runtime.add_action(action)?;
            }
        }
        Ok(runtime)
    }

    fn add_action(&mut self, action: &Action) -> Result<(), String> {
        match action {
            Action::SpawnChild { title: Some(t), .. } => self.add_template(t),
            Action::SetField { value, .. } => self.add_value(value),
            Action::CreateTask { title, description, .. } => {
                self.add_template(title)?;
                description.as_ref().map_or(Ok(()), |d| self.add_template(d))
            }
            Action::Notify { text, .. } => self.add_template(text),
            Action::RequireApproval { title, .. } => self.add_template(title),
            Action::Guard { condition, message, otherwise } => {
                self.add_condition(condition)?;
                self.add_template(message)?;
                otherwise.iter().try_for_each(|a| self.add_action(a))
            }
            _ => Ok(()),
        }
    }

    fn add(&mut self, name: String, source: String, expr: &Expr) -> Result<(), String> {
        if self.env.get_template(&name).is_ok() {
            return Ok(());
        }
        self.env.add_template_owned(name, source).map_err(|e| format!("{}: {e}", expr.span))
    }

    fn add_condition(&mut self, expr: &Expr) -> Result<(), String> {
        self.add(condition_name(expr), format!("{{% if ({}) %}}1{{% endif %}}", expr.source), expr)
    }

    fn add_template(&mut self, expr: &Expr) -> Result<(), String> {
        self.add(template_name(expr), expr.source.clone(), expr)
    }

    fn add_value(&mut self, expr: &Expr) -> Result<(), String> {
        self.add(value_name(expr), format!("{{{{ ({}) | tojson }}}}", expr.source), expr)
    }

    /// Whether a condition holds in `scope`.
    pub fn holds(&self, expr: &Expr, scope: &Scope) -> Result<bool, String> {
        Ok(self.render_named(&condition_name(expr), expr, scope.value(Numbers::Compare))? == "1")
    }

    /// Renders a text template.
    pub fn text(&self, expr: &Expr, scope: &Scope) -> Result<String, String> {
        self.render_named(&template_name(expr), expr, scope.value(Numbers::Exact))
    }

    /// Evaluates an expression to a value to store (amounts exact).
    pub fn value(&self, expr: &Expr, scope: &Scope) -> Result<serde_json::Value, String> {
        let json = self.render_named(&value_name(expr), expr, scope.value(Numbers::Exact))?;
        serde_json::from_str(&json).map_err(|e| format!("`{}` did not give a value: {e}", expr.source))
    }

    fn render_named(&self, name: &str, expr: &Expr, ctx: Value) -> Result<String, String> {
        let template = self.env.get_template(name).map_err(|e| format!("{}: not compiled: {e}", expr.span))?;
        template.render(ctx).map_err(|e| format!("`{}`: {}", expr.source, describe(&e)))
    }
}

fn condition_name(expr: &Expr) -> String {
    format!("if:{}", expr.source)
}

fn template_name(expr: &Expr) -> String {
    format!("text:{}", expr.source)
}

fn value_name(expr: &Expr) -> String {
    format!("value:{}", expr.source)
}

fn describe(error: &minijinja::Error) -> String {
    error.detail().map(str::to_owned).unwrap_or_else(|| error.kind().to_string())
}

/// What one flow evaluation can read.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub deal: Option<DealScope>,
    pub parent: Option<DealScope>,
    pub event: serde_json::Map<String, serde_json::Value>,
    /// Money fields of the event (kept apart for their two faces).
    pub event_money: Vec<(String, Money)>,
    pub responsible: Option<Person>,
}

/// A deal and the totals of its invoices.
#[derive(Debug, Clone)]
pub struct DealScope {
    pub deal: Arc<Deal>,
    pub totals: DealTotals,
}

impl Scope {
    fn value(&self, numbers: Numbers) -> Value {
        let deal_value = |d: &Option<DealScope>| match d {
            Some(d) => Value::from_object(DealObject { scope: d.clone(), numbers }),
            None => Value::UNDEFINED,
        };
        let mut event: std::collections::BTreeMap<String, Value> =
            self.event.iter().map(|(k, v)| (k.clone(), Value::from(Serde(v)))).collect();
        for (name, money) in &self.event_money {
            event.insert(name.clone(), decimal(money.amount, numbers));
            event.insert("currency".to_owned(), Value::from(money.currency.as_str()));
        }
        let responsible = self.responsible.as_ref().map_or(Value::UNDEFINED, person_value);
        minijinja::context! {
            deal => deal_value(&self.deal),
            parent => deal_value(&self.parent),
            event => Value::from(event),
            responsible => responsible,
        }
    }
}

fn person_value(person: &Person) -> Value {
    minijinja::context! {
        id => person.id.as_str(),
        name => person.name.as_str(),
        flags => person.flags.clone(),
        supervisor => person.supervisor.clone(),
    }
}

/// An amount in the requested face.
pub fn decimal(amount: Decimal, numbers: Numbers) -> Value {
    match numbers {
        Numbers::Exact => Value::from(amount.to_string()),
        Numbers::Compare if amount.fract().is_zero() => {
            amount.to_i64().map(Value::from).unwrap_or_else(|| Value::from(amount.to_f64().unwrap_or(f64::NAN)))
        }
        Numbers::Compare => Value::from(amount.to_f64().unwrap_or(f64::NAN)),
    }
}

/// A deal as templates see it: its fields read on demand.
#[derive(Debug)]
struct DealObject {
    scope: DealScope,
    numbers: Numbers,
}

/// The attributes a deal object serves (the mapping loader checks flow
/// expressions against this list).
pub(crate) const DEAL_KEYS: [&str; 17] = [
    "id",
    "pipeline",
    "stage",
    "title",
    "amount",
    "currency",
    "client",
    "responsible",
    "custom",
    "parent_id",
    "stage_history",
    "external_refs",
    "created_at",
    "updated_at",
    "invoiced",
    "paid",
    "shipped",
];

impl Object for DealObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let deal = &self.scope.deal;
        let totals = &self.scope.totals;
        Some(match key.as_str()? {
            "id" => Value::from(deal.id.to_string()),
            "pipeline" => Value::from(deal.pipeline.as_str()),
            "stage" => Value::from(deal.stage.as_str()),
            "title" => Value::from(deal.title.as_str()),
            "amount" => deal.amount.as_ref().map_or(Value::from(()), |m| decimal(m.amount, self.numbers)),
            "currency" => deal.amount.as_ref().map_or(Value::from(()), |m| Value::from(m.currency.as_str())),
            "client" => deal.client.as_ref().map_or(Value::from(()), |c| Value::from(Serde(c))),
            "responsible" => deal.responsible.as_deref().map_or(Value::from(()), Value::from),
            "custom" => Value::from(Serde(&deal.custom_fields)),
            "parent_id" => deal.parent_id.map_or(Value::from(()), |p| Value::from(p.to_string())),
            "stage_history" => Value::from(Serde(&deal.stage_history)),
            "external_refs" => Value::from(Serde(&deal.external_refs)),
            "created_at" => Value::from(deal.created_at.to_rfc3339()),
            "updated_at" => Value::from(deal.updated_at.to_rfc3339()),
            "invoiced" => decimal(totals.invoiced, self.numbers),
            "paid" => decimal(totals.paid, self.numbers),
            "shipped" => decimal(totals.shipped, self.numbers),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&DEAL_KEYS)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::flow::plan::SourceSpan;

    fn expr(source: &str) -> Expr {
        Expr { source: source.into(), span: SourceSpan::default() }
    }

    fn runtime(exprs: &[(&Expr, &str)]) -> FlowRuntime {
        let mut runtime = FlowRuntime { env: Environment::new() };
        for (e, kind) in exprs {
            match *kind {
                "if" => runtime.add_condition(e).unwrap(),
                "text" => runtime.add_template(e).unwrap(),
                _ => runtime.add_value(e).unwrap(),
            }
        }
        runtime
    }

    fn scope(amount: &str) -> Scope {
        let mut deal = Deal::new("sales", "proposal", Utc::now(), "test");
        deal.title = "Котёл".into();
        deal.amount = Some(amount.parse().unwrap());
        Scope { deal: Some(DealScope { deal: Arc::new(deal), totals: DealTotals::default() }), ..Scope::default() }
    }

    #[test]
    fn amounts_compare_as_numbers_and_render_exactly() {
        let cond = expr("deal.amount > 500000");
        let text = expr("{{ deal.title }}: {{ deal.amount }} {{ deal.currency }}");
        let rt = runtime(&[(&cond, "if"), (&text, "text")]);
        assert!(rt.holds(&cond, &scope("500000.01 RUB")).unwrap());
        assert!(!rt.holds(&cond, &scope("500000.00 RUB")).unwrap());
        assert_eq!(rt.text(&text, &scope("40000.00 RUB")).unwrap(), "Котёл: 40000.00 RUB");
    }

    #[test]
    fn values_keep_their_type() {
        let id = expr("deal.title ~ '!'");
        let rt = runtime(&[(&id, "value")]);
        assert_eq!(rt.value(&id, &scope("1 RUB")).unwrap(), serde_json::json!("Котёл!"));
    }

    #[test]
    fn event_amounts_compare() {
        let cond = expr("event.paid_total < event.invoice_total");
        let text = expr("{{ event.paid_total }} из {{ event.invoice_total }} {{ event.currency }}");
        let rt = runtime(&[(&cond, "if"), (&text, "text")]);
        let scope = Scope {
            event_money: vec![
                ("paid_total".into(), "40000.00 RUB".parse().unwrap()),
                ("invoice_total".into(), "100000.00 RUB".parse().unwrap()),
            ],
            ..Scope::default()
        };
        assert!(rt.holds(&cond, &scope).unwrap());
        assert_eq!(rt.text(&text, &scope).unwrap(), "40000.00 из 100000.00 RUB");
    }

    #[test]
    fn a_missing_parent_is_undefined_not_an_error() {
        let cond = expr("parent and parent.stage == 'x'");
        let rt = runtime(&[(&cond, "if")]);
        assert!(!rt.holds(&cond, &scope("1 RUB")).unwrap());
    }
}
