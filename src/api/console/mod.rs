//! The web console (SPEC §14): a page served by the api role at `/v1/api/ledger/console/`,
//! every asset embedded in the binary (air-gapped, no CDN, no front-end toolchain: plain
//! HTML, CSS and JavaScript modules under `assets/`). It talks to the same API as any
//! client, with the token the user pastes (kept in the tab's `sessionStorage`, sent in the
//! `Authorization` header and as the WebSocket's first frame, never in a URL), so it can
//! show nothing the token could not read itself.
//!
//! Every answer carries a strict Content-Security-Policy: scripts, styles, images and
//! connections from this origin only, no inline script or style, no `eval`, no framing.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};

use super::error::ApiError;
use super::state::AppState;

/// The policy of every console answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file: its name under `console/`, its media type, its bytes.
struct Asset {
    name: &'static str,
    kind: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $kind:literal) => {
        Asset {
            name: $name,
            kind: $kind,
            bytes: include_bytes!(concat!("assets/", $name)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("ui.js", "text/javascript; charset=utf-8"),
    asset!("live.js", "text/javascript; charset=utf-8"),
    asset!("ledgers.js", "text/javascript; charset=utf-8"),
    asset!("more.js", "text/javascript; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
];

/// Each asset's strong ETag (its SHA-256), so a browser revalidates instead of downloading.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.bytes))[..32]))
        .collect()
});

/// The console's routes, relative to the API's base path (not part of the OpenAPI
/// document: they serve a page, not the API).
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("console/") }),
        )
        .route("/console/", get(index))
        .route("/console/settings.json", get(settings))
        .route("/console/{file}", get(file))
}

/// The headers of every console answer.
fn guarded(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn index(request: HeaderMap) -> Response {
    serve(0, &request)
}

async fn file(Path(name): Path<String>, request: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.name == name) {
        Some(i) => serve(i, &request),
        None => guarded(ApiError::NotFound("no such file in the console").into_response()),
    }
}

fn serve(i: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(asset.kind))],
            asset.bytes,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, v);
    }
    guarded(response)
}

/// What the page needs to know of this service before sign-in.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Settings {
    /// Tokens are signed by this service's own dev key (the embedded default): the sign-in
    /// page says how to mint one with `ledger token`.
    dev_tokens: bool,
}

async fn settings(State(state): State<AppState>) -> Response {
    guarded(
        axum::Json(Settings {
            dev_tokens: state.dev_tokens,
        })
        .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_loads_is_embedded_and_no_script_is_inline() {
        let index = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        for tag in index.split("<script").skip(1) {
            let end = tag.find('>').unwrap();
            assert!(
                tag[..end].contains(" src="),
                "an inline script: <script{}>",
                &tag[..end]
            );
            assert!(tag[end + 1..].trim_start().starts_with("</script>"));
        }
        assert!(!index.contains("style="), "no inline style");
        assert!(!index.contains("<style"), "no inline style");
        // Every module an asset imports is served.
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let name = line.split("\"./").nth(1).and_then(|r| r.split('"').next());
                let name = name.unwrap_or_else(|| panic!("{}: {line}", asset.name));
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{} imports {name}, which is not embedded",
                    asset.name
                );
            }
            for markup in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "javascript:",
            ] {
                assert!(
                    !text.contains(markup),
                    "{}: {markup} (text goes in as text)",
                    asset.name
                );
            }
        }
        // Every file in assets/ is served.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/console/assets");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "{name} is not embedded"
            );
        }
    }
}
