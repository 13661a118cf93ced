//! The exports an instance's calls have looked up.

/// Exported functions an instance has been called through, so that calling
/// one again (a live instance's next call, a batch's next call on a shared
/// instance, a spare instance's next request) skips looking the export up: wasmtime's lookup was a few
/// percent of a small call. A handful at most; a `Func` is valid for as
/// long as its store.
#[derive(Default)]
pub(crate) struct Funcs(Vec<(Box<str>, wasmtime::Func)>);

impl Funcs {
    /// Most functions kept; calls of others look theirs up each time.
    const MAX: usize = 8;

    pub fn get(&self, name: &str) -> Option<wasmtime::Func> {
        self.0.iter().find(|(n, _)| &**n == name).map(|(_, f)| *f)
    }

    pub fn keep(&mut self, name: &str, func: wasmtime::Func) {
        if self.0.len() < Self::MAX {
            self.0.push((name.into(), func));
        }
    }
}
