//! The service SOP classes Haneul implements.

use haneul_dicom::levels::InformationModel;

pub const VERIFICATION: &str = "1.2.840.10008.1.1";
pub const PATIENT_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";
pub const PATIENT_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.1.2";
pub const PATIENT_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.1.3";
pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
pub const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
pub const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
pub const STORAGE_COMMITMENT_PUSH: &str = "1.2.840.10008.1.20.1";
pub const STORAGE_COMMITMENT_PUSH_INSTANCE: &str = "1.2.840.10008.1.20.1.1";

/// A query/retrieve service and its information model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryRetrieve {
    Find(InformationModel),
    Move(InformationModel),
    Get(InformationModel),
}

pub fn query_retrieve(abstract_syntax: &str) -> Option<QueryRetrieve> {
    use InformationModel::{PatientRoot, StudyRoot};
    Some(match abstract_syntax {
        PATIENT_ROOT_FIND => QueryRetrieve::Find(PatientRoot),
        STUDY_ROOT_FIND => QueryRetrieve::Find(StudyRoot),
        PATIENT_ROOT_MOVE => QueryRetrieve::Move(PatientRoot),
        STUDY_ROOT_MOVE => QueryRetrieve::Move(StudyRoot),
        PATIENT_ROOT_GET => QueryRetrieve::Get(PatientRoot),
        STUDY_ROOT_GET => QueryRetrieve::Get(StudyRoot),
        _ => return None,
    })
}

/// The SOP class UIDs of a model's C-FIND, C-MOVE and C-GET.
pub fn model_classes(model: InformationModel) -> (&'static str, &'static str, &'static str) {
    match model {
        InformationModel::PatientRoot => (PATIENT_ROOT_FIND, PATIENT_ROOT_MOVE, PATIENT_ROOT_GET),
        InformationModel::StudyRoot => (STUDY_ROOT_FIND, STUDY_ROOT_MOVE, STUDY_ROOT_GET),
    }
}

/// Non-storage SOP classes served (verification, query/retrieve, commitment).
pub fn is_service_class(abstract_syntax: &str) -> bool {
    abstract_syntax == VERIFICATION
        || abstract_syntax == STORAGE_COMMITMENT_PUSH
        || query_retrieve(abstract_syntax).is_some()
}
