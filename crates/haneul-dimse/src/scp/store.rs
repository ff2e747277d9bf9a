//! C-STORE SCP: stream the data set into the archive, answer after it is durable.

use haneul_core::audit::Action;
use haneul_core::{CommitOutcome, IngestError, IngestFormat, IngestReport, RejectReason};
use haneul_dicom::dict;
use tracing::{info, warn};

use super::{error_comment, Session};
use crate::association::NegotiatedContext;
use crate::command::{field, status, tag, Command};
use crate::message::DimseError;

pub(super) async fn handle(
    session: &mut Session,
    context: &NegotiatedContext,
    command: Command,
) -> Result<(), DimseError> {
    let context_id = context.id;
    let limit = session.settings().max_dataset_size;
    let sop_class = command.text(tag::AFFECTED_SOP_CLASS_UID).unwrap_or_default().to_string();
    let sop_instance = command.text(tag::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default().to_string();
    let refusal = if !command.has_data_set() {
        Some((status::CANNOT_UNDERSTAND, "C-STORE-RQ without a data set".to_string()))
    } else if !dict::is_storage_sop_class(&context.abstract_syntax) {
        Some((status::SOP_CLASS_NOT_SUPPORTED, format!("{} is not a storage SOP class", context.abstract_syntax)))
    } else if sop_class != context.abstract_syntax {
        Some((
            status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            "affected SOP class differs from the presentation context".to_string(),
        ))
    } else if sop_instance.is_empty() {
        Some((status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "missing Affected SOP Instance UID".to_string()))
    } else {
        None
    };
    if let Some((code, reason)) = refusal {
        if command.has_data_set() {
            session.reader.skip_data_set(context_id, limit).await?;
        }
        warn!(sop_instance_uid = %sop_instance, %reason, "C-STORE refused");
        session.archive().audit(
            session.audit_entry(Action::Store).detail("sop_instance_uid", sop_instance.as_str()).failed(&reason),
        );
        return respond(session, context_id, &command, &sop_instance, code, Some(&reason)).await;
    }

    let format = IngestFormat::Dataset {
        transfer_syntax_uid: context.transfer_syntax.clone(),
        sop_class_uid: sop_class.clone(),
        sop_instance_uid: sop_instance.clone(),
    };
    let mut ingest = match session.archive().begin_ingest(format, session.origin.clone()) {
        Ok(ingest) => ingest,
        Err(error) => {
            session.reader.skip_data_set(context_id, limit).await?;
            warn!(%error, "cannot start storing");
            session.archive().audit(
                session.audit_entry(Action::Store).detail("sop_instance_uid", sop_instance.as_str()).failed(&error),
            );
            let comment = error.to_string();
            return respond(session, context_id, &command, &sop_instance, status::OUT_OF_RESOURCES, Some(&comment))
                .await;
        }
    };
    let write_error = match session.reader.stream_data_set(context_id, &mut ingest, limit).await {
        Ok(write_error) => write_error,
        Err(error) => {
            if matches!(error, DimseError::TooLarge(_)) {
                warn!(limit, sop_instance_uid = %sop_instance, "data set exceeds the configured maximum");
            }
            return Err(error);
        }
    };
    let result = match write_error {
        Some(error) => Err(error),
        None => session.archive().finish_ingest(ingest).await,
    };
    let (code, comment) = store_status(&result);
    let entry = session.audit_entry(Action::Store).detail("sop_instance_uid", sop_instance.as_str());
    session.archive().audit(match &result {
        Ok(report) => entry.patient(&report.patient_id).study(&report.study_instance_uid),
        Err(error) => entry.failed(error),
    });
    match &result {
        Ok(report) => info!(
            sop_instance_uid = %report.sop_instance_uid,
            study_instance_uid = %report.study_instance_uid,
            bytes = report.size,
            outcome = ?report.outcome,
            "C-STORE"
        ),
        Err(error) => warn!(sop_instance_uid = %sop_instance, %error, status = format!("{code:04X}"), "C-STORE failed"),
    }
    respond(session, context_id, &command, &sop_instance, code, comment.as_deref()).await
}

/// The C-STORE response status (and error comment) for an ingest's result;
/// shared with the C-GET service user, which answers sub-operations the same way.
pub(crate) fn store_status(result: &Result<IngestReport, IngestError>) -> (u16, Option<String>) {
    match result {
        Ok(report) => match &report.outcome {
            CommitOutcome::Stored | CommitOutcome::Replaced { .. } => (status::SUCCESS, None),
            CommitOutcome::AlreadyStored => (status::SUCCESS, None),
            // Durable here as a version kept for review: the sending peer is done.
            CommitOutcome::Conflict { .. } => (status::SUCCESS, None),
            // Removed here on purpose: the sending peer is done with it.
            CommitOutcome::RemovedHere => (status::SUCCESS, None),
            CommitOutcome::DuplicateIgnored => (
                status::WARNING_ELEMENTS_DISCARDED,
                Some("duplicate SOP Instance UID with other content; first copy kept".to_string()),
            ),
            CommitOutcome::DuplicateRejected { reason } => (status::DUPLICATE_SOP_INSTANCE, Some(reason.clone())),
        },
        Err(IngestError::Rejected { reason, detail }) => {
            let code = match reason {
                RejectReason::Unreadable | RejectReason::UnsupportedTransferSyntax => status::CANNOT_UNDERSTAND,
                RejectReason::MissingAttribute(_) | RejectReason::Inconsistent => {
                    status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS
                }
                RejectReason::Duplicate => status::DUPLICATE_SOP_INSTANCE,
            };
            (code, Some(detail.clone()))
        }
        Err(error) => (status::OUT_OF_RESOURCES, Some(error.to_string())),
    }
}

async fn respond(
    session: &mut Session,
    context_id: u8,
    request: &Command,
    sop_instance: &str,
    code: u16,
    comment: Option<&str>,
) -> Result<(), DimseError> {
    let mut response = Command::response_to(request, field::C_STORE_RSP, code);
    if !sop_instance.is_empty() {
        response.set_text(tag::AFFECTED_SOP_INSTANCE_UID, sop_instance);
    }
    if let Some(comment) = comment {
        response.set_text(tag::ERROR_COMMENT, error_comment(comment));
    }
    session.writer.send(context_id, &response, None).await
}
