//! Parameters several routes share, documented once: the `{id}` of a ledger's path, and
//! how it is read.

use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use super::ApiError;
use crate::domain::LedgerId;

/// The path of every `/ledgers/{id}…` route, as written: handlers take `Path<LedgerIdPath>`
/// and list it in `params(…)`, its one documentation. [`ledger_id`] reads it.
#[derive(serde::Deserialize)]
pub(super) struct LedgerIdPath {
    /// The ledger id as written in the path.
    pub(super) id: String,
}

impl utoipa::IntoParams for LedgerIdPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::from(Parameter::new("id"))
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The ledger id"))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[1-9][0-9]{0,18}$")),
                ))
                .example(Some(serde_json::json!("383687767063789568")))
                .build(),
        ]
    }
}

/// The ledger id of a path. A decimal id of the documented form (`^[1-9][0-9]{0,18}$`) that
/// does not fit in 63 bits is well-formed: no ledger has it, so it is a 404, not a 400.
pub(super) fn ledger_id(raw: &str) -> Result<LedgerId, ApiError> {
    raw.parse::<LedgerId>().map_err(|e| {
        let documented = (1..=19).contains(&raw.len())
            && !raw.starts_with('0')
            && raw.bytes().all(|b| b.is_ascii_digit());
        if documented {
            ApiError::NotFound("no such ledger")
        } else {
            ApiError::Validation(e)
        }
    })
}
