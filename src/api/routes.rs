//! The resources under [`super::BASE`]: each route is registered with its `#[utoipa::path]`
//! documentation (`routes!`), so the served API and [`super::openapi::document`] come from
//! this one list (the document adds its own route).

use utoipa_axum::router::OpenApiRouter;

use super::state::AppState;

/// The ledger, download and WebSocket routes, relative to the API's base path.
pub fn resources() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(super::ledgers::routes())
        .merge(super::batches::routes())
        .merge(super::schedules::routes())
        .merge(super::webhooks::routes())
        .merge(super::download::routes())
        .merge(super::manifest::routes())
        .merge(super::ws::routes())
}
