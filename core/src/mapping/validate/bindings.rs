//! Checks bindings (paths, conversions, target fields, stage maps, filters)
//! and compiles them for record mapping.

use std::collections::{BTreeMap, BTreeSet};

use crate::flow::plan::SourceSpan;
use crate::mapping::convert;
use crate::mapping::diagnostic::Diagnostics;
use crate::mapping::exprs::{self, Scope};
use crate::mapping::fields::BindingTarget;
use crate::mapping::merge::{Defined, MergedSpec};
use crate::mapping::record::{CompiledBinding, CompiledField, ValueSource};
use crate::mapping::source_path::SourcePath;
use crate::mapping::spec::{BindingSpec, Conversion, FieldSpec, ParentSpec, TargetKind};
use crate::mapping::yaml::Located;

/// Custom field names some deal binding fills.
pub(crate) fn custom_fields_filled(spec: &MergedSpec) -> BTreeSet<String> {
    spec.bindings
        .values()
        .filter(|b| !b.spec.target.is_document())
        .flat_map(|b| b.spec.fields.keys())
        .filter_map(|name| name.strip_prefix("custom.").map(str::to_owned))
        .collect()
}

pub(crate) fn bindings(
    spec: &MergedSpec,
    lookups: &BTreeMap<String, BTreeMap<String, String>>,
    diags: &mut Diagnostics,
) -> Vec<CompiledBinding> {
    paid_counted_once(spec, diags);
    spec.bindings.values().map(|def| binding(def, spec, lookups, diags)).collect()
}

/// A connector whose payments are read one by one (`target: payment`)
/// must not also report its documents' paid totals: the totals include
/// those payments, so each would count twice.
fn paid_counted_once(spec: &MergedSpec, diags: &mut Diagnostics) {
    let payments = |connector: &str| {
        spec.bindings.values().find(|b| b.spec.target == TargetKind::Payment && b.spec.connector.value == connector)
    };
    for def in spec.bindings.values() {
        let Some((paid, _)) = def.spec.fields.iter().find(|(name, _)| name.as_str() == "paid") else { continue };
        let connector = &def.spec.connector.value;
        let Some(payments) = payments(connector) else { continue };
        let message = format!(
            "`paid` would count payments twice: binding `{}` reads the payments of connector `{connector}` \
             one by one (`target: payment`); map one or the other",
            payments.spec.name.value
        );
        diags.error(&def.at(paid), message);
    }
}

fn binding(
    def: &Defined<BindingSpec>,
    spec: &MergedSpec,
    lookups: &BTreeMap<String, BTreeMap<String, String>>,
    diags: &mut Diagnostics,
) -> CompiledBinding {
    let b = &def.spec;
    for (what, value) in [("connector", &b.connector), ("system", &b.system), ("record", &b.record)] {
        if value.trim().is_empty() {
            diags.error(&def.at(value), format!("`{what}` must not be empty"));
        }
    }
    check_target(def, diags);
    let filter = b.filter.as_ref().map(|f| {
        exprs::expression(&f.value, def.at(f), &Scope::Record, diags);
        f.value.clone()
    });
    let id = path(def, &b.id, false, diags);
    let reference = |p: &ParentSpec, list_allowed: bool, diags: &mut Diagnostics| {
        check_conversions(def, &p.convert, lookups, diags);
        let convert = p.convert.iter().map(|c| c.value.clone()).collect();
        ValueSource { from: Some(path(def, &p.from, list_allowed, diags)), convert, default: None, typed_default: None }
    };
    let parent = b.parent.as_ref().map(|p| reference(p, false, diags));
    let deal = b.deal.as_ref().map(|p| reference(p, false, diags));
    let covers = b.covers.as_ref().map(|p| reference(p, false, diags));
    // A payment split over several documents names them in a list.
    let pays = b.pays.as_ref().map(|p| reference(p, true, diags));
    let stage = b.stage.as_ref().map(|s| {
        if !spec.stage_maps.contains_key(s.map.as_str()) {
            diags.error(&def.at(&s.map), format!("unknown stage map `{}`", s.map.value));
        }
        (path(def, &s.from, false, diags), s.map.value.clone())
    });
    let fields = b.fields.iter().filter_map(|(name, field)| compile_field(def, name, field, lookups, diags)).collect();
    let mut binding = CompiledBinding {
        name: b.name.value.as_str().into(),
        connector: b.connector.value.clone(),
        system: b.system.value.clone(),
        record_kind: b.record.value.clone(),
        target: b.target,
        filter,
        id,
        parent,
        deal,
        covers,
        pays,
        stage,
        fields,
        create_with: b.create_with.clone(),
        keys: Default::default(),
        custom: Default::default(),
    };
    binding.index_keys();
    binding.index_custom_fields();
    binding
}

/// What a binding of its target kind may say: documents have no stage,
/// parent or `create_with` (the hub does not create them from a deal
/// binding's terms); `deal:` is for invoices and orders, `covers:` for
/// shipments, which also need an `amount`.
fn check_target(def: &Defined<BindingSpec>, diags: &mut Diagnostics) {
    let b = &def.spec;
    let kind = match b.target {
        TargetKind::Deal => "deal",
        TargetKind::Invoice => "invoice",
        TargetKind::Order => "order",
        TargetKind::Shipment => "shipment",
        TargetKind::Payment => "payment",
    };
    // Each refusal points at what was said (the binding's name for
    // `create_with`, which keeps no position).
    let mut refuse = |at: Option<SourceSpan>, what: &str| {
        if let Some(at) = at {
            diags.error(&at, format!("a binding with `target: {kind}` cannot have `{what}`"));
        }
    };
    if b.target.is_document() {
        refuse(b.stage.as_ref().map(|s| def.at(&s.from)), "stage");
        refuse(b.parent.as_ref().map(|p| def.at(&p.from)), "parent");
        refuse((!b.create_with.is_empty()).then(|| def.at(&b.name)), "create_with");
    }
    if !matches!(b.target, TargetKind::Invoice | TargetKind::Order) {
        refuse(b.deal.as_ref().map(|p| def.at(&p.from)), "deal");
    }
    if b.target != TargetKind::Shipment {
        refuse(b.covers.as_ref().map(|p| def.at(&p.from)), "covers");
    }
    if b.target != TargetKind::Payment {
        refuse(b.pays.as_ref().map(|p| def.at(&p.from)), "pays");
    }
    if b.target == TargetKind::Shipment && b.covers.is_none() {
        diags.error(&def.at(&b.name), "a binding with `target: shipment` needs `covers` (the order it ships)");
    }
    let amount = b.fields.iter().find(|(name, _)| name.as_str() == "amount");
    if b.target == TargetKind::Payment {
        check_payment(def, amount.map(|(_, field)| field), diags);
    }
    if matches!(b.target, TargetKind::Shipment | TargetKind::Payment) && amount.is_none() {
        diags.error(&def.at(&b.name), format!("a binding with `target: {kind}` needs the field `amount`"));
    }
}

/// A payment names what it pays; split over several documents (a list
/// path), each item's amount is read beside it.
fn check_payment(def: &Defined<BindingSpec>, amount: Option<&FieldSpec>, diags: &mut Diagnostics) {
    let b = &def.spec;
    let Some(pays) = &b.pays else {
        diags.error(&def.at(&b.name), "a binding with `target: payment` needs `pays` (the order or invoice it pays)");
        return;
    };
    let is_list = |path: &str| path.contains("[*]");
    let amount_path = amount.and_then(|f| f.from.as_ref());
    match amount_path {
        Some(path) if is_list(&pays.from.value) != is_list(&path.value) => diags.error(
            &def.at(path),
            format!(
                "`pays: {}` and `amount: {}` must both be list paths (`[*]`, one amount per document paid) or both single values",
                pays.from.value, path.value
            ),
        ),
        _ => {}
    }
}

fn compile_field(
    def: &Defined<BindingSpec>,
    name: &Located<String>,
    field: &FieldSpec,
    lookups: &BTreeMap<String, BTreeMap<String, String>>,
    diags: &mut Diagnostics,
) -> Option<CompiledField> {
    let target = match BindingTarget::parse(name) {
        Ok(target) => target,
        Err(message) => {
            diags.error(&def.at(name), message);
            return None;
        }
    };
    if let Err(allowed) = target.check_for(def.spec.target) {
        diags.error(&def.at(name), format!("this binding cannot fill `{}`; it fills {allowed}", name.value));
        return None;
    }
    let value = value_source(def, name, field.from.as_ref(), &field.convert, field.default.as_ref(), lookups, diags);
    if let Some(from) = &field.from
        && value.from.as_ref().is_some_and(SourcePath::is_list)
        && !target.accepts_list()
        && !(def.spec.target == TargetKind::Payment && target == BindingTarget::Amount)
    {
        diags.error(&def.at(from), format!("`{}` holds one value; `[*]` is for list fields", name.value));
    }
    let currency = match (target.is_money(), &field.currency) {
        (true, Some(c)) => {
            if c.from.is_none() && c.default.is_none() {
                diags.error(&def.at(name), "`currency` needs `from` or `default`");
            }
            Some(value_source(def, name, c.from.as_ref(), &c.convert, c.default.as_ref(), lookups, diags))
        }
        (true, None) => {
            diags.error(&def.at(name), format!("`{}` needs `currency: {{from: …, default: …}}`", name.value));
            None
        }
        (false, Some(_)) => {
            diags.error(
                &def.at(name),
                format!("`currency` applies to amounts only (amount, total, paid, shipped), not `{}`", name.value),
            );
            None
        }
        (false, None) => None,
    };
    let person = field.person.unwrap_or(target.is_person());
    Some(CompiledField {
        target,
        name: name.value.clone(),
        currency_name: format!("{} currency", name.value),
        value,
        required: field.required,
        person,
        currency,
        custom_place: 0,
    })
}

/// Checks the path, the conversions, and that the default has the field's
/// type (a default that cannot be typed would fail on every record).
fn value_source(
    def: &Defined<BindingSpec>,
    name: &Located<String>,
    from: Option<&Located<String>>,
    conversions: &[Located<Conversion>],
    default: Option<&Located<String>>,
    lookups: &BTreeMap<String, BTreeMap<String, String>>,
    diags: &mut Diagnostics,
) -> ValueSource {
    if from.is_none() && default.is_none() {
        diags.error(&def.at(name), format!("`{}` needs `from` or `default`", name.value));
    }
    let conversions_ok = check_conversions(def, conversions, lookups, diags);
    let convert: Vec<Conversion> = conversions.iter().map(|c| c.value.clone()).collect();
    if let Some(default) = default.filter(|_| conversions_ok)
        && let Err(e) = convert::typed_default(default, &convert, lookups)
    {
        diags.error(&def.at(default), format!("default `{}`: {e}", default.value));
    }
    let typed_default = default.and_then(|d| convert::typed_default(d, &convert, lookups).ok());
    ValueSource {
        from: from.map(|f| path(def, f, true, diags)),
        convert,
        default: default.map(|d| d.value.clone()),
        typed_default,
    }
}

/// Reports unknown lookup tables and time zones; true when all are known.
fn check_conversions(
    def: &Defined<BindingSpec>,
    conversions: &[Located<Conversion>],
    lookups: &BTreeMap<String, BTreeMap<String, String>>,
    diags: &mut Diagnostics,
) -> bool {
    let mut ok = true;
    for conversion in conversions {
        let problem = match &conversion.value {
            Conversion::Lookup(table) if !lookups.contains_key(table) => {
                Some(format!("unknown lookup table `{table}`"))
            }
            Conversion::LocalDatetime(zone) if zone.parse::<chrono_tz::Tz>().is_err() => {
                Some(format!("unknown time zone `{zone}`; write an IANA name such as Europe/Moscow"))
            }
            _ => None,
        };
        if let Some(problem) = problem {
            diags.error(&def.at(conversion), problem);
            ok = false;
        }
    }
    ok
}

/// Parses a source path; an unparsable one is reported and replaced by
/// a single key with its text so checking can go on (the set is rejected).
fn path(def: &Defined<BindingSpec>, text: &Located<String>, list_allowed: bool, diags: &mut Diagnostics) -> SourcePath {
    let span: SourceSpan = def.at(text);
    match SourcePath::parse(text) {
        Ok(path) if path.is_list() && !list_allowed => {
            diags.error(&span, format!("`{}`: `[*]` is not allowed here", text.value));
            path
        }
        Ok(path) => path,
        Err(message) => {
            diags.error(&span, message);
            SourcePath::key(text)
        }
    }
}
