//! Load-time checks of minijinja conditions and templates.
//!
//! Every expression and template is compiled once when the set loads, so a
//! typo is a diagnostic at its line, not a failure when a deal moves. The
//! variables it reads are checked too: a flow may read `deal.custom.cost`
//! only if some binding fills `custom.cost` or the set declares it.

use std::collections::BTreeSet;

use super::diagnostic::Diagnostics;
use crate::flow::plan::{Expr, SourceSpan};

/// Names minijinja provides itself.
const BUILTINS: [&str; 4] = ["range", "dict", "namespace", "debug"];

/// Attributes of `deal` and `parent` in the flow context: exactly what the
/// engine's deal object serves.
use crate::flow::context::DEAL_KEYS as DEAL_ATTRIBUTES;
const CLIENT_ATTRIBUTES: [&str; 5] = ["name", "inn", "kpp", "emails", "phones"];
const PERSON_ATTRIBUTES: [&str; 4] = ["id", "name", "flags", "supervisor"];

/// What an expression may read.
pub(crate) enum Scope<'a> {
    /// A binding filter: only `record`, the raw source record.
    Record,
    /// A flow condition or template: `deal`, `parent`, `event`, `responsible`.
    Flow { custom_fields: &'a BTreeSet<String> },
}

/// Compiles a condition (a minijinja expression such as `deal.amount > 100`).
pub(crate) fn expression(source: &str, span: SourceSpan, scope: &Scope<'_>, diags: &mut Diagnostics) -> Expr {
    let env = minijinja::Environment::new();
    match env.compile_expression(source) {
        Ok(compiled) => check_variables(compiled.undeclared_variables(true), &span, scope, diags),
        Err(e) => diags.error(&span, format!("bad expression `{source}`: {}", describe(&e))),
    }
    Expr { source: source.to_owned(), span }
}

/// Compiles a text template (`Расчёт готов: {{ deal.title }}`).
pub(crate) fn template(source: &str, span: SourceSpan, scope: &Scope<'_>, diags: &mut Diagnostics) -> Expr {
    let env = minijinja::Environment::new();
    match env.template_from_str(source) {
        Ok(compiled) => check_variables(compiled.undeclared_variables(true), &span, scope, diags),
        Err(e) => diags.error(&span, format!("bad template: {}", describe(&e))),
    }
    Expr { source: source.to_owned(), span }
}

fn describe(error: &minijinja::Error) -> String {
    match (error.detail(), error.line()) {
        (Some(detail), Some(line)) if line > 1 => format!("{} (line {line} of the text)", detail),
        (Some(detail), _) => detail.to_owned(),
        (None, _) => error.kind().to_string(),
    }
}

fn check_variables(
    variables: std::collections::HashSet<String>,
    span: &SourceSpan,
    scope: &Scope<'_>,
    diags: &mut Diagnostics,
) {
    let mut variables: Vec<String> = variables.into_iter().collect();
    variables.sort();
    for variable in variables {
        let parts: Vec<&str> = variable.split('.').collect();
        if BUILTINS.contains(&parts[0]) {
            continue;
        }
        if let Err(message) = check_variable(&parts, scope) {
            diags.error(span, message);
        }
    }
}

fn check_variable(parts: &[&str], scope: &Scope<'_>) -> Result<(), String> {
    let custom_fields = match scope {
        Scope::Record if parts[0] == "record" => return Ok(()),
        Scope::Record => return Err(format!("unknown variable `{}`; a filter can read only `record`", parts[0])),
        Scope::Flow { custom_fields } => custom_fields,
    };
    match parts {
        ["deal" | "parent", rest @ ..] => check_deal_path(&parts[0..1].join("."), rest, custom_fields),
        ["responsible", attribute, ..] if !PERSON_ATTRIBUTES.contains(attribute) => Err(format!(
            "unknown attribute `responsible.{attribute}`; expected one of {}",
            PERSON_ATTRIBUTES.join(", ")
        )),
        ["responsible", ..] | ["event", ..] => Ok(()),
        [root, ..] => Err(format!("unknown variable `{root}`; a flow can read deal, parent, event, responsible")),
        [] => Ok(()),
    }
}

fn check_deal_path(root: &str, rest: &[&str], custom_fields: &BTreeSet<String>) -> Result<(), String> {
    match rest {
        [] => Ok(()),
        ["custom"] => Ok(()),
        ["custom", name, ..] if custom_fields.contains(*name) => Ok(()),
        ["custom", name, ..] => Err(format!(
            "unknown custom field `{root}.custom.{name}`: no binding fills it and `custom_fields` does not declare it"
        )),
        ["client", attribute, ..] if !CLIENT_ATTRIBUTES.contains(attribute) => Err(format!(
            "unknown attribute `{root}.client.{attribute}`; expected one of {}",
            CLIENT_ATTRIBUTES.join(", ")
        )),
        [attribute, ..] if !DEAL_ATTRIBUTES.contains(attribute) => {
            Err(format!("unknown deal field `{root}.{attribute}`; expected one of {}", DEAL_ATTRIBUTES.join(", ")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> SourceSpan {
        SourceSpan { file: "f.yaml".into(), line: 4, column: 9 }
    }

    fn problems(source: &str, is_template: bool) -> Vec<String> {
        let custom = BTreeSet::from(["cost".to_owned()]);
        let scope = Scope::Flow { custom_fields: &custom };
        let mut diags = Diagnostics::default();
        if is_template {
            template(source, span(), &scope, &mut diags);
        } else {
            expression(source, span(), &scope, &mut diags);
        }
        diags.into_sorted().into_iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn good_expressions_and_templates_pass() {
        assert!(problems("deal.amount > 500000 or 'new_manager' in responsible.flags", false).is_empty());
        assert!(problems("deal.custom.cost and parent.client.inn", false).is_empty());
        assert!(problems("Получено {{ event.amount }} из {{ event.invoice_total }}", true).is_empty());
        assert!(problems("{% for e in deal.client.emails %}{{ e }}{% endfor %}", true).is_empty());
    }

    #[test]
    fn syntax_errors_point_at_the_value() {
        let found = problems("deal.amount >", false);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("f.yaml:4:9: bad expression `deal.amount >`"), "{found:?}");
        assert!(problems("{{ deal.title", true)[0].starts_with("f.yaml:4:9: bad template"));
    }

    #[test]
    fn unknown_variables_and_fields_are_reported() {
        assert!(problems("dael.amount > 1", false)[0].contains("unknown variable `dael`"));
        assert!(problems("deal.custom.price > 1", false)[0].contains("`deal.custom.price`"));
        assert!(problems("deal.amout > 1", false)[0].contains("unknown deal field `deal.amout`"));
        assert!(problems("{{ parent.client.adress }}", true)[0].contains("parent.client.adress"));
    }

    #[test]
    fn filters_read_only_the_record() {
        let mut diags = Diagnostics::default();
        expression("record.CATEGORY_ID == '0'", span(), &Scope::Record, &mut diags);
        expression("deal.stage == 'x'", span(), &Scope::Record, &mut diags);
        let found = diags.into_sorted();
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("only `record`"));
    }
}
