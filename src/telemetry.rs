//! Logging: a lean line format that carries the request id, written to
//! stdout through a buffer that a background thread flushes.
//!
//! Why not tracing-subscriber's default format and writer: measured on the
//! hot path, the request log cost a `write` syscall per request (stdout is
//! line-buffered), a per-request span (its fields are formatted into a
//! string when the span is made), a styling pass through `nu_ansi_term`
//! even with colours off, and a calendar timestamp; together about as much
//! CPU as a whole `GET /healthz` of a bare server. Here the request id sits
//! in a task-local ([`with_request_id`]) that the formatter reads, so every
//! line logged while a request is handled carries it without a span; lines
//! go into one buffer (one lock, no syscall), which a thread writes out
//! every [`FLUSH_EVERY`] or when it passes [`FLUSH_BYTES`]. At exit,
//! [`flush`] writes what is left. On a terminal lines are written at once:
//! a person watching wants them now.

use std::fmt;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// How often buffered lines are written out.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// A buffer this large is written out at once by the thread that filled it.
pub const FLUSH_BYTES: usize = 256 * 1024;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `future` with `id` as the request id of every line it logs.
pub async fn with_request_id<F: Future>(id: String, future: F) -> F::Output {
    REQUEST_ID.scope(id, future).await
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stdout().is_terminal();
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

/// Lines waiting to be written to stdout.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Writes every buffered line to stdout.
pub fn flush() {
    let lines = {
        let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_empty() {
            return;
        }
        std::mem::take(&mut *pending)
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&lines);
    let _ = out.flush();
}

/// The writer factory: one [`Line`] per event.
struct Stdout {
    buffered: bool,
}

impl<'a> MakeWriter<'a> for Stdout {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            text: Vec::with_capacity(256),
            buffered: self.buffered,
        }
    }
}

/// One formatted line; handed over whole when dropped, so lines from
/// different threads never interleave.
struct Line {
    text: Vec<u8>,
    buffered: bool,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.buffered {
            let _ = std::io::stdout().lock().write_all(&self.text);
            return;
        }
        let full = {
            let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
            pending.extend_from_slice(&self.text);
            pending.len() >= FLUSH_BYTES
        };
        if full {
            flush();
        }
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
        timestamp(&mut writer, SystemTime::now())?;
        // The level right-aligned in five columns, without a formatter.
        writer.write_str(match *event.metadata().level() {
            tracing::Level::ERROR => " ERROR ",
            tracing::Level::WARN => "  WARN ",
            tracing::Level::INFO => "  INFO ",
            tracing::Level::DEBUG => " DEBUG ",
            tracing::Level::TRACE => " TRACE ",
        })?;
        let _ = REQUEST_ID.try_with(|id| {
            writer.write_str("request_id=")?;
            writer.write_str(id)?;
            writer.write_str(": ")
        });
        // Fields are written by a visitor of our own rather than through
        // `ctx.field_format()`: tracing-subscriber's default visitor formats
        // every value through `Debug` with padding and style checks, which
        // was most of the log line's cost.
        let mut fields = Fields {
            writer: writer.by_ref(),
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writeln!(writer)
    }
}

/// Writes the time now as RFC 3339 in UTC with microseconds
/// (`2026-11-30T12:00:00.123456Z`). The calendar part is worked out once a
/// second per thread: every request logs a line, and the calendar
/// arithmetic and its formatting were a tenth of the line's cost.
fn timestamp(writer: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    thread_local! {
        /// The whole second last written, and its text up to the seconds.
        static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let since = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != since.as_secs() {
            *second = since.as_secs();
            // `…T12:00:00Z` without its `Z`.
            *text = humantime::format_rfc3339_seconds(now).to_string();
            text.pop();
        }
        writer.write_str(text)
    })?;
    let mut digits = itoa::Buffer::new();
    let micros = digits.format(since.subsec_micros());
    writer.write_char('.')?;
    for _ in micros.len()..6 {
        writer.write_char('0')?;
    }
    writer.write_str(micros)?;
    writer.write_char('Z')
}

/// Writes an event's message, then ` key=value` for each other field:
/// strings quoted and escaped (`Debug`), numbers and `%`-values as they are.
struct Fields<'a> {
    writer: Writer<'a>,
    result: fmt::Result,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        if field.name() == "message" {
            return Ok(());
        }
        self.writer.write_char(' ')?;
        self.writer.write_str(field.name())?;
        self.writer.write_char('=')
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = if field.name() == "message" {
                self.writer.write_str(value)
            } else {
                self.key(field).and_then(|()| write!(self.writer, "{value:?}"))
            };
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.result.is_ok() {
            let mut digits = itoa::Buffer::new();
            self.result = self
                .key(field)
                .and_then(|()| self.writer.write_str(digits.format(value)));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.result.is_ok() {
            let mut digits = itoa::Buffer::new();
            self.result = self
                .key(field)
                .and_then(|()| self.writer.write_str(digits.format(value)));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| write!(self.writer, "{value:?}"));
        }
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
            super::timestamp(&mut written, at).unwrap();
            assert_eq!(written, humantime::format_rfc3339_micros(at).to_string());
        }
    }
}
