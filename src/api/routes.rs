//! A router that remembers what it serves.
//!
//! Every endpoint is added through [`Routes::add`], which records its method
//! and path template beside the axum route. The OpenAPI test compares that
//! list with the document, so an endpoint cannot be served undocumented (or
//! documented and not served) without a failing test.

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, on};

use super::state::AppState;

/// An axum router plus the `(method, path)` of each route in it.
#[derive(Default)]
pub struct Routes {
    router: Router<AppState>,
    served: Vec<(Method, &'static str)>,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `handler` for `method` on `path`.
    ///
    /// # Panics
    /// On a method axum cannot route (only standard methods are used here).
    pub fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a standard HTTP method");
        self.router = self.router.route(path, on(filter, handler));
        self.served.push((method, path));
        self
    }

    /// Adds every route of `other`.
    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.served.extend(other.served);
        self
    }

    /// The routes served, in the order they were added.
    pub fn served(&self) -> &[(Method, &'static str)] {
        &self.served
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}
