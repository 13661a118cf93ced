//! Checks as graders need them: a call's `expected` outcome compared with
//! what it did (`passed`, with a short `diff`), and `runs`, the same call
//! repeated on fresh instances with its time and fuel summarized.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

/// What a call is expected to do. Every field given is compared; the rest
/// are not.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"results": [42]}))]
pub struct Expected {
    /// The results, written as the response writes them (`[42]`,
    /// `["NaN"]`, `["9007199254740993"]` or `[9007199254740993]`). Numbers
    /// are compared by value: `4` and `4.0` are the same.
    #[schema(value_type = Option<Vec<serde_json::Value>>)]
    results: Option<Vec<Value>>,
    /// A WASI program's whole standard output.
    stdout: Option<String>,
    /// A WASI program's whole standard error.
    stderr: Option<String>,
    /// A WASI program's exit status.
    exit_code: Option<i32>,
    /// The error code the call should fail with (`trap`,
    /// `limit_exceeded`, …), for a test that expects a failure.
    error: Option<String>,
}

/// What a call did, as far as a check looks.
pub struct Observed<'a> {
    pub results: &'a [Box<RawValue>],
    pub stdout: Option<&'a str>,
    pub stderr: Option<&'a str>,
    pub exit_code: Option<i32>,
    /// The error code, when the call failed.
    pub error: Option<&'a str>,
}

/// The outcome of a check: `passed`, and what differed (empty when it
/// passed), one short line per difference.
pub struct Verdict {
    pub passed: bool,
    pub diff: Vec<String>,
}

/// At most this many differences are listed: enough to act on, short
/// enough to read.
const MAX_DIFFS: usize = 8;

impl Expected {
    /// Compares `observed` with what was expected.
    pub fn check(&self, observed: &Observed<'_>) -> Verdict {
        let mut diff = Vec::new();
        match (&self.error, observed.error) {
            (Some(want), Some(got)) if want == got => {}
            (Some(want), Some(got)) => diff.push(format!("error: expected `{want}`, got `{got}`")),
            (Some(want), None) => diff.push(format!("error: expected `{want}`, but the call succeeded")),
            (None, Some(got)) => diff.push(format!("the call failed with `{got}`")),
            (None, None) => {}
        }
        if observed.error.is_none() {
            if let Some(want) = &self.results {
                compare_results(want, observed.results, &mut diff);
            }
            if let Some(want) = self.exit_code
                && observed.exit_code != Some(want)
            {
                match observed.exit_code {
                    Some(got) => diff.push(format!("exit_code: expected {want}, got {got}")),
                    None => diff.push(format!(
                        "exit_code: expected {want}, but the code is not a WASI program"
                    )),
                }
            }
        }
        // Output is compared after a failure too: a trap's output is kept.
        for (name, want, got) in [
            ("stdout", &self.stdout, observed.stdout),
            ("stderr", &self.stderr, observed.stderr),
        ] {
            if let Some(want) = want {
                compare_text(name, want, got.unwrap_or(""), &mut diff);
            }
        }
        diff.truncate(MAX_DIFFS);
        Verdict {
            passed: diff.is_empty(),
            diff,
        }
    }
}

fn compare_results(want: &[Value], got: &[Box<RawValue>], diff: &mut Vec<String>) {
    if want.len() != got.len() {
        diff.push(format!("results: expected {} values, got {}", want.len(), got.len()));
        return;
    }
    for (i, (want, got)) in want.iter().zip(got).enumerate() {
        let parsed: Value = serde_json::from_str(got.get()).unwrap_or(Value::Null);
        if !same(want, &parsed) {
            diff.push(format!("results[{i}]: expected {want}, got {}", got.get()));
        }
    }
}

/// Equal as JSON, numbers by value: integers exactly (as text, so 64-bit
/// values keep every digit), otherwise as doubles; a number and a string
/// holding the same integer (`"9007199254740993"`, how exact i64s may be
/// written) are equal too.
fn same(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Number(a), Value::Number(b)) => {
            a.to_string() == b.to_string() || (a.is_f64() || b.is_f64()) && a.as_f64() == b.as_f64()
        }
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => s.trim() == n.to_string(),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y)),
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        _ => want == got,
    }
}

/// The first line where `got` differs from `want`, or the difference in
/// line count, or that only line endings differ.
fn compare_text(name: &str, want: &str, got: &str, diff: &mut Vec<String>) {
    if want == got {
        return;
    }
    let (want_lines, got_lines): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    for (i, (w, g)) in want_lines.iter().zip(&got_lines).enumerate() {
        if w != g {
            diff.push(format!(
                "{name} line {}: expected {}, got {}",
                i + 1,
                short(w),
                short(g)
            ));
            return;
        }
    }
    let line = want_lines.len().min(got_lines.len()) + 1;
    diff.push(match (want_lines.get(line - 1), got_lines.get(line - 1)) {
        (Some(w), _) => format!("{name}: ends before line {line}, expected {}", short(w)),
        (None, Some(g)) => format!("{name}: has more than expected from line {line}: {}", short(g)),
        (None, None) => format!("{name}: the same lines, but the line endings or the final newline differ"),
    });
}

/// A line as a JSON string, cut to 80 characters.
fn short(line: &str) -> String {
    let cut: String = line.chars().take(80).collect();
    let more = if cut.len() < line.len() { "…" } else { "" };
    format!("{}{more}", Value::String(cut))
}

/// `runs`: how a call repeated on fresh instances went.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunsBody {
    /// Runs made (all of them unless one failed: the first failure ends
    /// the series and is the answer).
    pub count: usize,
    /// Each run's wall time, in microseconds.
    pub wall_time_us: Spread,
    /// Each run's fuel.
    pub fuel_consumed: Spread,
}

/// The smallest, median and largest of a series.
#[derive(Debug, Serialize, ToSchema)]
pub struct Spread {
    pub min: u64,
    pub median: u64,
    pub max: u64,
}

impl Spread {
    pub fn of(mut values: Vec<u64>) -> Self {
        values.sort_unstable();
        Spread {
            min: values.first().copied().unwrap_or(0),
            median: values.get(values.len() / 2).copied().unwrap_or(0),
            max: values.last().copied().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    fn observed<'a>(results: &'a [Box<RawValue>], stdout: Option<&'a str>) -> Observed<'a> {
        Observed {
            results,
            stdout,
            stderr: None,
            exit_code: None,
            error: None,
        }
    }

    #[test]
    fn numbers_compare_by_value_and_64_bit_integers_exactly() {
        let expected: Expected =
            serde_json::from_str(r#"{"results": [4, 4.0, "NaN", 9007199254740993, "18446744073709551615"]}"#).unwrap();
        let got = [
            raw("4.0"),
            raw("4"),
            raw("\"NaN\""),
            raw("9007199254740993"),
            raw("18446744073709551615"),
        ];
        let verdict = expected.check(&observed(&got, None));
        assert!(verdict.passed, "{:?}", verdict.diff);
        let off_by_one = [
            raw("4"),
            raw("4"),
            raw("\"NaN\""),
            raw("9007199254740992"),
            raw("18446744073709551615"),
        ];
        let verdict = expected.check(&observed(&off_by_one, None));
        assert_eq!(
            verdict.diff,
            vec!["results[3]: expected 9007199254740993, got 9007199254740992"]
        );
    }

    #[test]
    fn output_diffs_name_the_first_line_that_differs() {
        let expected: Expected = serde_json::from_str(r#"{"stdout": "a\nb\nc\n"}"#).unwrap();
        let verdict = expected.check(&observed(&[], Some("a\nB\nc\n")));
        assert_eq!(verdict.diff, vec![r#"stdout line 2: expected "b", got "B""#]);
        let verdict = expected.check(&observed(&[], Some("a\n")));
        assert_eq!(verdict.diff, vec![r#"stdout: ends before line 2, expected "b""#]);
        let verdict = expected.check(&observed(&[], Some("a\nb\nc")));
        assert_eq!(
            verdict.diff,
            vec!["stdout: the same lines, but the line endings or the final newline differ"]
        );
    }

    #[test]
    fn an_expected_error_passes_only_on_that_error() {
        let expected: Expected = serde_json::from_str(r#"{"error": "trap"}"#).unwrap();
        let mut failed = observed(&[], None);
        failed.error = Some("trap");
        assert!(expected.check(&failed).passed);
        failed.error = Some("limit_exceeded");
        assert_eq!(
            expected.check(&failed).diff,
            vec!["error: expected `trap`, got `limit_exceeded`"]
        );
        assert!(!expected.check(&observed(&[], None)).passed);
    }

    #[test]
    fn spreads_take_the_median_of_the_sorted_series() {
        let spread = Spread::of(vec![9, 1, 5, 3, 7]);
        assert_eq!((spread.min, spread.median, spread.max), (1, 5, 9));
    }
}
