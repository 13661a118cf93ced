//! A call's response body, written as JSON by hand.
//!
//! After the call itself, writing its answer was the largest piece of a
//! small call's work: in a batch of `double` calls, serde's writer took
//! about a fifth of each call's instructions (callgrind), most of it
//! escaping the same dozen member names byte by byte and pushing every
//! piece through `io::Write`. This writer puts the fixed names in as they
//! are, numbers through `itoa`, and escapes only text that can need it.
//!
//! Every answer the server gives or stores (a response, a batch's
//! element, a job's result) is written here. The derived `Serialize` of
//! [`ExecResponse`] stays as the reference: the schema is read from its
//! attributes, and the tests below hold this writer to the same text for
//! every optional member.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::call::{ExecResponse, StatsBody};
use super::error::ApiError;
use super::json_text::{boolean, number, string, strings};

/// About what a small call's answer takes as JSON (results, types, and
/// stats with one module named): the buffer's first size.
pub const BYTES_PER_ANSWER: usize = 320;

impl ExecResponse {
    /// Appends this response's JSON to `out`: the text `serde_json` writes
    /// from the derived `Serialize`, member for member.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(b"{\"results\":[");
        for (i, value) in self.results.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(value.get().as_bytes());
        }
        out.extend_from_slice(b"],\"result_types\":");
        strings(out, self.result_types.iter().map(|name| name.as_ref()))?;
        if !self.memory.is_empty() {
            out.extend_from_slice(b",\"memory\":");
            serde_json::to_writer(&mut *out, &self.memory)?;
        }
        if let Some(code) = self.exit_code {
            out.extend_from_slice(b",\"exit_code\":");
            out.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
        }
        let output = &self.output;
        if let Some(text) = &output.stdout {
            out.extend_from_slice(b",\"stdout\":");
            string(out, text)?;
        }
        if let Some(text) = &output.stderr {
            out.extend_from_slice(b",\"stderr\":");
            string(out, text)?;
        }
        if let Some(truncated) = output.stdout_truncated {
            out.extend_from_slice(b",\"stdout_truncated\":");
            boolean(out, truncated);
        }
        if let Some(truncated) = output.stderr_truncated {
            out.extend_from_slice(b",\"stderr_truncated\":");
            boolean(out, truncated);
        }
        out.extend_from_slice(b",\"stats\":");
        self.stats.write_json(out)?;
        if let Some(passed) = self.passed {
            out.extend_from_slice(b",\"passed\":");
            boolean(out, passed);
        }
        if !self.diff.is_empty() {
            out.extend_from_slice(b",\"diff\":");
            serde_json::to_writer(&mut *out, &self.diff)?;
        }
        if let Some(runs) = &self.runs {
            out.extend_from_slice(b",\"runs\":");
            serde_json::to_writer(&mut *out, runs)?;
        }
        out.push(b'}');
        Ok(())
    }
}

impl StatsBody {
    /// Appends this object's JSON to `out`, as the derived `Serialize`
    /// writes it.
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(b"{\"fuel_consumed\":");
        number(out, self.fuel_consumed);
        if let Some(compile) = self.compile {
            out.extend_from_slice(b",\"compile\":");
            string(out, compile)?;
        }
        if let Some(us) = self.compile_us {
            out.extend_from_slice(b",\"compile_us\":");
            number(out, us);
        }
        out.extend_from_slice(b",\"instantiate_us\":");
        number(out, self.instantiate_us);
        out.extend_from_slice(b",\"call_us\":");
        number(out, self.call_us);
        out.extend_from_slice(b",\"wall_time_us\":");
        number(out, self.wall_time_us);
        out.extend_from_slice(b",\"tier\":");
        string(out, self.tier)?;
        if !self.limits_hit.is_empty() {
            out.extend_from_slice(b",\"limits_hit\":");
            strings(out, self.limits_hit.iter().copied())?;
        }
        out.extend_from_slice(b",\"memory_peak_bytes\":");
        number(out, self.memory_peak_bytes);
        if let Some(modules) = &self.modules.0 {
            out.extend_from_slice(b",\"modules\":");
            out.extend_from_slice(modules.as_bytes());
        }
        out.push(b'}');
        Ok(())
    }
}

/// A successful call's answer: `200` with its JSON.
impl IntoResponse for ExecResponse {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(BYTES_PER_ANSWER);
        match self.write_json(&mut body) {
            Ok(()) => json_response(body),
            Err(e) => ApiError::internal(format!("cannot write the call's answer: {e}")).into_response(),
        }
    }
}

/// `body`, which is JSON, as a `200` response.
pub fn json_response(body: Vec<u8>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::super::call::{Encoding, ExecResponse, MemoryReadOut, ModulesRan, OutputFields, StatsBody};
    use super::super::checks::{RunsBody, Spread};

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    fn stats(full: bool) -> StatsBody {
        StatsBody {
            fuel_consumed: u64::MAX,
            compile: full.then_some("compiled"),
            compile_us: full.then_some(1234),
            instantiate_us: 25,
            call_us: 0,
            wall_time_us: 233,
            tier: if full { "interpreter" } else { "compiled" },
            limits_hit: if full {
                vec!["memory", "table_elements"]
            } else {
                Vec::new()
            },
            memory_peak_bytes: 65536,
            modules: if full {
                ModulesRan::of("main", "ab12", [("utils", "cd34")])
            } else {
                ModulesRan::default()
            },
        }
    }

    /// Every optional member present, text that needs escaping in every
    /// string that can carry it.
    fn full() -> ExecResponse {
        ExecResponse {
            results: vec![raw("-7"), raw("\"NaN\""), raw("{\"externref\":3}"), raw("null")],
            result_types: vec![
                "i64".into(),
                "f32".into(),
                "externref".into(),
                "(ref null $t\"\\)".into(),
            ],
            memory: vec![MemoryReadOut {
                memory: Some("host:mem".into()),
                offset: 8,
                length: 4,
                encoding: Encoding::Utf8,
                data: "a\"b\n\u{1}é".into(),
            }],
            exit_code: Some(-3),
            output: OutputFields {
                stdout: Some("line \"one\"\n\ttab \\ \u{7f} ✓".into()),
                stderr: Some(String::new()),
                stdout_truncated: Some(true),
                stderr_truncated: Some(false),
            },
            stats: stats(true),
            passed: Some(false),
            diff: vec!["results[0]: expected 1, got \"2\"".into()],
            runs: Some(RunsBody {
                count: 3,
                wall_time_us: Spread::of(vec![3, 1, 2]),
                fuel_consumed: Spread::of(vec![5, 5, 5]),
            }),
        }
    }

    /// Every optional member absent.
    fn bare() -> ExecResponse {
        ExecResponse {
            results: Vec::new(),
            result_types: Vec::new(),
            memory: Vec::new(),
            exit_code: None,
            output: OutputFields::default(),
            stats: stats(false),
            passed: None,
            diff: Vec::new(),
            runs: None,
        }
    }

    /// A usual call: one result, compiled, one module.
    fn usual() -> ExecResponse {
        let mut response = bare();
        response.results = vec![raw("4")];
        response.result_types = vec!["i32".into()];
        response.stats.compile = Some("cached");
        response.stats.compile_us = Some(0);
        response.stats.modules = ModulesRan::of("double", "45eb", []);
        response.passed = Some(true);
        response
    }

    #[test]
    fn the_hand_writer_writes_what_serde_writes() {
        for response in [full(), bare(), usual()] {
            let reference = serde_json::to_string(&response).unwrap();
            let mut written = Vec::new();
            response.write_json(&mut written).unwrap();
            assert_eq!(String::from_utf8(written).unwrap(), reference);
        }
    }

    /// `stats.modules`, written by hand, is what serde writes of the list.
    #[test]
    fn the_modules_list_is_written_as_serde_writes_it() {
        use super::super::call::ModuleRan;
        let list = [("main", "ab12"), ("we\"ird\\name\n", "cd34"), ("utils", "ef56")];
        for n in 1..=list.len() {
            let first = list[0];
            let written = ModulesRan::of(first.0, first.1, list[1..n].iter().copied()).0.unwrap();
            let reference: Vec<ModuleRan> = list[..n]
                .iter()
                .map(|(name, sha)| ModuleRan {
                    name: name.to_string(),
                    sha256: sha.to_string(),
                })
                .collect();
            assert_eq!(&*written, serde_json::to_string(&reference).unwrap());
        }
    }

    #[test]
    fn text_that_needs_no_escaping_is_written_as_it_is_and_other_text_escaped() {
        for text in ["i32", "", "✓ é", "\u{7f}", "a\"b", "back\\slash", "nl\n", "\u{1f}"] {
            let mut out = Vec::new();
            super::string(&mut out, text).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(text).unwrap());
        }
    }
}
