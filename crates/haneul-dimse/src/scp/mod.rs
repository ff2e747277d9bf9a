//! The DIMSE service provider: accepts associations and serves C-ECHO,
//! C-STORE, C-FIND, C-MOVE, C-GET and Storage Commitment by calling the
//! archive core.

mod commitment;
mod find;
mod retrieve;
mod store;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::pdu::Pdu;
use haneul_core::{Archive, Origin};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{info, warn, Instrument};

use crate::association::{
    abort_pdu, negotiate, new_association_id, read_request, rejection_pdu, split_stream, AcceptPolicy, AssociationInfo,
    NegotiatedContext, Refusal,
};
use crate::command::{command_name, field, status, tag, Command};
use crate::message::{DimseError, DimseReader, DimseWriter, Received};

/// A remote application entity Haneul knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownAe {
    pub title: String,
    pub host: String,
    pub port: u16,
}

impl KnownAe {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// How storage commitment results reach the requester.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitmentDelivery {
    /// On the requesting association when it is still open, else on a new one.
    SameAssociation,
    /// Always on a new association to the requester's configured address.
    NewAssociation,
}

/// Settings of the DIMSE server.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub ae_title: String,
    /// Largest PDU we accept (announced to peers).
    pub max_pdu_length: u32,
    /// Largest data set accepted in one C-STORE.
    pub max_dataset_size: u64,
    /// Largest C-FIND/C-MOVE/C-GET identifier or N-ACTION data set.
    pub max_identifier_size: u64,
    /// An association idle this long is aborted.
    pub idle_timeout: Duration,
    pub max_associations: usize,
    /// Accept any calling AE title from the loopback interface.
    pub allow_any_loopback: bool,
    pub known_aes: Vec<KnownAe>,
    pub commitment_delivery: CommitmentDelivery,
    /// Re-hash blobs before confirming a storage commitment.
    pub commitment_verifies_digests: bool,
    /// Timeout for outgoing connections and their replies.
    pub outbound_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            ae_title: "HANEUL".into(),
            max_pdu_length: 262_144,
            max_dataset_size: 4 << 30,
            max_identifier_size: 1 << 20,
            idle_timeout: Duration::from_secs(300),
            max_associations: 256,
            allow_any_loopback: true,
            known_aes: Vec::new(),
            commitment_delivery: CommitmentDelivery::SameAssociation,
            commitment_verifies_digests: true,
            outbound_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerSettings {
    pub fn known_ae(&self, title: &str) -> Option<&KnownAe> {
        self.known_aes.iter().find(|ae| ae.title == title)
    }
}

/// The DIMSE server.
pub struct DicomServer {
    archive: Arc<Archive>,
    settings: Arc<ServerSettings>,
    slots: Arc<Semaphore>,
}

impl DicomServer {
    pub fn new(archive: Arc<Archive>, settings: ServerSettings) -> Arc<DicomServer> {
        let slots = Arc::new(Semaphore::new(settings.max_associations.max(1)));
        Arc::new(DicomServer { archive, settings: Arc::new(settings), slots })
    }

    /// Accept associations until `shutdown` resolves.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let server = Arc::clone(&self);
                        tokio::spawn(async move { server.handle_connection(stream, peer).await });
                    }
                    Err(error) => {
                        warn!(%error, "accepting a DICOM connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }

    async fn handle_connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let id = new_association_id();
        let span = tracing::info_span!("association", id = %id, peer = %peer);
        async move {
            if let Err(error) = stream.set_nodelay(true) {
                warn!(%error, "could not set TCP_NODELAY");
            }
            let (mut pdu_reader, mut pdu_writer) = split_stream(stream, self.settings.max_pdu_length);
            let request = match read_request(&mut pdu_reader, Duration::from_secs(30)).await {
                Ok(request) => request,
                Err(error) => {
                    warn!(%error, "no valid association request");
                    let _ = pdu_writer.send_control(&abort_pdu()).await;
                    return;
                }
            };
            let calling_ae = request.calling_ae_title.trim().to_string();
            let called_ae = request.called_ae_title.trim().to_string();
            let refusal = self.check_access(&calling_ae, &called_ae, peer.ip()).await;
            let permit = if refusal.is_none() { Arc::clone(&self.slots).try_acquire_owned().ok() } else { None };
            if refusal.is_some() || permit.is_none() {
                let refusal = refusal.unwrap_or(Refusal::Busy);
                warn!(calling_ae = %calling_ae, called_ae = %called_ae, ?refusal, "association rejected");
                self.archive.metrics().associations_rejected.inc();
                let _ = pdu_writer.send_control(&rejection_pdu(refusal)).await;
                return;
            }
            let policy = AcceptPolicy { ae_title: self.settings.ae_title.clone(), max_pdu_length: self.settings.max_pdu_length };
            let (accept, contexts, peer_max_pdu_length) = negotiate(&request, &policy);
            if let Err(error) = pdu_writer.send_control(&Pdu::AssociationAC(accept)).await {
                warn!(%error, "could not send A-ASSOCIATE-AC");
                return;
            }
            pdu_writer.set_peer_max_pdu_length(peer_max_pdu_length);
            let accepted = contexts.iter().filter(|pc| pc.accepted).count();
            info!(calling_ae = %calling_ae, called_ae = %called_ae, contexts = contexts.len(), accepted, "association accepted");
            let metrics = Arc::clone(self.archive.metrics());
            metrics.associations.inc();
            metrics.active_associations.inc();
            let info = AssociationInfo {
                id: id.clone(),
                calling_ae: calling_ae.clone(),
                called_ae,
                peer,
                contexts,
                peer_max_pdu_length,
                local_max_pdu_length: self.settings.max_pdu_length,
                peer_implementation: None,
            };
            let origin = Origin { actor: calling_ae, address: peer.to_string(), session: id, ..Origin::default() };
            let mut reader = DimseReader::new(pdu_reader);
            reader.set_data_timeout(self.settings.idle_timeout);
            let mut session = Session {
                server: Arc::clone(&self),
                info,
                origin,
                reader,
                writer: DimseWriter::new(pdu_writer),
                closed: false,
            };
            match session.run().await {
                Ok(()) => info!("association released"),
                Err(DimseError::Aborted) => info!("association aborted by peer"),
                Err(DimseError::Timeout(idle)) => {
                    info!(idle_seconds = idle.as_secs(), "idle association aborted");
                    let _ = session.writer.send_control(&abort_pdu()).await;
                }
                Err(DimseError::Pdu(crate::pdu::PduError::Closed)) => info!("peer closed the connection"),
                Err(error) => {
                    warn!(%error, "aborting association");
                    let _ = session.writer.send_control(&abort_pdu()).await;
                }
            }
            metrics.active_associations.dec();
            drop(permit);
        }
        .instrument(span)
        .await
    }

    /// Who may associate: our AE title must be called; calling AEs from
    /// loopback are trusted if configured so, others must be known AEs
    /// connecting from their configured host.
    async fn check_access(&self, calling_ae: &str, called_ae: &str, peer: IpAddr) -> Option<Refusal> {
        if called_ae != self.settings.ae_title {
            return Some(Refusal::CalledAeNotRecognized);
        }
        if peer.is_loopback() && self.settings.allow_any_loopback {
            return None;
        }
        let Some(known) = self.settings.known_ae(calling_ae) else {
            return Some(Refusal::CallingAeNotRecognized);
        };
        let resolved = tokio::net::lookup_host((known.host.as_str(), known.port)).await;
        let matches = resolved.map(|mut addresses| addresses.any(|address| address.ip() == peer)).unwrap_or(false);
        if matches {
            None
        } else {
            Some(Refusal::CallingAeNotRecognized)
        }
    }
}

/// One accepted association.
pub(crate) struct Session {
    server: Arc<DicomServer>,
    info: AssociationInfo,
    origin: Origin,
    reader: DimseReader<OwnedReadHalf>,
    writer: DimseWriter<OwnedWriteHalf>,
    /// Set when a handler ended the association (e.g. the peer released it
    /// while Haneul waited for a reply).
    closed: bool,
}

impl Session {
    async fn run(&mut self) -> Result<(), DimseError> {
        let idle = self.server.settings.idle_timeout;
        loop {
            let received = match tokio::time::timeout(idle, self.reader.next_command()).await {
                Ok(received) => received?,
                Err(_) => return Err(DimseError::Timeout(idle)),
            };
            match received {
                Received::ReleaseRequest => {
                    self.writer.send_control(&Pdu::ReleaseRP).await?;
                    self.writer.shutdown().await;
                    return Ok(());
                }
                Received::ReleaseResponse => return Err(DimseError::Protocol("A-RELEASE-RP without request".into())),
                Received::Command { context_id, command } => self.dispatch(context_id, command).await?,
            }
            if self.closed {
                return Ok(());
            }
        }
    }

    async fn dispatch(&mut self, context_id: u8, command: Command) -> Result<(), DimseError> {
        let Some(context) = self.info.context(context_id).cloned() else {
            return Err(DimseError::Protocol(format!(
                "command on presentation context {context_id}, which was not accepted"
            )));
        };
        let command_field = command.command_field().unwrap_or_default();
        tracing::debug!(command = command_name(command_field), context_id, "request");
        match command_field {
            field::C_ECHO_RQ => {
                if command.has_data_set() {
                    self.reader.skip_data_set(context_id, self.server.settings.max_identifier_size).await?;
                }
                let response = Command::response_to(&command, field::C_ECHO_RSP, status::SUCCESS);
                self.writer.send(context_id, &response, None).await
            }
            field::C_STORE_RQ => store::handle(self, &context, command).await,
            field::C_FIND_RQ => find::handle(self, &context, command).await,
            field::C_MOVE_RQ | field::C_GET_RQ => retrieve::handle(self, &context, command).await,
            field::N_ACTION_RQ => commitment::handle(self, &context, command).await,
            // A cancel for an operation that already finished: nothing to do.
            field::C_CANCEL_RQ => Ok(()),
            request if request & 0x8000 == 0 => {
                if command.has_data_set() {
                    self.reader.skip_data_set(context_id, self.server.settings.max_dataset_size).await?;
                }
                warn!(command_field = request, "unsupported DIMSE operation");
                let mut response = Command::response_to(&command, request | 0x8000, status::UNRECOGNIZED_OPERATION);
                response.set_text(tag::ERROR_COMMENT, "operation not supported");
                self.writer.send(context_id, &response, None).await
            }
            response => {
                Err(DimseError::Protocol(format!("unexpected {} outside an operation", command_name(response))))
            }
        }
    }

    fn settings(&self) -> &ServerSettings {
        &self.server.settings
    }

    fn archive(&self) -> &Arc<Archive> {
        &self.server.archive
    }

    /// An audit record of this association: the calling AE from the peer's address.
    fn audit_entry(&self, action: haneul_core::audit::Action) -> haneul_core::audit::Entry {
        haneul_core::audit::Entry::new(action, &self.info.calling_ae, self.info.peer.ip().to_string(), &self.info.id)
    }
}

/// Error comments are LO: at most 64 characters.
pub(crate) fn error_comment(text: &str) -> String {
    text.chars().take(64).collect()
}

pub(crate) fn context_transfer_syntax(context: &NegotiatedContext) -> &'static haneul_dicom::ts::TransferSyntax {
    haneul_dicom::ts::lookup(&context.transfer_syntax)
        .or_else(|| haneul_dicom::ts::lookup(haneul_dicom::ts::IMPLICIT_VR_LITTLE_ENDIAN))
        .expect("implicit VR little endian is always known")
}
