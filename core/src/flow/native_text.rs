//! Text templates that only put deal attributes into fixed text
//! (`Сделка «{{ deal.title }}»: {{ deal.amount }} {{ deal.currency }}`),
//! rendered without minijinja.
//!
//! Most notification and task texts look like this, and for them a
//! minijinja render (context, VM, output) is most of an action's cost. The
//! shape is recognised strictly: `{{ deal.<attribute> }}` with plain spaces
//! around a scalar attribute, no tags, comments, filters or whitespace
//! control, no trailing newline, no auto-escaping. Anything else is left to
//! minijinja, and `FlowRuntime` tests pin both renders to the same text.

use std::fmt::Write;

use super::context::{DealScope, Numbers, attribute};

/// A template of text and deal attributes.
#[derive(Debug)]
pub(crate) struct NativeText {
    pieces: Vec<Piece>,
    /// Room for the rendered text: the fixed text and a typical length for
    /// each attribute, so that the text is allocated once.
    capacity: usize,
}

/// What an attribute usually takes in the text (a title, a stage, an amount).
const ATTRIBUTE_ROOM: usize = 64;

/// How minijinja shows an unset value.
const NONE: &str = "None";

#[derive(Debug)]
enum Piece {
    Text(String),
    Deal(&'static str),
}

/// Deal attributes minijinja shows as their text, or `none` when unset.
const SCALARS: [&str; 13] = [
    "id",
    "pipeline",
    "stage",
    "title",
    "amount",
    "currency",
    "responsible",
    "parent_id",
    "created_at",
    "updated_at",
    "invoiced",
    "paid",
    "shipped",
];

impl NativeText {
    /// The template's pieces, when it has the shape described above.
    pub(crate) fn parse(source: &str) -> Option<Self> {
        // minijinja drops one trailing newline; `{%`/`{#` open tags and
        // comments (raw blocks included).
        if source.ends_with('\n') || source.contains("{%") || source.contains("{#") {
            return None;
        }
        let mut pieces = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find("{{") {
            let (text, after) = (&rest[..open], &rest[open + 2..]);
            if text.contains("}}") {
                return None;
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(text.to_owned()));
            }
            let close = after.find("}}")?;
            let name = after[..close].trim_matches(' ').strip_prefix("deal.")?;
            pieces.push(Piece::Deal(SCALARS.iter().find(|a| **a == name)?));
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            return None;
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        let capacity = pieces
            .iter()
            .map(|p| match p {
                Piece::Text(text) => text.len(),
                Piece::Deal(_) => ATTRIBUTE_ROOM,
            })
            .sum();
        Some(Self { pieces, capacity })
    }

    /// The text, as minijinja renders it for `deal` (amounts exact).
    pub(crate) fn render(&self, deal: &DealScope<'_>) -> String {
        let mut out = String::with_capacity(self.capacity);
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Deal(name) => write_attribute(&mut out, deal, name),
            }
        }
        out
    }
}

/// Writes one attribute as minijinja shows it. The texts and the amount
/// are written from the deal as they are (`None` when unset), not copied
/// into a template value first; the others go through `attribute`.
fn write_attribute(out: &mut String, scope: &DealScope<'_>, name: &str) {
    let deal = scope.deal;
    match name {
        "pipeline" => out.push_str(&deal.pipeline),
        "stage" => out.push_str(&deal.stage),
        "title" => out.push_str(&deal.title),
        "currency" => out.push_str(deal.amount.as_ref().map_or(NONE, |m| m.currency.as_str())),
        "responsible" => out.push_str(deal.responsible.as_deref().unwrap_or(NONE)),
        "amount" => match &deal.amount {
            Some(money) => out.push_str(&crate::model::decimal_text(money.amount)),
            None => out.push_str(NONE),
        },
        other => {
            let value = attribute(scope, other, Numbers::Exact).unwrap_or_default();
            match value.as_str() {
                Some(text) => out.push_str(text),
                None => {
                    let _ = write!(out, "{value}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_substitutions_are_native() {
        for native in ["{{ deal.title }}", "a {{deal.amount}} b {{  deal.currency  }}", "без подстановок", ""]
        {
            assert!(NativeText::parse(native).is_some(), "{native}");
        }
        for other in [
            "{{ deal.title | upper }}",
            "{{ deal.custom.cost }}",
            "{{ deal.client }}",
            "{{ parent.title }}",
            "{{- deal.title }}",
            "{% if deal.title %}x{% endif %}",
            "{# note #}{{ deal.title }}",
            "{{ deal.title }}\n",
            "a }} b",
            "{{ deal.title",
            "{{ deal.nonsense }}",
        ] {
            assert!(NativeText::parse(other).is_none(), "{other}");
        }
    }
}
