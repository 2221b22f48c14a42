//! The owner's way down to one session ([`DownLink`]). In process it is a
//! sender on the session's bounded command queue, tagged with the owner
//! link it belongs to: a session that moved to another owner still takes
//! the old owner's messages, and knows whose they are.

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::Down;

/// Which of a session's owner links a message came through (the session
/// numbers its links from 0 in the order it opened them).
pub type LinkId = u32;

/// A [`Down`] as the session's queue holds it.
#[derive(Debug)]
pub struct Tagged {
    /// The owner link it came through.
    pub link: LinkId,
    /// The message.
    pub down: Down,
}

/// The receiving end a session reads.
pub type DownQueue = mpsc::Receiver<Tagged>;

/// The session has ended: nothing sent to it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the edge's session has ended")]
pub struct SessionGone;

/// How an owner reaches one session through one of its owner links.
#[derive(Debug, Clone)]
pub struct DownLink {
    route: Route,
}

#[derive(Debug, Clone)]
enum Route {
    /// The session runs in this process.
    InProcess {
        queue: mpsc::Sender<Tagged>,
        link: LinkId,
    },
}

impl DownLink {
    /// A link into a session of this process, as its owner link `link`.
    pub fn in_process(queue: mpsc::Sender<Tagged>, link: LinkId) -> Self {
        Self {
            route: Route::InProcess { queue, link },
        }
    }

    /// Sends `down`, waiting for room in the session's queue.
    pub async fn send(&self, down: Down) -> Result<(), SessionGone> {
        match &self.route {
            Route::InProcess { queue, link } => queue
                .send(Tagged { link: *link, down })
                .await
                .map_err(|_| SessionGone),
        }
    }

    /// Sends `down` if the session's queue has room now; gives it back
    /// when it is full.
    pub fn try_send(&self, down: Down) -> Result<(), TrySendError<Down>> {
        match &self.route {
            Route::InProcess { queue, link } => queue
                .try_send(Tagged { link: *link, down })
                .map_err(|err| match err {
                    TrySendError::Full(tagged) => TrySendError::Full(tagged.down),
                    TrySendError::Closed(tagged) => TrySendError::Closed(tagged.down),
                }),
        }
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        match &self.route {
            Route::InProcess { queue, .. } => queue.is_closed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_carry_their_link_and_a_full_queue_gives_them_back() -> Result<(), SessionGone>
    {
        let (tx, mut rx) = mpsc::channel(1);
        let first = DownLink::in_process(tx.clone(), 0);
        let second = DownLink::in_process(tx, 1);
        second.send(Down::Reload).await?;
        assert!(matches!(
            first.try_send(Down::Reload),
            Err(TrySendError::Full(Down::Reload))
        ));
        let tagged = rx.recv().await.ok_or(SessionGone)?;
        assert_eq!(tagged.link, 1);
        drop(rx);
        assert!(first.is_closed());
        assert_eq!(first.send(Down::Reload).await, Err(SessionGone));
        Ok(())
    }
}
