//! A local upstream for the HTTP source: `GET /merchants/{id}/entries` answers with the file
//! `{dir}/{id}.json`, streamed from disk as one page, whatever the window asked (the
//! generated data lies inside the measured period).

use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

/// The upstream, serving until dropped.
pub struct Upstream {
    /// The base URL to give `APP_ENV_SOURCE_URL`.
    pub url: String,
    stop: CancellationToken,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves the `.json` files of `dir` on a loopback port.
pub async fn serve(dir: PathBuf) -> anyhow::Result<Upstream> {
    let app = Router::new()
        .route("/merchants/{id}/entries", get(page))
        .with_state(dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stopped.cancelled_owned())
            .await;
    });
    Ok(Upstream { url, stop })
}

async fn page(State(dir): State<PathBuf>, Path(id): Path<String>) -> Response {
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    let path = dir.join(format!("{id}.json"));
    let Ok(file) = tokio::fs::File::open(&path).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let length = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = Body::from_stream(ReaderStream::with_capacity(file, 64 << 10));
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        body,
    )
        .into_response()
}
