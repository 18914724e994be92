//! Checks pipelines and stage maps, and builds the two-way stage tables.

use std::collections::{BTreeMap, BTreeSet};

use crate::mapping::diagnostic::Diagnostics;
use crate::mapping::merge::MergedSpec;

/// System stage ids ↔ canonical stages of one pipeline, both directions
/// resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompiledStageMap {
    pub pipeline: String,
    /// System stage id → canonical stage.
    pub inbound: BTreeMap<String, String>,
    /// Canonical stage → the one system stage to write.
    pub outbound: BTreeMap<String, String>,
}

/// Canonical pipelines with their ordered stages.
pub(crate) fn pipelines(spec: &MergedSpec, diags: &mut Diagnostics) -> BTreeMap<String, Vec<String>> {
    let mut pipelines = BTreeMap::new();
    for (name, def) in &spec.pipelines {
        if def.spec.is_empty() {
            diags.error(&def.span(), format!("pipeline `{name}` has no stages"));
        }
        let mut seen = BTreeSet::new();
        for stage in &def.spec {
            if stage.trim().is_empty() {
                diags.error(&def.at(stage), format!("pipeline `{name}` has an empty stage name"));
            } else if !seen.insert(stage.as_str()) {
                diags.error(&def.at(stage), format!("stage `{}` appears twice in pipeline `{name}`", stage.value));
            }
        }
        pipelines.insert(name.clone(), def.spec.iter().map(|s| s.value.clone()).collect());
    }
    pipelines
}

/// Checks every stage map against the pipelines and resolves the outbound
/// direction: a canonical stage reached from several system stages needs
/// an explicit `outbound:` choice.
pub(crate) fn stage_maps(
    spec: &MergedSpec,
    pipelines: &BTreeMap<String, Vec<String>>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, CompiledStageMap> {
    let mut maps = BTreeMap::new();
    for (name, def) in &spec.stage_maps {
        let map = &def.spec;
        let Some(stages) = pipelines.get(map.pipeline.as_str()) else {
            diags.error(&def.at(&map.pipeline), format!("unknown pipeline `{}`", map.pipeline.value));
            continue;
        };
        let mut inbound = BTreeMap::new();
        let mut reverse: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (system_stage, canonical) in &map.stages {
            if !stages.contains(&canonical.value) {
                diags.error(&def.at(canonical), unknown_stage(&canonical.value, &map.pipeline.value, stages));
            }
            inbound.insert(system_stage.value.clone(), canonical.value.clone());
            reverse.entry(canonical.value.clone()).or_default().push(system_stage.value.clone());
        }
        let mut outbound = BTreeMap::new();
        for (canonical, system_stage) in &map.outbound {
            match reverse.get(canonical.as_str()) {
                None if !stages.contains(&canonical.value) => {
                    diags.error(&def.at(canonical), unknown_stage(&canonical.value, &map.pipeline.value, stages))
                }
                Some(candidates) if candidates.contains(&system_stage.value) => {
                    outbound.insert(canonical.value.clone(), system_stage.value.clone());
                }
                _ => diags.error(
                    &def.at(system_stage),
                    format!(
                        "outbound stage `{}` for `{}` must be one of the system stages mapped to it under `stages`",
                        system_stage.value, canonical.value
                    ),
                ),
            }
        }
        for (canonical, candidates) in &reverse {
            if outbound.contains_key(canonical) || map.outbound.keys().any(|k| k.value == *canonical) {
                continue;
            }
            match candidates.as_slice() {
                [only] => {
                    outbound.insert(canonical.clone(), only.clone());
                }
                several => diags.error(
                    &def.span(),
                    format!(
                        "stage map `{name}`: canonical stage `{canonical}` has several system stages ({}); \
                         choose the one to write under `outbound:`",
                        several.join(", ")
                    ),
                ),
            }
        }
        maps.insert(name.clone(), CompiledStageMap { pipeline: map.pipeline.value.clone(), inbound, outbound });
    }
    maps
}

pub(crate) fn unknown_stage(stage: &str, pipeline: &str, stages: &[String]) -> String {
    format!("unknown stage `{stage}` in pipeline `{pipeline}`; its stages are: {}", stages.join(", "))
}
