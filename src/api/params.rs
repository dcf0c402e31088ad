//! Parameters several routes share, documented once: the `{id}` of a ledger's path, and
//! how it is read.

use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use std::collections::HashMap;

use super::ApiError;
use crate::domain::InvalidInput;
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
    snowflake_id(raw, "no such ledger")
}

/// Largest page of a list.
pub(super) const MAX_LIMIT: u32 = 200;
/// Page size when none is asked for.
pub(super) const DEFAULT_LIMIT: u32 = 50;

/// The `limit` of a list: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub(super) fn page_limit(params: &HashMap<String, String>) -> Result<u32, InvalidInput> {
    match params.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| InvalidInput::new("limit", format!("expected 1 to {MAX_LIMIT}"))),
    }
}

/// A page size and cursor of a list, with no other parameter but `extra`.
pub(super) fn paging<C: std::str::FromStr>(
    params: &HashMap<String, String>,
    extra: &[&str],
) -> Result<(u32, Option<C>), InvalidInput> {
    if let Some(unknown) = params
        .keys()
        .find(|k| !["limit", "cursor"].contains(&k.as_str()) && !extra.contains(&k.as_str()))
    {
        return Err(InvalidInput::new(
            unknown.clone(),
            "unknown query parameter",
        ));
    }
    let limit = page_limit(params)?;
    let cursor = params
        .get("cursor")
        .map(|c| super::ledgers::decode_cursor::<C>(c))
        .transpose()?;
    Ok((limit, cursor))
}

/// Whether `raw` has the documented form of an id, `^[1-9][0-9]{0,18}$` (it may still not fit
/// in 63 bits: then nothing has it).
pub(super) fn documented_id(raw: &str) -> bool {
    (1..=19).contains(&raw.len())
        && !raw.starts_with('0')
        && raw.bytes().all(|b| b.is_ascii_digit())
}

/// A request that takes no query parameter: the first one given is a 400 naming it.
pub(super) fn no_query(params: &HashMap<String, String>) -> Result<(), ApiError> {
    match params.keys().next() {
        Some(unknown) => Err(InvalidInput::new(unknown.clone(), "unknown query parameter").into()),
        None => Ok(()),
    }
}

/// The id of a path (a ledger's, a batch's, a schedule's: Snowflakes all). A decimal id of
/// the documented form (`^[1-9][0-9]{0,18}$`) that does not fit in 63 bits is well-formed:
/// nothing has it, so it is a 404 (`missing`), not a 400.
pub(super) fn snowflake_id<T: std::str::FromStr<Err = crate::domain::InvalidInput>>(
    raw: &str,
    missing: &'static str,
) -> Result<T, ApiError> {
    raw.parse::<T>().map_err(|e| {
        if documented_id(raw) {
            ApiError::NotFound(missing)
        } else {
            ApiError::Validation(e)
        }
    })
}
