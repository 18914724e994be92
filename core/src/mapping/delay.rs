//! Delays as admins write them: `3d`, `4h`, `30m`, `4 working hours`,
//! `2 working days`, `today`.

use crate::flow::plan::{Delay, DelayUnit};

/// Parses a delay. `today` is zero working days: due by the end of the
/// current working day.
pub fn parse_delay(raw: &str) -> Result<Delay, String> {
    let text = raw.trim().to_lowercase();
    if text == "today" {
        return Ok(Delay { amount: 0, unit: DelayUnit::Days, working: true });
    }
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, rest) = text.split_at(digits_end);
    let amount: u32 = number.parse().map_err(|_| explain(raw))?;
    let mut words = rest.split_whitespace();
    let mut unit_word = words.next().ok_or_else(|| explain(raw))?;
    let working = unit_word == "working";
    if working {
        unit_word = words.next().ok_or_else(|| explain(raw))?;
    }
    if words.next().is_some() {
        return Err(explain(raw));
    }
    let unit = match unit_word {
        "m" | "min" | "mins" | "minute" | "minutes" => DelayUnit::Minutes,
        "h" | "hour" | "hours" => DelayUnit::Hours,
        "d" | "day" | "days" => DelayUnit::Days,
        _ => return Err(explain(raw)),
    };
    Ok(Delay { amount, unit, working })
}

fn explain(raw: &str) -> String {
    format!("`{raw}` is not a delay; write e.g. `3d`, `4h`, `30m`, `4 working hours`, `2 working days` or `today`")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delay(amount: u32, unit: DelayUnit, working: bool) -> Delay {
        Delay { amount, unit, working }
    }

    #[test]
    fn short_and_long_forms() {
        assert_eq!(parse_delay("3d").unwrap(), delay(3, DelayUnit::Days, false));
        assert_eq!(parse_delay("4h").unwrap(), delay(4, DelayUnit::Hours, false));
        assert_eq!(parse_delay("30m").unwrap(), delay(30, DelayUnit::Minutes, false));
        assert_eq!(parse_delay("4 working hours").unwrap(), delay(4, DelayUnit::Hours, true));
        assert_eq!(parse_delay("2 working days").unwrap(), delay(2, DelayUnit::Days, true));
        assert_eq!(parse_delay(" 1 Day ").unwrap(), delay(1, DelayUnit::Days, false));
        assert_eq!(parse_delay("today").unwrap(), delay(0, DelayUnit::Days, true));
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in ["", "d", "3", "3 weeks", "working 3 days", "3 working", "-1d", "3 working days later", "1.5h"] {
            assert!(parse_delay(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
