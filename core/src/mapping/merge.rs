//! Merging the files of a set: every section may appear in any file, and a
//! name defined twice (in one file or two) is an error pointing at both.

use std::collections::BTreeMap;

use super::diagnostic::Diagnostics;
use super::spec::{
    BindingSpec, CalendarSpec, FlowSpec, MappingFile, Name, PersonSpec, SettingsSpec, StageMapSpec, TeamSpec,
};
use super::yaml::Located;
use crate::flow::plan::SourceSpan;

/// Something defined in a file, with where its name was written.
#[derive(Debug)]
pub(crate) struct Defined<T> {
    pub file: String,
    pub name: Name,
    pub spec: T,
}

impl<T> Defined<T> {
    pub fn span(&self) -> SourceSpan {
        self.name.span(&self.file)
    }

    /// The span of a located value inside this definition.
    pub fn at<V>(&self, located: &Located<V>) -> SourceSpan {
        located.span(&self.file)
    }
}

/// All files of a set as one.
#[derive(Debug, Default)]
pub(crate) struct MergedSpec {
    pub pipelines: BTreeMap<String, Defined<Vec<Name>>>,
    pub custom_fields: BTreeMap<String, Defined<Option<String>>>,
    pub lookups: BTreeMap<String, Defined<BTreeMap<String, String>>>,
    pub bindings: BTreeMap<String, Defined<BindingSpec>>,
    pub stage_maps: BTreeMap<String, Defined<StageMapSpec>>,
    /// In file order, then in order within a file: flows run in this order.
    pub flows: Vec<Defined<FlowSpec>>,
    pub people: BTreeMap<String, Defined<PersonSpec>>,
    pub teams: BTreeMap<String, Defined<TeamSpec>>,
    pub calendar: Option<(String, Located<CalendarSpec>)>,
    pub settings: Option<(String, Located<SettingsSpec>)>,
}

fn insert<T>(kind: &str, target: &mut BTreeMap<String, Defined<T>>, def: Defined<T>, diags: &mut Diagnostics) {
    if let Some(first) = target.get(def.name.as_str()) {
        diags.error(&def.span(), format!("{kind} `{}` is already defined at {}", def.name.value, first.span()));
    } else {
        target.insert(def.name.value.clone(), def);
    }
}

fn insert_all<T>(
    kind: &str,
    file: &str,
    target: &mut BTreeMap<String, Defined<T>>,
    items: BTreeMap<Name, T>,
    diags: &mut Diagnostics,
) {
    for (name, spec) in items {
        insert(kind, target, Defined { file: file.to_owned(), name, spec }, diags);
    }
}

fn single<T>(
    kind: &str,
    slot: &mut Option<(String, Located<T>)>,
    file: &str,
    value: Option<Located<T>>,
    diags: &mut Diagnostics,
) {
    let Some(value) = value else { return };
    match slot {
        Some((first_file, first)) => diags.error(
            &value.span(file),
            format!("`{kind}` is already declared at {}; a set has one", first.span(first_file)),
        ),
        None => *slot = Some((file.to_owned(), value)),
    }
}

/// Merges parsed files (in the order given) into one spec.
pub(crate) fn merge(files: Vec<(String, MappingFile)>, diags: &mut Diagnostics) -> MergedSpec {
    let mut merged = MergedSpec::default();
    let mut flow_names: BTreeMap<String, SourceSpan> = BTreeMap::new();
    for (file, spec) in files {
        insert_all("pipeline", &file, &mut merged.pipelines, spec.pipelines, diags);
        insert_all("custom field", &file, &mut merged.custom_fields, spec.custom_fields, diags);
        insert_all("lookup table", &file, &mut merged.lookups, spec.lookups, diags);
        insert_all("stage map", &file, &mut merged.stage_maps, spec.stage_maps, diags);
        insert_all("person", &file, &mut merged.people, spec.people, diags);
        insert_all("team", &file, &mut merged.teams, spec.teams, diags);
        for binding in spec.bindings {
            let def = Defined { file: file.clone(), name: binding.name.clone(), spec: binding };
            insert("binding", &mut merged.bindings, def, diags);
        }
        for flow in spec.flows {
            let def = Defined { file: file.clone(), name: flow.name.clone(), spec: flow };
            match flow_names.get(def.name.as_str()) {
                Some(first) => {
                    diags.error(&def.span(), format!("flow `{}` is already defined at {first}", def.name.value))
                }
                None => {
                    flow_names.insert(def.name.value.clone(), def.span());
                    merged.flows.push(def);
                }
            }
        }
        single("calendar", &mut merged.calendar, &file, spec.calendar, diags);
        single("settings", &mut merged.settings, &file, spec.settings, diags);
    }
    merged
}
