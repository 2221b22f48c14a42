//! A session's owner links: the current one takes new commands; every
//! live link gets what registries keep (tags, keys, capabilities), and the
//! progress and outcome of the commands it sent. When the session's owner changes, it registers with the new owner
//! over a new link and retires the old one once its commands are answered.

use super::Session;
use crate::hop::{CommandOutcome, DownLink, LinkId, OwnerLink, Owners, Up};

impl Session {
    /// The link new commands come from.
    fn current(&self) -> Option<(LinkId, &OwnerLink)> {
        let id = self.links.len().checked_sub(1)?;
        let link = self.links.get(id)?.as_ref()?;
        Some((LinkId::try_from(id).ok()?, link))
    }

    /// Sends `up` to the current owner.
    pub(super) async fn to_current(&self, up: Up) {
        if let Some((_, link)) = self.current() {
            link.send(&self.key, up).await;
        }
    }

    /// Sends `up` to the owner of link `id`, if it is not retired.
    pub(super) async fn to_link(&self, id: LinkId, up: Up) {
        let link = usize::try_from(id)
            .ok()
            .and_then(|id| self.links.get(id))
            .and_then(Option::as_ref);
        if let Some(link) = link {
            link.send(&self.key, up).await;
        }
    }

    /// Sends what `up` builds to every owner holding the session (facts
    /// their registries keep: tags, keys, capabilities).
    pub(super) async fn to_all(&self, up: impl Fn() -> Up) {
        for link in self.links.iter().flatten() {
            link.send(&self.key, up()).await;
        }
    }

    /// The owner link whose command `command_id` is, if in flight.
    pub(super) fn link_of(&self, command_id: &uuid::Uuid) -> Option<LinkId> {
        self.in_flight.get(command_id).map(|sent| sent.link)
    }

    /// Ends in-flight command `outcome.command_id`: the ledger keeps the
    /// outcome and the owner link that sent it gets it.
    pub(super) async fn answer(&mut self, outcome: CommandOutcome) {
        let Some(sent) = self.in_flight.remove(&outcome.command_id) else {
            return;
        };
        self.ingress.ledger.complete(
            self.key.node_id,
            outcome.command_id,
            &self.key.tenant,
            &outcome.result,
        );
        self.to_link(sent.link, Up::Result(Box::new(outcome))).await;
    }

    /// Opens a link to the owner the ingress routes this session's tenant
    /// to now, unless the current link leads there. The new owner reloads
    /// the session first (what it holds may be older than its changes).
    pub(super) async fn rehome(&mut self, owners: Owners) {
        if let Some((_, link)) = self.current() {
            if owners.leads_to(link, &self.key.tenant) {
                return;
            }
        }
        let Some(queue) = self.queue.upgrade() else {
            // No owner holds the queue any more: the loop ends on it.
            return;
        };
        let Ok(id) = LinkId::try_from(self.links.len()) else {
            return;
        };
        let opened = self.known.opened(
            &self.key.tenant,
            DownLink::in_process(queue, id),
            None,
            &self.ingress,
        );
        let link = owners.link(&self.key.tenant);
        link.send(&self.key, Up::Opened(Box::new(opened))).await;
        self.links.push(Some(link));
        tracing::info!(link = id, "edge session moved to another owner");
        self.retire_idle().await;
    }

    /// Retires the links before the current one that no command in flight
    /// came from: their owners learn that the session moved.
    pub(super) async fn retire_idle(&mut self) {
        let last = self.links.len().saturating_sub(1);
        for index in 0..last {
            let Ok(id) = LinkId::try_from(index) else {
                continue;
            };
            if self.in_flight.values().any(|sent| sent.link == id) {
                continue;
            }
            let retired = self.links.get_mut(index).and_then(Option::take);
            if let Some(link) = retired {
                link.send(&self.key, Up::Closed(crate::hop::CloseReason::Moved))
                    .await;
            }
        }
    }
}
