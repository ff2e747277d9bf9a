//! DICOM networking for Haneul: associations on dicom-ul's PDU layer and the
//! DIMSE service layer that dicom-rs lacks, used by both the service
//! provider ([`scp`]) and the service user ([`scu`]).
//!
//! This crate translates the protocol and calls `haneul-core`; it never
//! touches the catalog or the blob store directly.

pub mod association;
pub mod command;
pub mod identifier;
pub mod message;
pub mod pdu;
pub mod scp;
pub mod scu;
pub mod sop;

pub use association::{AssociationInfo, ClientTls, ProposedContext, RequestParams};
pub use scp::{AeDirectory, CommitmentDelivery, DicomServer, KnownAe, ServerSettings};
pub use scu::{Client, RetrieveSummary, ScuError, StoreData};
