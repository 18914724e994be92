//! `MappingSet`: a loaded, validated set of mapping files, and what the rest
//! of the hub asks of it (the flow plan, record mapping, outbound ids).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::diagnostic::{Diagnostic, Diagnostics};
use super::record::{CompiledBinding, MappedRecord, MappingContext, MappingError};
use super::validate::{self, CompiledStageMap};
use super::{merge, recover, version};
use crate::flow::plan::FlowPlan;
use crate::flow::{FlowRuntime, OutboundMap};

/// A valid mapping set. Immutable: a reload builds a new one and swaps it
/// in whole.
#[derive(Debug, Clone)]
pub struct MappingSet {
    plan: FlowPlan,
    /// The plan's conditions and templates, compiled once per set.
    runtime: std::sync::Arc<FlowRuntime>,
    /// The bindings' filters, compiled once per set.
    filters: std::sync::Arc<super::filters::FilterRuntime>,
    bindings: Vec<CompiledBinding>,
    stage_maps: BTreeMap<String, CompiledStageMap>,
    lookups: BTreeMap<String, BTreeMap<String, String>>,
    custom_fields: BTreeSet<String>,
    /// Connector instance → system user id → canonical person id.
    people_by_system_id: BTreeMap<String, BTreeMap<String, String>>,
    files: Vec<String>,
}

impl MappingSet {
    /// Loads every `*.yaml` / `*.yml` file directly in `dir` (subfolders
    /// such as `tests/` are not part of the set).
    pub fn load_dir(dir: &Path) -> Result<Self, Vec<Diagnostic>> {
        let display = dir.display().to_string();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| vec![Diagnostic::file(&display, format!("cannot read the mappings directory: {e}"))])?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
            .collect();
        paths.sort();
        Self::load_files(&paths)
    }

    /// Loads the given files as one set.
    pub fn load_files(paths: &[PathBuf]) -> Result<Self, Vec<Diagnostic>> {
        let mut sources = Vec::new();
        let mut problems = Vec::new();
        for path in paths {
            let name = path.display().to_string();
            match std::fs::read_to_string(path) {
                Ok(text) => sources.push((name, text)),
                Err(e) => problems.push(Diagnostic::file(&name, format!("cannot read: {e}"))),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Self::from_sources(&sources)
    }

    /// Loads a set from `(file name, YAML text)` pairs; the names appear in
    /// diagnostics and spans. Every problem of every file is reported.
    pub fn from_sources(sources: &[(String, String)]) -> Result<Self, Vec<Diagnostic>> {
        let mut diags = Diagnostics::default();
        let mut ordered: Vec<&(String, String)> = sources.iter().collect();
        ordered.sort_by(|a, b| a.0.cmp(&b.0));
        let version = version::content_version(ordered.iter().map(|(n, t)| (n.as_str(), t.as_str())));
        let mut parsed = Vec::new();
        for (name, text) in &ordered {
            // An empty file (or one with only comments) is an empty set.
            if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
                continue;
            }
            // A broken flow or binding is reported and set aside, so the
            // rest of its file is still checked (see `recover`).
            let (file, problems) = recover::parse_mapping_file(name, text);
            problems.into_iter().for_each(|problem| diags.push(problem));
            if let Some(file) = file {
                parsed.push((name.clone(), file));
            }
        }
        // Files that parsed are still checked when another did not, so one
        // round trip shows every problem; references into the broken file
        // show up as unknown until it is fixed.
        let merged = merge::merge(parsed, &mut diags);
        let compiled = validate::compile(&merged, version, &mut diags);
        if !diags.is_empty() {
            return Err(diags.into_sorted());
        }
        let runtime = match FlowRuntime::compile(&compiled.plan) {
            Ok(runtime) => std::sync::Arc::new(runtime),
            Err(message) => return Err(vec![Diagnostic::file("<flows>", message)]),
        };
        let filters = match super::filters::FilterRuntime::compile(
            compiled.bindings.iter().filter_map(|b| b.filter.as_deref()),
        ) {
            Ok(filters) => std::sync::Arc::new(filters),
            Err(message) => return Err(vec![Diagnostic::file("<bindings>", message)]),
        };
        let mut people_by_system_id: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for person in &compiled.plan.people {
            for (instance, id) in &person.system_ids {
                people_by_system_id.entry(instance.clone()).or_default().insert(id.clone(), person.id.clone());
            }
        }
        Ok(Self {
            plan: compiled.plan,
            runtime,
            filters,
            bindings: compiled.bindings,
            stage_maps: compiled.stage_maps,
            lookups: compiled.lookups,
            custom_fields: compiled.custom_fields,
            people_by_system_id,
            files: ordered.iter().map(|(n, _)| n.clone()).collect(),
        })
    }

    /// The compiled flows, pipelines, people, teams and calendar.
    pub fn plan(&self) -> &FlowPlan {
        &self.plan
    }

    /// The compiled conditions and templates of the plan.
    pub fn runtime(&self) -> &FlowRuntime {
        &self.runtime
    }

    /// Content hash of the files: recorded with every processed event.
    pub fn version(&self) -> &str {
        &self.plan.version
    }

    /// The files the set was loaded from, sorted.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Custom field names the set knows (filled by bindings or declared).
    pub fn custom_fields(&self) -> &BTreeSet<String> {
        &self.custom_fields
    }

    /// Names of the bindings, in name order.
    pub fn binding_names(&self) -> impl Iterator<Item = &str> {
        self.bindings.iter().map(|b| &*b.name)
    }

    /// Whether some binding reads records from this connector instance.
    pub fn has_connector(&self, connector_instance: &str) -> bool {
        self.bindings.iter().any(|b| b.connector == connector_instance)
    }

    /// Maps one source record through every binding of `connector_instance`
    /// for `record_kind` whose filter accepts it. No binding: an empty list
    /// (the record is not of interest). Any failing binding fails the whole
    /// record, so an event is never half-applied.
    pub fn map_record(
        &self,
        connector_instance: &str,
        record_kind: &str,
        record: &serde_json::Value,
    ) -> Result<Vec<MappedRecord>, MappingError> {
        let ctx = MappingContext {
            lookups: &self.lookups,
            people_by_system_id: &self.people_by_system_id,
            stage_maps: &self.stage_maps,
        };
        let mut mapped = Vec::new();
        for binding in &self.bindings {
            if binding.connector == connector_instance
                && binding.record_kind == record_kind
                && binding.accepts(&self.filters, record)?
            {
                // Nearly always one binding maps a record: room for one
                // (a mapped record is large), more only when needed.
                if mapped.is_empty() {
                    mapped.reserve_exact(1);
                }
                mapped.push(binding.map(record, &ctx)?);
            }
        }
        Ok(mapped)
    }

    /// Bindings of a connector instance whose stage map is for `pipeline`.
    fn bindings_for(&self, connector_instance: &str, pipeline: &str) -> impl Iterator<Item = &CompiledBinding> {
        self.bindings.iter().filter(move |b| {
            b.connector == connector_instance
                && b.stage
                    .as_ref()
                    .and_then(|(_, map)| self.stage_maps.get(map))
                    .is_some_and(|m| m.pipeline == pipeline)
        })
    }

    /// The system stage id to write when the hub moves a deal of `pipeline`
    /// to `canonical_stage` in `connector_instance`.
    pub fn system_stage(&self, connector_instance: &str, pipeline: &str, canonical_stage: &str) -> Option<&str> {
        self.bindings_for(connector_instance, pipeline).find_map(|b| {
            let (_, map) = b.stage.as_ref()?;
            self.stage_maps.get(map)?.outbound.get(canonical_stage).map(String::as_str)
        })
    }

    /// The user id of a declared person in a connector instance.
    pub fn system_user(&self, connector_instance: &str, person_id: &str) -> Option<&str> {
        let person = self.plan.people.iter().find(|p| p.id == person_id)?;
        person.system_ids.get(connector_instance).map(String::as_str)
    }

    /// The source field a canonical field of `pipeline` is read from in
    /// `connector_instance` (e.g. `custom.cost` → `UF_CRM_COST`), so the
    /// hub can write it back. `None` for list paths and unmapped fields.
    pub fn system_field(&self, connector_instance: &str, pipeline: &str, canonical_field: &str) -> Option<&str> {
        self.bindings_for(connector_instance, pipeline).find_map(|b| {
            let field = b.fields.iter().find(|f| f.name == canonical_field)?;
            field.value.from.as_ref().filter(|p| !p.is_list()).map(|p| p.as_str())
        })
    }

    /// Fields to set when the hub creates a record of `pipeline` in
    /// `connector_instance` (the binding's `create_with`), with the
    /// connector kind (`system`) the binding declares.
    pub fn create_with(&self, connector_instance: &str, pipeline: &str) -> Option<(&str, &BTreeMap<String, String>)> {
        self.bindings_for(connector_instance, pipeline).next().map(|b| (b.system.as_str(), &b.create_with))
    }
}

impl OutboundMap for MappingSet {
    fn system_stage(&self, instance: &str, pipeline: &str, stage: &str) -> Option<String> {
        MappingSet::system_stage(self, instance, pipeline, stage).map(str::to_owned)
    }

    fn system_field(&self, instance: &str, pipeline: &str, field: &str) -> Option<String> {
        MappingSet::system_field(self, instance, pipeline, field).map(str::to_owned)
    }

    fn create_with(&self, instance: &str, pipeline: &str) -> Option<(String, BTreeMap<String, String>)> {
        MappingSet::create_with(self, instance, pipeline).map(|(system, fields)| (system.to_owned(), fields.clone()))
    }

    fn system_user(&self, instance: &str, person: &str) -> Option<String> {
        MappingSet::system_user(self, instance, person).map(str::to_owned)
    }
}
