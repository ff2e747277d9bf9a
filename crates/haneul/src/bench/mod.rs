//! `haneul bench`: drive any DICOM node with synthetic studies and report
//! throughput and latency percentiles. Timings are reported, never asserted:
//! comparisons belong in one run against a reference on the same machine
//! (see `bench/compare-orthanc.sh`).

pub mod synth;
pub mod web;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use haneul_core::{Archive, ArchiveConfig, IngestFormat, Origin};
use haneul_dicom::levels::InformationModel;
use haneul_dicom::{tags, ts, Dataset, Element, Tag, VR};
use haneul_dimse::command::status;
use haneul_dimse::{Client, ProposedContext, RequestParams, StoreData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use synth::{Geometry, Kind};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Send synthetic instances over C-STORE.
    Store(StoreArgs),
    /// Run C-FIND queries at STUDY level (name prefixes, given names under any surname, or date ranges).
    Find(FindArgs),
    /// Fill an archive directory directly with synthetic studies (for `find`).
    Fill(FillArgs),
    /// Measure a DICOMweb server (Haneul's, Orthanc's plugin, any) given its base URL.
    #[command(subcommand)]
    Web(web::WebCommand),
}

#[derive(Args)]
pub struct Target {
    /// host:port of the DICOM node.
    #[arg(long, default_value = "127.0.0.1:11112")]
    target: String,
    /// Called AE title.
    #[arg(long, default_value = "HANEUL")]
    called_ae: String,
    /// Calling AE title.
    #[arg(long, default_value = "HANEULBENCH")]
    calling_ae: String,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct StoreArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long, value_enum, default_value = "small")]
    kind: Kind,
    /// Instances in total.
    #[arg(long, default_value_t = 2000)]
    count: usize,
    /// Associations sending at once (the count is split between them).
    #[arg(long, default_value_t = 1)]
    associations: usize,
    /// Instance size for --kind large, in MiB.
    #[arg(long, default_value_t = 200)]
    size_mb: u64,
    /// Instances per study.
    #[arg(long, default_value_t = 100)]
    per_study: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
pub struct FindArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long, default_value_t = 500)]
    queries: usize,
    /// Patients the archive was filled with (`fill --studies / 2`).
    #[arg(long, default_value_t = 50_000)]
    patients: u64,
    /// What is asked: a name's start (`Kim^Minj*`), a given name under any
    /// surname (`*^Minjun*`), which no B-tree index serves, or a few days'
    /// studies (`StudyDate=20240312-20240314`), as a reading room's worklist asks.
    #[arg(long, value_enum, default_value_t = QueryPattern::Prefix)]
    pattern: QueryPattern,
    /// Days in each date range (`--pattern date-range`): 3 finds about 75 of
    /// 100,000 studies; 28 finds about 70 of 10,000.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=28))]
    days: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write every query to this file, one CSV line each: what was
    /// typed, its matches and its latency in microseconds (to see what makes
    /// the slow ones slow).
    #[arg(long)]
    each: Option<PathBuf>,
}

#[derive(Args)]
pub struct FillArgs {
    /// Archive data directory to fill (no server may be running on it).
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    data: Option<PathBuf>,
    /// Or the archive a configuration file describes (its catalog and blob
    /// store: PostgreSQL and S3, say), with no server running on its data directory.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value_t = 100_000)]
    studies: u64,
    #[arg(long, default_value_t = 10)]
    instances_per_study: u32,
    /// Instances ingested at once.
    #[arg(long, default_value_t = 32)]
    jobs: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    match command {
        BenchCommand::Store(args) => runtime.block_on(store(args)),
        BenchCommand::Find(args) => runtime.block_on(find(args)),
        BenchCommand::Fill(args) => runtime.block_on(fill(args)),
        BenchCommand::Web(command) => runtime.block_on(web::run(command)),
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
struct Latency {
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn percentiles(mut samples: Vec<Duration>) -> Latency {
    samples.sort();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[index].as_secs_f64() * 1000.0
    };
    Latency { p50_ms: at(0.50), p95_ms: at(0.95), p99_ms: at(0.99), max_ms: at(1.0) }
}

#[derive(Debug, Serialize)]
struct StoreReport {
    kind: String,
    instances: usize,
    associations: usize,
    failures: usize,
    seconds: f64,
    instances_per_second: f64,
    megabytes_per_second: f64,
    latency: Latency,
}

fn params(target: &Target) -> RequestParams {
    RequestParams {
        calling_ae: target.calling_ae.clone(),
        called_ae: target.called_ae.clone(),
        max_pdu_length: 262_144,
        timeout: Duration::from_secs(60),
        tls: None,
    }
}

async fn store(args: StoreArgs) -> anyhow::Result<ExitCode> {
    if args.count == 0 || args.associations == 0 {
        bail!("--count and --associations must be at least 1");
    }
    let geometry = Geometry::for_kind(args.kind, args.size_mb);
    let pixels = Arc::new(synth::pixels(geometry));
    let instances = synth::instances(args.seed, args.count, args.per_study, geometry);
    let total_bytes: usize = instances.iter().map(|i| i.len(&pixels)).sum();
    let mut queues: Vec<Vec<synth::Instance>> = (0..args.associations).map(|_| Vec::new()).collect();
    for (index, instance) in instances.into_iter().enumerate() {
        queues[index % args.associations].push(instance);
    }
    let proposed = [ProposedContext::new(synth::CT_IMAGE_STORAGE, &[ts::EXPLICIT_VR_LITTLE_ENDIAN])];
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for queue in queues {
        let params = params(&args.target);
        let address = args.target.target.clone();
        let pixels = Arc::clone(&pixels);
        let proposed = proposed.clone();
        tasks.spawn(async move {
            let mut client = Client::connect(&address, &params, &proposed).await?;
            let context = client
                .info()
                .find_context(synth::CT_IMAGE_STORAGE, None)
                .map(|pc| pc.id)
                .context("CT Image Storage was not accepted")?;
            let mut latencies = Vec::with_capacity(queue.len());
            let mut failures = 0usize;
            for instance in &queue {
                let parts: [&[u8]; 2] = [&instance.header, &pixels];
                let sent = Instant::now();
                let response = client
                    .store(context, instance.sop_class_uid, &instance.sop_instance_uid, StoreData::Parts(&parts), None)
                    .await?;
                latencies.push(sent.elapsed());
                if response.status() != Some(status::SUCCESS) {
                    failures += 1;
                }
            }
            client.release().await?;
            anyhow::Ok((latencies, failures))
        });
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    while let Some(joined) = tasks.join_next().await {
        let (mut l, f) = joined.context("bench task panicked")??;
        latencies.append(&mut l);
        failures += f;
    }
    let seconds = started.elapsed().as_secs_f64();
    let report = StoreReport {
        kind: format!("{:?}", args.kind).to_lowercase(),
        instances: latencies.len(),
        associations: args.associations,
        failures,
        seconds,
        instances_per_second: latencies.len() as f64 / seconds,
        megabytes_per_second: total_bytes as f64 / seconds / 1e6,
        latency: percentiles(latencies),
    };
    if args.target.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} × {} over {} association(s): {:.1} instances/s, {:.1} MB/s, latency p50 {:.2} ms p95 {:.2} ms p99 {:.2} ms, {} failures",
            report.instances,
            report.kind,
            report.associations,
            report.instances_per_second,
            report.megabytes_per_second,
            report.latency.p50_ms,
            report.latency.p95_ms,
            report.latency.p99_ms,
            report.failures
        );
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[derive(Debug, Serialize)]
struct FindReport {
    queries: usize,
    mean_matches: f64,
    latency: Latency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueryPattern {
    Prefix,
    AnySurname,
    DateRange,
}

/// A query for a patient's name: Latin surname^given prefix, or the Hangul
/// form, alternating; with `any_surname`, the whole given name under any
/// surname (about as many matches as a prefix).
fn name_query(patient: &synth::Patient, variant: u64, any_surname: bool) -> String {
    let groups: Vec<&str> = patient.name.split('=').collect();
    let hangul = patient.korean && variant % 2 == 1;
    let group = if hangul { groups.get(2).copied().unwrap_or(groups[0]) } else { groups[0] };
    let (surname, given) = group.split_once('^').unwrap_or((group, ""));
    let given_prefix: String = given.chars().take(if hangul { 2 } else { 4 }).collect();
    if any_surname {
        format!("*^{given}*")
    } else {
        format!("{surname}^{given_prefix}*")
    }
}

/// The key a find query narrows by, and what is typed into it.
fn typed_key(rng: &mut StdRng, args: &FindArgs, variant: u64) -> (Tag, VR, String) {
    if args.pattern == QueryPattern::DateRange {
        let (from, to) = synth::study_date_range(rng, args.days);
        return (tags::STUDY_DATE, VR::DA, format!("{from}-{to}"));
    }
    let patient = synth::patient(args.seed, rng.gen_range(0..args.patients.max(1)));
    (tags::PATIENT_NAME, VR::PN, name_query(&patient, variant, args.pattern == QueryPattern::AnySurname))
}

async fn find(args: FindArgs) -> anyhow::Result<ExitCode> {
    let proposed = [ProposedContext::new(
        haneul_dimse::sop::STUDY_ROOT_FIND,
        &[ts::EXPLICIT_VR_LITTLE_ENDIAN, ts::IMPLICIT_VR_LITTLE_ENDIAN],
    )];
    let mut client = Client::connect(&args.target.target, &params(&args.target), &proposed).await?;
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0xF1ED);
    let mut latencies = Vec::with_capacity(args.queries);
    let mut total_matches = 0usize;
    let mut each = String::from("query,matches,micros\n");
    for query_index in 0..args.queries {
        let (key, key_vr, typed) = typed_key(&mut rng, &args, query_index as u64);
        let mut identifier = Dataset::new();
        identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY"));
        for (tag, vr) in [
            (tags::PATIENT_NAME, VR::PN),
            (tags::PATIENT_ID, VR::LO),
            (tags::STUDY_INSTANCE_UID, VR::UI),
            (tags::STUDY_DATE, VR::DA),
            (tags::ACCESSION_NUMBER, VR::SH),
            (tags::MODALITIES_IN_STUDY, VR::CS),
            (tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS),
        ] {
            identifier.put(Element::empty(tag, vr));
        }
        identifier.put(Element::text(key, key_vr, typed.clone()));
        let started = Instant::now();
        let mut matches = 0usize;
        let code = client.find(InformationModel::StudyRoot, &identifier, |_| matches += 1).await?;
        let latency = started.elapsed();
        latencies.push(latency);
        if code != status::SUCCESS {
            bail!("C-FIND failed with status {code:04X}");
        }
        total_matches += matches;
        each.push_str(&format!("{typed},{matches},{}\n", latency.as_micros()));
    }
    client.release().await?;
    if let Some(path) = &args.each {
        std::fs::write(path, each).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let report = FindReport {
        queries: latencies.len(),
        mean_matches: total_matches as f64 / latencies.len().max(1) as f64,
        latency: percentiles(latencies),
    };
    if args.target.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} C-FIND queries ({:?}): {:.1} matches on average, latency p50 {:.2} ms p95 {:.2} ms p99 {:.2} ms",
            report.queries,
            args.pattern,
            report.mean_matches,
            report.latency.p50_ms,
            report.latency.p95_ms,
            report.latency.p99_ms
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn fill(args: FillArgs) -> anyhow::Result<ExitCode> {
    let archive_config = match (&args.config, &args.data) {
        (Some(path), _) => {
            let config = crate::config::Config::load(path)?;
            ArchiveConfig {
                catalog: config.catalog.location()?,
                blobs: config.blob_config()?,
                audit: false,
                ..ArchiveConfig::new(&config.storage.data_dir)
            }
        }
        (None, Some(data)) => ArchiveConfig::new(data),
        (None, None) => bail!("--data or --config names the archive to fill"),
    };
    let data_dir = archive_config.data_dir.clone();
    let archive = tokio::task::spawn_blocking(move || Archive::open(archive_config))
        .await?
        .with_context(|| format!("cannot open the archive in {}", data_dir.display()))?;
    let geometry = Geometry { rows: 8, columns: 8, frames: 1 };
    let pixels = Arc::new(synth::pixels(geometry));
    let total = args.studies * u64::from(args.instances_per_study);
    let progress = ProgressBar::new(total);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} instances ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let origin = Origin {
        actor: "haneul-bench-fill".into(),
        address: "local".into(),
        session: "fill".into(),
        ..Origin::default()
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(args.jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for study_index in 0..args.studies {
        // Two studies per patient, as hospitals see priors.
        let patient = synth::patient(args.seed, study_index / 2);
        let study = Arc::new(synth::study(args.seed, study_index, patient));
        for number in 1..=args.instances_per_study {
            let permit = Arc::clone(&permits).acquire_owned().await?;
            let archive = Arc::clone(&archive);
            let study = Arc::clone(&study);
            let pixels = Arc::clone(&pixels);
            let origin = origin.clone();
            let progress = progress.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let instance = synth::instance(&study, number, geometry);
                let format = IngestFormat::Dataset {
                    transfer_syntax_uid: ts::EXPLICIT_VR_LITTLE_ENDIAN.into(),
                    sop_class_uid: instance.sop_class_uid.into(),
                    sop_instance_uid: instance.sop_instance_uid.clone(),
                };
                let mut ingest = archive.begin_ingest(format, origin)?;
                ingest.write(&instance.header).await?;
                ingest.write(&pixels).await?;
                archive.finish_ingest(ingest).await?;
                progress.inc(1);
                anyhow::Ok(())
            });
            while let Some(done) = tasks.try_join_next() {
                done.context("fill task panicked")??;
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.context("fill task panicked")??;
    }
    progress.finish_and_clear();
    archive.refresh_statistics().await.context("gathering the catalog's planner statistics")?;
    archive.shutdown().await;
    let statistics = archive.statistics().await?;
    println!(
        "filled: {} patients, {} studies, {} series, {} instances",
        statistics.patients, statistics.studies, statistics.series, statistics.instances
    );
    Ok(ExitCode::SUCCESS)
}
