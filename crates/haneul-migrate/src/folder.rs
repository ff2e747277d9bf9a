//! A folder tree (or the folder of DICOMDIR media) as a migration source:
//! every readable instance file under it, grouped by study.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use haneul_core::PlannedStudy;
use haneul_dicom::read::ReadOptions;
use haneul_dicom::tags;

/// One study found in the folder.
#[derive(Debug, Clone, Default)]
pub struct FolderStudy {
    pub patient_id: String,
    pub patient_name: String,
    pub study_date: String,
    pub files: Vec<PathBuf>,
    pub sop_uids: Vec<String>,
    /// The file each instance was read from (the first, if several hold it).
    pub file_of: BTreeMap<String, PathBuf>,
}

/// What a scan of the folder found.
#[derive(Debug, Default)]
pub struct FolderIndex {
    pub studies: BTreeMap<String, FolderStudy>,
    /// Files that are not readable instances (with the reason); DICOMDIR files are skipped silently.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl FolderIndex {
    /// Read the header of every file under `root` (blocking; run it off the async threads).
    pub fn scan(root: &Path) -> Result<FolderIndex, String> {
        if !root.is_dir() {
            return Err(format!("{} is not a folder", root.display()));
        }
        let mut index = FolderIndex::default();
        for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
            let entry = entry.map_err(|error| format!("cannot read {}: {error}", root.display()))?;
            if !entry.file_type().is_file() || entry.file_name().eq_ignore_ascii_case("DICOMDIR") {
                continue;
            }
            let path = entry.into_path();
            match read_study_keys(&path) {
                Ok(keys) => {
                    let study = index.studies.entry(keys.study_uid).or_default();
                    if study.files.is_empty() {
                        (study.patient_id, study.patient_name, study.study_date) =
                            (keys.patient_id, keys.patient_name, keys.study_date);
                    }
                    study.file_of.entry(keys.sop_uid.clone()).or_insert_with(|| path.clone());
                    study.files.push(path);
                    study.sop_uids.push(keys.sop_uid);
                }
                Err(reason) => index.unreadable.push((path, reason)),
            }
        }
        for study in index.studies.values_mut() {
            study.sop_uids.sort();
            study.sop_uids.dedup();
        }
        Ok(index)
    }

    pub fn planned(&self) -> Vec<PlannedStudy> {
        self.studies
            .iter()
            .map(|(uid, study)| PlannedStudy {
                study_uid: uid.clone(),
                patient_id: study.patient_id.clone(),
                patient_name: study.patient_name.clone(),
                study_date: study.study_date.clone(),
                expected_instances: Some(study.sop_uids.len() as i64),
            })
            .collect()
    }
}

struct StudyKeys {
    study_uid: String,
    sop_uid: String,
    patient_id: String,
    patient_name: String,
    study_date: String,
}

fn read_study_keys(path: &Path) -> Result<StudyKeys, String> {
    let mut file = std::fs::File::open(path).map_err(|error| error.to_string())?;
    let header = haneul_dicom::header::read_instance_header(&mut file, &ReadOptions::default())
        .map_err(|error| format!("not a readable DICOM file: {error}"))?;
    let dataset = &header.parsed.dataset;
    let text = |tag| dataset.string(tag).unwrap_or_default().trim().to_string();
    let keys = StudyKeys {
        study_uid: text(tags::STUDY_INSTANCE_UID),
        sop_uid: text(tags::SOP_INSTANCE_UID),
        patient_id: text(tags::PATIENT_ID),
        patient_name: text(tags::PATIENT_NAME),
        study_date: text(tags::STUDY_DATE),
    };
    if keys.study_uid.is_empty() || keys.sop_uid.is_empty() {
        return Err("no Study or SOP Instance UID".into());
    }
    Ok(keys)
}
