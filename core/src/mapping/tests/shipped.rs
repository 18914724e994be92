//! The shipped `mappings/` directory loads cleanly and means what the
//! stories say.

use std::path::PathBuf;

use crate::flow::plan::{Action, Trigger};
use crate::mapping::MappingSet;

pub(super) fn mappings_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mappings")
}

#[test]
fn the_shipped_mappings_load_without_diagnostics() {
    let set = MappingSet::load_dir(&mappings_dir()).unwrap_or_else(|diagnostics| {
        let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        panic!("shipped mappings have problems:\n{}", lines.join("\n"))
    });
    let plan = set.plan();
    assert_eq!(plan.version.len(), 32);
    assert_eq!(plan.max_cascade_depth, 8);
    assert!(plan.pipelines["sales"].contains(&"calculation".to_owned()));
    assert!(plan.calendar.as_ref().is_some_and(|c| c.timezone == "Europe/Moscow"));
    let flow = plan.flows.iter().find(|f| f.name == "engineer-calculation").unwrap();
    assert_eq!(flow.trigger, Trigger::DealEnters { pipeline: "sales".into(), stage: Some("calculation".into()) });
    assert!(matches!(&flow.actions[0], Action::SpawnChild { pipeline, .. } if pipeline == "engineering"));
    assert!(flow.span.file.ends_with("flows-engineering.yaml") && flow.span.line > 0);
}

#[test]
fn every_shipped_yaml_file_names_the_schema() {
    for entry in std::fs::read_dir(mappings_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with("# yaml-language-server: $schema=./schema.json\n"),
                "{} must start with the schema comment",
                path.display()
            );
        }
    }
}

#[test]
fn outbound_helpers_use_the_shipped_stage_maps_and_people() {
    let set = MappingSet::load_dir(&mappings_dir()).unwrap();
    assert_eq!(set.system_stage("bitrix24", "sales", "payment"), Some("PREPAYMENT_INVOICE"), "explicit outbound");
    assert_eq!(set.system_stage("bitrix24", "sales", "evaluation"), Some("UC_EVALUATE"), "the only system stage");
    assert_eq!(set.system_stage("bitrix24", "logistics", "approval"), Some("C1:UC_APPROVAL"));
    assert_eq!(set.system_stage("onec", "engineering", "calculated"), Some("Рассчитан"));
    assert_eq!(set.system_stage("bitrix24", "engineering", "new"), None, "no Bitrix24 binding for engineering");
    assert_eq!(set.system_user("bitrix24", "ivanov"), Some("7"));
    assert_eq!(set.system_user("bitrix24", "nobody"), None);
    assert_eq!(set.system_field("bitrix24", "sales", "custom.logistics_cost"), Some("UF_CRM_LOGISTICS_COST"));
    let (system, fields) = set.create_with("bitrix24", "logistics").unwrap();
    assert_eq!((system, fields.get("CATEGORY_ID").map(String::as_str)), ("bitrix24", Some("1")));
}

#[test]
fn the_shipped_test_cases_load_and_refer_to_the_shipped_set() {
    use crate::mapping::testcase::TestCase;
    let set = MappingSet::load_dir(&mappings_dir()).unwrap();
    let cases = TestCase::load_dir(&mappings_dir().join("tests")).unwrap_or_else(|diagnostics| {
        let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        panic!("test cases do not parse:\n{}", lines.join("\n"))
    });
    assert!(cases.len() >= 6);
    for (file, case) in &cases {
        let problems: Vec<String> = case.check(file, &set).iter().map(ToString::to_string).collect();
        assert!(problems.is_empty(), "{file}:\n{}", problems.join("\n"));
    }
    // Every record step maps without error through the shipped set.
    for (file, case) in &cases {
        for step in &case.steps {
            if let crate::mapping::testcase::Step::Record(r) = &step.value {
                let mapped = set.map_record(&r.connector, &r.kind, &r.data);
                assert!(mapped.as_ref().is_ok_and(|m| !m.is_empty()), "{file}: {mapped:?}");
            }
        }
    }
}

#[test]
fn a_test_case_naming_unknown_things_is_reported_at_their_spot() {
    use crate::mapping::testcase::TestCase;
    let set = MappingSet::load_dir(&mappings_dir()).unwrap();
    let text = "\
name: broken
given:
  deals:
    - { key: a, pipeline: sales, stage: nowhere }
steps:
  - advance: 3 weeks
expect:
  deals:
    - { key: b, responsible: ghost }
";
    let case = TestCase::from_str("t.yaml", text).unwrap();
    let found: Vec<String> = case.check("t.yaml", &set).iter().map(ToString::to_string).collect();
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].starts_with("t.yaml:4:41: unknown stage `nowhere`"), "{found:#?}");
    assert!(found[1].starts_with("t.yaml:6:14: `3 weeks` is not a delay"), "{found:#?}");
    assert!(found[2].starts_with("t.yaml:9:14: unknown deal key `b`"), "{found:#?}");
    assert!(found[3].starts_with("t.yaml:9:30: unknown person `ghost`"), "{found:#?}");
}

/// Every story's test case beside the shipped mappings passes: S1–S6 at
/// engine level (records and canonical events in → state, tasks,
/// notifications, timers and commands out).
#[test]
fn the_shipped_story_cases_pass() {
    let set = MappingSet::load_dir(&mappings_dir()).unwrap();
    let cases = crate::mapping::testcase::TestCase::load_dir(&mappings_dir().join("tests")).unwrap_or_else(|d| {
        panic!("test cases do not load: {:?}", d.iter().map(ToString::to_string).collect::<Vec<_>>())
    });
    assert!(cases.len() >= 6, "a case per story");
    let failed: Vec<String> = cases
        .iter()
        .map(|(file, case)| crate::mapping::testrun::run_case(file, case, &set))
        .filter(|r| !r.passed())
        .map(|r| format!("{} ({}):\n  {}", r.name, r.file, r.failures.join("\n  ")))
        .collect();
    assert!(failed.is_empty(), "failing cases:\n{}", failed.join("\n"));
}
