//! Helpers for the edges' audit records: query keys in a record's detail,
//! and the patients of retrieved studies looked up off the request's path.

use std::sync::Arc;

use haneul_audit::Entry;
use haneul_dicom::levels::{InformationModel, Level};
use haneul_dicom::matching::Query;
use haneul_dicom::{tags, Dataset, Element, Value, VR};

use crate::{Archive, StoredInstance};

/// The constraints of a query as a JSON object (`keyword: matcher`).
pub fn query_keys(query: &Query) -> serde_json::Value {
    let keys: serde_json::Map<String, serde_json::Value> = query
        .constraints
        .iter()
        .map(|key| {
            let name =
                haneul_dicom::dict::keyword(key.tag).map(str::to_string).unwrap_or_else(|| format!("{}", key.tag));
            (name, serde_json::Value::String(format!("{:?}", key.matcher)))
        })
        .collect();
    serde_json::json!({ "level": query.level.as_str(), "keys": keys })
}

/// Add the patient ID and study UID of a query or response view.
pub fn add_view(entry: &mut Entry, view: &Dataset) {
    if let Some(id) = view.string(tags::PATIENT_ID) {
        entry.add_patient(id);
    }
    if let Some(uid) = view.string(tags::STUDY_INSTANCE_UID) {
        entry.add_study(uid);
    }
}

impl Archive {
    /// Record `entry` for these instances: their studies, and the patients of
    /// those studies, looked up from the catalog on a background task so the
    /// retrieve does not wait for it.
    pub fn audit_instances(self: &Arc<Self>, mut entry: Entry, instances: &[StoredInstance]) {
        for instance in instances {
            entry.add_study(&instance.study_uid);
        }
        entry = entry.detail("instances", instances.len());
        if entry.studies.is_empty() || !entry.patients.is_empty() || !self.auditor().is_enabled() {
            self.audit(entry);
            return;
        }
        let archive = Arc::clone(self);
        let studies = entry.studies.clone();
        tokio::task::spawn_blocking(move || {
            match study_query(&studies) {
                Ok(query) => {
                    let result = archive.catalog().find(&query, 0, &mut |view| {
                        add_view(&mut entry, &view);
                        true
                    });
                    if let Err(error) = result {
                        tracing::warn!(%error, "could not look up the patients of an audited retrieve");
                    }
                }
                Err(error) => tracing::warn!(%error, "could not look up the patients of an audited retrieve"),
            }
            archive.audit(entry);
        });
    }
}

fn study_query(studies: &[String]) -> Result<Query, String> {
    let mut identifier = Dataset::new();
    identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, Level::Study.as_str()));
    identifier.put(Element::new(tags::STUDY_INSTANCE_UID, VR::UI, Value::Strings(studies.to_vec())));
    identifier.put(Element::empty(tags::PATIENT_ID, VR::LO));
    Query::from_identifier(&identifier, InformationModel::StudyRoot).map_err(|error| error.to_string())
}
