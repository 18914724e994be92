//! Reading a mapping file whose flows or bindings have shape problems.
//!
//! serde stops at the first unknown key, wrong type or missing field, so a
//! file with a typo in one flow would hide every other problem of that
//! file (an unknown stage three flows down, a bad expression) until the
//! typo is fixed. Here the flow or binding that holds the problem is set
//! aside (its lines are blanked, so every other position stays where it
//! was) and the file is read again, until it reads. The admin sees one
//! problem per broken item, and every remaining item is still checked.
//!
//! Only items of the `flows` and `bindings` lists are set aside: nothing
//! refers to them by name. What they do can still be missed elsewhere (a
//! timer only the left-out flow schedules), so the problem says that the
//! item is left out of the check. A YAML syntax error, or a shape problem
//! outside those lists, is reported as it is and the file is left out.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

use super::diagnostic::Diagnostic;
use super::spec::MappingFile;
use super::yaml::parse_yaml;

/// The list items of a file that may be set aside, by the line and
/// column each starts at. Other sections are not read.
#[derive(Deserialize)]
struct ListItems {
    #[serde(default)]
    flows: Option<Vec<Spanned<IgnoredAny>>>,
    #[serde(default)]
    bindings: Option<Vec<Spanned<IgnoredAny>>>,
}

/// Lines `first..=last` (1-based) of one item, and whether it is the only
/// one left in its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ItemLines {
    first: usize,
    last: usize,
    only_one: bool,
    /// `flow` or `binding`, for the problem's text.
    kind: &'static str,
}

/// Parses `source` as a mapping file, setting aside each flow or binding
/// with a shape problem. Returns the file (without those items) when the
/// rest reads, and every problem found on the way.
pub(crate) fn parse_mapping_file(file: &str, source: &str) -> (Option<MappingFile>, Vec<Diagnostic>) {
    let mut text = source.to_owned();
    let mut problems = Vec::new();
    loop {
        let problem = match parse_yaml::<MappingFile>(file, &text) {
            Ok(parsed) => return (Some(parsed), problems),
            Err(problem) => problem,
        };
        let item = match item_at(file, &text, problem.line as usize) {
            Ok(item) => item.filter(|item| has_content(&text, *item)),
            Err(unreadable) => {
                // A syntax error further down is the next thing the admin
                // has to fix, so it is shown too (once, if it is this one).
                let further = unreadable != problem;
                problems.push(problem);
                problems.extend(further.then_some(unreadable));
                return (None, problems);
            }
        };
        let Some(item) = item else {
            problems.push(problem);
            return (None, problems);
        };
        let message = format!("{} (this {} is left out of the check until it is fixed)", problem.message, item.kind);
        problems.push(Diagnostic { message, ..problem });
        // Each round blanks at least one written line, so this ends.
        text = set_aside(&text, item);
    }
}

/// The flow or binding whose lines hold `line`; an error when the text
/// is not even YAML.
fn item_at(file: &str, text: &str, line: usize) -> Result<Option<ItemLines>, Diagnostic> {
    let items: ListItems = parse_yaml(file, text)?;
    let lists = [(items.flows, "flow"), (items.bindings, "binding")];
    Ok(lists.into_iter().find_map(|(list, kind)| {
        let list = list?;
        let starts: Vec<(usize, usize)> = list
            .iter()
            .map(|item| (dash_line(text, item.referenced.line() as usize), item.referenced.column() as usize))
            .collect();
        let only_one = starts.len() == 1;
        starts.iter().enumerate().find_map(|(i, &(first, column))| {
            let last = match starts.get(i + 1) {
                Some(&(next, _)) => next.checked_sub(1)?,
                None => last_line_of(text, first, column),
            };
            (first..=last).contains(&line).then_some(ItemLines { first, last, only_one, kind })
        })
    }))
}

/// The line an item's `-` is on: its content's line, or the line above
/// when the `-` stands alone there (`-` and the keys below it).
fn dash_line(text: &str, content: usize) -> usize {
    let above = content.checked_sub(2).and_then(|index| text.lines().nth(index));
    if above.is_some_and(|line| line.trim() == "-") { content - 1 } else { content }
}

/// The last line of the list's final item, which starts at `first` with
/// its content at `column`: the item goes on while lines are blank,
/// comments, or indented as far as its content.
fn last_line_of(text: &str, first: usize, column: usize) -> usize {
    let mut last = first;
    for (index, line) in text.lines().enumerate().skip(first) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if indent + 1 < column {
            break;
        }
        last = index + 1;
    }
    last
}

/// Whether the item's lines hold anything besides blanks and comments.
fn has_content(text: &str, item: ItemLines) -> bool {
    text.lines().skip(item.first - 1).take(item.last + 1 - item.first).any(|l| {
        let trimmed = l.trim_start();
        !trimmed.is_empty() && !trimmed.starts_with('#')
    })
}

/// `text` with the item's lines emptied, so every other line keeps its
/// number. A list left with no item becomes `[]`, not a missing value.
fn set_aside(text: &str, item: ItemLines) -> String {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let number = index + 1;
        if !(item.first..=item.last).contains(&number) {
            out.push_str(line);
            continue;
        }
        if number == item.first && item.only_one {
            // Indented, so it is the value of the list's key whatever
            // the items' own indentation was.
            out.push_str("  []");
        }
        if line.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOWS: &str = "\
pipelines:
  sales: [new, payment, won]

flows:
  - name: first
    whenn: { deal_enters: { pipeline: sales, stage: payment } }
    then:
      - notify: { to: responsible, text: hi }

  - name: second
    when: { deal_enters: { pipeline: sales, stage: won } }
    then:
      - notify: { to: responsible, txt: hi }
      - move: { stage: nowhere }

  - name: third
    when: { deal_enters: { pipeline: sales, stage: won } }
    then:
      - move: { stage: payment }
";

    #[test]
    fn each_broken_flow_is_reported_and_the_others_still_read() {
        let (file, problems) = parse_mapping_file("f.yaml", FLOWS);
        let at: Vec<(u32, u32)> = problems.iter().map(|p| (p.line, p.column)).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(at[0], (6, 5), "{problems:?}");
        assert!(problems[0].message.contains("whenn"), "{problems:?}");
        assert!(problems[0].message.ends_with("(this flow is left out of the check until it is fixed)"));
        assert_eq!(at[1].0, 13, "{problems:?}");
        let file = file.expect("the third flow reads");
        let names: Vec<&str> = file.flows.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["third"]);
        assert_eq!(file.flows[0].name.line, 16, "positions after the blanked items are unchanged");
        assert_eq!(file.pipelines.len(), 1);
    }

    #[test]
    fn a_file_whose_only_flow_is_broken_reads_as_no_flows() {
        let text = "flows:\n- name: only\n  when: payment_applied\n  then: [ { nope: {} } ]\n# the end\n";
        let (file, problems) = parse_mapping_file("f.yaml", text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].line, 4, "{problems:?}");
        assert!(file.expect("reads").flows.is_empty());
    }

    #[test]
    fn an_item_whose_dash_stands_alone_is_set_aside_whole() {
        // Left behind, the second item's `-` would be an empty item that
        // takes the first, valid one with it.
        let text = "flows:\n  -\n    name: a\n    when: payment_applied\n    then: []\n  -\n    name: b\n    whenn: payment_applied\n";
        let (file, problems) = parse_mapping_file("f.yaml", text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].line, 8, "{problems:?}");
        let names: Vec<String> = file.expect("reads").flows.iter().map(|f| f.name.value.clone()).collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn a_broken_binding_is_set_aside_too() {
        let text = "bindings:\n  - name: deals\n    connector: b24\n    record: deal\n    feilds: {}\n";
        let (file, problems) = parse_mapping_file("f.yaml", text);
        assert_eq!((problems.len(), problems[0].line, problems[0].column), (1, 5, 5), "{problems:?}");
        assert!(problems[0].message.contains("this binding is left out"), "{problems:?}");
        assert!(file.expect("reads").bindings.is_empty());
    }

    #[test]
    fn syntax_errors_and_problems_outside_the_lists_leave_the_file_out() {
        let bad_indentation = "flows:\n  - name: a\n    when: payment_applied\n    then:\n      - notify: { to: responsible, text: y }\n     - notify: { to: responsible, text: z }\n";
        let unknown_section = "flowz:\n  - name: a\n";
        for text in [bad_indentation, unknown_section] {
            let (file, problems) = parse_mapping_file("f.yaml", text);
            assert!(file.is_none(), "{text}");
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].line > 0, "{problems:?}");
        }
    }

    #[test]
    fn a_syntax_error_below_a_broken_flow_is_shown_too() {
        let text = "flows:\n  - name: a\n    whenn: payment_applied\n  - name: b\n    when: payment_applied\n    then:\n      - notify: { to: x, text: y }\n     - notify: { to: x, text: z }\n";
        let (file, problems) = parse_mapping_file("f.yaml", text);
        assert!(file.is_none());
        let lines: Vec<u32> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [3, 8], "{problems:?}");
    }

    #[test]
    fn a_file_that_reads_is_returned_as_it_is() {
        let (file, problems) = parse_mapping_file("f.yaml", "pipelines:\n  sales: [new]\n");
        assert!(problems.is_empty());
        assert_eq!(file.expect("reads").pipelines.len(), 1);
    }
}
