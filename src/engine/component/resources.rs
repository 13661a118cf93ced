//! The resources a live component instance has handed out, by the numbers
//! JSON names them with.
//!
//! A resource (`own<counter>`) is a handle into the instance's own tables:
//! it means nothing outside the store it was made in. A one-shot call has
//! nowhere to keep one, so only live instances carry them: a result of a
//! resource type is kept here and answered as `{"resource": N}`, and a later
//! call on the same instance passes it back by that number. Passing it as a
//! `borrow<…>` lends it for the call; passing it as an `own<…>` gives it to
//! the callee, and the number is gone. The numbers count up from 1 and are
//! never reused within an instance, so a stale number can never reach a
//! newer resource.

use std::collections::BTreeMap;

use wasmtime::component::{ResourceAny, ResourceType};

/// The resources one instance holds for its client.
#[derive(Default)]
pub struct Handles {
    last: u64,
    live: BTreeMap<u64, ResourceAny>,
    /// Numbers passed as `own<…>` in the call being prepared: gone once the
    /// call has been made (the callee owns them then), kept if it never is.
    moving: Vec<u64>,
}

impl Handles {
    /// Keeps `resource`, answering the number it is known by from now on.
    pub fn keep(&mut self, resource: ResourceAny) -> u64 {
        self.last += 1;
        self.live.insert(self.last, resource);
        self.last
    }

    /// The resource `number`, for a param of resource type `ty` (moved to
    /// the callee when `owned`), or why it cannot be passed.
    pub fn lend(&mut self, number: u64, ty: ResourceType, owned: bool) -> Result<ResourceAny, String> {
        let Some(resource) = self.live.get(&number) else {
            return Err(format!(
                "this instance holds no resource {number} (it holds {}); a resource passed as `own` is gone after \
                 that call",
                self.listing()
            ));
        };
        if resource.ty() != ty {
            return Err(format!(
                "resource {number} is not of the resource type this param takes"
            ));
        }
        if owned {
            if self.moving.contains(&number) {
                return Err(format!("resource {number} is given away twice in one call"));
            }
            self.moving.push(number);
        }
        Ok(*resource)
    }

    /// After the call was made: the resources given away are the callee's.
    pub fn moved(&mut self) {
        for number in self.moving.drain(..) {
            self.live.remove(&number);
        }
    }

    /// The call was not made: the resources stay.
    pub fn kept(&mut self) {
        self.moving.clear();
    }

    /// Removes the resource `number`, for dropping it.
    pub fn take(&mut self, number: u64) -> Option<ResourceAny> {
        self.live.remove(&number)
    }

    /// The numbers of the resources held, in order.
    pub fn numbers(&self) -> Vec<u64> {
        self.live.keys().copied().collect()
    }

    fn listing(&self) -> String {
        if self.live.is_empty() {
            return "none".into();
        }
        self.live.keys().map(u64::to_string).collect::<Vec<_>>().join(", ")
    }
}
