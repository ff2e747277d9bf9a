//! Fetching a study by C-GET: the instances come back on the association
//! that asked for them, so the old archive needs no route to Haneul (no move
//! destination, no firewall opening towards the new archive).
//!
//! C-GET needs a presentation context, with the SCP role, for every SOP
//! class and transfer syntax the node will send. The study's classes come
//! from the node's SOP Classes in Study at STUDY level where it states them,
//! else from its IMAGE-level listing; each transfer syntax gets its own
//! context, so that the node finds the one its file is stored in and sends
//! it unchanged instead of converting it. An association holds at most 128
//! contexts: a study with more classes than fit is fetched series by series,
//! over as many associations as its classes need.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use haneul_core::{Archive, Origin};
use haneul_dicom::levels::InformationModel;
use haneul_dicom::{ts, Dataset};
use haneul_dimse::command::status;
use haneul_dimse::{sop, Client, ProposedContext};

use crate::walk::{self, DicomNode, InstanceRef};

/// Presentation context ids are the odd numbers 1 to 255.
const MAX_CONTEXTS: usize = 128;

/// Transfer syntaxes an archive may hold instances in, each proposed alone.
const STORED_SYNTAXES: &[&str] = &[
    ts::EXPLICIT_VR_LITTLE_ENDIAN,
    ts::IMPLICIT_VR_LITTLE_ENDIAN,
    "1.2.840.10008.1.2.1.99",  // deflated explicit VR little endian
    "1.2.840.10008.1.2.2",     // explicit VR big endian (retired)
    "1.2.840.10008.1.2.4.50",  // JPEG baseline
    "1.2.840.10008.1.2.4.51",  // JPEG extended
    "1.2.840.10008.1.2.4.57",  // JPEG lossless
    "1.2.840.10008.1.2.4.70",  // JPEG lossless, first-order prediction
    "1.2.840.10008.1.2.4.80",  // JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  // JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  // JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  // JPEG 2000
    "1.2.840.10008.1.2.4.201", // HTJ2K lossless
    "1.2.840.10008.1.2.4.202", // HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203", // HTJ2K
    "1.2.840.10008.1.2.5",     // RLE lossless
];

/// Video transfer syntaxes, proposed for the video classes only.
const VIDEO_SYNTAXES: &[&str] = &[
    "1.2.840.10008.1.2.4.100", // MPEG2 main profile
    "1.2.840.10008.1.2.4.101", // MPEG2 high profile
    "1.2.840.10008.1.2.4.102", // MPEG-4 AVC/H.264 high profile
    "1.2.840.10008.1.2.4.103", // MPEG-4 AVC/H.264 BD-compatible
    "1.2.840.10008.1.2.4.104", // MPEG-4 AVC/H.264 for 2D video
    "1.2.840.10008.1.2.4.105", // MPEG-4 AVC/H.264 for 3D video
    "1.2.840.10008.1.2.4.106", // MPEG-4 AVC/H.264 stereo
    "1.2.840.10008.1.2.4.107", // HEVC/H.265 main profile
    "1.2.840.10008.1.2.4.108", // HEVC/H.265 main 10 profile
];

/// The VL video classes (endoscopic, microscopic, photographic) start with this.
const VIDEO_CLASS_PREFIX: &str = "1.2.840.10008.5.1.4.1.1.77.1.";

/// What fetching one study by C-GET did.
#[derive(Debug, Default)]
pub struct GetOutcome {
    /// Instances durable here.
    pub stored: u64,
    /// Instances the archive refused, each with its reason.
    pub refused: Vec<String>,
    /// The study's SOP Instance UIDs as the node listed them for this fetch,
    /// which the verification right after it compares with (`None`: the
    /// listing failed, the verification asks again).
    pub listed: Option<BTreeSet<String>>,
}

/// Why a C-GET did not bring the whole study.
#[derive(Debug)]
pub struct GetError {
    pub detail: String,
    /// Whether trying again may help (the network), or not (the study cannot be asked for so).
    pub retriable: bool,
}

fn syntaxes_for(sop_class: &str) -> impl Iterator<Item = &'static str> {
    let video = sop_class.starts_with(VIDEO_CLASS_PREFIX);
    STORED_SYNTAXES.iter().chain(VIDEO_SYNTAXES.iter().filter(move |_| video)).copied()
}

/// Contexts needed for a set of classes.
fn contexts_needed(classes: &BTreeSet<String>) -> usize {
    classes.iter().map(|class| contexts_for(class)).sum()
}

/// Contexts needed for one class.
fn contexts_for(sop_class: &str) -> usize {
    syntaxes_for(sop_class).count()
}

/// One association's worth of work: the classes it proposes and the series it
/// asks for (`None`: the whole study in one request).
#[derive(Debug, PartialEq, Eq)]
pub struct Batch {
    pub classes: BTreeSet<String>,
    pub series: Option<Vec<String>>,
}

/// Plan the associations for a study from its instances.
pub fn plan_batches(instances: &[InstanceRef]) -> Result<Vec<Batch>, GetError> {
    let refuse = |detail: String| GetError { detail, retriable: false };
    if let Some(unknown) = instances.iter().find(|instance| instance.sop_class.is_empty()) {
        return Err(refuse(format!(
            "the source does not tell the SOP Class UID of instance {} at IMAGE level, which C-GET needs; use method = \"c-move\"",
            unknown.sop_uid
        )));
    }
    // One context is the C-GET request's own.
    let budget = MAX_CONTEXTS - 1;
    let all_classes: BTreeSet<String> = instances.iter().map(|instance| instance.sop_class.clone()).collect();
    if contexts_needed(&all_classes) <= budget {
        return Ok(vec![Batch { classes: all_classes, series: None }]);
    }
    let mut by_series: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for instance in instances {
        by_series.entry(instance.series_uid.as_str()).or_default().insert(instance.sop_class.clone());
    }
    let mut batches: Vec<Batch> = Vec::new();
    for (series_uid, classes) in by_series {
        if series_uid.is_empty() {
            return Err(refuse("the source does not tell the series of its instances at IMAGE level".into()));
        }
        if contexts_needed(&classes) > budget {
            return Err(refuse(format!("series {series_uid} has more SOP classes than one association can carry")));
        }
        let fits = batches
            .iter_mut()
            .find(|batch| contexts_needed(&batch.classes.union(&classes).cloned().collect()) <= budget);
        match fits {
            Some(batch) => {
                batch.classes.extend(classes);
                batch.series.get_or_insert_with(Vec::new).push(series_uid.to_string());
            }
            None => batches.push(Batch { classes, series: Some(vec![series_uid.to_string()]) }),
        }
    }
    Ok(batches)
}

fn proposed_contexts(classes: &BTreeSet<String>, with_find: bool) -> Vec<ProposedContext> {
    let own_syntaxes = [ts::EXPLICIT_VR_LITTLE_ENDIAN, ts::IMPLICIT_VR_LITTLE_ENDIAN];
    let mut proposed = vec![ProposedContext::new(sop::STUDY_ROOT_GET, &own_syntaxes)];
    if with_find {
        proposed.push(ProposedContext::new(sop::STUDY_ROOT_FIND, &own_syntaxes));
    }
    for class in classes {
        for syntax in syntaxes_for(class) {
            let mut context = ProposedContext::new(class, &[syntax]);
            context.scp_role = true;
            proposed.push(context);
        }
    }
    proposed
}

fn retriable(detail: String) -> GetError {
    GetError { detail, retriable: true }
}

/// How one C-GET request ended, once its instances are in `outcome`.
enum Ended {
    Complete,
    /// The association broke: the caller aborts it.
    Broken(String),
    /// The node failed sub-operations that we did not refuse: it could not
    /// read or send some instances, or had no context for their class.
    NodeFailed(String),
}

/// One C-GET request on `client`, its instances streamed into `archive` and
/// counted in `outcome`.
async fn get_into(
    client: &mut Client,
    node: &DicomNode,
    request: (&Arc<Archive>, &Origin),
    identifier: &Dataset,
    outcome: &mut GetOutcome,
) -> Ended {
    let (archive, origin) = request;
    let got = match client.retrieve_get_into(InformationModel::StudyRoot, identifier, archive, origin).await {
        Ok(got) => got,
        Err(error) => return Ended::Broken(format!("C-GET from {}: {error}", node.ae_title)),
    };
    outcome.stored += got.stored;
    let refused_here = got.refused.len();
    outcome.refused.extend(got.refused);
    let summary = got.summary;
    let succeeded = summary.status == status::SUCCESS || summary.status & 0xF000 == 0xB000;
    // Failures we answered ourselves are reported per instance; others
    // (the node could not read or send an instance) may pass next time.
    if !succeeded && refused_here == 0 || usize::from(summary.failed) > refused_here {
        return Ended::NodeFailed(format!(
            "C-GET from {} ended with status {:#06x}: {} completed, {} failed, {} warnings",
            node.ae_title, summary.status, summary.completed, summary.failed, summary.warning
        ));
    }
    Ended::Complete
}

/// C-GET one study from `node` into `archive`, as sent by `origin`.
///
/// Where the node states the study's SOP classes at STUDY level and they fit
/// one association, the study is fetched on one association with those
/// classes and then listed there, UIDs only, for the verification. Otherwise,
/// or where the stated classes missed some instances, its instances are first
/// listed with their classes (which a node may read every file for) and the
/// study fetched by the batches they need.
pub async fn get_study(
    node: &DicomNode,
    archive: &Arc<Archive>,
    origin: &Origin,
    study_uid: &str,
) -> Result<GetOutcome, GetError> {
    let stated = match walk::study_sop_classes(node, study_uid).await {
        Ok(stated) => stated,
        Err(error) => {
            // A strict node may refuse the key; one that is down fails the listing next.
            tracing::debug!(node = %node, study_uid, %error, "SOP Classes in Study not answered");
            None
        }
    };
    // Two contexts are the C-GET's and the listing's.
    let fits = |classes: &BTreeSet<String>| contexts_needed(classes) <= MAX_CONTEXTS - 2;
    if let Some(classes) = stated.filter(fits) {
        match get_by_stated_classes(node, (archive, origin), study_uid, &classes).await? {
            Some(outcome) => return Ok(outcome),
            None => tracing::info!(
                node = %node,
                study_uid,
                "the study's SOP classes as the node states them did not bring every instance it lists: listing them with their classes"
            ),
        }
    }
    get_by_listed_classes(node, (archive, origin), study_uid).await
}

/// The study on one association proposing `classes`, then listed there;
/// `None` where the node failed sub-operations or sent fewer instances than
/// it lists (what it stated may have missed a class), for the caller to
/// fetch it by its instances' classes.
async fn get_by_stated_classes(
    node: &DicomNode,
    request: (&Arc<Archive>, &Origin),
    study_uid: &str,
    classes: &BTreeSet<String>,
) -> Result<Option<GetOutcome>, GetError> {
    let mut client = Client::connect(&node.address(), &node.request_params(), &proposed_contexts(classes, true))
        .await
        .map_err(|error| retriable(format!("{node}: {error}")))?;
    let mut outcome = GetOutcome::default();
    match get_into(&mut client, node, request, &walk::retrieve_identifier(study_uid, None), &mut outcome).await {
        Ended::Complete => {}
        Ended::Broken(detail) => {
            client.abort().await;
            return Err(retriable(detail));
        }
        Ended::NodeFailed(detail) => {
            tracing::debug!(node = %node, study_uid, detail, "C-GET with the stated SOP classes incomplete");
            // The C-GET's final answer came: the association is sound, released before the next one opens.
            walk::release(client, node).await;
            return Ok(None);
        }
    }
    outcome.listed = walk::list_then_release(client, node, study_uid).await;
    if let Some(listed) = &outcome.listed {
        if listed.is_empty() && outcome.stored == 0 {
            return Err(retriable("the source lists no instance of the study".into()));
        }
        if fell_short(&outcome, listed) {
            tracing::debug!(node = %node, study_uid, "fewer instances came by C-GET than the node lists");
            return Ok(None);
        }
    }
    Ok(Some(outcome))
}

/// Whether fewer instances came than the node lists: a node need not count
/// the sub-operations it could not start (no context for a class it did not
/// state), so the counts alone may look complete.
fn fell_short(outcome: &GetOutcome, listed: &BTreeSet<String>) -> bool {
    outcome.stored + (outcome.refused.len() as u64) < listed.len() as u64
}

/// The study listed with its instances' classes, then fetched by the batches they need.
async fn get_by_listed_classes(
    node: &DicomNode,
    request: (&Arc<Archive>, &Origin),
    study_uid: &str,
) -> Result<GetOutcome, GetError> {
    let instances = walk::study_instance_refs(node, study_uid).await.map_err(|error| retriable(error.to_string()))?;
    if instances.is_empty() {
        return Err(retriable("the source lists no instance of the study".into()));
    }
    let mut outcome = GetOutcome {
        listed: Some(instances.iter().map(|instance| instance.sop_uid.clone()).collect()),
        ..GetOutcome::default()
    };
    for batch in plan_batches(&instances)? {
        let mut client =
            Client::connect(&node.address(), &node.request_params(), &proposed_contexts(&batch.classes, false))
                .await
                .map_err(|error| retriable(format!("{node}: {error}")))?;
        let requests: Vec<Option<&str>> = match &batch.series {
            None => vec![None],
            Some(series) => series.iter().map(|uid| Some(uid.as_str())).collect(),
        };
        for series_uid in requests {
            match get_into(&mut client, node, request, &walk::retrieve_identifier(study_uid, series_uid), &mut outcome)
                .await
            {
                Ended::Complete => {}
                Ended::Broken(detail) | Ended::NodeFailed(detail) => {
                    client.abort().await;
                    return Err(retriable(detail));
                }
            }
        }
        walk::release(client, node).await;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(series: &str, sop: &str, class: &str) -> InstanceRef {
        InstanceRef { series_uid: series.into(), sop_uid: sop.into(), sop_class: class.into() }
    }

    #[test]
    fn a_study_with_few_classes_is_asked_for_at_once() {
        let instances =
            [instance("1", "1.1", "1.2.840.10008.5.1.4.1.1.2"), instance("2", "2.1", "1.2.840.10008.5.1.4.1.1.4")];
        let batches = plan_batches(&instances).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].series, None);
        assert_eq!(batches[0].classes.len(), 2);
        assert!(proposed_contexts(&batches[0].classes, false).len() <= MAX_CONTEXTS);
    }

    #[test]
    fn a_study_with_many_classes_is_asked_for_series_by_series_within_the_context_limit() {
        let instances: Vec<InstanceRef> =
            (1..=20).map(|n| instance(&format!("s{n}"), &format!("i{n}"), &format!("1.2.3.{n}"))).collect();
        let batches = plan_batches(&instances).unwrap();
        assert!(batches.len() > 1);
        let mut series: Vec<String> = batches.iter().flat_map(|b| b.series.clone().unwrap()).collect();
        series.sort();
        let mut expected: Vec<String> = (1..=20).map(|n| format!("s{n}")).collect();
        expected.sort();
        assert_eq!(series, expected, "every series asked for once");
        for batch in &batches {
            assert!(proposed_contexts(&batch.classes, false).len() <= MAX_CONTEXTS);
        }
    }

    #[test]
    fn every_stored_syntax_has_a_context_of_its_own_with_the_scp_role() {
        let classes: BTreeSet<String> = ["1.2.840.10008.5.1.4.1.1.77.1.1.1".to_string()].into();
        let proposed = proposed_contexts(&classes, false);
        assert_eq!(proposed.len(), 1 + STORED_SYNTAXES.len() + VIDEO_SYNTAXES.len());
        assert!(proposed[1..].iter().all(|pc| pc.scp_role && pc.transfer_syntaxes.len() == 1));
    }

    #[test]
    fn a_fetch_falls_short_when_fewer_instances_came_than_are_listed() {
        let listed: BTreeSet<String> = ["1", "2", "3"].map(String::from).into();
        let outcome = |stored, refused: &[&str]| GetOutcome {
            stored,
            refused: refused.iter().map(|r| r.to_string()).collect(),
            listed: Some(listed.clone()),
        };
        assert!(fell_short(&outcome(2, &[]), &listed), "one never came");
        assert!(!fell_short(&outcome(2, &["3: refused"]), &listed), "one came and we refused it");
        assert!(!fell_short(&outcome(3, &[]), &listed));
    }

    #[test]
    fn an_instance_without_its_class_is_refused_for_good() {
        let error = plan_batches(&[instance("1", "1.1", "")]).unwrap_err();
        assert!(!error.retriable);
        assert!(error.detail.contains("c-move"), "{}", error.detail);
    }
}
