//! Answering `Standing`: how a source's snapshot stands, summed over at
//! most [`STANDING_PAGES`] sequence pages a call, each page under its own
//! read of the state (applies go on between pages), in the heavy reads'
//! lane ([`super::lane`]). The summing itself is the coordinator's.

use strew_coordinator::manager::{ManagerError, STANDING_PAGES, StandingSum, down_set};
use strew_coordinator::{NodeId, SnapshotId};
use strew_overlay::ManagerResponse;

use super::{ManagerService, refuse};

impl ManagerService {
    pub(super) async fn standing(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
        down: &[NodeId],
        from: u64,
    ) -> ManagerResponse {
        if let Err(r) = self.barrier().await {
            return r;
        }
        let summed = self.heavy_read(requester, || {
            let down = down_set(down)?;
            let mut sum = StandingSum::default();
            let mut page = Some(usize::try_from(from).unwrap_or(usize::MAX));
            for _ in 0..STANDING_PAGES {
                let Some(at) = page else { break };
                page = self
                    .replica
                    .read(|m| m.add_standing_page(requester, snapshot, &down, at, &mut sum))?;
            }
            Ok::<_, ManagerError>((sum.finish(), page.map(|p| p as u64)))
        });
        match summed.await {
            Ok(Ok((standing, next))) => ManagerResponse::Standing { standing, next },
            Ok(Err(e)) => refuse(&e),
            Err(busy) => busy,
        }
    }
}
