//! C-MOVE and C-GET SCP: resolve the identifier to stored instances, send
//! each as a C-STORE sub-operation (to the move destination, or back on the
//! same association for C-GET), with a pending response after each.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};

use haneul_core::audit::Action;
use haneul_core::{Event, StoredInstance};
use haneul_dicom::matching::Query;
use haneul_dicom::read::read_dataset_bytes;
use haneul_dicom::transcode::{can_transcode, transcode};
use haneul_dicom::ts;
use haneul_dicom::write::Encoding;
use haneul_dicom::{tags, Dataset, Element, Value, VR};
use tracing::{info, warn};

use super::{context_transfer_syntax, error_comment, KnownAe, Session};
use crate::association::{NegotiatedContext, ProposedContext, RequestParams};
use crate::command::{field, status, tag, Command};
use crate::identifier::encode_identifier;
use crate::message::{DimseError, Received};
use crate::scu::{Client, StoreData};
use crate::sop::{self, QueryRetrieve};

/// Running sub-operation counts.
#[derive(Debug, Default)]
struct Progress {
    remaining: usize,
    completed: usize,
    failed: usize,
    warning: usize,
    failed_uids: Vec<String>,
}

fn clamp(count: usize) -> u16 {
    u16::try_from(count).unwrap_or(u16::MAX)
}

pub(super) async fn handle(
    session: &mut Session,
    context: &NegotiatedContext,
    command: Command,
) -> Result<(), DimseError> {
    let context_id = context.id;
    let is_move = command.command_field() == Some(field::C_MOVE_RQ);
    let response_field = if is_move { field::C_MOVE_RSP } else { field::C_GET_RSP };
    let model = match (sop::query_retrieve(&context.abstract_syntax), is_move) {
        (Some(QueryRetrieve::Move(model)), true) | (Some(QueryRetrieve::Get(model)), false) => model,
        _ => {
            if command.has_data_set() {
                session.reader.skip_data_set(context_id, session.settings().max_identifier_size).await?;
            }
            return fail(
                session,
                context_id,
                &command,
                response_field,
                status::SOP_CLASS_NOT_SUPPORTED,
                "wrong presentation context",
            )
            .await;
        }
    };
    if !command.has_data_set() {
        return fail(
            session,
            context_id,
            &command,
            response_field,
            status::CANNOT_UNDERSTAND,
            "request without identifier",
        )
        .await;
    }
    let syntax = context_transfer_syntax(context);
    let bytes = session.reader.read_data_set(context_id, session.settings().max_identifier_size).await?;
    let query = match read_dataset_bytes(&bytes, syntax)
        .map_err(|e| e.to_string())
        .and_then(|identifier| Query::from_identifier(&identifier, model).map_err(|e| e.to_string()))
    {
        Ok(query) => query,
        Err(error) => {
            warn!(%error, "invalid retrieve identifier");
            return fail(
                session,
                context_id,
                &command,
                response_field,
                status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                &error,
            )
            .await;
        }
    };
    let destination = if is_move {
        let title = command.text(tag::MOVE_DESTINATION).unwrap_or_default().to_string();
        match session.settings().known_ae(&title) {
            Some(known) => Some(known),
            None => {
                warn!(destination = %title, "C-MOVE to an unknown destination");
                let comment = format!("move destination {title:?} is not a known AE");
                return fail(session, context_id, &command, response_field, status::MOVE_DESTINATION_UNKNOWN, &comment)
                    .await;
            }
        }
    } else {
        None
    };
    let audit = session
        .audit_entry(Action::Retrieve)
        .detail("service", if is_move { "C-MOVE" } else { "C-GET" })
        .detail("query", haneul_core::query_keys(&query))
        .detail("destination", destination.as_ref().map(|d| d.title.clone()));
    let instances = match session.archive().find_instances(query, &session.origin).await {
        Ok(instances) => instances,
        Err(error) => {
            warn!(%error, "retrieve lookup failed");
            session.archive().audit(audit.failed(&error));
            return fail(
                session,
                context_id,
                &command,
                response_field,
                status::OUT_OF_RESOURCES_MATCHES,
                &error.to_string(),
            )
            .await;
        }
    };
    let mut progress = Progress { remaining: instances.len(), ..Progress::default() };
    let message_id = command.message_id();
    let mut cancelled = false;

    let mut client = match &destination {
        Some(known) => match open_destination(session, known, &instances).await {
            Ok(client) => Some(client),
            Err(error) => {
                warn!(destination = %known.title, %error, "cannot reach the move destination");
                let comment = format!("cannot reach {}: {error}", known.title);
                session.archive().audit_instances(audit.failed(&comment), &instances);
                return fail(
                    session,
                    context_id,
                    &command,
                    response_field,
                    status::OUT_OF_RESOURCES_SUBOPERATIONS,
                    &comment,
                )
                .await;
            }
        },
        None => None,
    };

    let mut next_sub_message_id: u16 = 1;
    for (index, instance) in instances.iter().enumerate() {
        if cancel_requested(session, message_id).await? {
            cancelled = true;
            break;
        }
        let outcome = match client.as_mut() {
            Some(client) => send_to_destination(session, client, instance, message_id).await,
            None => {
                let sub_id = next_sub_message_id;
                next_sub_message_id = next_sub_message_id.wrapping_add(1).max(1);
                let (outcome, cancel_seen) = send_back(session, instance, sub_id, message_id).await?;
                cancelled |= cancel_seen;
                outcome
            }
        };
        progress.remaining -= 1;
        if !matches!(outcome, SubOutcome::Failed(_) | SubOutcome::Lost(_)) {
            session.archive().metrics().instances_sent.inc();
        }
        match outcome {
            SubOutcome::Completed => progress.completed += 1,
            SubOutcome::Warning => progress.warning += 1,
            SubOutcome::Failed(reason) => {
                warn!(sop_instance_uid = %instance.sop_uid, %reason, "sub-operation failed");
                progress.failed += 1;
                progress.failed_uids.push(instance.sop_uid.clone());
            }
            SubOutcome::Lost(reason) => {
                // This one and the rest fail together, reported once.
                let unsent = &instances[index + 1..];
                warn!(
                    sop_instance_uid = %instance.sop_uid,
                    %reason,
                    unsent = unsent.len(),
                    "move destination lost: this sub-operation and the rest fail"
                );
                progress.failed += 1 + unsent.len();
                progress.remaining -= unsent.len();
                progress.failed_uids.push(instance.sop_uid.clone());
                progress.failed_uids.extend(unsent.iter().map(|instance| instance.sop_uid.clone()));
                if let Some(client) = client.take() {
                    // Skipped at once where the stream stalled (see PduWriter).
                    client.abort().await;
                }
                break;
            }
        }
        if cancelled {
            break;
        }
        if progress.remaining > 0 {
            let mut pending = Command::response_to(&command, response_field, status::PENDING);
            pending.set_suboperations(
                Some(clamp(progress.remaining)),
                clamp(progress.completed),
                clamp(progress.failed),
                clamp(progress.warning),
            );
            session.writer.send(context_id, &pending, None).await?;
        }
    }
    if let Some(client) = client {
        if let Err(error) = client.release().await {
            warn!(%error, "releasing the move destination association failed");
        }
    }

    let final_status = if cancelled {
        status::CANCEL
    } else if progress.failed == 0 && progress.warning == 0 {
        status::SUCCESS
    } else if progress.completed == 0 && progress.warning == 0 {
        status::OUT_OF_RESOURCES_SUBOPERATIONS
    } else {
        status::WARNING_SUBOPERATIONS
    };
    let mut event = Event::new(if is_move { "retrieve-move" } else { "retrieve-get" }, &session.origin);
    event.detail = serde_json::json!({
        "destination": destination.as_ref().map(|d| d.title.clone()),
        "completed": progress.completed,
        "failed": progress.failed,
        "warning": progress.warning,
        "cancelled": cancelled,
    });
    session.archive().journal(event);
    let audit = audit
        .detail("completed", progress.completed)
        .detail("failed", progress.failed)
        .detail("warning", progress.warning)
        .detail("cancelled", cancelled);
    let audit = if progress.completed == 0 && progress.warning == 0 && progress.failed > 0 {
        audit.failed(format!("{} sub-operations failed", progress.failed))
    } else {
        audit
    };
    session.archive().audit_instances(audit, &instances);
    info!(
        destination = destination.as_ref().map(|d| d.title.as_str()).unwrap_or("(same association)"),
        completed = progress.completed,
        failed = progress.failed,
        warning = progress.warning,
        cancelled,
        "{}",
        if is_move { "C-MOVE" } else { "C-GET" }
    );
    let mut response = Command::response_to(&command, response_field, final_status);
    let remaining = cancelled.then(|| clamp(progress.remaining));
    response.set_suboperations(remaining, clamp(progress.completed), clamp(progress.failed), clamp(progress.warning));
    // The list's value has a 16-bit length in explicit VR: past it, the
    // counts alone say what failed (the UIDs are in the log and the audit).
    let list_length = progress.failed_uids.iter().map(|uid| uid.len() + 1).sum::<usize>();
    if list_length > MAX_FAILED_UID_LIST_BYTES {
        warn!(
            failed = progress.failed_uids.len(),
            "failed SOP Instance UID list too long for the final response: left out"
        );
    }
    if progress.failed_uids.is_empty() || list_length > MAX_FAILED_UID_LIST_BYTES {
        return session.writer.send(context_id, &response, None).await;
    }
    let mut identifier = Dataset::new();
    identifier.put(Element::new(tags::FAILED_SOP_INSTANCE_UID_LIST, VR::UI, Value::Strings(progress.failed_uids)));
    let encoding = Encoding::of(syntax).unwrap_or(Encoding::IMPLICIT_LE);
    let encoded = encode_identifier(
        &mut identifier,
        &haneul_dicom::charset::SpecificCharacterSet::default_repertoire(),
        encoding,
    )
    .map_err(|e| DimseError::Protocol(e.to_string()))?;
    session.writer.send(context_id, &response, Some(&encoded)).await
}

/// Largest Failed SOP Instance UID List sent (a UI value's 16-bit length).
const MAX_FAILED_UID_LIST_BYTES: usize = 0xFFFE;

enum SubOutcome {
    Completed,
    Warning,
    Failed(String),
    /// Failed, and the destination's association with it: no answer came in
    /// time, or the connection broke. A late answer could be taken for the
    /// next instance's, so nothing more is sent on it.
    Lost(String),
}

fn classify(code: u16) -> SubOutcome {
    if code == status::SUCCESS {
        SubOutcome::Completed
    } else if status::is_success_or_warning(code) {
        SubOutcome::Warning
    } else {
        SubOutcome::Failed(format!("destination answered status {code:04X}"))
    }
}

/// A non-blocking look for a C-CANCEL of the running operation.
async fn cancel_requested(session: &mut Session, message_id: Option<u16>) -> Result<bool, DimseError> {
    tokio::select! {
        biased;
        incoming = session.reader.next_command() => match incoming? {
            Received::Command { command, .. }
                if command.command_field() == Some(field::C_CANCEL_RQ)
                    && command.u16(tag::MESSAGE_ID_BEING_RESPONDED_TO) == message_id => Ok(true),
            other => Err(DimseError::Protocol(format!("unexpected message during retrieve: {other:?}"))),
        },
        _ = std::future::ready(()) => Ok(false),
    }
}

/// Open the association to a C-MOVE destination, proposing each stored
/// (SOP class, transfer syntax) pair so instances go out as they were received.
async fn open_destination(
    session: &Session,
    destination: &KnownAe,
    instances: &[StoredInstance],
) -> Result<Client, crate::scu::ScuError> {
    let pairs: BTreeSet<(&str, &str)> =
        instances.iter().map(|instance| (instance.sop_class.as_str(), instance.transfer_syntax.as_str())).collect();
    let mut proposed: Vec<ProposedContext> =
        pairs.iter().map(|(class, syntax)| ProposedContext::new(class, &[syntax])).collect();
    // Classes stored uncompressed can also go out in the uncompressed
    // syntaxes every node accepts, transcoded on the way.
    let transcodable: BTreeSet<&str> = pairs
        .iter()
        .filter(|(_, syntax)| ts::lookup(syntax).is_some_and(|stored| !stored.encapsulated))
        .map(|(class, _)| *class)
        .collect();
    for class in transcodable {
        proposed.push(ProposedContext::new(class, &[ts::EXPLICIT_VR_LITTLE_ENDIAN, ts::IMPLICIT_VR_LITTLE_ENDIAN]));
    }
    proposed.truncate(128);
    let params = RequestParams {
        calling_ae: session.settings().ae_title.clone(),
        called_ae: destination.title.clone(),
        max_pdu_length: session.settings().max_pdu_length,
        timeout: session.settings().outbound_timeout,
        tls: None,
    };
    Client::connect(&destination.address(), &params, &proposed).await
}

/// The data set of an instance as it goes on the wire.
enum Payload {
    /// The stored bytes, sent straight from the file.
    Stored { file: std::fs::File, offset: u64, length: u64 },
    /// Re-encoded for a peer that does not take the stored transfer syntax.
    Transcoded(Vec<u8>),
}

/// Pick the presentation context to send an instance on: one with the stored
/// transfer syntax if possible, else one whose syntax it can be transcoded to.
fn choose_context<'a>(
    contexts: impl Iterator<Item = &'a NegotiatedContext> + Clone,
    instance: &StoredInstance,
) -> Option<&'a NegotiatedContext> {
    let for_class = contexts.filter(|pc| pc.accepted && pc.abstract_syntax == instance.sop_class);
    if let Some(exact) = for_class.clone().find(|pc| pc.transfer_syntax == instance.transfer_syntax) {
        return Some(exact);
    }
    let stored = ts::lookup(&instance.transfer_syntax)?;
    for_class.into_iter().find(|pc| ts::lookup(&pc.transfer_syntax).is_some_and(|target| can_transcode(stored, target)))
}

async fn payload_for(session: &Session, instance: &StoredInstance, transfer_syntax: &str) -> Result<Payload, String> {
    // With corrections applied, if any.
    let delivered = session.archive().open_delivered(instance).await.map_err(|e| e.to_string())?;
    let file = delivered.file;
    let (offset, length) = (delivered.dataset_offset, delivered.size.saturating_sub(delivered.dataset_offset));
    if transfer_syntax == instance.transfer_syntax {
        return Ok(Payload::Stored { file, offset, length });
    }
    let (Some(from), Some(to)) = (ts::lookup(&instance.transfer_syntax), ts::lookup(transfer_syntax)) else {
        return Err(format!("unknown transfer syntax {transfer_syntax}"));
    };
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        let mut bytes = vec![0u8; usize::try_from(length).map_err(|_| "instance too large to transcode".to_string())?];
        file.seek(SeekFrom::Start(offset)).and_then(|_| file.read_exact(&mut bytes)).map_err(|e| e.to_string())?;
        transcode(&bytes, from, to).map(Payload::Transcoded).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn send_to_destination(
    session: &Session,
    client: &mut Client,
    instance: &StoredInstance,
    message_id: Option<u16>,
) -> SubOutcome {
    let Some(context) = choose_context(client.info().contexts.iter(), instance).cloned() else {
        return SubOutcome::Failed(format!(
            "destination accepted no context for {} in {}",
            instance.sop_class, instance.transfer_syntax
        ));
    };
    let payload = match payload_for(session, instance, &context.transfer_syntax).await {
        Ok(payload) => payload,
        Err(error) => return SubOutcome::Failed(error),
    };
    let originator = message_id.map(|id| (session.info.calling_ae.as_str(), id));
    let data = match payload {
        Payload::Stored { file, offset, length } => StoreData::File { file, offset, length },
        Payload::Transcoded(ref bytes) => StoreData::Bytes(bytes),
    };
    match client.store(context.id, &instance.sop_class, &instance.sop_uid, data, originator).await {
        Ok(response) => classify(response.status().unwrap_or(status::PROCESSING_FAILURE)),
        Err(error) => SubOutcome::Lost(error.to_string()),
    }
}

/// Send an instance back on the requesting association (C-GET); returns the
/// outcome and whether a C-CANCEL arrived meanwhile.
async fn send_back(
    session: &mut Session,
    instance: &StoredInstance,
    sub_message_id: u16,
    get_message_id: Option<u16>,
) -> Result<(SubOutcome, bool), DimseError> {
    let context = choose_context(session.info.contexts.iter().filter(|pc| pc.requestor_scp), instance).cloned();
    let Some(context) = context else {
        let reason =
            format!("requester accepted no storage context for {} in {}", instance.sop_class, instance.transfer_syntax);
        return Ok((SubOutcome::Failed(reason), false));
    };
    let context_id = context.id;
    let payload = match payload_for(session, instance, &context.transfer_syntax).await {
        Ok(payload) => payload,
        Err(error) => return Ok((SubOutcome::Failed(error), false)),
    };
    let mut request = Command::new(field::C_STORE_RQ);
    request
        .set_u16(tag::MESSAGE_ID, sub_message_id)
        .set_u16(tag::PRIORITY, 0)
        .set_text(tag::AFFECTED_SOP_CLASS_UID, instance.sop_class.as_str())
        .set_text(tag::AFFECTED_SOP_INSTANCE_UID, instance.sop_uid.as_str());
    match payload {
        Payload::Stored { file, offset, length } => {
            session.writer.send_with_file(context_id, &request, file, offset, length).await?
        }
        Payload::Transcoded(bytes) => session.writer.send(context_id, &request, Some(&bytes)).await?,
    }
    let mut cancel_seen = false;
    // The requester answers each C-STORE; one that does not is idle.
    let idle = session.settings().idle_timeout;
    loop {
        let Received::Command { context_id: incoming_context, command } =
            session.reader.next_command_within(idle).await?
        else {
            return Err(DimseError::Protocol("release requested during C-GET".into()));
        };
        match command.command_field() {
            Some(field::C_CANCEL_RQ) if command.u16(tag::MESSAGE_ID_BEING_RESPONDED_TO) == get_message_id => {
                cancel_seen = true
            }
            Some(field::C_STORE_RSP) if command.u16(tag::MESSAGE_ID_BEING_RESPONDED_TO) == Some(sub_message_id) => {
                if command.has_data_set() {
                    session.reader.skip_data_set(incoming_context, 1 << 20).await?;
                }
                let code = command.status().unwrap_or(status::PROCESSING_FAILURE);
                return Ok((classify(code), cancel_seen));
            }
            _ => return Err(DimseError::Protocol(format!("unexpected message during C-GET: {command:?}"))),
        }
    }
}

async fn fail(
    session: &mut Session,
    context_id: u8,
    request: &Command,
    response_field: u16,
    code: u16,
    comment: &str,
) -> Result<(), DimseError> {
    let mut response = Command::response_to(request, response_field, code);
    response.set_suboperations(None, 0, 0, 0);
    response.set_text(tag::ERROR_COMMENT, error_comment(comment));
    session.writer.send(context_id, &response, None).await
}
