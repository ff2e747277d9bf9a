//! Storage Commitment Push Model SCP (PS3.4 J): N-ACTION asks Haneul to take
//! responsibility for instances; the N-EVENT-REPORT confirms only those that
//! are in the catalog (hence durable) and, by default, whose blob still
//! matches its digest.

use std::sync::Arc;
use std::time::Duration;

use haneul_core::{Archive, Event, Origin};
use haneul_dicom::charset::SpecificCharacterSet;
use haneul_dicom::read::read_dataset_bytes;
use haneul_dicom::write::Encoding;
use haneul_dicom::{tags, ts, Dataset, Element, Tag, Value, VR};
use tracing::{info, warn};

use super::{context_transfer_syntax, error_comment, CommitmentDelivery, ServerSettings, Session};
use crate::association::{NegotiatedContext, ProposedContext, RequestParams};
use crate::command::{field, status, tag, Command};
use crate::identifier::encode_identifier;
use crate::message::{DimseError, Received};
use crate::scu::Client;
use crate::sop::{STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_PUSH_INSTANCE};

const TRANSACTION_UID: Tag = Tag(0x0008, 0x1195);
const REFERENCED_SOP_SEQUENCE: Tag = Tag(0x0008, 0x1199);
const FAILED_SOP_SEQUENCE: Tag = Tag(0x0008, 0x1198);
const FAILURE_REASON: Tag = Tag(0x0008, 0x1197);
const RETRIEVE_AE_TITLE: Tag = Tag(0x0008, 0x0054);

/// Event Type IDs of the commitment report.
const ALL_COMMITTED: u16 = 1;
const SOME_FAILED: u16 = 2;

pub(super) async fn handle(
    session: &mut Session,
    context: &NegotiatedContext,
    command: Command,
) -> Result<(), DimseError> {
    let context_id = context.id;
    let limit = session.settings().max_identifier_size;
    let requested_class = command.text(tag::REQUESTED_SOP_CLASS_UID).unwrap_or_default().to_string();
    let requested_instance = command.text(tag::REQUESTED_SOP_INSTANCE_UID).unwrap_or_default().to_string();
    let refusal = if context.abstract_syntax != STORAGE_COMMITMENT_PUSH || requested_class != STORAGE_COMMITMENT_PUSH {
        Some((status::NO_SUCH_SOP_CLASS, "only Storage Commitment Push Model is served"))
    } else if requested_instance != STORAGE_COMMITMENT_PUSH_INSTANCE {
        Some((status::NO_SUCH_OBJECT_INSTANCE, "requested SOP instance must be 1.2.840.10008.1.20.1.1"))
    } else if command.u16(tag::ACTION_TYPE_ID) != Some(1) {
        Some((status::NO_SUCH_ACTION, "action type must be 1 (request storage commitment)"))
    } else if !command.has_data_set() {
        Some((status::INVALID_ARGUMENT_VALUE, "N-ACTION-RQ without data set"))
    } else {
        None
    };
    if let Some((code, comment)) = refusal {
        if command.has_data_set() {
            session.reader.skip_data_set(context_id, limit).await?;
        }
        warn!(%comment, "storage commitment request refused");
        return respond(session, context_id, &command, code, Some(comment)).await;
    }
    let syntax = context_transfer_syntax(context);
    let bytes = session.reader.read_data_set(context_id, limit).await?;
    let request = match read_dataset_bytes(&bytes, syntax).map_err(|e| e.to_string()).and_then(parse_request) {
        Ok(request) => request,
        Err(error) => {
            warn!(%error, "invalid storage commitment request");
            return respond(session, context_id, &command, status::INVALID_ARGUMENT_VALUE, Some(&error)).await;
        }
    };
    respond(session, context_id, &command, status::SUCCESS, None).await?;

    let report = evaluate(session.archive(), session.settings(), &request).await;
    let mut event = Event::new("storage-commitment", &session.origin);
    event.detail = serde_json::json!({
        "transaction_uid": request.transaction_uid,
        "committed": report.committed.len(),
        "failed": report.failed.len(),
    });
    session.archive().journal(event);
    let audit = session
        .audit_entry(haneul_core::audit::Action::Query)
        .detail("service", "storage-commitment")
        .detail("transaction_uid", request.transaction_uid.as_str())
        .detail("committed", report.committed.len())
        .detail("failed", report.failed.len());
    let (archive, committed) =
        (Arc::clone(session.archive()), report.committed.iter().map(|(_, uid)| uid.clone()).collect());
    tokio::spawn(async move {
        let stored = archive.instances_by_sop_uid(committed).await.unwrap_or_default();
        archive.audit_instances(audit, &stored);
    });
    info!(
        transaction_uid = %request.transaction_uid,
        committed = report.committed.len(),
        failed = report.failed.len(),
        "storage commitment evaluated"
    );

    let settings = Arc::clone(&session.server.settings);
    if settings.commitment_delivery == CommitmentDelivery::SameAssociation {
        match deliver_on_this_association(session, context, &report).await {
            Ok(Delivery::Done) => return Ok(()),
            Ok(Delivery::PeerReleased) => {
                session.closed = true;
            }
            Err(error) => {
                warn!(%error, "could not report commitment on the requesting association; trying a new one");
                session.closed = true;
            }
        }
    }
    let archive = Arc::clone(session.archive());
    let origin = session.origin.clone();
    tokio::spawn(async move { deliver_on_new_association(archive, settings, origin, report).await });
    Ok(())
}

struct CommitmentRequest {
    transaction_uid: String,
    references: Vec<(String, String)>,
}

fn parse_request(dataset: Dataset) -> Result<CommitmentRequest, String> {
    let transaction_uid = dataset.string(TRANSACTION_UID).ok_or("missing Transaction UID (0008,1195)")?.to_string();
    let items = dataset.items(REFERENCED_SOP_SEQUENCE);
    if items.is_empty() {
        return Err("empty Referenced SOP Sequence (0008,1199)".into());
    }
    let mut references = Vec::with_capacity(items.len());
    for item in items {
        let class = item.string(tags::REFERENCED_SOP_CLASS_UID).ok_or("reference without Referenced SOP Class UID")?;
        let instance =
            item.string(tags::REFERENCED_SOP_INSTANCE_UID).ok_or("reference without Referenced SOP Instance UID")?;
        references.push((class.to_string(), instance.to_string()));
    }
    Ok(CommitmentRequest { transaction_uid, references })
}

/// The outcome of one commitment request.
struct CommitmentReport {
    transaction_uid: String,
    retrieve_ae: String,
    committed: Vec<(String, String)>,
    /// (class, instance, failure reason)
    failed: Vec<(String, String, u16)>,
}

async fn evaluate(archive: &Arc<Archive>, settings: &ServerSettings, request: &CommitmentRequest) -> CommitmentReport {
    let uids: Vec<String> = request.references.iter().map(|(_, instance)| instance.clone()).collect();
    let stored = archive.instances_by_sop_uid(uids).await.unwrap_or_else(|error| {
        warn!(%error, "catalog lookup for storage commitment failed");
        Vec::new()
    });
    let mut report = CommitmentReport {
        transaction_uid: request.transaction_uid.clone(),
        retrieve_ae: settings.ae_title.clone(),
        committed: Vec::new(),
        failed: Vec::new(),
    };
    for (class, instance) in &request.references {
        let Some(found) = stored.iter().find(|s| &s.sop_uid == instance) else {
            report.failed.push((class.clone(), instance.clone(), status::NO_SUCH_OBJECT_INSTANCE));
            continue;
        };
        if &found.sop_class != class {
            report.failed.push((class.clone(), instance.clone(), status::CLASS_INSTANCE_CONFLICT));
            continue;
        }
        if !found.settled {
            warn!(sop_instance_uid = %instance, "instance is still being made durable; commitment refused");
            report.failed.push((class.clone(), instance.clone(), status::PROCESSING_FAILURE));
            continue;
        }
        if settings.commitment_verifies_digests && !archive.check_instance(found).await {
            warn!(sop_instance_uid = %instance, "stored instance fails its digest check; commitment refused");
            report.failed.push((class.clone(), instance.clone(), status::PROCESSING_FAILURE));
            continue;
        }
        report.committed.push((class.clone(), instance.clone()));
    }
    report
}

impl CommitmentReport {
    fn event_type(&self) -> u16 {
        if self.failed.is_empty() {
            ALL_COMMITTED
        } else {
            SOME_FAILED
        }
    }

    fn dataset(&self) -> Dataset {
        let mut dataset = Dataset::new();
        dataset.put(Element::text(TRANSACTION_UID, VR::UI, self.transaction_uid.clone()));
        dataset.put(Element::text(RETRIEVE_AE_TITLE, VR::AE, self.retrieve_ae.clone()));
        let reference = |class: &str, instance: &str| {
            let mut item = Dataset::new();
            item.put(Element::text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class));
            item.put(Element::text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance));
            item
        };
        if !self.committed.is_empty() {
            let items = self.committed.iter().map(|(class, instance)| reference(class, instance)).collect();
            dataset.put(Element::new(REFERENCED_SOP_SEQUENCE, VR::SQ, Value::Sequence(items)));
        }
        if !self.failed.is_empty() {
            let items = self
                .failed
                .iter()
                .map(|(class, instance, reason)| {
                    let mut item = reference(class, instance);
                    item.put(Element::new(FAILURE_REASON, VR::US, Value::U16(vec![*reason])));
                    item
                })
                .collect();
            dataset.put(Element::new(FAILED_SOP_SEQUENCE, VR::SQ, Value::Sequence(items)));
        }
        dataset
    }

    fn encode(&self, syntax: &ts::TransferSyntax) -> Result<Vec<u8>, String> {
        let encoding = Encoding::of(syntax).ok_or("transfer syntax cannot carry the report")?;
        let mut dataset = self.dataset();
        encode_identifier(&mut dataset, &SpecificCharacterSet::default_repertoire(), encoding)
            .map_err(|e| e.to_string())
    }
}

enum Delivery {
    Done,
    PeerReleased,
}

async fn deliver_on_this_association(
    session: &mut Session,
    context: &NegotiatedContext,
    report: &CommitmentReport,
) -> Result<Delivery, DimseError> {
    let data = report.encode(context_transfer_syntax(context)).map_err(DimseError::Protocol)?;
    let message_id = 0x8001;
    let mut request = Command::new(field::N_EVENT_REPORT_RQ);
    request
        .set_u16(tag::MESSAGE_ID, message_id)
        .set_text(tag::AFFECTED_SOP_CLASS_UID, STORAGE_COMMITMENT_PUSH)
        .set_text(tag::AFFECTED_SOP_INSTANCE_UID, STORAGE_COMMITMENT_PUSH_INSTANCE)
        .set_u16(tag::EVENT_TYPE_ID, report.event_type());
    session.writer.send(context.id, &request, Some(&data)).await?;
    let wait = session.settings().outbound_timeout;
    let received = tokio::time::timeout(wait, session.reader.next_command())
        .await
        .map_err(|_| DimseError::Protocol("no N-EVENT-REPORT-RSP in time".into()))??;
    match received {
        Received::Command { context_id, command }
            if command.command_field() == Some(field::N_EVENT_REPORT_RSP)
                && command.u16(tag::MESSAGE_ID_BEING_RESPONDED_TO) == Some(message_id) =>
        {
            if command.has_data_set() {
                session.reader.skip_data_set(context_id, 1 << 20).await?;
            }
            let code = command.status().unwrap_or(status::PROCESSING_FAILURE);
            info!(status = format!("{code:04X}"), "storage commitment reported on the requesting association");
            Ok(Delivery::Done)
        }
        Received::ReleaseRequest => {
            session.writer.send_control(&dicom_ul::pdu::Pdu::ReleaseRP).await?;
            session.writer.shutdown().await;
            Ok(Delivery::PeerReleased)
        }
        other => Err(DimseError::Protocol(format!("unexpected reply to N-EVENT-REPORT: {other:?}"))),
    }
}

async fn deliver_on_new_association(
    archive: Arc<Archive>,
    settings: Arc<ServerSettings>,
    origin: Origin,
    report: CommitmentReport,
) {
    let Some(destination) = settings.known_ae(&origin.actor) else {
        warn!(requester = %origin.actor, "storage commitment result cannot be delivered: requester is not a known AE");
        archive.journal(Event::new("storage-commitment-undeliverable", &origin));
        return;
    };
    let params = RequestParams {
        calling_ae: settings.ae_title.clone(),
        called_ae: destination.title.clone(),
        max_pdu_length: settings.max_pdu_length,
        timeout: settings.outbound_timeout,
        tls: None,
    };
    let proposed = [ProposedContext {
        abstract_syntax: STORAGE_COMMITMENT_PUSH.to_string(),
        transfer_syntaxes: vec![ts::EXPLICIT_VR_LITTLE_ENDIAN.to_string(), ts::IMPLICIT_VR_LITTLE_ENDIAN.to_string()],
        scp_role: true,
    }];
    for attempt in 1..=3u32 {
        match try_deliver(&destination.address(), &params, &proposed, &report).await {
            Ok(code) => {
                info!(destination = %destination.title, status = format!("{code:04X}"), "storage commitment reported on a new association");
                let mut event = Event::new("storage-commitment-reported", &origin);
                event.detail = serde_json::json!({ "transaction_uid": report.transaction_uid, "status": code });
                archive.journal(event);
                return;
            }
            Err(error) => {
                warn!(destination = %destination.title, attempt, %error, "storage commitment report failed");
                tokio::time::sleep(Duration::from_secs(2 * u64::from(attempt))).await;
            }
        }
    }
    archive.journal(Event::new("storage-commitment-undeliverable", &origin));
}

async fn try_deliver(
    address: &str,
    params: &RequestParams,
    proposed: &[ProposedContext],
    report: &CommitmentReport,
) -> Result<u16, String> {
    let mut client = Client::connect(address, params, proposed).await.map_err(|e| e.to_string())?;
    let context = client
        .info()
        .find_context(STORAGE_COMMITMENT_PUSH, None)
        .cloned()
        .ok_or("requester did not accept the storage commitment context")?;
    let syntax = ts::lookup(&context.transfer_syntax).ok_or("unknown transfer syntax")?;
    let data = report.encode(syntax)?;
    let code = client
        .event_report(context.id, STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_PUSH_INSTANCE, report.event_type(), &data)
        .await
        .map_err(|e| e.to_string())?;
    // The report is delivered: a failed release must not send it again.
    if let Err(error) = client.release().await {
        warn!(%error, "releasing the storage commitment report's association failed");
    }
    Ok(code)
}

async fn respond(
    session: &mut Session,
    context_id: u8,
    request: &Command,
    code: u16,
    comment: Option<&str>,
) -> Result<(), DimseError> {
    let mut response = Command::response_to(request, field::N_ACTION_RSP, code);
    response.set_text(tag::AFFECTED_SOP_INSTANCE_UID, STORAGE_COMMITMENT_PUSH_INSTANCE);
    if code == status::SUCCESS {
        response.set_u16(tag::ACTION_TYPE_ID, 1);
    }
    if let Some(comment) = comment {
        response.set_text(tag::ERROR_COMMENT, error_comment(comment));
    }
    session.writer.send(context_id, &response, None).await
}
