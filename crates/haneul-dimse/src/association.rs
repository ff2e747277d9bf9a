//! Association establishment (PS3.8 7.1) for both sides, on dicom-ul's PDU types.

use std::net::SocketAddr;
use std::time::Duration;

use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationAC, AssociationRJ, AssociationRJResult,
    AssociationRJServiceUserReason, AssociationRJSource, AssociationRQ, Pdu, PresentationContextProposed,
    PresentationContextResult, PresentationContextResultReason, RequestorRoles, UserVariableItem,
};
use haneul_dicom::meta::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
use haneul_dicom::{dict, ts};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::message::{DimseReader, DimseWriter};
use crate::pdu::{Incoming, PduError, PduReader, PduWriter};
use crate::sop;

pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";

/// A presentation context after negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedContext {
    pub id: u8,
    pub abstract_syntax: String,
    pub transfer_syntax: String,
    pub accepted: bool,
    /// The association requestor may act as SCU for this SOP class.
    pub requestor_scu: bool,
    /// The association requestor may act as SCP (C-GET storage sub-operations).
    pub requestor_scp: bool,
}

/// What both sides agreed on.
#[derive(Debug, Clone)]
pub struct AssociationInfo {
    /// Short id that ties log lines and journal entries to this association.
    pub id: String,
    pub calling_ae: String,
    pub called_ae: String,
    pub peer: SocketAddr,
    pub contexts: Vec<NegotiatedContext>,
    pub peer_max_pdu_length: u32,
    pub local_max_pdu_length: u32,
    pub peer_implementation: Option<String>,
}

impl AssociationInfo {
    pub fn context(&self, id: u8) -> Option<&NegotiatedContext> {
        self.contexts.iter().find(|pc| pc.id == id && pc.accepted)
    }

    /// An accepted context for a SOP class, preferring the given transfer syntax.
    pub fn find_context(&self, abstract_syntax: &str, transfer_syntax: Option<&str>) -> Option<&NegotiatedContext> {
        let mut candidates = self.contexts.iter().filter(|pc| pc.accepted && pc.abstract_syntax == abstract_syntax);
        match transfer_syntax {
            Some(wanted) => candidates.find(|pc| pc.transfer_syntax == wanted),
            None => candidates.next(),
        }
    }
}

/// An established association: its agreement plus the two halves of the stream.
pub struct Association {
    pub info: AssociationInfo,
    pub reader: DimseReader<StreamReader>,
    pub writer: DimseWriter<StreamWriter>,
}

/// The halves of a connection, plain TCP or TLS: one indirect call per read
/// or write, no copy.
pub(crate) type StreamReader = Box<dyn AsyncRead + Send + Sync + Unpin>;
pub(crate) type StreamWriter = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// DICOM TLS (PS3.15 B.1) for an association Haneul opens.
#[derive(Clone)]
pub struct ClientTls {
    /// Trusted CAs and, for mutual TLS, our client certificate (`haneul_tls::client_config`).
    pub config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    /// The name the peer's certificate must carry (its host name or IP address).
    pub server_name: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientTls({})", self.server_name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AssociationError {
    #[error(transparent)]
    Pdu(#[from] PduError),
    #[error("association rejected: {0}")]
    Rejected(String),
    #[error("association aborted by peer")]
    Aborted,
    #[error("unexpected PDU during association setup: {0}")]
    Unexpected(String),
    #[error("{0}")]
    Tls(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: std::io::Error },
}

/// How the server answers an association request.
#[derive(Debug, Clone)]
pub struct AcceptPolicy {
    pub ae_title: String,
    /// Largest PDU we accept, announced in the A-ASSOCIATE-AC.
    pub max_pdu_length: u32,
}

/// Why an association request is refused before negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    CallingAeNotRecognized,
    CalledAeNotRecognized,
    /// Every slot of `max_associations` is taken.
    Busy,
    /// The calling AE or its address already has as many associations open
    /// as it may (`max_associations_per_ae`, `max_associations_per_ip`).
    LimitExceeded,
}

/// Negotiate the presentation contexts of an A-ASSOCIATE-RQ.
pub fn negotiate(request: &AssociationRQ, policy: &AcceptPolicy) -> (AssociationAC, Vec<NegotiatedContext>, u32) {
    let mut peer_max_pdu_length = 16_384;
    let mut proposed_roles: Vec<(String, RequestorRoles)> = Vec::new();
    for variable in &request.user_variables {
        match variable {
            UserVariableItem::MaxLength(length) => peer_max_pdu_length = *length,
            UserVariableItem::ScuScpRoleSelectionSubItem(uid, roles) => {
                proposed_roles.push((trim_uid(uid).to_string(), *roles));
            }
            _ => {}
        }
    }
    let mut contexts = Vec::with_capacity(request.presentation_contexts.len());
    let mut results = Vec::with_capacity(request.presentation_contexts.len());
    for proposed in &request.presentation_contexts {
        let abstract_syntax = trim_uid(&proposed.abstract_syntax).to_string();
        let (reason, transfer_syntax) = choose_transfer_syntax(&abstract_syntax, &proposed.transfer_syntaxes);
        let accepted = reason == PresentationContextResultReason::Acceptance;
        let roles = proposed_roles.iter().find(|(uid, _)| *uid == abstract_syntax).map(|(_, roles)| *roles);
        // Only storage classes may be served by the requestor (C-GET sub-operations).
        let requestor_scp = accepted && dict::is_storage_sop_class(&abstract_syntax) && roles.is_some_and(|r| r.scp);
        let requestor_scu = roles.map(|r| r.scu).unwrap_or(true);
        contexts.push(NegotiatedContext {
            id: proposed.id,
            abstract_syntax,
            transfer_syntax: transfer_syntax.clone(),
            accepted,
            requestor_scu,
            requestor_scp,
        });
        results.push(PresentationContextResult { id: proposed.id, reason, transfer_syntax });
    }
    let mut user_variables = vec![
        UserVariableItem::MaxLength(policy.max_pdu_length),
        UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_string()),
        UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION_NAME.to_string()),
    ];
    for (uid, roles) in &proposed_roles {
        if dict::is_storage_sop_class(uid) {
            user_variables.push(UserVariableItem::ScuScpRoleSelectionSubItem(
                uid.clone(),
                RequestorRoles { scu: roles.scu, scp: roles.scp },
            ));
        }
    }
    let accept = AssociationAC {
        protocol_version: 1,
        calling_ae_title: request.calling_ae_title.clone(),
        called_ae_title: request.called_ae_title.clone(),
        application_context_name: APPLICATION_CONTEXT.to_string(),
        presentation_contexts: results,
        user_variables,
    };
    (accept, contexts, peer_max_pdu_length)
}

fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' ']).trim_start()
}

/// Storage keeps what the sender offers first (instances are stored as
/// received); other services prefer Explicit VR Little Endian.
fn choose_transfer_syntax(abstract_syntax: &str, offered: &[String]) -> (PresentationContextResultReason, String) {
    let known: Vec<&str> = offered.iter().map(|uid| trim_uid(uid)).filter(|uid| ts::lookup(uid).is_some()).collect();
    let not_supported = |reason| (reason, ts::IMPLICIT_VR_LITTLE_ENDIAN.to_string());
    if dict::is_storage_sop_class(abstract_syntax) {
        return match known.first() {
            Some(uid) => (PresentationContextResultReason::Acceptance, uid.to_string()),
            None => not_supported(PresentationContextResultReason::TransferSyntaxesNotSupported),
        };
    }
    if !sop::is_service_class(abstract_syntax) {
        return not_supported(PresentationContextResultReason::AbstractSyntaxNotSupported);
    }
    for preferred in [ts::EXPLICIT_VR_LITTLE_ENDIAN, ts::IMPLICIT_VR_LITTLE_ENDIAN, ts::EXPLICIT_VR_BIG_ENDIAN] {
        if known.contains(&preferred) {
            return (PresentationContextResultReason::Acceptance, preferred.to_string());
        }
    }
    not_supported(PresentationContextResultReason::TransferSyntaxesNotSupported)
}

pub(crate) fn rejection_pdu(refusal: Refusal) -> Pdu {
    let source = match refusal {
        Refusal::CallingAeNotRecognized => {
            AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        }
        Refusal::CalledAeNotRecognized => {
            AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        }
        Refusal::Busy => AssociationRJSource::ServiceProviderPresentation(
            dicom_ul::pdu::AssociationRJServiceProviderPresentationReason::TemporaryCongestion,
        ),
        Refusal::LimitExceeded => AssociationRJSource::ServiceProviderPresentation(
            dicom_ul::pdu::AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    };
    // Both go away as associations end: the peer may try again later.
    let result = if matches!(refusal, Refusal::Busy | Refusal::LimitExceeded) {
        AssociationRJResult::Transient
    } else {
        AssociationRJResult::Permanent
    };
    Pdu::AssociationRJ(AssociationRJ { result, source })
}

pub(crate) fn abort_pdu() -> Pdu {
    Pdu::AbortRQ { source: AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::ReasonNotSpecified) }
}

/// Connect to `address`, over DICOM TLS when `tls` says so, and split the
/// connection into PDU reader and writer halves.
async fn connect_stream(
    address: &str,
    params: &RequestParams,
) -> Result<(PduReader<StreamReader>, PduWriter<StreamWriter>, SocketAddr), AssociationError> {
    let connect_error = |source| AssociationError::Connect { address: address.to_string(), source };
    let stream = tokio::time::timeout(params.timeout, TcpStream::connect(address))
        .await
        .map_err(|_| AssociationError::Timeout(params.timeout))?
        .map_err(connect_error)?;
    stream.set_nodelay(true).map_err(connect_error)?;
    let peer = stream.peer_addr().map_err(connect_error)?;
    let (read, write): (StreamReader, StreamWriter) = match &params.tls {
        None => {
            let (read, write) = stream.into_split();
            (Box::new(read), Box::new(write))
        }
        Some(tls) => {
            let name =
                tokio_rustls::rustls::pki_types::ServerName::try_from(tls.server_name.clone()).map_err(|error| {
                    AssociationError::Tls(format!("{:?} is not a server name: {error}", tls.server_name))
                })?;
            let handshake = tokio_rustls::TlsConnector::from(std::sync::Arc::clone(&tls.config)).connect(name, stream);
            let stream = tokio::time::timeout(params.timeout, handshake)
                .await
                .map_err(|_| AssociationError::Timeout(params.timeout))?
                .map_err(|error| AssociationError::Tls(format!("TLS with {address} failed: {error}")))?;
            let (read, write) = tokio::io::split(stream);
            (Box::new(read), Box::new(write))
        }
    };
    let mut writer = PduWriter::new(write);
    writer.set_stall_limit(params.timeout);
    Ok((PduReader::new(read, params.max_pdu_length), writer, peer))
}

/// Read the A-ASSOCIATE-RQ that opens an association.
pub(crate) async fn read_request<R: AsyncRead + Unpin>(
    reader: &mut PduReader<R>,
    wait: Duration,
) -> Result<AssociationRQ, AssociationError> {
    let incoming = tokio::time::timeout(wait, reader.read()).await.map_err(|_| AssociationError::Timeout(wait))??;
    match incoming {
        Incoming::Control(Pdu::AssociationRQ(request)) => Ok(request),
        Incoming::Control(Pdu::AbortRQ { .. }) => Err(AssociationError::Aborted),
        Incoming::Control(other) => Err(AssociationError::Unexpected(other.short_description().to_string())),
        Incoming::Data(_) => Err(AssociationError::Unexpected("P-DATA-TF before association".into())),
    }
}

/// A presentation context to propose as requestor.
#[derive(Debug, Clone)]
pub struct ProposedContext {
    pub abstract_syntax: String,
    pub transfer_syntaxes: Vec<String>,
    /// Ask to act as SCP for this class too (C-GET storage sub-operations).
    pub scp_role: bool,
}

impl ProposedContext {
    pub fn new(abstract_syntax: &str, transfer_syntaxes: &[&str]) -> ProposedContext {
        ProposedContext {
            abstract_syntax: abstract_syntax.to_string(),
            transfer_syntaxes: transfer_syntaxes.iter().map(|s| s.to_string()).collect(),
            scp_role: false,
        }
    }
}

/// Parameters for opening an association as requestor.
#[derive(Debug, Clone)]
pub struct RequestParams {
    pub calling_ae: String,
    pub called_ae: String,
    pub max_pdu_length: u32,
    /// How long connecting, the TLS handshake and the peer's answer to the
    /// request may take, how long a write may wait for the peer to take any
    /// bytes, and (in [`crate::Client`]) how long a C-ECHO, C-STORE or
    /// N-EVENT-REPORT answer and the release may take.
    pub timeout: Duration,
    /// Open the association over DICOM TLS.
    pub tls: Option<ClientTls>,
}

/// Open an association to `address`.
pub async fn request(
    address: &str,
    params: &RequestParams,
    proposed: &[ProposedContext],
) -> Result<Association, AssociationError> {
    let (mut pdu_reader, mut pdu_writer, peer) = connect_stream(address, params).await?;
    let mut user_variables = vec![
        UserVariableItem::MaxLength(params.max_pdu_length),
        UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_string()),
        UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION_NAME.to_string()),
    ];
    let mut role_classes: Vec<&str> = Vec::new();
    for context in proposed.iter().filter(|pc| pc.scp_role) {
        if !role_classes.contains(&context.abstract_syntax.as_str()) {
            role_classes.push(&context.abstract_syntax);
            user_variables.push(UserVariableItem::ScuScpRoleSelectionSubItem(
                context.abstract_syntax.clone(),
                RequestorRoles { scu: false, scp: true },
            ));
        }
    }
    let presentation_contexts: Vec<PresentationContextProposed> = proposed
        .iter()
        .enumerate()
        .map(|(index, pc)| PresentationContextProposed {
            id: (index * 2 + 1) as u8,
            abstract_syntax: pc.abstract_syntax.clone(),
            transfer_syntaxes: pc.transfer_syntaxes.clone(),
        })
        .collect();
    let request = AssociationRQ {
        protocol_version: 1,
        calling_ae_title: params.calling_ae.clone(),
        called_ae_title: params.called_ae.clone(),
        application_context_name: APPLICATION_CONTEXT.to_string(),
        presentation_contexts: presentation_contexts.clone(),
        user_variables,
    };
    pdu_writer.send_control(&Pdu::AssociationRQ(request)).await?;
    let reply = tokio::time::timeout(params.timeout, pdu_reader.read())
        .await
        .map_err(|_| AssociationError::Timeout(params.timeout))??;
    let accept = match reply {
        Incoming::Control(Pdu::AssociationAC(accept)) => accept,
        Incoming::Control(Pdu::AssociationRJ(reject)) => {
            return Err(AssociationError::Rejected(reject.source.to_string()))
        }
        Incoming::Control(Pdu::AbortRQ { .. }) => return Err(AssociationError::Aborted),
        Incoming::Control(other) => return Err(AssociationError::Unexpected(other.short_description().to_string())),
        Incoming::Data(_) => return Err(AssociationError::Unexpected("P-DATA-TF before A-ASSOCIATE-AC".into())),
    };
    let mut peer_max_pdu_length = 16_384;
    let mut peer_implementation = None;
    let mut granted_scp: Vec<String> = Vec::new();
    for variable in &accept.user_variables {
        match variable {
            UserVariableItem::MaxLength(length) => peer_max_pdu_length = *length,
            UserVariableItem::ImplementationVersionName(name) => peer_implementation = Some(name.clone()),
            UserVariableItem::ScuScpRoleSelectionSubItem(uid, roles) if roles.scp => {
                granted_scp.push(trim_uid(uid).to_string())
            }
            _ => {}
        }
    }
    let contexts = accept
        .presentation_contexts
        .iter()
        .filter_map(|result| {
            let proposed = presentation_contexts.iter().find(|pc| pc.id == result.id)?;
            let abstract_syntax = proposed.abstract_syntax.clone();
            Some(NegotiatedContext {
                id: result.id,
                requestor_scp: granted_scp.contains(&abstract_syntax),
                requestor_scu: true,
                abstract_syntax,
                transfer_syntax: trim_uid(&result.transfer_syntax).to_string(),
                accepted: result.reason == PresentationContextResultReason::Acceptance,
            })
        })
        .collect();
    pdu_writer.set_peer_max_pdu_length(peer_max_pdu_length);
    let info = AssociationInfo {
        id: new_association_id(),
        calling_ae: params.calling_ae.clone(),
        called_ae: params.called_ae.clone(),
        peer,
        contexts,
        peer_max_pdu_length,
        local_max_pdu_length: params.max_pdu_length,
        peer_implementation,
    };
    Ok(Association { info, reader: DimseReader::new(pdu_reader), writer: DimseWriter::new(pdu_writer) })
}

/// A short random id for logs and the journal.
pub fn new_association_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with(contexts: Vec<PresentationContextProposed>, roles: Vec<(&str, bool)>) -> AssociationRQ {
        let mut user_variables = vec![UserVariableItem::MaxLength(32_768)];
        for (uid, scp) in roles {
            user_variables
                .push(UserVariableItem::ScuScpRoleSelectionSubItem(uid.into(), RequestorRoles { scu: true, scp }));
        }
        AssociationRQ {
            protocol_version: 1,
            calling_ae_title: "SCU".into(),
            called_ae_title: "HANEUL".into(),
            application_context_name: APPLICATION_CONTEXT.into(),
            presentation_contexts: contexts,
            user_variables,
        }
    }

    fn pc(id: u8, abstract_syntax: &str, tss: &[&str]) -> PresentationContextProposed {
        PresentationContextProposed {
            id,
            abstract_syntax: abstract_syntax.into(),
            transfer_syntaxes: tss.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn rejections_say_whether_to_try_again() {
        use dicom_ul::pdu::AssociationRJServiceProviderPresentationReason as Provider;
        let rejection = |refusal| match rejection_pdu(refusal) {
            Pdu::AssociationRJ(reject) => (reject.result, reject.source),
            other => panic!("not an A-ASSOCIATE-RJ: {other:?}"),
        };
        assert_eq!(
            rejection(Refusal::LimitExceeded),
            (
                AssociationRJResult::Transient,
                AssociationRJSource::ServiceProviderPresentation(Provider::LocalLimitExceeded)
            )
        );
        assert_eq!(
            rejection(Refusal::Busy),
            (
                AssociationRJResult::Transient,
                AssociationRJSource::ServiceProviderPresentation(Provider::TemporaryCongestion)
            )
        );
        assert_eq!(
            rejection(Refusal::CallingAeNotRecognized),
            (
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
            )
        );
    }

    #[test]
    fn storage_keeps_the_offered_compressed_syntax_and_services_prefer_explicit() {
        let policy = AcceptPolicy { ae_title: "HANEUL".into(), max_pdu_length: 65_536 };
        let jpeg = "1.2.840.10008.1.2.4.50";
        let request = request_with(
            vec![
                pc(1, "1.2.840.10008.5.1.4.1.1.2", &[jpeg, ts::EXPLICIT_VR_LITTLE_ENDIAN]),
                pc(3, sop::STUDY_ROOT_FIND, &[ts::IMPLICIT_VR_LITTLE_ENDIAN, ts::EXPLICIT_VR_LITTLE_ENDIAN]),
                pc(5, "1.2.3.4.5", &[ts::IMPLICIT_VR_LITTLE_ENDIAN]),
                pc(7, "1.2.840.10008.5.1.4.1.1.7", &["1.2.840.113619.5.2"]),
            ],
            vec![("1.2.840.10008.5.1.4.1.1.2", true)],
        );
        let (accept, contexts, peer_max) = negotiate(&request, &policy);
        assert_eq!(peer_max, 32_768);
        assert_eq!(contexts[0].transfer_syntax, jpeg);
        assert!(contexts[0].accepted && contexts[0].requestor_scp);
        assert_eq!(contexts[1].transfer_syntax, ts::EXPLICIT_VR_LITTLE_ENDIAN);
        assert!(!contexts[2].accepted, "unknown abstract syntax");
        assert_eq!(accept.presentation_contexts[2].reason, PresentationContextResultReason::AbstractSyntaxNotSupported);
        assert_eq!(
            accept.presentation_contexts[3].reason,
            PresentationContextResultReason::TransferSyntaxesNotSupported
        );
        assert!(accept
            .user_variables
            .iter()
            .any(|v| matches!(v, UserVariableItem::ScuScpRoleSelectionSubItem(_, r) if r.scp)));
    }
}
