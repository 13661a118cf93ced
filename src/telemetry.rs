//! Logging: a lean line format that carries the request id, written to
//! stdout through a buffer that a background thread flushes.
//!
//! Why not tracing-subscriber's default format and writer: measured on the
//! hot path, the request log cost a `write` syscall per request (stdout is
//! line-buffered), a per-request span (its fields are formatted into a
//! string when the span is made), a styling pass through `nu_ansi_term`
//! even with colours off, and a calendar timestamp; together about as much
//! CPU as a whole `GET /healthz` of a bare server. Here the request id sits
//! in a thread-local while the request's future is polled ([`in_request`]),
//! where the formatter reads it, so every line logged while a request is
//! handled carries it without a span; lines go into the logging thread's
//! own buffer (no syscall, no lock shared with other threads; see
//! [`log_buffer`](crate::log_buffer)), which a thread writes out, all
//! threads' lines merged in time order, every [`FLUSH_EVERY`] or when one
//! passes [`FLUSH_BYTES`]. At exit, [`flush`] writes what is left. On a
//! terminal lines are written at once: a person watching wants them now.

use std::cell::RefCell;
use std::fmt;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

pub use crate::log_buffer::{FLUSH_BYTES, FLUSH_EVERY, flush};

thread_local! {
    /// The id of the request this thread is working for, while it is.
    static REQUEST_ID: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f` with the id in `id` as the request id of every line it logs.
///
/// The id is moved in for the call and back out after it (also when `f`
/// panics), so a future can carry its request's id and lend it to each of
/// its polls, as `api::logging`'s front future does. This is what tokio's
/// `task_local!` scope does, without its wrapping future: that wrapper
/// moved the whole request future once more and cost a few hundred
/// instructions per request.
pub fn in_request<R>(id: &mut Option<String>, f: impl FnOnce() -> R) -> R {
    /// Puts the id back into the caller's slot and what was in scope
    /// before back into scope.
    struct Restore<'a> {
        slot: &'a mut Option<String>,
        outer: Option<String>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            *self.slot = REQUEST_ID.replace(self.outer.take());
        }
    }
    let outer = REQUEST_ID.replace(id.take());
    let _restore = Restore { slot: id, outer };
    f()
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stdout().is_terminal();
    BUFFERED.store(!terminal, Ordering::Relaxed);
    if !terminal {
        std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    flush();
                }
            })
            .ok();
    }
    // A second init (as in tests) is harmless; ignore the error.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .event_format(LineFormat)
        .with_writer(Stdout { buffered: !terminal })
        .try_init();
}

/// Whether lines go through [`log_buffer`](crate::log_buffer) (stdout is
/// not a terminal; set by [`init`]) or straight to stdout.
static BUFFERED: AtomicBool = AtomicBool::new(false);

/// Hands one whole line (or several) to stdout: into this thread's log
/// buffer, or (`buffered` false) straight to stdout.
fn emit(bytes: &[u8], buffered: bool) -> std::io::Result<()> {
    if !buffered {
        return std::io::stdout().lock().write_all(bytes);
    }
    crate::log_buffer::append(bytes);
    Ok(())
}

/// The writer factory: one [`Line`] per event.
struct Stdout {
    buffered: bool,
}

impl<'a> MakeWriter<'a> for Stdout {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            buffered: self.buffered,
        }
    }
}

/// Where one formatted line goes. tracing-subscriber hands a line over in
/// one `write_all`, which our `write` takes whole, so lines from different
/// threads never interleave; a buffered line goes straight into
/// this thread's log buffer, with no buffer of its own.
struct Line {
    buffered: bool,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        emit(bytes, self.buffered)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `2026-11-30T12:00:00.123456Z  INFO request_id=ID: message key=value…`
struct LineFormat;

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        // Written into a plain `String` and handed over whole: `Writer`
        // is a `dyn fmt::Write`, and each of a line's twenty-odd pieces
        // through it was a call of its own.
        with_line(|line| {
            write_line(line, event);
            writer.write_str(line)
        })
    }
}

/// Runs `f` on this thread's line buffer, emptied.
fn with_line<R>(f: impl FnOnce(&mut String) -> R) -> R {
    thread_local! {
        /// The line being written, kept from one line to the next.
        static LINE: RefCell<String> = RefCell::new(String::with_capacity(256));
    }
    LINE.with(|kept| {
        let mut kept = kept.try_borrow_mut();
        // An event logged while a line is being written (by a field's
        // `Debug`) gets a line of its own.
        let mut own = String::new();
        let line = match kept.as_deref_mut() {
            Ok(kept) => {
                kept.clear();
                kept
            }
            Err(_) => &mut own,
        };
        f(line)
    })
}

/// Writes `event` as one line.
fn write_line(line: &mut String, event: &Event<'_>) {
    write_head(line, *event.metadata().level(), SystemTime::now());
    // Fields are written by a visitor of our own rather than through
    // `ctx.field_format()`: tracing-subscriber's default visitor formats
    // every value through `Debug` with padding and style checks, which
    // was most of the log line's cost.
    event.record(&mut Fields { line: &mut *line });
    line.push('\n');
}

/// Writes what starts every line: the time, the level and the request id
/// in scope, if any.
fn write_head(line: &mut String, level: Level, now: SystemTime) {
    timestamp(line, now);
    // The level right-aligned in five columns, without a formatter.
    line.push_str(match level {
        Level::ERROR => " ERROR ",
        Level::WARN => "  WARN ",
        Level::INFO => "  INFO ",
        Level::DEBUG => " DEBUG ",
        Level::TRACE => " TRACE ",
    });
    REQUEST_ID.with_borrow(|id| {
        if let Some(id) = id {
            line.push_str("request_id=");
            line.push_str(id);
            line.push_str(": ");
        }
    });
}

/// An answered request, as its line says it (see [`request_line`]).
pub struct RequestLine<'a> {
    pub level: Level,
    /// `request served`, `request refused` or `request failed`.
    pub message: &'static str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// The error code of a refusal or failure.
    pub code: Option<&'a str>,
    pub micros: u64,
}

/// Writes a request's line: the line a tracing event with these fields
/// would make, in the same format and to the same output, but without
/// going through tracing. The front writes one for every request, and
/// tracing's dispatch (the subscriber stack, the layer's own buffer, the
/// field visitor) cost about as much as the rest of the line. The caller
/// asks tracing whether the line's level is enabled (`tracing::enabled!`),
/// so `RUST_LOG` filters it as before.
pub fn request_line(request: &RequestLine<'_>) {
    with_line(|line| {
        write_request_line(line, request, SystemTime::now());
        let _ = emit(line.as_bytes(), BUFFERED.load(Ordering::Relaxed));
    })
}

fn write_request_line(line: &mut String, request: &RequestLine<'_>, now: SystemTime) {
    write_head(line, request.level, now);
    line.push_str(request.message);
    push_str_field(line, "method", request.method);
    push_str_field(line, "path", request.path);
    push_u64_field(line, "status", u64::from(request.status));
    if let Some(code) = request.code {
        push_str_field(line, "code", code);
    }
    push_u64_field(line, "micros", request.micros);
    line.push('\n');
}

/// ` key=value` for a string: bare when [`is_bare`], else quoted and
/// escaped (`Debug`).
fn push_str_field(line: &mut String, key: &str, value: &str) {
    push_key(line, key);
    push_str_value(line, value);
}

fn push_u64_field(line: &mut String, key: &str, value: u64) {
    push_key(line, key);
    line.push_str(itoa::Buffer::new().format(value));
}

fn push_key(line: &mut String, key: &str) {
    line.push(' ');
    line.push_str(key);
    line.push('=');
}

fn push_str_value(line: &mut String, value: &str) {
    if is_bare(value) {
        line.push_str(value);
    } else {
        // Writing into a `String` cannot fail.
        let _ = write!(line, "{value:?}");
    }
}

/// Writes the time now as RFC 3339 in UTC with microseconds
/// (`2026-11-30T12:00:00.123456Z`). The calendar part is worked out once a
/// second per thread: every request logs a line, and the calendar
/// arithmetic and its formatting were a tenth of the line's cost.
fn timestamp(line: &mut String, now: SystemTime) {
    thread_local! {
        /// The whole second last written, and its text up to the seconds.
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != since.as_secs() {
            *second = since.as_secs();
            // `…T12:00:00Z` without its `Z`.
            *text = humantime::format_rfc3339_seconds(now).to_string();
            text.pop();
        }
        line.push_str(text)
    });
    let mut digits = itoa::Buffer::new();
    let micros = digits.format(since.subsec_micros());
    line.push_str(&".000000"[..7 - micros.len()]);
    line.push_str(micros);
    line.push('Z');
}

/// Whether a string field is written as it is (logfmt's bare value):
/// printable ASCII without spaces, quotes, backslashes or `=`. Others are
/// quoted and escaped. Most values (methods, paths, error codes) are bare,
/// and writing them at once spares the per-character escaping `Debug`
/// does.
fn is_bare(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'='))
}

/// Writes an event's message, then ` key=value` for each other field:
/// strings bare when [`is_bare`], else quoted and escaped (`Debug`);
/// numbers and `%`-values as they are.
struct Fields<'a> {
    line: &'a mut String,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        if field.name() != "message" {
            push_key(self.line, field.name());
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.line.push_str(value);
        } else {
            push_str_field(self.line, field.name(), value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        push_u64_field(self.line, field.name(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        let _ = write!(self.line, "{value:?}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    /// The cached calendar part and the written microseconds make the
    /// text humantime makes, within a second and across seconds.
    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_100_000);
        for offset_us in [0, 5, 999_999, 1_000_000, 1_000_007, 86_400_123_456, 86_400_623_456] {
            let at = base + Duration::from_micros(offset_us);
            let mut written = String::new();
            super::timestamp(&mut written, at);
            assert_eq!(written, humantime::format_rfc3339_micros(at).to_string());
        }
    }

    /// A request line written directly is, after its timestamp, the line
    /// the same fields make as a tracing event through [`super::LineFormat`]:
    /// with and without an error code, with a path that needs quoting, with
    /// and without a request id in scope.
    #[test]
    fn a_request_line_is_the_line_its_event_would_make() {
        use std::io::Write;
        use std::sync::{Arc, Mutex};

        use super::{RequestLine, in_request, write_request_line};
        use tracing::Level;

        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .event_format(super::LineFormat)
                .with_writer(move || writer.clone())
                .finish(),
        );
        let cases = [
            (Some("abc-0000000001".to_string()), "GET", "/healthz", 200, None, 17),
            (None, "POST", "/modules/nope", 404, Some("module_not_found"), 250),
            (Some("x".to_string()), "GET", "/a b\"c", 500, Some("internal"), 0),
        ];
        for (id, method, path, status, code, micros) in cases {
            captured.0.lock().unwrap().clear();
            let (level, message) = match code {
                Some(_) if status >= 500 => (Level::ERROR, "request failed"),
                Some(_) => (Level::INFO, "request refused"),
                None => (Level::INFO, "request served"),
            };
            let (mut slot, mut direct) = (id.clone(), String::new());
            in_request(&mut slot, || {
                tracing::dispatcher::with_default(&dispatch, || match (level, code) {
                    (Level::ERROR, Some(code)) => {
                        tracing::error!(message = "request failed", method, path, status, code, micros)
                    }
                    (_, Some(code)) => {
                        tracing::info!(message = "request refused", method, path, status, code, micros)
                    }
                    _ => tracing::info!(message = "request served", method, path, status, micros),
                });
                let line = RequestLine {
                    level,
                    message,
                    method,
                    path,
                    status,
                    code,
                    micros,
                };
                write_request_line(&mut direct, &line, SystemTime::now());
            });
            let through_tracing = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
            // `…T12:00:00.123456Z` is 27 characters.
            assert_eq!(direct[27..], through_tracing[27..], "{id:?} {path}");
            assert!(
                direct.ends_with('\n') && direct.matches('\n').count() == 1,
                "{direct:?}"
            );
        }
    }

    /// Values a logfmt reader takes as they are stay bare; anything with a
    /// space, quote, backslash, `=` or control character is quoted.
    #[test]
    fn only_plain_values_are_written_bare() {
        for bare in ["GET", "/modules/a.b-c_d", "module_not_found"] {
            assert!(super::is_bare(bare), "{bare}");
        }
        for quoted in ["", "a b", "say \"hi\"", "a\\b", "k=v", "line\nbreak", "é"] {
            assert!(!super::is_bare(quoted), "{quoted:?}");
        }
    }
}
