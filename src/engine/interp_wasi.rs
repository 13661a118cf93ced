//! WASI preview 1 on the interpreter tier: the calls that a program whose
//! world is arguments, environment variables and stdio needs, answered as
//! the compiled tier (wasmtime-wasi's preview 1) answers them in the world
//! this server gives a program: no preopened directories, no host files,
//! stdin from the request's bytes, stdout and stderr kept up to the cap.
//!
//! "As the compiled tier answers" covers the errno values (`EBADF` for a
//! descriptor that is not open, `ESPIPE` for seeking stdio, `ENOTDIR` for
//! naming a stdio descriptor as a directory), the order of checks (the iovecs are read before the
//! descriptor is looked up), the layout of what is written back, which
//! iovec is used (the first non-empty one, as wasmtime does), and traps for
//! pointers out of bounds or misaligned and for enum or flags values out of
//! range (the same `wiggle::GuestError`, shown the same way, see
//! `classify::guest_error_trap`). A module that
//! imports any other WASI function, or one of these with another signature,
//! is not run here: it goes to the compiled tier ([`supports`]).

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmi::{Caller, Linker, ValType};
use wiggle::{GuestError, Region};

use super::classify::guest_error_trap;
use super::error::EngineError;
use super::wasi::{CappedOutput, WASI_MODULE, WasiConfig, WasiOutput};

/// WASI errno values (preview 1).
mod errno {
    pub const SUCCESS: i32 = 0;
    pub const BADF: i32 = 8;
    pub const INTR: i32 = 27;
    pub const NOTDIR: i32 = 54;
    pub const SPIPE: i32 = 70;
    pub const ILSEQ: i32 = 25;
}

/// `fd_fdstat_get` rights: what stdin and stdout/stderr allow.
const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_WRITE: u64 = 1 << 6;

use ValType::{I32, I64};

/// The functions this tier provides, with their signatures.
const FUNCTIONS: &[(&str, &[ValType], &[ValType])] = &[
    ("args_get", &[I32, I32], &[I32]),
    ("args_sizes_get", &[I32, I32], &[I32]),
    ("environ_get", &[I32, I32], &[I32]),
    ("environ_sizes_get", &[I32, I32], &[I32]),
    ("fd_write", &[I32, I32, I32, I32], &[I32]),
    ("fd_read", &[I32, I32, I32, I32], &[I32]),
    ("fd_close", &[I32], &[I32]),
    ("fd_seek", &[I32, I64, I32, I32], &[I32]),
    ("fd_fdstat_get", &[I32, I32], &[I32]),
    ("fd_fdstat_set_flags", &[I32, I32], &[I32]),
    ("fd_prestat_get", &[I32, I32], &[I32]),
    ("fd_prestat_dir_name", &[I32, I32, I32], &[I32]),
    ("path_open", &[I32, I32, I32, I32, I32, I64, I64, I32, I32], &[I32]),
    ("proc_exit", &[I32], &[]),
    ("clock_time_get", &[I32, I64, I32], &[I32]),
    ("clock_res_get", &[I32, I32], &[I32]),
    ("random_get", &[I32, I32], &[I32]),
    ("sched_yield", &[], &[I32]),
];

/// Whether every WASI import of `module` is one of [`FUNCTIONS`], with its
/// signature, and the module exports the `memory` those calls use. (Its
/// other imports come from host modules, checked when it is linked.)
pub(crate) fn supports(module: &wasmi::Module) -> bool {
    let mut wasi = module.imports().filter(|i| i.module() == WASI_MODULE).peekable();
    if wasi.peek().is_none() {
        return true;
    }
    let memory = matches!(module.get_export("memory"), Some(wasmi::ExternType::Memory(_)));
    memory
        && wasi.all(|import| {
            let wasmi::ExternType::Func(ty) = import.ty() else {
                return false;
            };
            FUNCTIONS.iter().any(|(name, params, results)| {
                *name == import.name() && ty.params() == *params && ty.results() == *results
            })
        })
}

/// Why a WASI call stopped the program.
pub(crate) enum Halt {
    /// `proc_exit` with this status: a normal end.
    Exit(i32),
    /// A failure, reported as the compiled tier reports it.
    Failed(EngineError),
}

/// One program's WASI world.
pub(crate) struct WasiWorld {
    /// `argv`, the program's name first.
    args: Vec<Vec<u8>>,
    /// `KEY=VALUE` entries, in key order as the compiled tier gives them.
    env: Vec<(Vec<u8>, Vec<u8>)>,
    stdin: Vec<u8>,
    stdin_at: usize,
    stdout: CappedOutput,
    stderr: CappedOutput,
    /// Whether stdin, stdout and stderr are still open.
    open: [bool; 3],
    started: Instant,
    pub(crate) halt: Option<Halt>,
}

impl WasiWorld {
    pub(crate) fn new(config: WasiConfig, output_cap: usize) -> Self {
        let mut args = vec![config.program.into_bytes()];
        args.extend(config.args.into_iter().map(String::into_bytes));
        let env: BTreeMap<String, String> = config.env;
        WasiWorld {
            args,
            env: env.into_iter().map(|(k, v)| (k.into_bytes(), v.into_bytes())).collect(),
            stdin: config.stdin,
            stdin_at: 0,
            stdout: CappedOutput::new(output_cap),
            stderr: CappedOutput::new(output_cap),
            open: [true; 3],
            started: Instant::now(),
            halt: None,
        }
    }

    /// What was written since the last call.
    pub(crate) fn take_output(&self) -> WasiOutput {
        WasiOutput::take(&self.stdout, &self.stderr)
    }

    fn is_open(&self, fd: i32) -> bool {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.open.get(i).copied())
            .unwrap_or(false)
    }
}

/// Store state that carries a WASI world.
pub(crate) trait HasWasi {
    fn wasi(&mut self) -> Option<&mut WasiWorld>;
}

/// Guest memory as wiggle checks it: bounds first, then alignment.
struct Guest<'a>(&'a mut [u8]);

impl Guest<'_> {
    fn range(&self, start: u32, len: u32, align: u32) -> Result<std::ops::Range<usize>, GuestError> {
        let region = Region { start, len };
        let end = (start as usize)
            .checked_add(len as usize)
            .ok_or(GuestError::PtrOverflow)?;
        if end > self.0.len() {
            return Err(GuestError::PtrOutOfBounds(region));
        }
        if !start.is_multiple_of(align) {
            return Err(GuestError::PtrNotAligned(region, align));
        }
        Ok(start as usize..end)
    }

    fn read_u32(&self, at: u32) -> Result<u32, GuestError> {
        let r = self.range(at, 4, 4)?;
        Ok(u32::from_le_bytes(self.0[r].try_into().unwrap_or_default()))
    }

    fn write_u8(&mut self, at: u32, value: u8) -> Result<(), GuestError> {
        let r = self.range(at, 1, 1)?;
        self.0[r][0] = value;
        Ok(())
    }

    fn write_u16(&mut self, at: u32, value: u16) -> Result<(), GuestError> {
        let r = self.range(at, 2, 2)?;
        self.0[r].copy_from_slice(&value.to_le_bytes());
        Ok(())
    }

    fn write_u32(&mut self, at: u32, value: u32) -> Result<(), GuestError> {
        let r = self.range(at, 4, 4)?;
        self.0[r].copy_from_slice(&value.to_le_bytes());
        Ok(())
    }

    fn write_u64(&mut self, at: u32, value: u64) -> Result<(), GuestError> {
        let r = self.range(at, 8, 8)?;
        self.0[r].copy_from_slice(&value.to_le_bytes());
        Ok(())
    }

    /// Writes `bytes` at `at`; returns the address just past them.
    fn write_bytes(&mut self, at: u32, bytes: &[u8]) -> Result<u32, GuestError> {
        let len = u32::try_from(bytes.len()).map_err(|_| GuestError::PtrOverflow)?;
        let r = self.range(at, len, 1)?;
        self.0[r].copy_from_slice(bytes);
        at.checked_add(len).ok_or(GuestError::PtrOverflow)
    }

    fn bytes(&self, at: u32, len: u32) -> Result<&[u8], GuestError> {
        let r = self.range(at, len, 1)?;
        Ok(&self.0[r])
    }

    /// The first non-empty buffer of the iovec array at `iovs` (each
    /// `{buf: u32, len: u32}`), or an empty one: wasmtime reads and writes
    /// only that buffer per call, and so does this tier.
    fn first_buffer(&self, iovs: u32, count: u32) -> Result<(u32, u32), GuestError> {
        for i in 0..count {
            let at = i
                .checked_mul(8)
                .and_then(|o| iovs.checked_add(o))
                .ok_or(GuestError::PtrOverflow)?;
            let buf = self.read_u32(at)?;
            let len = self.read_u32(at.checked_add(4).ok_or(GuestError::PtrOverflow)?)?;
            if len != 0 {
                return Ok((buf, len));
            }
        }
        Ok((0, 0))
    }
}

/// The outcome of a WASI function: an errno for the guest, or a stop.
type Answer = Result<i32, Halt>;

/// `at + n` as wiggle computes a field's address: overflow is an error.
fn offset(at: u32, n: u32) -> Result<u32, Halt> {
    at.checked_add(n).ok_or_else(|| trap(GuestError::PtrOverflow))
}

fn trap(error: GuestError) -> Halt {
    Halt::Failed(guest_error_trap(&error))
}

/// A value outside the enum named `name`: a trap, as on the compiled tier.
fn bad_enum(name: &'static str) -> Halt {
    trap(GuestError::InvalidEnumValue(name))
}

/// Bits outside the flags type named `name`: a trap, as on the compiled tier.
fn bad_flags(name: &'static str) -> Halt {
    trap(GuestError::InvalidFlagValue(name))
}

/// Runs `body` with the guest's memory and WASI world; a stop is recorded in
/// the world and ends the call with a host error (see `interp::run_sliced`).
fn with_world<T: HasWasi>(
    caller: &mut Caller<'_, T>,
    body: impl FnOnce(&mut Guest<'_>, &mut WasiWorld) -> Answer,
) -> Result<i32, wasmi::Error> {
    // `supports` made sure the module exports its memory.
    let Some(memory) = caller.get_export("memory").and_then(wasmi::Extern::into_memory) else {
        return Err(wasmi::Error::new("the module exports no memory for WASI"));
    };
    let (data, state) = memory.data_and_store_mut(&mut *caller);
    let Some(world) = state.wasi() else {
        return Err(wasmi::Error::new("no WASI world"));
    };
    match body(&mut Guest(data), world) {
        Ok(errno) => Ok(errno),
        Err(halt) => {
            world.halt = Some(halt);
            Err(wasmi::Error::new("WASI stopped the program"))
        }
    }
}

/// Writes `items` as a pointer array at `list` and NUL-terminated strings
/// at `buf` (`args_get`, `environ_get`).
fn write_list(guest: &mut Guest<'_>, list: u32, buf: u32, items: &[Vec<u8>]) -> Answer {
    let (mut list, mut buf) = (list, buf);
    for item in items {
        guest.write_u32(list, buf).map_err(trap)?;
        list = list.checked_add(4).ok_or(GuestError::PtrOverflow).map_err(trap)?;
        buf = guest.write_bytes(buf, item).map_err(trap)?;
        guest.write_u8(buf, 0).map_err(trap)?;
        buf = buf.checked_add(1).ok_or(GuestError::PtrOverflow).map_err(trap)?;
    }
    Ok(errno::SUCCESS)
}

/// Writes a `(count, total bytes)` pair of sizes, the second first, as
/// wasmtime's bindings do.
fn write_sizes(guest: &mut Guest<'_>, count_at: u32, size_at: u32, count: usize, size: usize) -> Answer {
    guest.write_u32(size_at, size as u32).map_err(trap)?;
    guest.write_u32(count_at, count as u32).map_err(trap)?;
    Ok(errno::SUCCESS)
}

fn env_entries(world: &WasiWorld) -> Vec<Vec<u8>> {
    world
        .env
        .iter()
        .map(|(k, v)| [k.as_slice(), b"=", v.as_slice()].concat())
        .collect()
}

/// Defines [`FUNCTIONS`] in `linker`.
pub(crate) fn add_to_linker<T: HasWasi + 'static>(linker: &mut Linker<T>) -> Result<(), wasmi::Error> {
    let m = WASI_MODULE;
    linker.func_wrap(m, "args_sizes_get", |mut c: Caller<'_, T>, count: i32, size: i32| {
        with_world(&mut c, |g, w| {
            let total = w.args.iter().map(|a| a.len() + 1).sum();
            write_sizes(g, count as u32, size as u32, w.args.len(), total)
        })
    })?;
    linker.func_wrap(m, "args_get", |mut c: Caller<'_, T>, list: i32, buf: i32| {
        with_world(&mut c, |g, w| write_list(g, list as u32, buf as u32, &w.args))
    })?;
    linker.func_wrap(m, "environ_sizes_get", |mut c: Caller<'_, T>, count: i32, size: i32| {
        with_world(&mut c, |g, w| {
            let entries = env_entries(w);
            let total = entries.iter().map(|e| e.len() + 1).sum();
            write_sizes(g, count as u32, size as u32, entries.len(), total)
        })
    })?;
    linker.func_wrap(m, "environ_get", |mut c: Caller<'_, T>, list: i32, buf: i32| {
        with_world(&mut c, |g, w| write_list(g, list as u32, buf as u32, &env_entries(w)))
    })?;
    linker.func_wrap(
        m,
        "fd_write",
        |mut c: Caller<'_, T>, fd: i32, iovs: i32, count: i32, written: i32| {
            with_world(&mut c, |g, w| {
                let (buf, len) = g.first_buffer(iovs as u32, count as u32).map_err(trap)?;
                let out = match fd {
                    1 if w.open[1] => &w.stdout,
                    2 if w.open[2] => &w.stderr,
                    _ => return Ok(errno::BADF),
                };
                out.push(g.bytes(buf, len).map_err(trap)?);
                g.write_u32(written as u32, len).map_err(trap)?;
                Ok(errno::SUCCESS)
            })
        },
    )?;
    linker.func_wrap(
        m,
        "fd_read",
        |mut c: Caller<'_, T>, fd: i32, iovs: i32, count: i32, read: i32| {
            with_world(&mut c, |g, w| {
                let (buf, len) = g.first_buffer(iovs as u32, count as u32).map_err(trap)?;
                if fd != 0 || !w.open[0] {
                    return Ok(errno::BADF);
                }
                let left = &w.stdin[w.stdin_at..];
                if len == 0 && !left.is_empty() {
                    return Ok(errno::INTR);
                }
                let n = left.len().min(len as usize);
                w.stdin_at += n;
                let bytes = w.stdin[w.stdin_at - n..w.stdin_at].to_vec();
                g.write_bytes(buf, &bytes).map_err(trap)?;
                g.write_u32(read as u32, n as u32).map_err(trap)?;
                Ok(errno::SUCCESS)
            })
        },
    )?;
    linker.func_wrap(m, "fd_close", |mut c: Caller<'_, T>, fd: i32| {
        with_world(&mut c, |_, w| {
            if !w.is_open(fd) {
                return Ok(errno::BADF);
            }
            w.open[fd as usize] = false;
            Ok(errno::SUCCESS)
        })
    })?;
    linker.func_wrap(
        m,
        "fd_seek",
        |mut c: Caller<'_, T>, fd: i32, _offset: i64, whence: i32, _at: i32| {
            with_world(&mut c, |_, w| {
                if !(0..=2).contains(&whence) {
                    return Err(bad_enum("Whence"));
                }
                Ok(if w.is_open(fd) { errno::SPIPE } else { errno::BADF })
            })
        },
    )?;
    linker.func_wrap(m, "fd_fdstat_get", |mut c: Caller<'_, T>, fd: i32, at: i32| {
        with_world(&mut c, |g, w| {
            if !w.is_open(fd) {
                return Ok(errno::BADF);
            }
            let rights = if fd == 0 { RIGHT_FD_READ } else { RIGHT_FD_WRITE };
            let at = at as u32;
            // `fdstat`: filetype (unknown: not a terminal), flags, rights
            // base and inheriting, each field checked as it is written.
            g.write_u8(at, 0).map_err(trap)?;
            g.write_u16(offset(at, 2)?, 0).map_err(trap)?;
            g.write_u64(offset(at, 8)?, rights).map_err(trap)?;
            g.write_u64(offset(at, 16)?, rights).map_err(trap)?;
            Ok(errno::SUCCESS)
        })
    })?;
    // Flags may change on files only, and no file is ever open.
    linker.func_wrap(
        m,
        "fd_fdstat_set_flags",
        |mut c: Caller<'_, T>, _fd: i32, flags: i32| {
            with_world(&mut c, |_, _| {
                if flags as u32 & !0x1f != 0 {
                    return Err(bad_flags("Fdflags"));
                }
                Ok(errno::BADF)
            })
        },
    )?;
    // No directory is ever preopened.
    linker.func_wrap(m, "fd_prestat_get", |mut c: Caller<'_, T>, _fd: i32, _at: i32| {
        with_world(&mut c, |_, _| Ok(errno::BADF))
    })?;
    linker.func_wrap(
        m,
        "fd_prestat_dir_name",
        |mut c: Caller<'_, T>, fd: i32, _path: i32, _len: i32| {
            with_world(&mut c, |_, w| {
                Ok(if w.is_open(fd) { errno::NOTDIR } else { errno::BADF })
            })
        },
    )?;
    linker.func_wrap(
        m,
        "path_open",
        |mut c: Caller<'_, T>,
         _dirfd: i32,
         dirflags: i32,
         path: i32,
         path_len: i32,
         oflags: i32,
         base: i64,
         inheriting: i64,
         fdflags: i32,
         _opened: i32| {
            with_world(&mut c, |g, _| {
                // Flag values are checked first, in the order of the
                // params, then the path is read; no descriptor is a directory.
                if dirflags as u32 & !1 != 0 {
                    return Err(bad_flags("Lookupflags"));
                }
                if oflags as u32 & !0xf != 0 {
                    return Err(bad_flags("Oflags"));
                }
                if base as u64 >> 29 != 0 || inheriting as u64 >> 29 != 0 {
                    return Err(bad_flags("Rights"));
                }
                if fdflags as u32 & !0x1f != 0 {
                    return Err(bad_flags("Fdflags"));
                }
                let path = g.bytes(path as u32, path_len as u32).map_err(trap)?;
                if std::str::from_utf8(path).is_err() {
                    return Ok(errno::ILSEQ);
                }
                Ok(errno::BADF)
            })
        },
    )?;
    linker.func_wrap(m, "proc_exit", |mut c: Caller<'_, T>, status: i32| {
        // Any status, as the compiled tier's `wasi::define_proc_exit`.
        with_world(&mut c, |_, _| Err(Halt::Exit(status))).map(|_| ())
    })?;
    linker.func_wrap(
        m,
        "clock_time_get",
        |mut c: Caller<'_, T>, id: i32, _precision: i64, at: i32| {
            with_world(&mut c, |g, w| {
                let now = match id {
                    0 => SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64),
                    1 => w.started.elapsed().as_nanos() as u64,
                    2 | 3 => return Ok(errno::BADF),
                    _ => return Err(bad_enum("Clockid")),
                };
                g.write_u64(at as u32, now).map_err(trap)?;
                Ok(errno::SUCCESS)
            })
        },
    )?;
    linker.func_wrap(m, "clock_res_get", |mut c: Caller<'_, T>, id: i32, at: i32| {
        with_world(&mut c, |g, _| {
            match id {
                0 | 1 => {}
                2 | 3 => return Ok(errno::BADF),
                _ => return Err(bad_enum("Clockid")),
            }
            g.write_u64(at as u32, 1).map_err(trap)?;
            Ok(errno::SUCCESS)
        })
    })?;
    linker.func_wrap(m, "random_get", |mut c: Caller<'_, T>, buf: i32, len: i32| {
        with_world(&mut c, |g, _| {
            // Checked before the bytes are made, so a length past the end
            // of memory costs no allocation (the same error as after).
            let range = g.range(buf as u32, len as u32, 1).map_err(trap)?;
            getrandom::fill(&mut g.0[range])
                .map_err(|e| Halt::Failed(EngineError::Internal(format!("no randomness: {e}"))))?;
            Ok(errno::SUCCESS)
        })
    })?;
    linker.func_wrap(m, "sched_yield", |mut c: Caller<'_, T>| {
        with_world(&mut c, |_, _| Ok(errno::SUCCESS))
    })?;
    Ok(())
}
