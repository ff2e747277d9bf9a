//! C-FIND SCP: one pending response per match, up to `max_find_answers` at
//! the patient, study and series levels (then the final status is Cancel),
//! C-CANCEL honoured between them.

use haneul_core::audit::Action;
use haneul_dicom::levels::{computed, Level};
use haneul_dicom::matching::{IndexHint, Query};
use haneul_dicom::read::read_dataset_bytes;
use haneul_dicom::write::Encoding;
use haneul_dicom::{tags, Element, VR};
use tracing::{info, warn};

use super::{context_transfer_syntax, error_comment, Session};
use crate::association::NegotiatedContext;
use crate::command::{field, status, tag, Command};
use crate::identifier::encode_identifier;
use crate::message::{DimseError, Received};
use crate::sop::{self, QueryRetrieve};

pub(super) async fn handle(
    session: &mut Session,
    context: &NegotiatedContext,
    command: Command,
) -> Result<(), DimseError> {
    let context_id = context.id;
    let Some(QueryRetrieve::Find(model)) = sop::query_retrieve(&context.abstract_syntax) else {
        if command.has_data_set() {
            session.reader.skip_data_set(context_id, session.settings().max_identifier_size).await?;
        }
        return fail(
            session,
            context_id,
            &command,
            status::SOP_CLASS_NOT_SUPPORTED,
            "not a C-FIND presentation context",
        )
        .await;
    };
    if !command.has_data_set() {
        return fail(session, context_id, &command, status::CANNOT_UNDERSTAND, "C-FIND-RQ without identifier").await;
    }
    let syntax = context_transfer_syntax(context);
    let bytes = session.reader.read_data_set(context_id, session.settings().max_identifier_size).await?;
    let identifier = match read_dataset_bytes(&bytes, syntax) {
        Ok(identifier) => identifier,
        Err(error) => {
            warn!(%error, "unreadable C-FIND identifier");
            return fail(
                session,
                context_id,
                &command,
                status::CANNOT_UNDERSTAND,
                &format!("unreadable identifier: {error}"),
            )
            .await;
        }
    };
    let query = match Query::from_identifier(&identifier, model) {
        Ok(query) => query,
        Err(error) => {
            warn!(%error, "invalid C-FIND identifier");
            return fail(session, context_id, &command, status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS, &error.to_string())
                .await;
        }
    };
    let Some(encoding) = Encoding::of(syntax) else {
        return fail(
            session,
            context_id,
            &command,
            status::UNABLE_TO_PROCESS,
            "transfer syntax cannot carry responses",
        )
        .await;
    };
    let message_id = command.message_id();
    let mut matches = session.archive().find(query.clone(), &session.origin);
    let retrieve_ae = session.settings().ae_title.clone();
    let max_answers = session.settings().max_find_answers.filter(|_| !lists_one_study_or_series(&query));
    let mut sent = 0usize;
    let mut cancelled = false;
    // Set when a match beyond `max_find_answers` was left out.
    let mut cut = false;
    let mut audit = session.audit_entry(Action::Query).detail("query", haneul_core::query_keys(&query));
    let final_status = loop {
        tokio::select! {
            biased;
            incoming = session.reader.next_command() => match incoming? {
                Received::Command { command: cancel, .. }
                    if cancel.command_field() == Some(field::C_CANCEL_RQ)
                        && cancel.u16(tag::MESSAGE_ID_BEING_RESPONDED_TO) == message_id =>
                {
                    cancelled = true;
                    break status::CANCEL;
                }
                other => return Err(DimseError::Protocol(format!("unexpected message during C-FIND: {other:?}"))),
            },
            next = matches.recv() => match next {
                None => break status::SUCCESS,
                Some(Err(error)) => {
                    warn!(%error, "query failed");
                    audit = audit.failed(&error);
                    break status::UNABLE_TO_PROCESS;
                }
                Some(Ok(_)) if max_answers.is_some_and(|max| sent >= max) => {
                    cut = true;
                    break status::CANCEL;
                }
                Some(Ok(view)) => {
                    haneul_core::audit_add_view(&mut audit, &view);
                    let mut response_identifier = query.response(&view);
                    if query.return_keys.iter().any(|(t, _)| *t == computed::RETRIEVE_AE_TITLE) {
                        response_identifier.put(Element::text(computed::RETRIEVE_AE_TITLE, VR::AE, retrieve_ae.clone()));
                    }
                    if query.return_keys.iter().any(|(t, _)| *t == computed::INSTANCE_AVAILABILITY) {
                        response_identifier.put(Element::text(computed::INSTANCE_AVAILABILITY, VR::CS, "ONLINE"));
                    }
                    let encoded = match encode_identifier(&mut response_identifier, &query.charset, encoding) {
                        Ok(encoded) => encoded,
                        Err(error) => {
                            warn!(%error, "could not encode a C-FIND response");
                            break status::UNABLE_TO_PROCESS;
                        }
                    };
                    let response = Command::response_to(&command, field::C_FIND_RSP, status::PENDING);
                    session.writer.send(context_id, &response, Some(&encoded)).await?;
                    sent += 1;
                }
            },
        }
    };
    drop(matches);
    session.archive().audit(audit.detail("matches", sent).detail("cancelled", cancelled).detail("cut", cut));
    if cut {
        info!(level = query.level.as_str(), matches = sent, "C-FIND cut at max_find_answers: ended with Cancel");
    } else {
        info!(level = query.level.as_str(), matches = sent, cancelled, "C-FIND");
    }
    let response = Command::response_to(&command, field::C_FIND_RSP, final_status);
    session.writer.send(context_id, &response, None).await
}

/// An IMAGE-level query for one study or series: bounded by it already, and
/// a listing cut there would look like missing instances. Any other query,
/// an IMAGE-level one over everything included, is cut at the maximum.
fn lists_one_study_or_series(query: &Query) -> bool {
    query.level == Level::Image
        && query.constraints.iter().any(|key| {
            (key.tag == tags::STUDY_INSTANCE_UID || key.tag == tags::SERIES_INSTANCE_UID)
                && matches!(key.matcher.hint(), Some(IndexHint::Equals(_)))
        })
}

async fn fail(
    session: &mut Session,
    context_id: u8,
    request: &Command,
    code: u16,
    comment: &str,
) -> Result<(), DimseError> {
    let mut response = Command::response_to(request, field::C_FIND_RSP, code);
    response.set_text(tag::ERROR_COMMENT, error_comment(comment));
    session.writer.send(context_id, &response, None).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use haneul_dicom::levels::InformationModel;
    use haneul_dicom::Dataset;

    fn query(level: &str, keys: &[(haneul_dicom::Tag, &str)]) -> Query {
        let mut identifier = Dataset::new();
        identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, level));
        for (tag, value) in keys {
            let values = value.split('\\').map(str::to_string).collect();
            identifier.put(Element::new(*tag, VR::UI, haneul_dicom::Value::Strings(values)));
        }
        Query::from_identifier(&identifier, InformationModel::StudyRoot).expect("a valid query")
    }

    #[test]
    fn only_image_listings_of_one_study_or_series_escape_the_answer_cap() {
        assert!(lists_one_study_or_series(&query("IMAGE", &[(tags::STUDY_INSTANCE_UID, "1.2.3")])));
        assert!(lists_one_study_or_series(&query(
            "IMAGE",
            &[(tags::STUDY_INSTANCE_UID, "1.2.3"), (tags::SERIES_INSTANCE_UID, "1.2.3.4")]
        )));
        // Every instance, or those of several studies, are cut like any other answer.
        assert!(!lists_one_study_or_series(&query("IMAGE", &[(tags::SOP_INSTANCE_UID, "")])));
        assert!(!lists_one_study_or_series(&query("IMAGE", &[(tags::STUDY_INSTANCE_UID, "1.2.3\\1.2.4")])));
        assert!(!lists_one_study_or_series(&query("STUDY", &[(tags::STUDY_INSTANCE_UID, "1.2.3")])));
    }
}
