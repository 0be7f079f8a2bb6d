//! A restore's reading of a snapshot's sequence from the manager, a page at
//! a time (`FetchSequencePage`): first the stripes of the root and the
//! manifest (the sequence's tail, where the commit puts them), then every
//! page from the first, fetched with its read tickets one page ahead while
//! the page before is decoded. The restore starts on the first page and
//! holds two pages, never the whole sequence. Every page must agree with
//! the first on the snapshot, its manifest and its length.

use std::collections::{HashMap, HashSet};

use strew_coordinator::manager::MAX_SEQUENCE_PAGE;
use strew_coordinator::seal::{Sequence as SealedSequence, SequenceStripe};
use strew_coordinator::{DataId, NodeId, PacketId, SnapshotId};
use tokio::sync::mpsc;

use super::super::sequence::{Header, fetch_page};
use super::super::{GridError, ManagerApi, ReadTickets, SourceIdentity};
use crate::pipeline::restore::{RestoreError, StripePages};
use crate::pipeline::{Sequence, StripeRecord};

/// Pages fetched ahead of the one being decoded.
const AHEAD: usize = 1;

/// One page as the restore uses it: its stripes, where their packets are,
/// and the tickets to read them.
#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<StripeRecord>,
    pub targets: HashMap<PacketId, Vec<NodeId>>,
    pub tickets: ReadTickets,
}

impl Page {
    fn of(stripes: &[SequenceStripe], tickets: ReadTickets) -> Self {
        let mut targets: HashMap<PacketId, Vec<NodeId>> = HashMap::new();
        let records = stripes
            .iter()
            .map(|stripe| {
                for entry in &stripe.packets {
                    let list = targets.entry(entry.packet_id).or_default();
                    for t in &entry.targets {
                        if !list.contains(t) {
                            list.push(*t);
                        }
                    }
                }
                StripeRecord {
                    data_id: stripe.data_id,
                    plain_len: 0,
                    packets: stripe.packets.iter().map(|e| e.packet_id).collect(),
                }
            })
            .collect();
        Page {
            records,
            targets,
            tickets,
        }
    }
}

/// Reads pages of one snapshot's sequence.
struct Reader<'a, M> {
    me: &'a SourceIdentity,
    manager: &'a M,
    snapshot: SnapshotId,
}

impl<M: ManagerApi> Reader<'_, M> {
    /// The page of stripes from `from`, opened, and the sequence's length.
    async fn page(&self, from: u64) -> Result<(SealedSequence, u64), GridError> {
        let page = MAX_SEQUENCE_PAGE as u32;
        fetch_page(self.me, self.manager, self.snapshot, from, page).await
    }

    /// The page from `from`, checked against `header`.
    async fn checked(&self, from: u64, header: &Header) -> Result<SealedSequence, GridError> {
        let (page, total) = self.page(from).await?;
        header.check(&page, total)?;
        Ok(page)
    }
}

/// The sequence opened for a restore: its head (root and manifest
/// stripes, no data) with the page that reads them, and what reading the
/// rest needs.
pub struct Opened {
    pub head: Sequence,
    pub head_page: Page,
    pub rest: Rest,
}

/// The pages still to read (all of them, from the first).
pub struct Rest {
    snapshot: SnapshotId,
    first: SealedSequence,
    header: Header,
}

/// Reads the head of `snapshot`'s sequence.
pub async fn open<M: ManagerApi>(
    me: &SourceIdentity,
    manager: &M,
    snapshot: SnapshotId,
) -> Result<Opened, GridError> {
    let reader = Reader {
        me,
        manager,
        snapshot,
    };
    let (first, total) = reader.page(0).await?;
    let header = Header::of(&first, total);
    // The root's and manifest's stripes: the tail first (where the commit
    // puts them), then, for any the data already named, every page.
    let wanted: HashSet<DataId> = header.manifest_chunks.iter().copied().collect();
    let mut found: HashMap<DataId, (u64, SequenceStripe)> = HashMap::new();
    let tail = total.saturating_sub(header.manifest_chunks.len() as u64);
    let scan = |from: u64, page: &SealedSequence, found: &mut HashMap<_, _>| {
        for (i, s) in page.stripes.iter().enumerate() {
            if wanted.contains(&s.data_id) && !found.contains_key(&s.data_id) {
                found.insert(s.data_id, (from + i as u64, s.clone()));
            }
        }
    };
    let mut from = tail;
    while from < total {
        let page = reader.checked(from, &header).await?;
        scan(from, &page, &mut found);
        from += page.stripes.len() as u64;
    }
    from = 0;
    while found.len() < wanted.len() && from < tail {
        let page = if from == 0 {
            first.clone()
        } else {
            reader.checked(from, &header).await?
        };
        scan(from, &page, &mut found);
        from += page.stripes.len() as u64;
    }
    let mut stripes = Vec::with_capacity(header.manifest_chunks.len());
    let mut at = Vec::with_capacity(header.manifest_chunks.len());
    for id in &header.manifest_chunks {
        let (index, stripe) = found.get(id).ok_or_else(|| {
            GridError::Other(format!(
                "snapshot {snapshot}'s sequence has no stripe for its manifest chunk {id}"
            ))
        })?;
        stripes.push(stripe.clone());
        at.push(*index);
    }
    let tickets = ReadTickets::fetch_at(manager, snapshot, &at).await?;
    let head_page = Page::of(&stripes, tickets);
    Ok(Opened {
        head: Sequence {
            snapshot: header.manifest,
            manifest: head_page.records.clone(),
            data: Vec::new(),
        },
        head_page,
        rest: Rest {
            snapshot,
            first,
            header,
        },
    })
}

impl Rest {
    /// The feed the restore pulls pages from, and the future that fetches
    /// them into it ([`AHEAD`] ahead): run it alongside the restore; it
    /// ends after the last page, or when the feed is dropped.
    pub fn feed<'a, M: ManagerApi>(
        self,
        me: &'a SourceIdentity,
        manager: &'a M,
    ) -> (PageFeed, impl std::future::Future<Output = ()> + 'a) {
        let (tx, rx) = mpsc::channel(AHEAD);
        let Rest {
            snapshot,
            first,
            header,
        } = self;
        let fetch = async move {
            let reader = Reader {
                me,
                manager,
                snapshot,
            };
            let mut first = Some(first);
            let mut from = 0u64;
            while from < header.total {
                let page = match first.take() {
                    Some(page) => Ok(page),
                    None => reader.checked(from, &header).await,
                };
                let page = match page {
                    Ok(page) => {
                        let to = from + page.stripes.len() as u64;
                        ReadTickets::fetch_range(manager, snapshot, from, to)
                            .await
                            .map(|tickets| (Page::of(&page.stripes, tickets), to))
                    }
                    Err(e) => Err(e),
                };
                let next = page.as_ref().map(|(_, to)| *to).ok();
                if tx.send(page.map(|(p, _)| p)).await.is_err() {
                    return; // the restore stopped
                }
                match next {
                    Some(to) => from = to,
                    None => return,
                }
            }
        };
        (PageFeed { rx, install: None }, fetch)
    }
}

/// The pages as the (blocking) pipeline restore pulls them; each page
/// handed out becomes the current one, whose targets and tickets the
/// packet source reads.
pub struct PageFeed {
    rx: mpsc::Receiver<Result<Page, GridError>>,
    install: Option<Box<dyn FnMut(Page) + Send>>,
}

impl PageFeed {
    /// Calls `install` with every page before the restore decodes it.
    pub fn installing(mut self, install: impl FnMut(Page) + Send + 'static) -> Self {
        self.install = Some(Box::new(install));
        self
    }
}

impl StripePages for PageFeed {
    fn next_page(&mut self) -> Result<Option<Vec<StripeRecord>>, RestoreError> {
        match self.rx.blocking_recv() {
            None => Ok(None),
            Some(Err(e)) => Err(RestoreError::Sequence(e.to_string())),
            Some(Ok(page)) => {
                let records = page.records.clone();
                if let Some(install) = self.install.as_mut() {
                    install(page);
                }
                Ok(Some(records))
            }
        }
    }
}
