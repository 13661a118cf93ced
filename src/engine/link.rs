//! Checking a module's imports against the exports of its host modules.
//!
//! A module may import only from the registered modules it lists as host
//! modules, and only what they export. There are no host functions: an
//! import nothing satisfies is an error here, before any guest code runs,
//! with a message that names the import and what was expected.

use std::cell::RefCell;
use std::sync::Arc;

use wasmtime::{ExternType, Mutability};

use super::compile::{CompiledModule, Sha256Digest};
use super::error::EngineError;
use super::types::describe_with_kind as describe;
use super::wasi::WASI_MODULE;

/// A registered module taking part in an execution, under its registry name.
#[derive(Clone)]
pub struct LinkedModule {
    /// The registry name, which is also the import module name others use.
    pub name: String,
    pub compiled: Arc<CompiledModule>,
}

/// Whether an export's limits fit an import's: at least the import's
/// minimum, and within its maximum if it has one (the spec's rule).
fn limits_fit(have_min: u64, have_max: Option<u64>, want_min: u64, want_max: Option<u64>) -> bool {
    have_min >= want_min
        && match (want_max, have_max) {
            (None, _) => true,
            (Some(want), Some(have)) => have <= want,
            (Some(_), None) => false,
        }
}

/// Whether an export of type `have` satisfies an import of type `want`.
fn satisfies(have: &ExternType, want: &ExternType) -> bool {
    match (want, have) {
        (ExternType::Func(want), ExternType::Func(have)) => have.matches(want),
        (ExternType::Memory(want), ExternType::Memory(have)) => {
            have.is_64() == want.is_64()
                && have.is_shared() == want.is_shared()
                && have.page_size() == want.page_size()
                && limits_fit(have.minimum(), have.maximum(), want.minimum(), want.maximum())
        }
        (ExternType::Table(want), ExternType::Table(have)) => {
            have.is_64() == want.is_64()
                && have.element().matches(want.element())
                && want.element().matches(have.element())
                && limits_fit(have.minimum(), have.maximum(), want.minimum(), want.maximum())
        }
        (ExternType::Global(want), ExternType::Global(have)) => {
            have.mutability() == want.mutability()
                && match want.mutability() {
                    Mutability::Const => have.content().matches(want.content()),
                    Mutability::Var => have.content().matches(want.content()) && want.content().matches(have.content()),
                }
        }
        // Tags need the exceptions proposal; leave their check to wasmtime.
        (ExternType::Tag(_), ExternType::Tag(_)) => true,
        _ => false,
    }
}

/// What an import check needs of a module, whichever tier holds it: the
/// compiled module, or the interpreter's (whose types are shown as
/// wasmtime's, so that messages read the same).
pub(crate) trait Linkable {
    /// Each import: module, name and type, in the binary's order.
    fn import_list(&self) -> Vec<(String, String, ExternType)>;
    /// The type of the export `name`, if there is one.
    fn export_type(&self, name: &str) -> Option<ExternType>;
    /// Every export's name, in the binary's order.
    fn export_names(&self) -> Vec<String>;
    /// How messages name the module that provides imports under `name`.
    fn shown_as(&self, name: &str) -> String {
        format!("host module `{name}`")
    }
}

impl Linkable for CompiledModule {
    fn import_list(&self) -> Vec<(String, String, ExternType)> {
        self.module()
            .imports()
            .map(|i| (i.module().to_string(), i.name().to_string(), i.ty()))
            .collect()
    }

    fn export_type(&self, name: &str) -> Option<ExternType> {
        self.module().get_export(name)
    }

    fn export_names(&self) -> Vec<String> {
        self.module().exports().map(|e| e.name().to_string()).collect()
    }
}

/// What a live instance exports, with the types its exports have now: a
/// memory or table's minimum is its current size, which is what an import
/// is matched against (the spec's rule for linking to a running instance).
pub(crate) struct LiveExports {
    /// How messages name the instance.
    pub label: String,
    pub exports: Vec<(String, ExternType)>,
}

impl Linkable for LiveExports {
    fn import_list(&self) -> Vec<(String, String, ExternType)> {
        Vec::new()
    }

    fn export_type(&self, name: &str) -> Option<ExternType> {
        self.exports.iter().find(|(n, _)| n == name).map(|(_, t)| t.clone())
    }

    fn export_names(&self) -> Vec<String> {
        self.exports.iter().map(|(n, _)| n.clone()).collect()
    }

    fn shown_as(&self, _name: &str) -> String {
        self.label.clone()
    }
}

/// Checks that every import of `module` (called `who` in messages) is an
/// export of matching kind and type of one of `hosts`, by the spec's import
/// matching rules, so that a mismatch is reported at registration with both
/// types shown rather than at every later call. (Wasmtime checks again at
/// instantiation; a memory grown past its declared minimum only fits better.)
///
/// The answer depends only on the module's code and its hosts' names and
/// code, so each thread remembers the last few links it found sound
/// ([`PASSED`]) and answers them again without looking: inline code that
/// links host modules is checked on every request, and the check (which
/// asks wasmtime for every import's and export's type) was a tenth of the
/// origin's linking example once its instances were kept.
pub fn check_imports(who: &str, module: &CompiledModule, hosts: &[LinkedModule]) -> Result<(), EngineError> {
    if passed_before(module, hosts) {
        return Ok(());
    }
    let linkable: Vec<(&str, &dyn Linkable)> = hosts
        .iter()
        .map(|h| (h.name.as_str(), &*h.compiled as &dyn Linkable))
        .collect();
    check_linkable(who, module, &linkable)?;
    remember_passed(module, hosts);
    Ok(())
}

/// Links a thread remembers as sound.
const REMEMBERED: usize = 8;

/// A sound link: the module's SHA-256, and each host's name and SHA-256.
type Link = (Sha256Digest, Box<[(String, Sha256Digest)]>);

thread_local! {
    /// The links this thread found sound last, replaced in turn.
    static PASSED: RefCell<(Vec<Link>, usize)> = const { RefCell::new((Vec::new(), 0)) };
}

/// Whether `linked` (each host module's name and SHA-256, in link order)
/// is exactly `graph`: the same modules, by name and code, in the same
/// order. Both what a thread remembers of sound links and what a kept
/// instance remembers of its graph are matched so.
pub(crate) fn same_graph<'a>(
    linked: impl ExactSizeIterator<Item = (&'a str, &'a Sha256Digest)>,
    graph: &[LinkedModule],
) -> bool {
    linked.len() == graph.len()
        && linked
            .zip(graph)
            .all(|((name, sha), node)| name == node.name && sha == node.compiled.sha256())
}

/// Whether this thread found `module` linked to `hosts` sound lately.
fn passed_before(module: &CompiledModule, hosts: &[LinkedModule]) -> bool {
    let same = |link: &Link| {
        link.0 == *module.sha256() && same_graph(link.1.iter().map(|(name, sha)| (name.as_str(), sha)), hosts)
    };
    PASSED
        .try_with(|passed| passed.borrow().0.iter().any(same))
        .unwrap_or(false)
}

/// Remembers that `module` linked to `hosts` is sound, in place of the
/// link remembered longest.
fn remember_passed(module: &CompiledModule, hosts: &[LinkedModule]) {
    let link: Link = (
        *module.sha256(),
        hosts.iter().map(|h| (h.name.clone(), *h.compiled.sha256())).collect(),
    );
    let _ = PASSED.try_with(|passed| {
        let (links, next) = &mut *passed.borrow_mut();
        if links.len() < REMEMBERED {
            links.push(link);
        } else {
            links[*next] = link;
            *next = (*next + 1) % REMEMBERED;
        }
    });
}

/// [`check_imports`] for either tier's modules.
pub(crate) fn check_linkable(
    who: &str,
    module: &dyn Linkable,
    hosts: &[(&str, &dyn Linkable)],
) -> Result<(), EngineError> {
    let unlinked = |import_module: &str| {
        let listed = if hosts.is_empty() {
            "it lists no host modules".to_string()
        } else {
            let names: Vec<&str> = hosts.iter().map(|(name, _)| *name).collect();
            format!("its host modules are [{}]", names.join(", "))
        };
        format!(
            "no host module named `{import_module}` is linked ({listed}); register a module under that name and list it in host_modules"
        )
    };
    check_linkable_with(who, module, hosts, &unlinked)
}

/// [`check_linkable`] with the message for an import whose module no host
/// provides given by `unlinked` (it says what the caller may do about it).
pub(crate) fn check_linkable_with(
    who: &str,
    module: &dyn Linkable,
    hosts: &[(&str, &dyn Linkable)],
    unlinked: &dyn Fn(&str) -> String,
) -> Result<(), EngineError> {
    for (import_module, import_name, wanted) in module.import_list() {
        // WASI imports are the host's; they were resolved against the WASI
        // linker when the module was compiled.
        if import_module == WASI_MODULE {
            continue;
        }
        let shown = || format!("`{import_module}`.`{import_name}` ({})", describe(&wanted));
        let Some((host_name, host)) = hosts.iter().find(|(name, _)| *name == import_module) else {
            return Err(EngineError::Link(format!(
                "{who} imports {}, but {}",
                shown(),
                unlinked(&import_module)
            )));
        };
        let Some(found) = host.export_type(&import_name) else {
            let exports = host.export_names();
            return Err(EngineError::Link(format!(
                "{who} imports {}, but {} has no export named `{import_name}` (it exports: {})",
                shown(),
                host.shown_as(host_name),
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            )));
        };
        if !satisfies(&found, &wanted) {
            return Err(EngineError::Link(format!(
                "{who} imports {}, but {} exports `{import_name}` as {}",
                shown(),
                host.shown_as(host_name),
                describe(&found)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::compile::from_wat;

    /// A sound link is remembered; an unsound one never is, and a link to
    /// other host code is looked at afresh.
    #[test]
    fn only_sound_links_are_remembered() {
        let engine = wasmtime::Engine::default();
        let root = from_wat(
            &engine,
            r#"(module (import "utils" "double" (func (param i32) (result i32))))"#,
        );
        let host = |wat: &str| LinkedModule {
            name: "utils".into(),
            compiled: from_wat(&engine, wat),
        };
        let good = [host(
            r#"(module (func (export "double") (param i32) (result i32) (local.get 0)))"#,
        )];
        let bad = [host(
            r#"(module (func (export "double") (param i64) (result i64) (local.get 0)))"#,
        )];
        assert!(!passed_before(&root, &good));
        check_imports("the module", &root, &good).unwrap();
        assert!(passed_before(&root, &good), "a sound link is remembered");
        for _ in 0..2 {
            let error = check_imports("the module", &root, &bad).unwrap_err().to_string();
            assert!(error.contains("exports `double` as"), "{error}");
            assert!(!passed_before(&root, &bad), "an unsound link is not remembered");
        }
        let renamed = [LinkedModule {
            name: "other".into(),
            compiled: good[0].compiled.clone(),
        }];
        assert!(
            check_imports("the module", &root, &renamed).is_err(),
            "the same code under another name"
        );
    }
}
