//! Semantic validation: everything serde cannot check (references between
//! sections, expressions, paths, delays), compiled into the plan and the
//! record-mapping tables in the same pass so the two can never disagree.

mod bindings;
mod flows;
mod org;
mod stages;

use std::collections::{BTreeMap, BTreeSet};

pub(crate) use stages::CompiledStageMap;

pub use org::DEFAULT_MAX_CASCADE_DEPTH;

use super::diagnostic::Diagnostics;
use super::fields::valid_custom_name;
use super::merge::MergedSpec;
use super::record::CompiledBinding;
use crate::flow::plan::FlowPlan;

/// Everything a valid set compiles into.
pub(crate) struct Compiled {
    pub plan: FlowPlan,
    pub bindings: Vec<CompiledBinding>,
    pub stage_maps: BTreeMap<String, CompiledStageMap>,
    pub lookups: BTreeMap<String, BTreeMap<String, String>>,
    pub custom_fields: BTreeSet<String>,
}

/// Validates a merged spec; the caller rejects the set if `diags` is not
/// empty afterwards.
pub(crate) fn compile(spec: &MergedSpec, version: String, diags: &mut Diagnostics) -> Compiled {
    let pipelines = stages::pipelines(spec, diags);
    let stage_maps = stages::stage_maps(spec, &pipelines, diags);
    let lookups: BTreeMap<String, BTreeMap<String, String>> =
        spec.lookups.iter().map(|(name, def)| (name.clone(), def.spec.clone())).collect();
    for (name, def) in &spec.custom_fields {
        if let Err(message) = valid_custom_name(name) {
            diags.error(&def.span(), message);
        }
    }
    let mut custom_fields = bindings::custom_fields_filled(spec);
    custom_fields.extend(spec.custom_fields.keys().cloned());
    let compiled_bindings = bindings::bindings(spec, &lookups, diags);
    let flow_context = flows::FlowContext {
        spec,
        pipelines: &pipelines,
        custom_fields: &custom_fields,
        timers: flows::scheduled_timers(spec),
    };
    let flows = flows::flows(&flow_context, diags);
    let plan = FlowPlan {
        version,
        pipelines,
        flows,
        people: org::people(spec, diags),
        teams: org::teams(spec, diags),
        calendar: org::calendar(spec, diags),
        max_cascade_depth: org::max_cascade_depth(spec, diags),
    };
    Compiled { plan, bindings: compiled_bindings, stage_maps, lookups, custom_fields }
}
