//! The DIMSE service user: C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET over one
//! association, on the same message layer as the server. Used for C-MOVE
//! sub-operations, storage commitment reports, the benchmark, and later by
//! replication and migration.

use std::sync::Arc;

use haneul_core::audit::Action;
use haneul_core::{Archive, IngestFormat, Origin};
use haneul_dicom::charset::SpecificCharacterSet;
use haneul_dicom::levels::InformationModel;
use haneul_dicom::read::read_dataset_bytes;
use haneul_dicom::write::Encoding;
use haneul_dicom::{ts, Dataset};

use crate::association::{request, Association, AssociationError, AssociationInfo, ProposedContext, RequestParams};
use crate::command::{field, status, tag, Command};
use crate::identifier::encode_identifier;
use crate::message::{DimseError, Received};
use crate::sop;

#[derive(Debug, thiserror::Error)]
pub enum ScuError {
    #[error(transparent)]
    Association(#[from] AssociationError),
    #[error(transparent)]
    Dimse(#[from] DimseError),
    #[error("no accepted presentation context for {0}")]
    NoContext(String),
    #[error("peer answered with {0}")]
    UnexpectedResponse(String),
    #[error("cannot encode identifier: {0}")]
    Encode(String),
}

/// Data set bytes to send with a C-STORE.
pub enum StoreData<'a> {
    Bytes(&'a [u8]),
    /// Consecutive parts of one data set.
    Parts(&'a [&'a [u8]]),
    File {
        file: std::fs::File,
        offset: u64,
        length: u64,
    },
}

/// Counters from the final response of a C-MOVE or C-GET.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetrieveSummary {
    pub status: u16,
    pub completed: u16,
    pub failed: u16,
    pub warning: u16,
    pub pending_responses: usize,
}

/// What a C-GET into the archive did.
#[derive(Debug, Clone, Default)]
pub struct GetIntoArchive {
    /// The final response's counters.
    pub summary: RetrieveSummary,
    /// Instances durable here (stored now or already).
    pub stored: u64,
    /// Instances not stored, each as "SOP Instance UID: reason".
    pub refused: Vec<String>,
}

/// An association opened by Haneul as service user.
pub struct Client {
    association: Association,
    next_message_id: u16,
    /// Largest data set accepted in responses and C-GET sub-operations.
    max_received: u64,
    /// How long a C-ECHO, C-STORE or N-EVENT-REPORT answer, the release, and
    /// the silence between a C-GET's messages may take
    /// (`RequestParams::timeout`). C-FIND and C-MOVE answers are not bounded
    /// here: a C-MOVE's instances come by another association, so callers
    /// watch their silence.
    answer_timeout: std::time::Duration,
}

impl Client {
    pub async fn connect(
        address: &str,
        params: &RequestParams,
        proposed: &[ProposedContext],
    ) -> Result<Client, ScuError> {
        let association = request(address, params, proposed).await?;
        Ok(Client { association, next_message_id: 1, max_received: 4 << 30, answer_timeout: params.timeout })
    }

    pub fn info(&self) -> &AssociationInfo {
        &self.association.info
    }

    fn message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    fn context_for(&self, abstract_syntax: &str) -> Result<(u8, &'static ts::TransferSyntax), ScuError> {
        let context = self
            .association
            .info
            .find_context(abstract_syntax, None)
            .ok_or_else(|| ScuError::NoContext(abstract_syntax.to_string()))?;
        let syntax =
            ts::lookup(&context.transfer_syntax).ok_or_else(|| ScuError::NoContext(abstract_syntax.to_string()))?;
        Ok((context.id, syntax))
    }

    /// [`Client::response`] within the answer timeout. After a timeout the
    /// association is unusable: the answer may still come.
    async fn timely_response(&mut self, message_id: u16) -> Result<Command, ScuError> {
        let limit = self.answer_timeout;
        let (_, response, _) =
            tokio::time::timeout(limit, self.response(message_id)).await.map_err(|_| DimseError::Timeout(limit))??;
        Ok(response)
    }

    /// Wait for the response to `message_id`, reading its data set if any.
    async fn response(&mut self, message_id: u16) -> Result<(u8, Command, Option<Vec<u8>>), ScuError> {
        match self.association.reader.next_command().await? {
            Received::Command { context_id, command } => {
                if command.u16(tag::MESSAGE_ID_BEING_RESPONDED_TO) != Some(message_id) {
                    return Err(ScuError::UnexpectedResponse(format!("response to another message: {command:?}")));
                }
                let data = if command.has_data_set() {
                    Some(self.association.reader.read_data_set(context_id, self.max_received).await?)
                } else {
                    None
                };
                Ok((context_id, command, data))
            }
            other => Err(ScuError::UnexpectedResponse(format!("{other:?}"))),
        }
    }

    pub async fn echo(&mut self) -> Result<u16, ScuError> {
        let (context_id, _) = self.context_for(sop::VERIFICATION)?;
        let id = self.message_id();
        let mut request = Command::new(field::C_ECHO_RQ);
        request.set_u16(tag::MESSAGE_ID, id).set_text(tag::AFFECTED_SOP_CLASS_UID, sop::VERIFICATION);
        self.association.writer.send(context_id, &request, None).await?;
        let response = self.timely_response(id).await?;
        Ok(response.status().unwrap_or(status::PROCESSING_FAILURE))
    }

    /// Send one C-STORE on a given presentation context; returns the response command.
    pub async fn store(
        &mut self,
        context_id: u8,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        data: StoreData<'_>,
        move_originator: Option<(&str, u16)>,
    ) -> Result<Command, ScuError> {
        let id = self.message_id();
        let mut request = Command::new(field::C_STORE_RQ);
        request
            .set_u16(tag::MESSAGE_ID, id)
            .set_u16(tag::PRIORITY, 0)
            .set_text(tag::AFFECTED_SOP_CLASS_UID, sop_class_uid)
            .set_text(tag::AFFECTED_SOP_INSTANCE_UID, sop_instance_uid);
        if let Some((originator, originator_id)) = move_originator {
            request
                .set_text(tag::MOVE_ORIGINATOR_AE_TITLE, originator)
                .set_u16(tag::MOVE_ORIGINATOR_MESSAGE_ID, originator_id);
        }
        match data {
            StoreData::Bytes(bytes) => self.association.writer.send(context_id, &request, Some(bytes)).await?,
            StoreData::Parts(parts) => self.association.writer.send_parts(context_id, &request, parts).await?,
            StoreData::File { file, offset, length } => {
                self.association.writer.send_with_file(context_id, &request, file, offset, length).await?
            }
        }
        self.timely_response(id).await
    }

    fn encode_identifier(&self, identifier: &Dataset, syntax: &ts::TransferSyntax) -> Result<Vec<u8>, ScuError> {
        let encoding = Encoding::of(syntax).ok_or_else(|| ScuError::Encode("non-native transfer syntax".into()))?;
        let mut identifier = identifier.clone();
        encode_identifier(&mut identifier, &SpecificCharacterSet::utf8(), encoding)
            .map_err(|e| ScuError::Encode(e.to_string()))
    }

    /// C-FIND: calls `on_match` for every pending response; returns the final status.
    pub async fn find(
        &mut self,
        model: InformationModel,
        identifier: &Dataset,
        mut on_match: impl FnMut(Dataset),
    ) -> Result<u16, ScuError> {
        let (find_class, _, _) = sop::model_classes(model);
        let (context_id, syntax) = self.context_for(find_class)?;
        let id = self.message_id();
        let mut request = Command::new(field::C_FIND_RQ);
        request
            .set_u16(tag::MESSAGE_ID, id)
            .set_u16(tag::PRIORITY, 0)
            .set_text(tag::AFFECTED_SOP_CLASS_UID, find_class);
        let encoded = self.encode_identifier(identifier, syntax)?;
        self.association.writer.send(context_id, &request, Some(&encoded)).await?;
        loop {
            let (_, response, data) = self.response(id).await?;
            let code = response.status().unwrap_or(status::PROCESSING_FAILURE);
            if !status::is_pending(code) {
                return Ok(code);
            }
            if let Some(data) = data {
                let dataset =
                    read_dataset_bytes(&data, syntax).map_err(|e| ScuError::UnexpectedResponse(e.to_string()))?;
                on_match(dataset);
            }
        }
    }

    /// C-MOVE to `destination`.
    pub async fn retrieve_move(
        &mut self,
        model: InformationModel,
        destination: &str,
        identifier: &Dataset,
    ) -> Result<RetrieveSummary, ScuError> {
        self.retrieve_move_watched(model, destination, identifier, || {}).await
    }

    /// [`Client::retrieve_move`], calling `on_answer` at each pending answer
    /// (a sign of life for a caller that bounds the node's silence).
    pub async fn retrieve_move_watched(
        &mut self,
        model: InformationModel,
        destination: &str,
        identifier: &Dataset,
        mut on_answer: impl FnMut(),
    ) -> Result<RetrieveSummary, ScuError> {
        let (_, move_class, _) = sop::model_classes(model);
        let (context_id, syntax) = self.context_for(move_class)?;
        let id = self.message_id();
        let mut request = Command::new(field::C_MOVE_RQ);
        request
            .set_u16(tag::MESSAGE_ID, id)
            .set_u16(tag::PRIORITY, 0)
            .set_text(tag::AFFECTED_SOP_CLASS_UID, move_class)
            .set_text(tag::MOVE_DESTINATION, destination);
        let encoded = self.encode_identifier(identifier, syntax)?;
        self.association.writer.send(context_id, &request, Some(&encoded)).await?;
        let mut summary = RetrieveSummary::default();
        loop {
            let (_, response, _) = self.response(id).await?;
            let code = response.status().unwrap_or(status::PROCESSING_FAILURE);
            summary.completed = response.u16(tag::COMPLETED_SUBOPERATIONS).unwrap_or(summary.completed);
            summary.failed = response.u16(tag::FAILED_SUBOPERATIONS).unwrap_or(summary.failed);
            summary.warning = response.u16(tag::WARNING_SUBOPERATIONS).unwrap_or(summary.warning);
            if !status::is_pending(code) {
                summary.status = code;
                return Ok(summary);
            }
            summary.pending_responses += 1;
            on_answer();
        }
    }

    /// C-GET whose instances are streamed into `archive` as they arrive, each
    /// answered only once it is durable (with the status the C-STORE service
    /// would give it), never held whole in memory. `origin` names the peer
    /// (its AE title is what coercion rules are keyed by).
    pub async fn retrieve_get_into(
        &mut self,
        model: InformationModel,
        identifier: &Dataset,
        archive: &Arc<Archive>,
        origin: &Origin,
    ) -> Result<GetIntoArchive, ScuError> {
        let (_, _, get_class) = sop::model_classes(model);
        let (context_id, syntax) = self.context_for(get_class)?;
        let id = self.message_id();
        let mut request = Command::new(field::C_GET_RQ);
        request.set_u16(tag::MESSAGE_ID, id).set_u16(tag::PRIORITY, 0).set_text(tag::AFFECTED_SOP_CLASS_UID, get_class);
        let encoded = self.encode_identifier(identifier, syntax)?;
        self.association.writer.send(context_id, &request, Some(&encoded)).await?;
        let mut outcome = GetIntoArchive::default();
        // Sub-operations and answers come on this association: a node silent
        // for the answer timeout is stuck, however long the study.
        let limit = self.answer_timeout;
        loop {
            let Received::Command { context_id: incoming_context, command } =
                self.association.reader.next_command_within(limit).await?
            else {
                return Err(ScuError::UnexpectedResponse("association release during C-GET".into()));
            };
            if command.command_field() == Some(field::C_STORE_RQ) {
                let (code, comment) = self.store_sub_operation(incoming_context, &command, archive, origin).await?;
                let sop_instance_uid = command.text(tag::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default().to_string();
                // A warning (a duplicate kept as first received) leaves the instance here.
                let failed = code != status::SUCCESS && code & 0xF000 != 0xB000;
                match failed {
                    true => outcome
                        .refused
                        .push(format!("{sop_instance_uid}: {}", comment.as_deref().unwrap_or("not stored"))),
                    false => outcome.stored += 1,
                }
                let mut response = Command::response_to(&command, field::C_STORE_RSP, code);
                response.set_text(tag::AFFECTED_SOP_INSTANCE_UID, sop_instance_uid);
                if let Some(comment) = comment {
                    response.set_text(tag::ERROR_COMMENT, crate::scp::error_comment(&comment));
                }
                self.association.writer.send(incoming_context, &response, None).await?;
                continue;
            }
            if command.u16(tag::MESSAGE_ID_BEING_RESPONDED_TO) != Some(id) {
                return Err(ScuError::UnexpectedResponse(format!("{command:?}")));
            }
            if command.has_data_set() {
                self.association.reader.skip_data_set(incoming_context, self.max_received).await?;
            }
            let code = command.status().unwrap_or(status::PROCESSING_FAILURE);
            let summary = &mut outcome.summary;
            summary.completed = command.u16(tag::COMPLETED_SUBOPERATIONS).unwrap_or(summary.completed);
            summary.failed = command.u16(tag::FAILED_SUBOPERATIONS).unwrap_or(summary.failed);
            summary.warning = command.u16(tag::WARNING_SUBOPERATIONS).unwrap_or(summary.warning);
            if !status::is_pending(code) {
                summary.status = code;
                return Ok(outcome);
            }
            summary.pending_responses += 1;
        }
    }

    /// Stream one C-STORE sub-operation's data set into the archive; returns
    /// the status to answer with.
    async fn store_sub_operation(
        &mut self,
        context_id: u8,
        command: &Command,
        archive: &Arc<Archive>,
        origin: &Origin,
    ) -> Result<(u16, Option<String>), ScuError> {
        let sop_class_uid = command.text(tag::AFFECTED_SOP_CLASS_UID).unwrap_or_default().to_string();
        let sop_instance_uid = command.text(tag::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default().to_string();
        let transfer_syntax_uid =
            self.association.info.context(context_id).map(|pc| pc.transfer_syntax.clone()).unwrap_or_default();
        let audit = || {
            haneul_core::audit::Entry::new(Action::Store, &origin.actor, origin.address.as_str(), &origin.session)
                .detail("sop_instance_uid", sop_instance_uid.as_str())
        };
        if !command.has_data_set() || sop_instance_uid.is_empty() {
            if command.has_data_set() {
                self.association.reader.skip_data_set(context_id, self.max_received).await?;
            }
            let reason = "C-STORE-RQ without a data set or SOP Instance UID".to_string();
            archive.audit(audit().failed(&reason));
            return Ok((status::CANNOT_UNDERSTAND, Some(reason)));
        }
        let format =
            IngestFormat::Dataset { transfer_syntax_uid, sop_class_uid, sop_instance_uid: sop_instance_uid.clone() };
        let mut ingest = match archive.begin_ingest(format, origin.clone()) {
            Ok(ingest) => ingest,
            Err(error) => {
                self.association.reader.skip_data_set(context_id, self.max_received).await?;
                archive.audit(audit().failed(&error));
                return Ok((status::OUT_OF_RESOURCES, Some(error.to_string())));
            }
        };
        let write_error = self.association.reader.stream_data_set(context_id, &mut ingest, self.max_received).await?;
        let result = match write_error {
            Some(error) => Err(error),
            None => archive.finish_ingest(ingest).await,
        };
        archive.audit(match &result {
            Ok(report) => audit().patient(&report.patient_id).study(&report.study_instance_uid),
            Err(error) => audit().failed(error),
        });
        if let Err(error) = &result {
            tracing::warn!(sop_instance_uid = %sop_instance_uid, %error, "C-GET sub-operation not stored");
        }
        Ok(crate::scp::store::store_status(&result))
    }

    /// Send an N-EVENT-REPORT and wait for its response status.
    pub async fn event_report(
        &mut self,
        context_id: u8,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        event_type: u16,
        data: &[u8],
    ) -> Result<u16, ScuError> {
        let id = self.message_id();
        let mut request = Command::new(field::N_EVENT_REPORT_RQ);
        request
            .set_u16(tag::MESSAGE_ID, id)
            .set_text(tag::AFFECTED_SOP_CLASS_UID, sop_class_uid)
            .set_text(tag::AFFECTED_SOP_INSTANCE_UID, sop_instance_uid)
            .set_u16(tag::EVENT_TYPE_ID, event_type);
        self.association.writer.send(context_id, &request, Some(data)).await?;
        let response = self.timely_response(id).await?;
        Ok(response.status().unwrap_or(status::PROCESSING_FAILURE))
    }

    /// Release the association gracefully (the answer within the answer timeout).
    pub async fn release(mut self) -> Result<(), ScuError> {
        let limit = self.answer_timeout;
        // The request's write has its own limit (the writer's stall limit),
        // which marks the stream stalled; only the wait for the answer is timed here.
        if let Err(error) = self.association.writer.send_control(&dicom_ul::pdu::Pdu::ReleaseRQ).await {
            self.association.writer.shutdown().await;
            return Err(error.into());
        }
        let released = tokio::time::timeout(limit, self.await_release()).await;
        self.association.writer.shutdown().await;
        released.map_err(|_| DimseError::Timeout(limit))?
    }

    async fn await_release(&mut self) -> Result<(), ScuError> {
        loop {
            match self.association.reader.next_command().await {
                Ok(Received::ReleaseResponse) => break,
                // A peer may cross our release with its own; answer and stop.
                Ok(Received::ReleaseRequest) => {
                    self.association.writer.send_control(&dicom_ul::pdu::Pdu::ReleaseRP).await?;
                    break;
                }
                Ok(Received::Command { .. }) => continue,
                Err(DimseError::Pdu(crate::pdu::PduError::Closed)) => break,
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Abort the association.
    pub async fn abort(mut self) {
        let _ = self.association.writer.send_control(&crate::association::abort_pdu()).await;
        self.association.writer.shutdown().await;
    }
}
