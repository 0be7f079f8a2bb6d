//! Direct packet exchange between source and target (`/strew/packet/3`):
//! wire messages, the framing codec, signed receipts, ticket checks, the
//! storage seam and the target-side service. Nothing here passes through the
//! sequence manager; the manager only signs tickets. The source side's
//! checked calls are in `client`, the protocol's runtime state in `driver`.

mod client;
pub mod codec;
pub mod delete_many;
pub(crate) mod driver;
pub mod holder;
mod holder_client;
pub mod proof;
pub mod read_limit;
pub mod receipt;
pub mod service;
pub mod storage;
pub mod ticket;
pub mod wire;

pub use codec::PacketCodec;
pub use delete_many::delete_batches;
pub use read_limit::{ReadLimit, ReadLimiter};
pub use receipt::Receipt;
pub use service::{PacketService, TrustedManagers};
pub use storage::{DeleteOutcome, HeldPacket, MemoryStorage, PacketStorage, StorageError};
pub use wire::{
    DeleteAnswer, MAX_DELETE_BATCH, MAX_INVENTORY_PAGE, MAX_PACKET_BYTES, MAX_ROOT_PACKET_BYTES,
    MAX_ROOTS_PAGE, MAX_ROOTS_PER_HOLDER, PACKET_PROTOCOL, PacketRequest, PacketResponse,
    ROOT_GENERATION, Refusal,
};
