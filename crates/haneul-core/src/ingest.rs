//! Ingest: from a byte stream to a durable, catalogued instance.
//!
//! Bytes are buffered up to [`FLUSH_THRESHOLD`] and written to a new blob off
//! the async threads, so memory per ingest stays bounded whatever the
//! instance size. [`Archive::finish_ingest`] parses the header, validates it,
//! fsyncs the blob and waits for the group commit; only its `Ok` means the
//! instance is durable.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use haneul_catalog::{
    BlobInfo, CommitOutcome, Event, InstanceFacts, NewInstance, Origin, PatientFacts, SeriesFacts, StudyFacts,
};
use haneul_dicom::header::{read_instance_header, InstanceHeader};
use haneul_dicom::levels::{level_of, Level};
use haneul_dicom::matching::normalize_temporal;
use haneul_dicom::meta::{encode_file_meta, read_layout, FileLayout, NewFileMeta};
use haneul_dicom::read::{read_dataset, ReadError, ReadOptions, SeekSource};
use haneul_dicom::{tags, ts, BulkRef, Dataset, Element, Tag, Value, VR};
use haneul_storage::{BlobWriter, WrittenBlob};

use crate::{run_blocking, Archive, ArchiveError};

/// Bytes buffered in memory before they are written to the blob.
pub const FLUSH_THRESHOLD: usize = 1 << 20;

/// What the incoming bytes are.
#[derive(Debug, Clone)]
pub enum IngestFormat {
    /// A bare data set (DIMSE C-STORE): Haneul writes the file meta group
    /// from these values, then the bytes exactly as received.
    Dataset { transfer_syntax_uid: String, sop_class_uid: String, sop_instance_uid: String },
    /// A complete Part 10 file (import, STOW-RS), stored byte for byte.
    Part10,
}

/// Why an instance was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// The bytes are not a readable data set (truncated, malformed).
    Unreadable,
    UnsupportedTransferSyntax,
    MissingAttribute(&'static str),
    /// The data set contradicts the command or file meta (UIDs, SOP class).
    Inconsistent,
    /// Same SOP Instance UID, different bytes, refused by policy.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("instance refused: {detail}")]
    Rejected { reason: RejectReason, detail: String },
    #[error("storage failure: {0}")]
    Storage(String),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

impl IngestError {
    fn rejected(reason: RejectReason, detail: impl Into<String>) -> IngestError {
        IngestError::Rejected { reason, detail: detail.into() }
    }
}

impl From<haneul_storage::StorageError> for IngestError {
    fn from(error: haneul_storage::StorageError) -> Self {
        IngestError::Storage(error.to_string())
    }
}

/// The result of a successful ingest.
#[derive(Debug, Clone)]
pub struct IngestReport {
    pub outcome: CommitOutcome,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub size: u64,
}

/// An instance being received.
pub struct Ingest {
    writer: Option<BlobWriter>,
    buffer: Vec<u8>,
    /// Bytes already handed to the blob writer.
    flushed: u64,
    format: IngestFormat,
    origin: Origin,
}

impl Ingest {
    /// Bytes received so far, file meta group included.
    pub fn len(&self) -> u64 {
        self.flushed + self.buffer.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append received bytes; writes to disk off the async threads when the buffer fills.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), IngestError> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= FLUSH_THRESHOLD {
            self.flush_buffer().await?;
        }
        Ok(())
    }

    async fn flush_buffer(&mut self) -> Result<(), IngestError> {
        let Some(mut writer) = self.writer.take() else {
            return Err(IngestError::Storage("ingest writer already closed".into()));
        };
        let mut buffer = std::mem::take(&mut self.buffer);
        let (writer, buffer, result) = tokio::task::spawn_blocking(move || {
            let result = writer.write_all(&buffer);
            buffer.clear();
            (writer, buffer, result)
        })
        .await
        .map_err(|error| IngestError::Storage(error.to_string()))?;
        self.flushed = writer.size();
        self.writer = Some(writer);
        self.buffer = buffer;
        result.map_err(IngestError::from)
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Archive {
    /// Start receiving one instance.
    pub fn begin_ingest(&self, format: IngestFormat, origin: Origin) -> Result<Ingest, IngestError> {
        let writer = self.blobs().create()?;
        let mut buffer = Vec::with_capacity(64 * 1024);
        if let IngestFormat::Dataset { transfer_syntax_uid, sop_class_uid, sop_instance_uid } = &format {
            buffer = encode_file_meta(&NewFileMeta {
                sop_class_uid,
                sop_instance_uid,
                transfer_syntax_uid,
                source_ae_title: Some(&origin.actor),
            });
        }
        Ok(Ingest { writer: Some(writer), buffer, flushed: 0, format, origin })
    }

    /// Validate, make durable and catalogue a received instance.
    pub async fn finish_ingest(self: &Arc<Self>, mut ingest: Ingest) -> Result<IngestReport, IngestError> {
        let Some(mut writer) = ingest.writer.take() else {
            return Err(IngestError::Storage("ingest writer already closed".into()));
        };
        let buffer = std::mem::take(&mut ingest.buffer);
        let whole_in_memory = ingest.flushed == 0;
        let format = ingest.format.clone();
        let origin = ingest.origin.clone();

        // Parse and validate before paying for an fsync.
        let (writer, prepared) = tokio::task::spawn_blocking(move || {
            let prepared = (|| {
                writer.write_all(&buffer)?;
                writer.flush()?;
                let header = if whole_in_memory {
                    read_header_from_memory(&buffer)
                } else {
                    let mut file = std::fs::File::open(writer.abs_path())
                        .map_err(|e| IngestError::Storage(format!("reopening received instance: {e}")))?;
                    read_instance_header(&mut file, &header_options()).map_err(unreadable)
                }?;
                validate(&header, &format)
            })();
            (writer, prepared)
        })
        .await
        .map_err(|error| IngestError::Storage(error.to_string()))?;
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                self.metrics().ingest_rejected.inc();
                self.journal_rejection(&origin, &error);
                drop(writer);
                return Err(error);
            }
        };

        // An identical copy already stored needs no second fsync.
        if let Some(report) = self.identical_copy(&prepared, &writer, &origin).await? {
            drop(writer);
            return Ok(report);
        }

        let written: WrittenBlob = run_blocking(move || writer.finish().map_err(ArchiveError::from)).await?;
        let blob = BlobInfo { path: written.rel_path.clone(), size: written.size, digest: written.digest.0 };
        let report_base = prepared.report(&blob);
        let new_instance = prepared.into_new_instance(blob, origin.clone());
        let outcome = self.committer().commit(new_instance).await.map_err(|message| {
            IngestError::Archive(ArchiveError::Catalog(haneul_catalog::CatalogError::Busy(message)))
        });
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                self.discard_blob(&written.rel_path);
                return Err(error);
            }
        };
        if !outcome.keeps_new_blob() {
            self.discard_blob(&written.rel_path);
        }
        drop(written.guard);
        match &outcome {
            CommitOutcome::Stored => {
                self.metrics().instances_stored.inc();
                self.metrics().bytes_stored.add(written.size);
            }
            CommitOutcome::DuplicateRejected { reason } => {
                self.metrics().duplicates.inc();
                return Err(IngestError::rejected(RejectReason::Duplicate, reason.clone()));
            }
            _ => self.metrics().duplicates.inc(),
        }
        Ok(IngestReport { outcome, ..report_base })
    }

    /// Import one file from disk (Part 10, or a bare data set whose encoding is guessed).
    pub async fn ingest_file(
        self: &Arc<Self>,
        path: &std::path::Path,
        origin: Origin,
    ) -> Result<IngestReport, IngestError> {
        let path = path.to_path_buf();
        let (format, bytes_to_store) = tokio::task::spawn_blocking(move || -> Result<_, IngestError> {
            let mut file =
                std::fs::File::open(&path).map_err(|e| IngestError::Storage(format!("{}: {e}", path.display())))?;
            let layout = read_layout(&mut std::io::BufReader::new(&mut file)).map_err(unreadable)?;
            match layout {
                FileLayout::Part10(_) => Ok((IngestFormat::Part10, std::fs::read(&path))),
                FileLayout::BareDataset { transfer_syntax_uid } => {
                    // A bare data set needs its UIDs for the meta group we write in front of it.
                    let header = read_instance_header(&mut file, &header_options()).map_err(unreadable)?;
                    let uid = |tag| header.parsed.dataset.string(tag).unwrap_or_default().to_string();
                    let format = IngestFormat::Dataset {
                        transfer_syntax_uid: transfer_syntax_uid.to_string(),
                        sop_class_uid: uid(tags::SOP_CLASS_UID),
                        sop_instance_uid: uid(tags::SOP_INSTANCE_UID),
                    };
                    Ok((format, std::fs::read(&path)))
                }
            }
        })
        .await
        .map_err(|error| IngestError::Storage(error.to_string()))??;
        let bytes = bytes_to_store.map_err(|e| IngestError::Storage(e.to_string()))?;
        let mut ingest = self.begin_ingest(format, origin)?;
        for chunk in bytes.chunks(FLUSH_THRESHOLD) {
            ingest.write(chunk).await?;
        }
        self.finish_ingest(ingest).await
    }

    /// If this exact instance (same UID, same bytes) is already stored,
    /// answer from the catalog instead of making a second copy durable.
    async fn identical_copy(
        &self,
        prepared: &Prepared,
        writer: &BlobWriter,
        origin: &Origin,
    ) -> Result<Option<IngestReport>, IngestError> {
        let existing = self.instances_by_sop_uid(vec![prepared.sop_instance_uid.clone()]).await?;
        let Some(existing) = existing.into_iter().next() else {
            return Ok(None);
        };
        if existing.blob.size != writer.size() || existing.blob.digest != writer.digest().0 {
            return Ok(None);
        }
        self.metrics().duplicates.inc();
        let mut event = Event::new("duplicate-identical", origin);
        event.study_uid = Some(prepared.study_instance_uid.clone());
        event.series_uid = Some(prepared.series_instance_uid.clone());
        event.sop_uid = Some(prepared.sop_instance_uid.clone());
        self.journal(event);
        let mut report = prepared.report(&existing.blob);
        report.outcome = CommitOutcome::AlreadyStored;
        Ok(Some(report))
    }

    fn discard_blob(&self, path: &str) {
        if let Err(error) = self.blobs().delete(path) {
            tracing::warn!(%path, %error, "could not remove discarded blob");
        }
    }

    fn journal_rejection(&self, origin: &Origin, error: &IngestError) {
        let event =
            Event::new("instance-rejected", origin).with_detail(serde_json::json!({ "reason": error.to_string() }));
        self.journal(event);
    }
}

fn header_options() -> ReadOptions {
    ReadOptions::default()
}

fn unreadable(error: ReadError) -> IngestError {
    match error {
        ReadError::UnsupportedTransferSyntax(uid) => {
            IngestError::rejected(RejectReason::UnsupportedTransferSyntax, format!("unsupported transfer syntax {uid}"))
        }
        other => IngestError::rejected(RejectReason::Unreadable, format!("unreadable data set: {other}")),
    }
}

fn read_header_from_memory(bytes: &[u8]) -> Result<InstanceHeader, IngestError> {
    let layout = read_layout(&mut Cursor::new(bytes)).map_err(unreadable)?;
    let FileLayout::Part10(meta) = layout else {
        return Err(IngestError::rejected(RejectReason::Unreadable, "file has no DICOM file meta information"));
    };
    let transfer_syntax = ts::lookup(&meta.transfer_syntax_uid)
        .ok_or_else(|| unreadable(ReadError::UnsupportedTransferSyntax(meta.transfer_syntax_uid.clone())))?;
    let start = usize::try_from(meta.dataset_offset).unwrap_or(usize::MAX).min(bytes.len());
    let dataset = &bytes[start..];
    let source = SeekSource::new(Cursor::new(dataset), 0, dataset.len() as u64);
    let parsed = read_dataset(source, transfer_syntax, &header_options()).map_err(unreadable)?;
    let dataset_offset = meta.dataset_offset;
    Ok(InstanceHeader { meta: Some(meta), transfer_syntax, dataset_offset, parsed })
}

/// A validated header, split by level, waiting for its blob to become durable.
struct Prepared {
    sop_class_uid: String,
    sop_instance_uid: String,
    study_instance_uid: String,
    series_instance_uid: String,
    transfer_syntax_uid: String,
    dataset_offset: u64,
    patient: PatientFacts,
    study: StudyFacts,
    series: SeriesFacts,
    instance_attrs: Dataset,
    instance_number: Option<i64>,
}

fn required(dataset: &Dataset, tag: Tag, name: &'static str) -> Result<String, IngestError> {
    dataset.string(tag).map(str::to_string).ok_or_else(|| {
        IngestError::rejected(RejectReason::MissingAttribute(name), format!("data set has no {name} {tag}"))
    })
}

fn validate(header: &InstanceHeader, format: &IngestFormat) -> Result<Prepared, IngestError> {
    let dataset = &header.parsed.dataset;
    let sop_class_uid = required(dataset, tags::SOP_CLASS_UID, "SOP Class UID")?;
    let sop_instance_uid = required(dataset, tags::SOP_INSTANCE_UID, "SOP Instance UID")?;
    let study_instance_uid = required(dataset, tags::STUDY_INSTANCE_UID, "Study Instance UID")?;
    let series_instance_uid = required(dataset, tags::SERIES_INSTANCE_UID, "Series Instance UID")?;
    for (name, uid) in [
        ("SOP Class UID", &sop_class_uid),
        ("SOP Instance UID", &sop_instance_uid),
        ("Study Instance UID", &study_instance_uid),
        ("Series Instance UID", &series_instance_uid),
    ] {
        if uid.len() > 64 || uid.contains(['\\', '/']) || uid.chars().any(char::is_control) {
            return Err(IngestError::rejected(RejectReason::Inconsistent, format!("{name} {uid:?} is not a UID")));
        }
    }
    let (declared_class, declared_instance) = match (format, &header.meta) {
        (IngestFormat::Dataset { sop_class_uid, sop_instance_uid, .. }, _) => {
            (sop_class_uid.as_str(), sop_instance_uid.as_str())
        }
        (IngestFormat::Part10, Some(meta)) => {
            (meta.media_storage_sop_class_uid.as_str(), meta.media_storage_sop_instance_uid.as_str())
        }
        (IngestFormat::Part10, None) => ("", ""),
    };
    if !declared_instance.is_empty() && declared_instance != sop_instance_uid {
        return Err(IngestError::rejected(
            RejectReason::Inconsistent,
            format!("SOP Instance UID {sop_instance_uid} in the data set differs from {declared_instance} announced"),
        ));
    }
    if !declared_class.is_empty() && declared_class != sop_class_uid {
        return Err(IngestError::rejected(
            RejectReason::Inconsistent,
            format!("SOP Class UID {sop_class_uid} in the data set differs from {declared_class} announced"),
        ));
    }

    let mut patient = PatientFacts::default();
    let mut study = StudyFacts { study_uid: study_instance_uid.clone(), ..StudyFacts::default() };
    let mut series = SeriesFacts { series_uid: series_instance_uid.clone(), ..SeriesFacts::default() };
    let mut instance_attrs = Dataset::new();
    for element in dataset.iter() {
        let target = match level_of(element.tag) {
            Level::Patient => &mut patient.attrs,
            Level::Study => &mut study.attrs,
            Level::Series => &mut series.attrs,
            Level::Image => &mut instance_attrs,
        };
        target.put(element.clone());
    }
    // The unique keys of the upper levels also belong on their own level records.
    study.attrs.put(Element::text(tags::STUDY_INSTANCE_UID, VR::UI, study_instance_uid.clone()));
    series.attrs.put(Element::text(tags::SERIES_INSTANCE_UID, VR::UI, series_instance_uid.clone()));
    if let Some(pixel) = &header.parsed.pixel_data {
        let bulk = BulkRef { offset: pixel.offset, length: pixel.length };
        instance_attrs.put(Element::new(pixel.tag, pixel.vr, Value::Bulk(bulk)));
    }

    let text = |tag| dataset.string(tag).unwrap_or_default().to_string();
    patient.patient_id = text(tags::PATIENT_ID);
    patient.issuer = text(tags::ISSUER_OF_PATIENT_ID);
    patient.name = text(tags::PATIENT_NAME);
    patient.birth_date = normalize_temporal(VR::DA, &text(tags::PATIENT_BIRTH_DATE)).unwrap_or_default();
    patient.sex = text(tags::PATIENT_SEX);
    study.study_date = normalize_temporal(VR::DA, &text(tags::STUDY_DATE)).unwrap_or_default();
    study.study_time = text(tags::STUDY_TIME);
    study.accession = text(tags::ACCESSION_NUMBER);
    study.study_id = text(tags::STUDY_ID);
    study.description = text(tags::STUDY_DESCRIPTION);
    study.referring_physician = text(tags::REFERRING_PHYSICIAN_NAME);
    series.modality = text(tags::MODALITY);
    series.series_number = dataset.int(tags::SERIES_NUMBER);
    series.description = text(tags::SERIES_DESCRIPTION);
    series.body_part = text(tags::BODY_PART_EXAMINED);

    Ok(Prepared {
        sop_class_uid,
        sop_instance_uid,
        study_instance_uid,
        series_instance_uid,
        transfer_syntax_uid: header.transfer_syntax.uid.to_string(),
        dataset_offset: header.dataset_offset,
        patient,
        study,
        series,
        instance_number: dataset.int(tags::INSTANCE_NUMBER),
        instance_attrs,
    })
}

impl Prepared {
    fn report(&self, blob: &BlobInfo) -> IngestReport {
        IngestReport {
            outcome: CommitOutcome::Stored,
            sop_class_uid: self.sop_class_uid.clone(),
            sop_instance_uid: self.sop_instance_uid.clone(),
            study_instance_uid: self.study_instance_uid.clone(),
            series_instance_uid: self.series_instance_uid.clone(),
            transfer_syntax_uid: self.transfer_syntax_uid.clone(),
            size: blob.size,
        }
    }

    fn into_new_instance(self, blob: BlobInfo, origin: Origin) -> NewInstance {
        NewInstance {
            patient: self.patient,
            study: self.study,
            series: self.series,
            instance: InstanceFacts {
                sop_uid: self.sop_instance_uid,
                sop_class: self.sop_class_uid,
                instance_number: self.instance_number,
                transfer_syntax: self.transfer_syntax_uid,
                dataset_offset: self.dataset_offset,
                blob,
                received_ms: now_ms(),
                attrs: self.instance_attrs,
            },
            origin,
        }
    }
}
