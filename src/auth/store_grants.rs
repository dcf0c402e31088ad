//! The grants the authorizer enforces, read from the job store.

use std::sync::Arc;

use async_trait::async_trait;

use super::GrantSource;
use crate::domain::{Grant, PolicyRevision};
use crate::store::JobStore;

/// Policy grants read from the job store.
pub struct StoreGrants(pub Arc<dyn JobStore>);

#[async_trait]
impl GrantSource for StoreGrants {
    async fn list_grants(&self) -> Result<Vec<Grant>, String> {
        self.0.list_grants().await.map_err(|e| e.to_string())
    }
    async fn policy_revision(&self) -> Result<PolicyRevision, String> {
        self.0.policy_revision().await.map_err(|e| e.to_string())
    }
}
