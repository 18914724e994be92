//! Checks people, teams, the calendar and settings, and builds their plan
//! form.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveTime, Timelike};

use crate::flow::plan::{AssignmentRule, Person, Team, WorkingCalendar};
use crate::mapping::diagnostic::Diagnostics;
use crate::mapping::merge::MergedSpec;
use crate::mapping::spec::AssignmentRuleSpec;

/// Default longest flow cascade, when `settings` does not say.
pub const DEFAULT_MAX_CASCADE_DEPTH: u32 = 8;

pub(crate) fn people(spec: &MergedSpec, diags: &mut Diagnostics) -> Vec<Person> {
    // (connector instance, system user id) → first person that claimed it.
    let mut claimed: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    let mut people = Vec::new();
    for (id, def) in &spec.people {
        let person = &def.spec;
        if let Some(supervisor) = &person.supervisor {
            if supervisor.value == *id {
                diags.error(&def.at(supervisor), format!("`{id}` cannot supervise themselves"));
            } else if !spec.people.contains_key(supervisor.as_str()) {
                diags.error(&def.at(supervisor), format!("unknown person `{}` as supervisor", supervisor.value));
            }
        }
        for (connector, user_id) in &person.ids {
            if let Some(other) = claimed.insert((connector.as_str(), user_id.as_str()), id.as_str()) {
                diags.error(
                    &def.at(connector),
                    format!("user id `{user_id}` of `{}` already belongs to `{other}`", connector.value),
                );
            }
        }
        people.push(Person {
            id: id.clone(),
            name: person.name.clone(),
            system_ids: person.ids.iter().map(|(k, v)| (k.value.clone(), v.clone())).collect(),
            supervisor: person.supervisor.as_ref().map(|s| s.value.clone()),
            flags: person.flags.clone(),
        });
    }
    people
}

pub(crate) fn teams(spec: &MergedSpec, diags: &mut Diagnostics) -> Vec<Team> {
    let mut teams = Vec::new();
    for (id, def) in &spec.teams {
        if def.spec.members.is_empty() {
            diags.error(&def.span(), format!("team `{id}` has no members"));
        }
        for member in &def.spec.members {
            if !spec.people.contains_key(member.as_str()) {
                diags.error(&def.at(member), format!("unknown person `{}` in team `{id}`", member.value));
            }
        }
        let rule = match def.spec.assign {
            AssignmentRuleSpec::RoundRobin => AssignmentRule::RoundRobin,
            AssignmentRuleSpec::LeastLoaded => AssignmentRule::LeastLoaded,
        };
        teams.push(Team { id: id.clone(), members: def.spec.members.iter().map(|m| m.value.clone()).collect(), rule });
    }
    teams
}

pub(crate) fn calendar(spec: &MergedSpec, diags: &mut Diagnostics) -> Option<WorkingCalendar> {
    let (file, calendar) = spec.calendar.as_ref()?;
    if calendar.timezone.parse::<chrono_tz::Tz>().is_err() {
        diags.error(
            &calendar.timezone.span(file),
            format!("unknown time zone `{}`; write an IANA name such as Europe/Moscow", calendar.timezone.value),
        );
    }
    let working_days = match &calendar.working_days {
        None => vec![1, 2, 3, 4, 5],
        Some(days) => days
            .iter()
            .filter_map(|day| {
                let number = weekday_number(day);
                if number.is_none() {
                    diags.error(&day.span(file), format!("`{}` is not a weekday; write mon … sun", day.value));
                }
                number
            })
            .collect(),
    };
    let (start, end) = match working_hours(&calendar.hours) {
        Ok(hours) => hours,
        Err(message) => {
            diags.error(&calendar.hours.span(file), message);
            (0, 0)
        }
    };
    let mut dates = |list: &Vec<crate::mapping::spec::Name>| -> Vec<NaiveDate> {
        list.iter()
            .filter_map(|d| match NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d") {
                Ok(date) => Some(date),
                Err(_) => {
                    diags.error(&d.span(file), format!("`{}` is not a date; write YYYY-MM-DD", d.value));
                    None
                }
            })
            .collect()
    };
    let holidays = dates(&calendar.holidays);
    let extra_working_days = dates(&calendar.working_weekends);
    Some(WorkingCalendar {
        timezone: calendar.timezone.value.clone(),
        working_days,
        day_start_minute: start,
        day_end_minute: end,
        holidays,
        extra_working_days,
    })
}

pub(crate) fn max_cascade_depth(spec: &MergedSpec, diags: &mut Diagnostics) -> u32 {
    match spec.settings.as_ref().and_then(|(file, s)| s.max_cascade_depth.map(|d| (file, s, d))) {
        Some((file, settings, 0)) => {
            diags.error(&settings.span(file), "`max_cascade_depth` must be at least 1");
            DEFAULT_MAX_CASCADE_DEPTH
        }
        Some((_, _, depth)) => depth,
        None => DEFAULT_MAX_CASCADE_DEPTH,
    }
}

fn weekday_number(day: &str) -> Option<u8> {
    let names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let lower = day.trim().to_lowercase();
    names.iter().position(|n| lower.starts_with(n) && n.len() <= lower.len()).map(|i| i as u8 + 1)
}

/// Parses `HH:MM-HH:MM` into minutes after midnight.
fn working_hours(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("`{text}` is not working hours; write e.g. \"09:00-18:00\"");
    let (from, to) = text.split_once('-').ok_or_else(bad)?;
    let minutes = |t: &str| -> Result<u16, String> {
        let time = NaiveTime::parse_from_str(t.trim(), "%H:%M").map_err(|_| bad())?;
        u16::try_from(time.hour() * 60 + time.minute()).map_err(|_| bad())
    };
    let (start, end) =
        (minutes(from)?, minutes(to.trim()).or_else(|e| if to.trim() == "24:00" { Ok(1440) } else { Err(e) })?);
    if start >= end {
        return Err(format!("working hours `{text}` end before they start"));
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_hours_parse() {
        assert_eq!(working_hours("09:00-18:00").unwrap(), (540, 1080));
        assert_eq!(working_hours("00:00-24:00").unwrap(), (0, 1440));
        assert!(working_hours("18:00-09:00").is_err());
        assert!(working_hours("9-18").is_err());
    }

    #[test]
    fn weekdays_parse() {
        assert_eq!(weekday_number("Mon"), Some(1));
        assert_eq!(weekday_number("sunday"), Some(7));
        assert_eq!(weekday_number("mo"), None);
    }
}
