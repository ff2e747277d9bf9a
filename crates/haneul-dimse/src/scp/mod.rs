//! The DIMSE service provider: accepts associations and serves C-ECHO,
//! C-STORE, C-FIND, C-MOVE, C-GET and Storage Commitment by calling the
//! archive core.

mod commitment;
mod find;
mod limits;
mod retrieve;
pub(crate) mod store;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::pdu::Pdu;
use haneul_core::audit::Action;
use haneul_core::{Archive, Origin, Permission, PermissionMatrix, Role};
use haneul_tls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn, Instrument};

use crate::association::{
    abort_pdu, negotiate, new_association_id, read_request, rejection_pdu, AcceptPolicy, AssociationInfo,
    NegotiatedContext, Refusal,
};
use crate::command::{command_name, field, status, tag, Command};
use crate::message::{DimseError, DimseReader, DimseWriter, Received};
use crate::pdu::{PduReader, PduWriter};
use limits::{AssociationLimits, Exceeded, Occupied};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The two halves of an accepted connection, plain TCP or TLS. Boxed so that
/// one session type serves both: an indirect call per read or write of up
/// to a PDU, never a copy.
use crate::association::{StreamReader as ConnectionReader, StreamWriter as ConnectionWriter};

pub use haneul_core::aes::{AeDirectory, KnownAe};

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
    /// Associations one calling AE title may have open at once; 0: no limit.
    pub max_associations_per_ae: usize,
    /// Associations one peer address may have open at once; 0: no limit.
    pub max_associations_per_ip: usize,
    /// Accept any calling AE title from the loopback interface (with the
    /// service role, or the known AE's own role for a known title).
    pub allow_any_loopback: bool,
    /// The AEs this node knows (configured and shared, refreshed while it runs).
    pub known_aes: AeDirectory,
    /// Which DIMSE services each role may use: C-STORE and storage
    /// commitment need Store, C-FIND Query, C-MOVE and C-GET Retrieve;
    /// C-ECHO needs nothing.
    pub permissions: PermissionMatrix,
    pub commitment_delivery: CommitmentDelivery,
    /// Re-hash blobs before confirming a storage commitment.
    pub commitment_verifies_digests: bool,
    /// Timeout for outgoing connections and their replies.
    pub outbound_timeout: Duration,
    /// Most matches one C-FIND answers at the patient, study and series
    /// levels; more end it with status Cancel (FE00), as Orthanc's
    /// `LimitFindResults` does. `None`: no limit.
    pub max_find_answers: Option<usize>,
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
            max_associations_per_ae: 32,
            max_associations_per_ip: 64,
            allow_any_loopback: true,
            known_aes: AeDirectory::default(),
            permissions: PermissionMatrix::default(),
            commitment_delivery: CommitmentDelivery::SameAssociation,
            commitment_verifies_digests: true,
            outbound_timeout: Duration::from_secs(30),
            max_find_answers: None,
        }
    }
}

impl ServerSettings {
    pub fn known_ae(&self, title: &str) -> Option<KnownAe> {
        self.known_aes.find(title)
    }
}

/// The permission a DIMSE request needs; `None` for those anyone
/// associated may make (C-ECHO, C-CANCEL, responses, unknown operations,
/// which are refused anyway).
fn required_permission(command_field: u16) -> Option<Permission> {
    match command_field {
        field::C_STORE_RQ | field::N_ACTION_RQ => Some(Permission::Store),
        field::C_FIND_RQ => Some(Permission::Query),
        field::C_MOVE_RQ | field::C_GET_RQ => Some(Permission::Retrieve),
        _ => None,
    }
}

/// The DIMSE server.
pub struct DicomServer {
    archive: Arc<Archive>,
    settings: Arc<ServerSettings>,
    slots: Arc<Semaphore>,
    limits: Arc<AssociationLimits>,
}

impl DicomServer {
    pub fn new(archive: Arc<Archive>, settings: ServerSettings) -> Arc<DicomServer> {
        let slots = Arc::new(Semaphore::new(settings.max_associations.max(1)));
        let limits = AssociationLimits::new(settings.max_associations_per_ae, settings.max_associations_per_ip);
        Arc::new(DicomServer { archive, settings: Arc::new(settings), slots, limits })
    }

    /// Accept associations over plain TCP until `shutdown` resolves.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.accept(listener, None, shutdown).await
    }

    /// Accept associations over TLS (PS3.15 B.1) until `shutdown` resolves:
    /// each connection is handshaken with `tls` (10 s at most; a failure is
    /// logged at debug and touches nothing else), then served exactly like a
    /// plain one: same services, same access checks and limits.
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<ServerConfig>,
        shutdown: impl Future<Output = ()>,
    ) {
        self.accept(listener, Some(TlsAcceptor::from(tls)), shutdown).await
    }

    async fn accept(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let server = Arc::clone(&self);
                        let tls = tls.clone();
                        tokio::spawn(async move { server.connection(stream, peer, tls).await });
                    }
                    Err(error) => {
                        warn!(%error, "accepting a DICOM connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }

    /// Set up the transport of one connection, then serve its association.
    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>) {
        if let Err(error) = stream.set_nodelay(true) {
            warn!(%peer, %error, "could not set TCP_NODELAY");
        }
        let Some(tls) = tls else {
            let (reader, writer) = stream.into_split();
            return self.handle_connection(Box::new(reader), Box::new(writer), peer, None).await;
        };
        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                debug!(%peer, %error, "DICOM TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(%peer, "DICOM TLS handshake timed out");
                return;
            }
        };
        let client = TlsClient { subject: haneul_tls::peer_subject(stream.get_ref().1) };
        let (reader, writer) = tokio::io::split(stream);
        self.handle_connection(Box::new(reader), Box::new(writer), peer, Some(client)).await
    }

    async fn handle_connection(
        self: Arc<Self>,
        reader: ConnectionReader,
        writer: ConnectionWriter,
        peer: SocketAddr,
        tls: Option<TlsClient>,
    ) {
        let id = new_association_id();
        let span = tracing::info_span!("association", id = %id, peer = %peer, tls = tls.is_some());
        async move {
            let mut pdu_reader = PduReader::new(reader, self.settings.max_pdu_length);
            let mut pdu_writer = PduWriter::new(writer);
            pdu_writer.set_stall_limit(self.settings.idle_timeout);
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
            let admission = match self.admit(&calling_ae, &called_ae, peer.ip()).await {
                Ok(admission) => admission,
                Err(refusal) => {
                    warn!(calling_ae = %calling_ae, called_ae = %called_ae, ?refusal, "association rejected");
                    self.archive.metrics().associations_rejected.inc();
                    let _ = pdu_writer.send_control(&rejection_pdu(refusal)).await;
                    return;
                }
            };
            let role = admission.role;
            let policy =
                AcceptPolicy { ae_title: self.settings.ae_title.clone(), max_pdu_length: self.settings.max_pdu_length };
            let (accept, contexts, peer_max_pdu_length) = negotiate(&request, &policy);
            if let Err(error) = pdu_writer.send_control(&Pdu::AssociationAC(accept)).await {
                warn!(%error, "could not send A-ASSOCIATE-AC");
                return;
            }
            pdu_writer.set_peer_max_pdu_length(peer_max_pdu_length);
            let accepted = contexts.iter().filter(|pc| pc.accepted).count();
            let tls_subject = tls.and_then(|client| client.subject);
            info!(
                calling_ae = %calling_ae,
                called_ae = %called_ae,
                %role,
                tls_subject = tls_subject.as_deref(),
                contexts = contexts.len(),
                accepted,
                "association accepted"
            );
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
            // What a known AE stores belongs to its site.
            let site = self.settings.known_ae(&calling_ae).map(|ae| ae.site.clone()).unwrap_or_default();
            let origin =
                Origin { actor: calling_ae, address: peer.to_string(), session: id, site, ..Origin::default() };
            let mut reader = DimseReader::new(pdu_reader);
            reader.set_data_timeout(self.settings.idle_timeout);
            let mut session = Session {
                server: Arc::clone(&self),
                info,
                origin,
                role,
                tls_subject,
                reader,
                writer: DimseWriter::new(pdu_writer),
                closed: false,
            };
            match session.run().await {
                Ok(()) => info!("association released"),
                Err(DimseError::Aborted) => info!("association aborted by peer"),
                Err(DimseError::Timeout(idle)) => {
                    info!(idle_seconds = idle.as_secs(), "idle association aborted");
                    metrics.associations_timed_out.inc();
                    let _ = session.writer.send_control(&abort_pdu()).await;
                }
                Err(DimseError::Pdu(crate::pdu::PduError::Closed)) => info!("peer closed the connection"),
                // An A-ABORT would wait behind the bytes the peer does not take.
                Err(DimseError::Pdu(crate::pdu::PduError::Stalled(limit))) => {
                    warn!(stalled_seconds = limit.as_secs(), "peer stopped reading: connection dropped");
                    metrics.associations_timed_out.inc();
                }
                Err(error) => {
                    warn!(%error, "aborting association");
                    let _ = session.writer.send_control(&abort_pdu()).await;
                }
            }
            metrics.active_associations.dec();
            drop(admission);
        }
        .instrument(span)
        .await
    }

    /// Let an association in, or say why not: access first, then the limits
    /// per calling AE and address, then a slot of `max_associations`.
    async fn admit(&self, calling_ae: &str, called_ae: &str, peer: IpAddr) -> Result<Admission, Refusal> {
        let role = self.check_access(calling_ae, called_ae, peer).await?;
        let occupied = self.limits.enter(calling_ae, peer).map_err(|exceeded| {
            let limit = match exceeded {
                Exceeded::CallingAe => "max_associations_per_ae",
                Exceeded::PeerAddress => "max_associations_per_ip",
            };
            warn!(calling_ae, limit, "association limit reached");
            Refusal::LimitExceeded
        })?;
        let permit = Arc::clone(&self.slots).try_acquire_owned().map_err(|_| Refusal::Busy)?;
        Ok(Admission { role, _occupied: occupied, _permit: permit })
    }

    /// Who may associate, and with which role: our AE title must be called;
    /// from loopback, when so configured, any calling AE is accepted (a known
    /// one with its role, any other as service); otherwise the calling AE
    /// must be known and connect from its configured host.
    async fn check_access(&self, calling_ae: &str, called_ae: &str, peer: IpAddr) -> Result<Role, Refusal> {
        if called_ae != self.settings.ae_title {
            return Err(Refusal::CalledAeNotRecognized);
        }
        let known = self.settings.known_ae(calling_ae);
        if peer.is_loopback() && self.settings.allow_any_loopback {
            // No host check here: a loopback peer could name any title anyway.
            return Ok(known.map_or(Role::Service, |known| known.role));
        }
        let Some(known) = known else {
            return Err(Refusal::CallingAeNotRecognized);
        };
        let resolved = tokio::net::lookup_host((known.host.as_str(), known.port)).await;
        let matches = resolved.map(|mut addresses| addresses.any(|address| address.ip() == peer)).unwrap_or(false);
        if matches {
            Ok(known.role)
        } else {
            Err(Refusal::CallingAeNotRecognized)
        }
    }
}

/// An admitted association: its role, and its places in the limits and
/// slots, given back when this is dropped.
struct Admission {
    role: Role,
    _occupied: Occupied,
    _permit: OwnedSemaphorePermit,
}

/// What the TLS handshake established about the client.
struct TlsClient {
    /// Subject of the verified client certificate, if one was presented.
    subject: Option<String>,
}

/// One accepted association.
pub(crate) struct Session {
    server: Arc<DicomServer>,
    info: AssociationInfo,
    origin: Origin,
    /// What the calling AE may do.
    role: Role,
    /// Subject of the client certificate over TLS, for the audit trail.
    tls_subject: Option<String>,
    reader: DimseReader<ConnectionReader>,
    writer: DimseWriter<ConnectionWriter>,
    /// Set when a handler ended the association (e.g. the peer released it
    /// while Haneul waited for a reply).
    closed: bool,
}

impl Session {
    async fn run(&mut self) -> Result<(), DimseError> {
        let idle = self.server.settings.idle_timeout;
        loop {
            let received = self.reader.next_command_within(idle).await?;
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
        if let Some(permission) = required_permission(command_field) {
            if !self.settings().permissions.allows(self.role, permission) {
                return self.refuse(context_id, &command, permission).await;
            }
        }
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

    /// Answer a request the association's role does not allow with
    /// 0124 "refused: not authorized" (PS3.7 C.5), after reading past its
    /// data set; logged, counted and recorded in the audit trail.
    async fn refuse(&mut self, context_id: u8, command: &Command, permission: Permission) -> Result<(), DimseError> {
        let command_field = command.command_field().unwrap_or_default();
        if command.has_data_set() {
            let limit = if command_field == field::C_STORE_RQ {
                self.settings().max_dataset_size
            } else {
                self.settings().max_identifier_size
            };
            self.reader.skip_data_set(context_id, limit).await?;
        }
        let service = command_name(command_field).trim_end_matches("-RQ");
        let reason = format!("role {} lacks the {} permission", self.role, permission.as_str());
        warn!(service, role = %self.role, permission = permission.as_str(), "request refused: not authorized");
        self.archive().metrics().permission_denied.inc();
        let instance =
            command.text(tag::AFFECTED_SOP_INSTANCE_UID).or_else(|| command.text(tag::REQUESTED_SOP_INSTANCE_UID));
        let mut entry = self
            .audit_entry(Action::PermissionDenied)
            .detail("service", service)
            .detail("role", self.role.as_str())
            .detail("permission", permission.as_str());
        if let Some(instance) = instance {
            entry = entry.detail("sop_instance_uid", instance);
        }
        self.archive().audit(entry.failed(&reason));
        let mut response = Command::response_to(command, command_field | 0x8000, status::NOT_AUTHORIZED);
        if let Some(instance) = instance {
            response.set_text(tag::AFFECTED_SOP_INSTANCE_UID, instance);
        }
        if matches!(command_field, field::C_MOVE_RQ | field::C_GET_RQ) {
            response.set_suboperations(None, 0, 0, 0);
        }
        response.set_text(tag::ERROR_COMMENT, error_comment(&reason));
        self.writer.send(context_id, &response, None).await
    }

    fn settings(&self) -> &ServerSettings {
        &self.server.settings
    }

    fn archive(&self) -> &Arc<Archive> {
        &self.server.archive
    }

    /// An audit record of this association: the calling AE from the peer's
    /// address, and over TLS the subject of the client's certificate.
    fn audit_entry(&self, action: Action) -> haneul_core::audit::Entry {
        let entry = haneul_core::audit::Entry::new(
            action,
            &self.info.calling_ae,
            self.info.peer.ip().to_string(),
            &self.info.id,
        );
        match &self.tls_subject {
            Some(subject) => entry.detail(haneul_core::audit::TLS_SUBJECT, subject.as_str()),
            None => entry,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_needs_its_permission() {
        assert_eq!(required_permission(field::C_ECHO_RQ), None);
        assert_eq!(required_permission(field::C_CANCEL_RQ), None);
        assert_eq!(required_permission(field::C_STORE_RQ), Some(Permission::Store));
        assert_eq!(required_permission(field::N_ACTION_RQ), Some(Permission::Store));
        assert_eq!(required_permission(field::C_FIND_RQ), Some(Permission::Query));
        assert_eq!(required_permission(field::C_MOVE_RQ), Some(Permission::Retrieve));
        assert_eq!(required_permission(field::C_GET_RQ), Some(Permission::Retrieve));
        // With the built-in matrix: a service account does all of it, a
        // clinician all but storing, a researcher none of it.
        let matrix = PermissionMatrix::default();
        let allowed = |role| {
            [field::C_STORE_RQ, field::C_FIND_RQ, field::C_MOVE_RQ]
                .map(|request| required_permission(request).is_some_and(|p| matrix.allows(role, p)))
        };
        assert_eq!(allowed(Role::Service), [true, true, true]);
        assert_eq!(allowed(Role::Clinician), [false, true, true]);
        assert_eq!(allowed(Role::Researcher), [false, false, false]);
    }
}
