//! Runs the flows' minijinja conditions and templates.
//!
//! The mapping loader already compiled every expression once to report
//! mistakes at their line; `FlowRuntime` keeps them compiled in one
//! environment, keyed by their source, so evaluating a condition is a
//! hash lookup and a render — no parsing per event.
//!
//! What a flow reads is a `Scope`: `deal`, `parent`, `event` and
//! `responsible`, borrowed from the world. When an expression is compiled
//! the runtime notes which of them it reads, and which deal attributes
//! (`deal.title`, `deal.amount`): an evaluation copies only those into
//! minijinja values. An expression that uses a deal any other way (passes
//! it whole to a filter, indexes it, loops over it) gets the whole deal.
//!
//! Money has two faces. In conditions an amount is a number (`deal.amount >
//! 500000` must compare), in templates it is the exact decimal as stored
//! (`40000.00`, never `40000.0`): a float is never shown to a person and
//! never stored.

use std::collections::HashMap;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, Serde, Value};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::native_text::NativeText;
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

/// The three ways an expression is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// `{% if (expr) %}1{% endif %}`
    Condition,
    /// The source is the template.
    Text,
    /// `{{ (expr) | tojson }}`
    Value,
}

/// One compiled expression: its template's name and what it reads.
#[derive(Debug)]
struct Compiled {
    name: String,
    reads: Reads,
    /// The same text template without minijinja, when it only puts deal
    /// attributes into fixed text (see `native_text`).
    native: Option<NativeText>,
    /// What a value expression that is a plain string literal (`'high'`)
    /// always gives, without a render.
    constant: Option<serde_json::Value>,
}

/// The parts of a scope an expression reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Reads {
    deal: DealReads,
    parent: DealReads,
    event: bool,
    responsible: bool,
}

/// What an expression reads of one deal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum DealReads {
    #[default]
    Nothing,
    /// Only these attributes, each as `deal.<attribute>`.
    Attributes(Vec<&'static str>),
    /// The deal as a whole.
    Everything,
}

impl Reads {
    fn everything() -> Self {
        Self { deal: DealReads::Everything, parent: DealReads::Everything, event: true, responsible: true }
    }

    /// From the variables a template reads (minijinja's nested form:
    /// `deal.amount`, `deal`, `event.timer`). Anything unexpected — another
    /// global, another template pulled in — reads everything.
    fn of(template: &minijinja::Template<'_, '_>, source: &str) -> Self {
        if ["include", "import", "extends"].iter().any(|w| source.contains(w)) {
            return Self::everything();
        }
        let mut reads = Self::default();
        for variable in template.undeclared_variables(true) {
            let mut parts = variable.split('.');
            let (root, attribute) = (parts.next().unwrap_or_default(), parts.next());
            match root {
                "deal" => reads.deal.add(attribute),
                "parent" => reads.parent.add(attribute),
                "event" => reads.event = true,
                "responsible" => reads.responsible = true,
                _ => return Self::everything(),
            }
        }
        // minijinja hands the variables over in hash order.
        for deal in [&mut reads.deal, &mut reads.parent] {
            if let DealReads::Attributes(list) = deal {
                list.sort_by_key(|a| DEAL_KEYS.iter().position(|k| k == a));
            }
        }
        reads
    }
}

impl DealReads {
    fn add(&mut self, attribute: Option<&str>) {
        let Some(attribute) = attribute else {
            *self = DealReads::Everything;
            return;
        };
        // An attribute a deal does not have is undefined either way.
        let Some(known) = DEAL_KEYS.iter().find(|k| **k == attribute) else { return };
        match self {
            DealReads::Everything => {}
            DealReads::Nothing => *self = DealReads::Attributes(vec![known]),
            DealReads::Attributes(list) if !list.contains(known) => list.push(known),
            DealReads::Attributes(_) => {}
        }
    }
}

/// The compiled conditions and templates of a plan.
#[derive(Debug)]
pub struct FlowRuntime {
    env: Environment<'static>,
    /// By kind and source.
    compiled: HashMap<Kind, HashMap<String, Compiled, SourceHash>, SourceHash>,
}

/// Hashing for the runtime's keys: the Fx hash instead of SipHash, which
/// every render paid for on the expression's whole source. The keys are
/// the plan's own expressions, not input an attacker chooses, so flooding
/// resistance buys nothing.
type SourceHash = rustc_hash::FxBuildHasher;

impl FlowRuntime {
    /// Compiles every condition and template of the plan. The loader has
    /// validated them, so an error here means a bug, reported as text.
    pub fn compile(plan: &FlowPlan) -> Result<Self, String> {
        let mut runtime = Self::empty();
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

    fn empty() -> Self {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        Self { env, compiled: HashMap::default() }
    }

    fn add_action(&mut self, action: &Action) -> Result<(), String> {
        match action {
            Action::SpawnChild { title: Some(t), .. } => self.add_template(t),
            Action::SetField { value, .. } => self.add_value(value),
            Action::CreateTask { title, description, .. } => {
                self.add_template(title)?;
                description.as_ref().map_or(Ok(()), |d| self.add_template(d))
            }
            Action::Notify { text, .. } | Action::Comment { text, .. } => self.add_template(text),
            Action::RequireApproval { title, .. } => self.add_template(title),
            Action::Guard { condition, message, otherwise } => {
                self.add_condition(condition)?;
                self.add_template(message)?;
                otherwise.iter().try_for_each(|a| self.add_action(a))
            }
            Action::CreateRecord { fields, .. } => fields.iter().try_for_each(|(_, t)| self.add_template(t)),
            _ => Ok(()),
        }
    }

    fn add(&mut self, kind: Kind, prefix: &str, source: String, expr: &Expr) -> Result<(), String> {
        let name = format!("{prefix}:{}", expr.source);
        if self.env.get_template(&name).is_err() {
            self.env.add_template_owned(name.clone(), source.clone()).map_err(|e| format!("{}: {e}", expr.span))?;
        }
        let template = self.env.get_template(&name).map_err(|e| format!("{}: {e}", expr.span))?;
        let reads = Reads::of(&template, &source);
        let native = match minijinja::default_auto_escape_callback(&name) {
            AutoEscape::None if kind == Kind::Text => NativeText::parse(&expr.source),
            _ => None,
        };
        let constant = if kind == Kind::Value { string_literal(&expr.source) } else { None };
        let compiled = Compiled { name, reads, native, constant };
        self.compiled.entry(kind).or_default().insert(expr.source.clone(), compiled);
        Ok(())
    }

    fn add_condition(&mut self, expr: &Expr) -> Result<(), String> {
        self.add(Kind::Condition, "if", format!("{{% if ({}) %}}1{{% endif %}}", expr.source), expr)
    }

    fn add_template(&mut self, expr: &Expr) -> Result<(), String> {
        self.add(Kind::Text, "text", expr.source.clone(), expr)
    }

    fn add_value(&mut self, expr: &Expr) -> Result<(), String> {
        self.add(Kind::Value, "value", format!("{{{{ ({}) | tojson }}}}", expr.source), expr)
    }

    /// Whether a condition holds in `scope`.
    pub fn holds(&self, expr: &Expr, scope: &Scope<'_>) -> Result<bool, String> {
        Ok(self.render(Kind::Condition, expr, scope, Numbers::Compare)? == "1")
    }

    /// Renders a text template.
    pub fn text(&self, expr: &Expr, scope: &Scope<'_>) -> Result<String, String> {
        self.render(Kind::Text, expr, scope, Numbers::Exact)
    }

    /// Evaluates an expression to a value to store (amounts exact).
    pub fn value(&self, expr: &Expr, scope: &Scope<'_>) -> Result<serde_json::Value, String> {
        if let Some(constant) = self.compiled(Kind::Value, expr)?.constant.as_ref() {
            return Ok(constant.clone());
        }
        let json = self.render(Kind::Value, expr, scope, Numbers::Exact)?;
        serde_json::from_str(&json).map_err(|e| format!("`{}` did not give a value: {e}", expr.source))
    }

    fn compiled(&self, kind: Kind, expr: &Expr) -> Result<&Compiled, String> {
        let not_compiled = || format!("{}: not compiled: `{}`", expr.span, expr.source);
        self.compiled.get(&kind).and_then(|c| c.get(&expr.source)).ok_or_else(not_compiled)
    }

    fn render(&self, kind: Kind, expr: &Expr, scope: &Scope<'_>, numbers: Numbers) -> Result<String, String> {
        let compiled = self.compiled(kind, expr)?;
        // Without a deal, `deal.x` is an error minijinja words.
        if let (Some(native), Some(deal)) = (&compiled.native, &scope.deal) {
            return Ok(native.render(deal));
        }
        let template =
            self.env.get_template(&compiled.name).map_err(|e| format!("{}: not compiled: {e}", expr.span))?;
        template
            .render(scope.value(&compiled.reads, numbers))
            .map_err(|e| format!("`{}`: {}", expr.source, describe(&e)))
    }
}

/// The text of an expression that is one string literal in single or
/// double quotes with no escapes (`'high'`), as JSON: what rendering it
/// through `tojson` and parsing the result back gives. Anything else
/// (escapes, a quote inside, spaces around, an operator) is `None` and
/// left to minijinja.
fn string_literal(source: &str) -> Option<serde_json::Value> {
    let quote = source.chars().next().filter(|q| matches!(q, '\'' | '"'))?;
    let inner = source.strip_prefix(quote)?.strip_suffix(quote)?;
    let plain = !inner.contains(|c: char| c == quote || c == '\\' || c.is_control());
    plain.then(|| serde_json::Value::String(inner.to_owned()))
}

fn describe(error: &minijinja::Error) -> String {
    error.detail().map(str::to_owned).unwrap_or_else(|| error.kind().to_string())
}

/// What one flow evaluation can read, borrowed from the world.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub deal: Option<DealScope<'a>>,
    pub parent: Option<DealScope<'a>>,
    pub event: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// Money fields of the event (kept apart for their two faces).
    pub event_money: &'a [(String, Money)],
    pub responsible: Option<&'a Person>,
}

/// A deal and the totals of its invoices.
#[derive(Debug, Clone, Copy)]
pub struct DealScope<'a> {
    pub deal: &'a Deal,
    pub totals: DealTotals,
}

impl Scope<'_> {
    /// The minijinja context for an expression that reads `reads`; what it
    /// does not read is left undefined, as a missing parent is.
    fn value(&self, reads: &Reads, numbers: Numbers) -> Value {
        let deal_value = |d: &Option<DealScope<'_>>, reads: &DealReads| match (d, reads) {
            (None, _) | (_, DealReads::Nothing) => Value::UNDEFINED,
            (Some(d), DealReads::Attributes(keys)) => Value::from_object(DealAttributes {
                values: keys.iter().map(|k| (*k, attribute(d, k, numbers).unwrap_or_default())).collect(),
            }),
            (Some(d), DealReads::Everything) => {
                Value::from_object(DealObject { deal: Arc::new(d.deal.clone()), totals: d.totals, numbers })
            }
        };
        let event = if reads.event { self.event_value(numbers) } else { Value::UNDEFINED };
        let responsible = match self.responsible {
            Some(person) if reads.responsible => person_value(person),
            _ => Value::UNDEFINED,
        };
        minijinja::context! {
            deal => deal_value(&self.deal, &reads.deal),
            parent => deal_value(&self.parent, &reads.parent),
            event => event,
            responsible => responsible,
        }
    }

    fn event_value(&self, numbers: Numbers) -> Value {
        let mut event: std::collections::BTreeMap<String, Value> =
            self.event.into_iter().flatten().map(|(k, v)| (k.clone(), Value::from(Serde(v)))).collect();
        for (name, money) in self.event_money {
            event.insert(name.clone(), decimal(money.amount, numbers));
            event.insert("currency".to_owned(), Value::from(money.currency.as_str()));
        }
        Value::from(event)
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
        Numbers::Exact => Value::from(crate::model::decimal_text(amount)),
        Numbers::Compare if amount.fract().is_zero() => {
            amount.to_i64().map(Value::from).unwrap_or_else(|| Value::from(amount.to_f64().unwrap_or(f64::NAN)))
        }
        Numbers::Compare => Value::from(amount.to_f64().unwrap_or(f64::NAN)),
    }
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

/// One attribute of a deal as templates see it; `None` for an unknown one.
pub(crate) fn attribute(scope: &DealScope<'_>, key: &str, numbers: Numbers) -> Option<Value> {
    let (deal, totals) = (scope.deal, &scope.totals);
    Some(match key {
        "id" => Value::from(deal.id.to_string()),
        "pipeline" => Value::from(deal.pipeline.as_str()),
        "stage" => Value::from(deal.stage.as_str()),
        "title" => Value::from(deal.title.as_str()),
        "amount" => deal.amount.as_ref().map_or(Value::from(()), |m| decimal(m.amount, numbers)),
        "currency" => deal.amount.as_ref().map_or(Value::from(()), |m| Value::from(m.currency.as_str())),
        "client" => deal.client.as_ref().map_or(Value::from(()), |c| Value::from(Serde(c))),
        "responsible" => deal.responsible.as_deref().map_or(Value::from(()), Value::from),
        "custom" => Value::from(Serde(&deal.custom_fields)),
        "parent_id" => deal.parent_id.map_or(Value::from(()), |p| Value::from(p.to_string())),
        "stage_history" => Value::from(Serde(&deal.stage_history)),
        "external_refs" => Value::from(Serde(&deal.external_refs)),
        "created_at" => Value::from(deal.created_at.to_rfc3339()),
        "updated_at" => Value::from(deal.updated_at.to_rfc3339()),
        "invoiced" => decimal(totals.invoiced, numbers),
        "paid" => decimal(totals.paid, numbers),
        "shipped" => decimal(totals.shipped, numbers),
        _ => return None,
    })
}

/// A whole deal as templates see it: its fields read on demand.
#[derive(Debug)]
struct DealObject {
    deal: Arc<Deal>,
    totals: DealTotals,
    numbers: Numbers,
}

impl Object for DealObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        attribute(&DealScope { deal: &self.deal, totals: self.totals }, key.as_str()?, self.numbers)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&DEAL_KEYS)
    }
}

/// The attributes of a deal an expression reads, copied out of it.
#[derive(Debug)]
struct DealAttributes {
    values: Vec<(&'static str, Value)>,
}

impl Object for DealAttributes {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        self.values.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
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
        let mut runtime = FlowRuntime::empty();
        for (e, kind) in exprs {
            match *kind {
                "if" => runtime.add_condition(e).unwrap(),
                "text" => runtime.add_template(e).unwrap(),
                _ => runtime.add_value(e).unwrap(),
            }
        }
        runtime
    }

    fn deal(amount: &str) -> Deal {
        let mut deal = Deal::new("sales", "proposal", Utc::now(), "test");
        deal.title = "Котёл".into();
        deal.amount = Some(amount.parse().unwrap());
        deal
    }

    fn scope(deal: &Deal) -> Scope<'_> {
        Scope { deal: Some(DealScope { deal, totals: DealTotals::default() }), ..Scope::default() }
    }

    #[test]
    fn amounts_compare_as_numbers_and_render_exactly() {
        let cond = expr("deal.amount > 500000");
        let text = expr("{{ deal.title }}: {{ deal.amount }} {{ deal.currency }}");
        let rt = runtime(&[(&cond, "if"), (&text, "text")]);
        assert!(rt.holds(&cond, &scope(&deal("500000.01 RUB"))).unwrap());
        assert!(!rt.holds(&cond, &scope(&deal("500000.00 RUB"))).unwrap());
        assert_eq!(rt.text(&text, &scope(&deal("40000.00 RUB"))).unwrap(), "Котёл: 40000.00 RUB");
    }

    #[test]
    fn reads_are_the_attributes_used_or_the_whole_deal() {
        let attributes = expr("{{ deal.title }} {{ deal.custom.cost }} {{ parent.stage }} {{ deal.nonsense }}");
        let whole = expr("{{ deal | tojson }}");
        let global = expr("{% for i in range(2) %}{{ deal.title }}{% endfor %}");
        let rt = runtime(&[(&attributes, "text"), (&whole, "text"), (&global, "text")]);
        let reads = |e: &Expr| rt.compiled[&Kind::Text][&e.source].reads.clone();
        let expected = Reads {
            deal: DealReads::Attributes(vec!["title", "custom"]),
            parent: DealReads::Attributes(vec!["stage"]),
            ..Reads::default()
        };
        assert_eq!(reads(&attributes), expected);
        assert_eq!(reads(&whole).deal, DealReads::Everything);
        assert_eq!(reads(&global), Reads::everything(), "an unknown global may read anything");
    }

    #[test]
    fn only_read_attributes_and_the_whole_deal_render_alike() {
        let mut d = deal("1250.50 RUB");
        d.custom_fields.insert("cost".into(), serde_json::json!("10.00"));
        let pick = expr("{{ deal.title }}|{{ deal.amount }}|{{ deal.custom.cost }}|{{ deal.nonsense }}");
        let whole = expr("{% set d = deal %}{{ d.title }}|{{ d.amount }}|{{ d.custom.cost }}|{{ d.nonsense }}");
        let rt = runtime(&[(&pick, "text"), (&whole, "text")]);
        assert_eq!(rt.text(&pick, &scope(&d)).unwrap(), "Котёл|1250.50|10.00|");
        assert_eq!(rt.text(&whole, &scope(&d)).unwrap(), rt.text(&pick, &scope(&d)).unwrap());
    }

    #[test]
    fn string_literal_values_are_what_minijinja_gives() {
        let literals = ["'high'", "\"high\"", "'Котёл <b>&amp;</b> \"x\"'", "''", "' spaced '", "'{{ x }}'"];
        for literal in literals {
            let e = expr(literal);
            let rt = runtime(&[(&e, "value")]);
            let constant = rt.compiled[&Kind::Value][literal].constant.clone();
            assert!(constant.is_some(), "{literal} is a constant");
            let json = rt.render(Kind::Value, &e, &Scope::default(), Numbers::Exact).unwrap();
            let rendered: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(constant, Some(rendered.clone()), "{literal}");
            assert_eq!(rt.value(&e, &Scope::default()).unwrap(), rendered, "{literal}");
        }
        for other in ["'a' ~ 'b'", "'a\\'b'", "'a\\nb'", " 'x'", "'x' ", "deal.title", "'x' | upper", "1"] {
            assert_eq!(string_literal(other), None, "{other}");
        }
    }

    #[test]
    fn native_texts_render_as_minijinja_does() {
        let texts = [
            "Сделка «{{ deal.title }}» ушла из новых в {{ deal.stage }}: {{ deal.amount }} {{ deal.currency }}",
            "{{deal.id}}|{{ deal.pipeline }}|{{ deal.responsible }}|{{ deal.parent_id }}|{{ deal.created_at }}",
            "{{ deal.updated_at }} {{ deal.invoiced }} {{ deal.paid }} {{ deal.shipped }} <b>&amp;</b> 'x' \"y\"",
        ];
        let exprs: Vec<Expr> = texts.iter().map(|t| expr(t)).collect();
        let rt = runtime(&exprs.iter().map(|e| (e, "text")).collect::<Vec<_>>());
        let mut bare = Deal::new("sales", "new", Utc::now(), "test");
        bare.title = "Без суммы".into();
        let mut full = deal("1250.50 RUB");
        full.responsible = Some("ivanov".into());
        full.parent_id = Some(uuid::Uuid::now_v7());
        let totals =
            DealTotals { invoiced: "100.5".parse().unwrap(), paid: "0".parse().unwrap(), ..Default::default() };
        for e in &exprs {
            let compiled = &rt.compiled[&Kind::Text][&e.source];
            assert!(compiled.native.is_some(), "{}", e.source);
            let template = rt.env.get_template(&compiled.name).unwrap();
            for d in [&bare, &full] {
                let scope = Scope { deal: Some(DealScope { deal: d, totals }), ..Scope::default() };
                let by_minijinja = template.render(scope.value(&compiled.reads, Numbers::Exact)).unwrap();
                assert_eq!(rt.text(e, &scope).unwrap(), by_minijinja, "{}", e.source);
            }
            assert!(rt.text(e, &Scope::default()).is_err(), "no deal: minijinja's error, {}", e.source);
        }
        let escaped = expr("{{ deal.title }}.html");
        let rt = runtime(&[(&escaped, "text")]);
        assert!(rt.compiled[&Kind::Text][&escaped.source].native.is_none(), "auto-escaped names stay with minijinja");
    }

    #[test]
    fn values_keep_their_type() {
        let id = expr("deal.title ~ '!'");
        let rt = runtime(&[(&id, "value")]);
        assert_eq!(rt.value(&id, &scope(&deal("1 RUB"))).unwrap(), serde_json::json!("Котёл!"));
    }

    #[test]
    fn event_amounts_compare() {
        let cond = expr("event.paid_total < event.invoice_total");
        let text = expr("{{ event.paid_total }} из {{ event.invoice_total }} {{ event.currency }}");
        let rt = runtime(&[(&cond, "if"), (&text, "text")]);
        let money = vec![
            ("paid_total".into(), "40000.00 RUB".parse().unwrap()),
            ("invoice_total".into(), "100000.00 RUB".parse().unwrap()),
        ];
        let scope = Scope { event_money: &money, ..Scope::default() };
        assert!(rt.holds(&cond, &scope).unwrap());
        assert_eq!(rt.text(&text, &scope).unwrap(), "40000.00 из 100000.00 RUB");
    }

    #[test]
    fn a_missing_parent_is_undefined_not_an_error() {
        let cond = expr("parent and parent.stage == 'x'");
        let rt = runtime(&[(&cond, "if")]);
        assert!(!rt.holds(&cond, &scope(&deal("1 RUB"))).unwrap());
    }
}
