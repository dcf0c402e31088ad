//! Snowflake node ids leased from the job store, so replicas never share one: a process
//! leases a free id at start-up, renews it in the background and gives it back on shutdown;
//! the lease of a process that dies expires.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::JobStore;

/// How long a leased node id stays ours without renewal.
const NODE_LEASE: Duration = Duration::from_secs(60);

/// The Snowflake node id of this process: configured, or leased from the store.
pub struct NodeId {
    /// The id (0–1023).
    pub id: u16,
    lease: Option<(Arc<dyn JobStore>, String)>,
}

fn lease_until(now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::from_std(NODE_LEASE).unwrap_or_default()
}

impl NodeId {
    /// The `configured` id (`APP_ENV_NODE_ID`), or a free one leased from `store` and renewed
    /// until `shutdown`.
    pub async fn acquire(
        configured: Option<u16>,
        store: Arc<dyn JobStore>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        if let Some(id) = configured {
            return Ok(Self { id, lease: None });
        }
        let holder = uuid::Uuid::new_v4().to_string();
        let now = Utc::now();
        let id = store
            .lease_node_id(&holder, now, lease_until(now))
            .await?
            .context("all 1024 Snowflake node ids are leased; set APP_ENV_NODE_ID")?;
        tracing::info!(nodeId = id, "leased a Snowflake node id");
        tokio::spawn(renew(id, store.clone(), holder.clone(), shutdown));
        Ok(Self {
            id,
            lease: Some((store, holder)),
        })
    }

    /// Gives a leased id back (a configured one has nothing to give back).
    pub async fn release(&self) {
        if let Some((store, holder)) = &self.lease
            && let Err(e) = store.release_node_id(self.id, holder).await
        {
            tracing::warn!(nodeId = self.id, error = %e, "releasing the node id failed; it expires");
        }
    }
}

/// Renews the lease every third of its length until `shutdown`.
async fn renew(id: u16, store: Arc<dyn JobStore>, holder: String, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(NODE_LEASE / 3);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store
            .renew_node_id(id, &holder, lease_until(Utc::now()))
            .await
        {
            Ok(true) => {}
            // Ids stay unique anyway (a duplicate insert is retried with a fresh id), but an
            // operator should know the lease was lost.
            Ok(false) => tracing::error!(nodeId = id, "the Snowflake node id lease was lost"),
            Err(e) => {
                tracing::warn!(nodeId = id, error = %e, "renewing the node id lease failed")
            }
        }
    }
}
