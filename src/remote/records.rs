//! Run records on the remote: `runs/<pipeline>/<id>.json`, one per `pipe run` anywhere.

use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::transfer::FILES_IN_FLIGHT;
use super::{Remote, RemoteError};
use crate::run_record::RunRecord;

impl Remote {
    /// Stores a run record (replacing an earlier version of it), with this machine's name.
    pub fn push_run(&self, record: &RunRecord) -> Result<(), RemoteError> {
        let path = self.root.clone().join("runs").join(record.pipeline.as_str()).join(format!("{}.json", record.id));
        let body = serde_json::to_vec_pretty(record).unwrap_or_default();
        self.rt
            .block_on(self.store.put(&path, PutPayload::from(body)))
            .map(|_| ())
            .map_err(|e| self.error(&format!("writing {path}"), e))
    }

    /// The run records of pipeline `name` on the remote (unreadable ones skipped), oldest
    /// first.
    pub fn runs(&self, name: &str) -> Result<Vec<RunRecord>, RemoteError> {
        let prefix = self.root.clone().join("runs").join(name);
        self.rt.block_on(async {
            let metas: Vec<object_store::ObjectMeta> = self
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(|e| self.error(&format!("listing {prefix}"), e))?;
            let reads: Vec<Option<RunRecord>> = stream::iter(metas.iter().map(|m| async move {
                let bytes = self.store.get(&m.location).await.ok()?.bytes().await.ok()?;
                serde_json::from_slice(&bytes).ok()
            }))
            .buffered(FILES_IN_FLIGHT)
            .collect()
            .await;
            let mut runs: Vec<RunRecord> = reads.into_iter().flatten().collect();
            runs.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(runs)
        })
    }
}
