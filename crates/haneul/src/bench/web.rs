//! `haneul bench web`: drive any DICOMweb server (Haneul's, Orthanc's
//! plugin, another archive's) over HTTP, given its base URL, and report
//! latencies and throughput. Like the DIMSE benches it only measures;
//! comparisons belong in one run (see `bench/compare-orthanc.sh`).

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use haneul_dicom::meta::{encode_file_meta, NewFileMeta};
use haneul_dicom::ts;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::Value as Json;

use super::synth::{self, Geometry, Kind};
use super::{name_query, percentiles, Latency};

const DICOM_JSON: &str = "application/dicom+json";
/// Whole instances as stored, whatever their transfer syntax.
const DICOM_AS_STORED: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
const OCTETS: &str = "multipart/related; type=\"application/octet-stream\"";

#[derive(Subcommand)]
pub enum WebCommand {
    /// GET a series' metadata: one cold request, then --requests warm ones (median, p95, min).
    Metadata(MetadataArgs),
    /// Patient-name prefix QIDO-RS searches at study level (p50, p95, p99).
    Qido(QidoArgs),
    /// GET a whole series as multipart/related DICOM, --repetitions times (MB/s, instances/s).
    RetrieveSeries(RetrieveArgs),
    /// GET frames/1 of every instance of a series (frames/s, MB/s).
    Frames(FramesArgs),
    /// Store synthetic instances with STOW-RS, as `bench store` does with C-STORE (instances/s).
    Stow(StowArgs),
}

#[derive(Args)]
pub struct Server {
    /// Base URL of the DICOMweb service (Orthanc's plugin: http://HOST:8042/dicom-web).
    #[arg(long, default_value = "http://127.0.0.1:8080/dicom-web")]
    url: String,
    /// Seconds before one request is given up.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Speak HTTP/2 without TLS (prior knowledge) instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Sent as `Authorization: Bearer TOKEN` with every request (a Haneul API token).
    #[arg(long, env = "HANEUL_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args)]
pub struct SeriesChoice {
    /// Study Instance UID of the series (with --series); by default the
    /// series with the most instances is found with QIDO-RS.
    #[arg(long, requires = "series")]
    study: Option<String>,
    /// Series Instance UID (with --study).
    #[arg(long, requires = "study")]
    series: Option<String>,
}

#[derive(Args)]
pub struct MetadataArgs {
    #[command(flatten)]
    server: Server,
    #[command(flatten)]
    choice: SeriesChoice,
    /// Warm requests after the cold one.
    #[arg(long, default_value_t = 20)]
    requests: usize,
}

#[derive(Args)]
pub struct QidoArgs {
    #[command(flatten)]
    server: Server,
    #[arg(long, default_value_t = 500)]
    queries: usize,
    /// Patients the archive was filled with (`bench fill --studies / 2`).
    #[arg(long, default_value_t = 50_000)]
    patients: u64,
    /// QIDO-RS limit parameter.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Attributes asked for besides the defaults (includefield), e.g. 00080061.
    #[arg(long)]
    includefield: Vec<String>,
    /// Query only the alphabetic (Latin) form of names; by default Korean
    /// patients are asked for by their Hangul name every other query. For
    /// servers that keep no ideographic or phonetic name group.
    #[arg(long)]
    alphabetic: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
pub struct RetrieveArgs {
    #[command(flatten)]
    server: Server,
    #[command(flatten)]
    choice: SeriesChoice,
    /// Retrievals of the whole series in total.
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
    /// Retrievals running at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Accept header.
    #[arg(long, default_value = DICOM_AS_STORED)]
    accept: String,
}

#[derive(Args)]
pub struct FramesArgs {
    #[command(flatten)]
    server: Server,
    #[command(flatten)]
    choice: SeriesChoice,
    /// Passes over the series (each GETs frame 1 of every instance).
    #[arg(long, default_value_t = 1)]
    repetitions: usize,
    /// Requests running at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Accept header.
    #[arg(long, default_value = OCTETS)]
    accept: String,
}

#[derive(Args)]
pub struct StowArgs {
    #[command(flatten)]
    server: Server,
    #[arg(long, value_enum, default_value = "small")]
    kind: Kind,
    /// Instances in total.
    #[arg(long, default_value_t = 2000)]
    count: usize,
    /// Requests sending at once, on as many connections (the count is split between them).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Instances per STOW-RS request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Instance size for --kind large, in MiB.
    #[arg(long, default_value_t = 200)]
    size_mb: u64,
    /// Instances per study.
    #[arg(long, default_value_t = 100)]
    per_study: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub async fn run(command: WebCommand) -> anyhow::Result<ExitCode> {
    match command {
        WebCommand::Metadata(args) => metadata(args).await,
        WebCommand::Qido(args) => qido(args).await,
        WebCommand::RetrieveSeries(args) => retrieve_series(args).await,
        WebCommand::Frames(args) => frames(args).await,
        WebCommand::Stow(args) => stow(args).await,
    }
}

fn client(server: &Server, connections: usize) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(server.timeout.max(1)))
        .tcp_nodelay(true)
        .no_proxy()
        .pool_max_idle_per_host(connections.max(1))
        .user_agent("haneul-bench");
    let builder = match server.token.as_deref().map(str::trim).filter(|token| !token.is_empty()) {
        Some(token) => {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the token is not a valid header value")?;
            value.set_sensitive(true);
            let headers = [(reqwest::header::AUTHORIZATION, value)].into_iter().collect();
            builder.default_headers(headers)
        }
        None => builder,
    };
    let builder = if server.http2 { builder.http2_prior_knowledge() } else { builder.http1_only() };
    builder.build().context("cannot build the HTTP client")
}

fn base(server: &Server) -> &str {
    server.url.trim_end_matches('/')
}

fn progress_bar(total: u64, what: &str) -> ProgressBar {
    let progress = ProgressBar::new(total);
    let template =
        format!("{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {what} ({{per_sec}}, eta {{eta}})");
    progress.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    progress
}

fn print<T: Serialize>(json: bool, report: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

/// Percent-encode a query parameter value: everything but unreserved
/// characters and the `*` and `^` of DICOM name queries, which go as they
/// are, as viewers send them (Orthanc's DICOMweb plugin 1.7 does not decode
/// escapes in query values, so `Kim%5EMin%2A` matches nothing there).
fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'*' | b'^') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// GET a URL and fail on anything but 200 with a short account of the answer.
async fn get(client: &reqwest::Client, url: &str, accept: &str) -> anyhow::Result<reqwest::Response> {
    let response = client.get(url).header(ACCEPT, accept).send().await.with_context(|| format!("GET {url}"))?;
    check(response, url).await
}

async fn check(response: reqwest::Response, url: &str) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    bail!("{url} answered {status}: {body}")
}

async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Json> {
    let bytes = get(client, url, DICOM_JSON).await?.bytes().await.with_context(|| format!("reading {url}"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{url} did not answer JSON"))
}

/// The first value of attribute `tag` (8 hex digits) of a DICOM JSON object.
fn json_value<'a>(object: &'a Json, tag: &str) -> Option<&'a Json> {
    object.get(tag)?.get("Value")?.get(0)
}

fn json_string(object: &Json, tag: &str) -> Option<String> {
    json_value(object, tag)?.as_str().map(str::to_string)
}

/// IS and DS values come as JSON numbers, or as strings from some servers.
fn json_number(object: &Json, tag: &str) -> Option<u64> {
    let value = json_value(object, tag)?;
    value.as_u64().or_else(|| value.as_str().and_then(|text| text.trim().parse().ok()))
}

/// The series a bench works on, and its instances when they were listed.
struct Series {
    study: String,
    series: String,
    /// Instances the server says the series holds, if it said.
    expected: Option<u64>,
}

impl Series {
    fn url(&self, server: &Server) -> String {
        format!("{}/studies/{}/series/{}", base(server), self.study, self.series)
    }
}

/// The series given on the command line, or the one with the most instances
/// among those one answer lists (a server caps its answers: on a large archive,
/// give `--study` and `--series`).
async fn choose_series(client: &reqwest::Client, server: &Server, choice: &SeriesChoice) -> anyhow::Result<Series> {
    if let (Some(study), Some(series)) = (&choice.study, &choice.series) {
        return Ok(Series { study: study.clone(), series: series.clone(), expected: None });
    }
    let url = format!("{}/series?includefield=0020000D&includefield=00201209", base(server));
    let answer = get_json(client, &url).await?;
    let matches = answer.as_array().with_context(|| format!("{url} did not answer a JSON array"))?;
    let best = matches
        .iter()
        .filter_map(|object| {
            let study = json_string(object, "0020000D")?;
            let series = json_string(object, "0020000E")?;
            Some(Series { study, series, expected: json_number(object, "00201209") })
        })
        .max_by_key(|series| series.expected.unwrap_or(0))
        .with_context(|| format!("{url} lists no series with its study; give --study and --series"))?;
    Ok(best)
}

/// SOP Instance UIDs of a series, by QIDO-RS, page by page.
async fn list_instances(client: &reqwest::Client, server: &Server, series: &Series) -> anyhow::Result<Vec<String>> {
    const PAGE: usize = 1000;
    let mut seen = HashSet::new();
    let mut uids = Vec::new();
    loop {
        let url = format!("{}/instances?limit={PAGE}&offset={}", series.url(server), uids.len());
        let answer = get_json(client, &url).await?;
        let page = answer.as_array().with_context(|| format!("{url} did not answer a JSON array"))?;
        let mut new = 0;
        for object in page {
            let uid =
                json_string(object, "00080018").with_context(|| format!("{url}: a match has no SOP Instance UID"))?;
            if seen.insert(uid.clone()) {
                uids.push(uid);
                new += 1;
            }
        }
        // Until an empty page: a server may answer fewer than asked (its own
        // maximum) with more to come. One that ignores offset repeats a page.
        if page.is_empty() || new == 0 {
            break;
        }
    }
    if uids.is_empty() {
        bail!("series {} lists no instance", series.series);
    }
    Ok(uids)
}

// ---------------------------------------------------------------- metadata

#[derive(Debug, Serialize)]
struct MetadataReport {
    study: String,
    series: String,
    instances: usize,
    bytes: usize,
    cold_ms: f64,
    requests: usize,
    median_ms: f64,
    p95_ms: f64,
    min_ms: f64,
    latency: Latency,
}

async fn metadata(args: MetadataArgs) -> anyhow::Result<ExitCode> {
    let client = client(&args.server, 1)?;
    let series = choose_series(&client, &args.server, &args.choice).await?;
    let url = format!("{}/metadata", series.url(&args.server));
    let progress = progress_bar(args.requests as u64 + 1, "requests");
    let mut timings = Vec::with_capacity(args.requests + 1);
    let mut counts = HashSet::new();
    let mut bytes = 0;
    for _ in 0..=args.requests {
        let started = Instant::now();
        let body = get(&client, &url, DICOM_JSON).await?.bytes().await.with_context(|| format!("reading {url}"))?;
        timings.push(started.elapsed());
        // Checked after the clock stopped: the answer is an array of one object per instance.
        let objects: Vec<serde::de::IgnoredAny> =
            serde_json::from_slice(&body).with_context(|| format!("{url} did not answer a JSON array"))?;
        counts.insert(objects.len());
        bytes = body.len();
        progress.inc(1);
    }
    progress.finish_and_clear();
    let instances = counts.iter().copied().max().unwrap_or(0);
    if counts.len() > 1 {
        bail!("the metadata answers differ in length: {counts:?} instances");
    }
    if let Some(expected) = series.expected.filter(|&e| e != instances as u64) {
        bail!("the metadata lists {instances} instances, QIDO-RS said {expected}");
    }
    let cold = timings.remove(0);
    let min_ms = timings.iter().min().map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let latency = percentiles(timings);
    let report = MetadataReport {
        study: series.study,
        series: series.series,
        instances,
        bytes,
        cold_ms: cold.as_secs_f64() * 1000.0,
        requests: args.requests,
        median_ms: latency.p50_ms,
        p95_ms: latency.p95_ms,
        min_ms,
        latency,
    };
    print(args.server.json, &report, || {
        format!(
            "series metadata, {} instances ({:.1} kB): cold {:.1} ms; {} warm: median {:.2} ms, p95 {:.2} ms, min {:.2} ms",
            report.instances,
            report.bytes as f64 / 1e3,
            report.cold_ms,
            report.requests,
            report.median_ms,
            report.p95_ms,
            report.min_ms
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- qido

#[derive(Debug, Serialize)]
struct QidoReport {
    queries: usize,
    limit: usize,
    mean_matches: f64,
    queries_per_second: f64,
    latency: Latency,
}

async fn qido(args: QidoArgs) -> anyhow::Result<ExitCode> {
    let client = client(&args.server, 1)?;
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0xF1ED);
    let mut extra = String::new();
    for field in &args.includefield {
        extra.push_str(&format!("&includefield={}", encode_component(field)));
    }
    let progress = progress_bar(args.queries as u64, "queries");
    let mut latencies = Vec::with_capacity(args.queries);
    let mut total_matches = 0usize;
    let started = Instant::now();
    for query_index in 0..args.queries {
        let patient = synth::patient(args.seed, rng.gen_range(0..args.patients.max(1)));
        let variant = if args.alphabetic { 0 } else { query_index as u64 };
        let name = name_query(&patient, variant, false);
        let url = format!(
            "{}/studies?PatientName={}&limit={}{extra}",
            base(&args.server),
            encode_component(&name),
            args.limit
        );
        let sent = Instant::now();
        let body = get(&client, &url, DICOM_JSON).await?.bytes().await.with_context(|| format!("reading {url}"))?;
        latencies.push(sent.elapsed());
        let matches: Vec<serde::de::IgnoredAny> =
            serde_json::from_slice(&body).with_context(|| format!("{url} did not answer a JSON array"))?;
        total_matches += matches.len();
        progress.inc(1);
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let report = QidoReport {
        queries: latencies.len(),
        limit: args.limit,
        mean_matches: total_matches as f64 / latencies.len().max(1) as f64,
        queries_per_second: latencies.len() as f64 / seconds.max(f64::EPSILON),
        latency: percentiles(latencies),
    };
    print(args.server.json, &report, || {
        format!(
            "{} patient-name prefix QIDO-RS study searches: {:.1} matches on average, latency p50 {:.2} ms p95 {:.2} ms p99 {:.2} ms",
            report.queries, report.mean_matches, report.latency.p50_ms, report.latency.p95_ms, report.latency.p99_ms
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- multipart

/// What one part of a multipart body held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// Its Content-Type header, if it had one.
    pub content_type: Option<String>,
    /// Bytes of its content.
    pub length: u64,
    /// Its first bytes (up to [`HEAD_LENGTH`]), to check what it is.
    pub head: Vec<u8>,
}

/// Enough of a part's first bytes to see a Part 10 file's `DICM`.
const HEAD_LENGTH: usize = 132;
/// Longest header block of one part that is accepted.
const MAX_PART_HEADERS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanState {
    /// Before the first delimiter.
    Preamble,
    /// Just after a delimiter: `--` ends the body, otherwise the line ends.
    AfterDelimiter,
    /// In a part's header lines.
    Headers,
    /// In a part's content.
    Content,
    /// After the close delimiter.
    Done,
}

/// Counts the parts of a `multipart/related` body as it streams in, with
/// memory bounded by the delimiter and the header lines, not the content.
pub struct MultipartScanner {
    /// Finds `CRLF--boundary`: a delimiter, CRLF included, as RFC 2046 has it.
    finder: memchr::memmem::Finder<'static>,
    state: ScanState,
    pending: Vec<u8>,
    current: Option<PartInfo>,
    parts: Vec<PartInfo>,
    received: u64,
}

impl MultipartScanner {
    pub fn new(boundary: &str) -> MultipartScanner {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        // The body's first delimiter has no CRLF before it: supply one.
        MultipartScanner {
            finder: memchr::memmem::Finder::new(&delimiter).into_owned(),
            state: ScanState::Preamble,
            pending: b"\r\n".to_vec(),
            current: None,
            parts: Vec::new(),
            received: 0,
        }
    }

    /// A scanner for a `multipart/...; boundary=...` Content-Type.
    pub fn for_content_type(content_type: &str) -> anyhow::Result<MultipartScanner> {
        let boundary =
            boundary_of(content_type).with_context(|| format!("Content-Type {content_type:?} has no boundary"))?;
        Ok(MultipartScanner::new(&boundary))
    }

    pub fn feed(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.received += chunk.len() as u64;
        if self.state == ScanState::Done {
            return Ok(());
        }
        if self.skip_content(chunk) {
            return Ok(());
        }
        self.pending.extend_from_slice(chunk);
        let consumed = self.scan()?;
        self.pending.drain(..consumed);
        Ok(())
    }

    /// Take a chunk that holds no delimiter, in content or preamble, without
    /// copying it into `pending` (most of a body); false leaves it to `scan`.
    fn skip_content(&mut self, chunk: &[u8]) -> bool {
        let keep = self.finder.needle().len() - 1;
        if !matches!(self.state, ScanState::Preamble | ScanState::Content)
            || self.pending.len() > keep
            || chunk.len() < keep
        {
            return false;
        }
        // A delimiter could start in `pending` and end in the chunk.
        let mut seam = self.pending.clone();
        seam.extend_from_slice(&chunk[..keep]);
        if self.finder.find(&seam).is_some() || self.finder.find(chunk).is_some() {
            return false;
        }
        let pending = std::mem::take(&mut self.pending);
        take_content(&mut self.current, &pending);
        take_content(&mut self.current, &chunk[..chunk.len() - keep]);
        self.pending = pending;
        self.pending.clear();
        self.pending.extend_from_slice(&chunk[chunk.len() - keep..]);
        true
    }

    /// Walk `pending` as far as it can be understood; returns the bytes used up.
    fn scan(&mut self) -> anyhow::Result<usize> {
        let mut position = 0;
        let finder = self.finder.clone();
        let delimiter = finder.needle();
        loop {
            let rest = &self.pending[position..];
            match self.state {
                ScanState::Done => return Ok(self.pending.len()),
                ScanState::Preamble | ScanState::Content => match finder.find(rest) {
                    Some(at) => {
                        take_content(&mut self.current, &rest[..at]);
                        if let Some(part) = self.current.take() {
                            self.parts.push(part);
                        }
                        position += at + delimiter.len();
                        self.state = ScanState::AfterDelimiter;
                    }
                    None => {
                        // Keep what could be the start of a delimiter.
                        let safe = rest.len().saturating_sub(delimiter.len() - 1);
                        take_content(&mut self.current, &rest[..safe]);
                        return Ok(position + safe);
                    }
                },
                ScanState::AfterDelimiter => {
                    if rest.len() < 2 {
                        return Ok(position);
                    }
                    if rest.starts_with(b"--") {
                        self.state = ScanState::Done;
                        return Ok(self.pending.len());
                    }
                    // Transport padding, then CRLF.
                    let Some(end) = memchr::memmem::find(rest, b"\r\n") else {
                        if rest.len() > MAX_PART_HEADERS {
                            bail!("a multipart delimiter line does not end");
                        }
                        return Ok(position);
                    };
                    if !rest[..end].iter().all(|b| *b == b' ' || *b == b'\t') {
                        bail!("a multipart delimiter is followed by {:?}", String::from_utf8_lossy(&rest[..end]));
                    }
                    position += end + 2;
                    self.state = ScanState::Headers;
                }
                ScanState::Headers => {
                    if rest.starts_with(b"\r\n") {
                        // No header lines.
                        self.current = Some(PartInfo { content_type: None, length: 0, head: Vec::new() });
                        position += 2;
                        self.state = ScanState::Content;
                        continue;
                    }
                    let Some(end) = memchr::memmem::find(rest, b"\r\n\r\n") else {
                        if rest.len() > MAX_PART_HEADERS {
                            bail!("the header lines of a part exceed {MAX_PART_HEADERS} bytes");
                        }
                        return Ok(position);
                    };
                    let text = String::from_utf8_lossy(&rest[..end]);
                    let content_type = text.split("\r\n").find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.trim().eq_ignore_ascii_case("content-type").then(|| value.trim().to_string())
                    });
                    self.current = Some(PartInfo { content_type, length: 0, head: Vec::new() });
                    position += end + 4;
                    self.state = ScanState::Content;
                }
            }
        }
    }

    /// The parts of a complete body; an error if the close delimiter never came.
    pub fn finish(self) -> anyhow::Result<MultipartSummary> {
        if self.state != ScanState::Done {
            bail!(
                "the multipart body ended after {} bytes and {} complete parts, without its close delimiter",
                self.received,
                self.parts.len()
            );
        }
        let content_bytes = self.parts.iter().map(|p| p.length).sum();
        Ok(MultipartSummary { parts: self.parts, body_bytes: self.received, content_bytes })
    }
}

#[derive(Debug)]
pub struct MultipartSummary {
    pub parts: Vec<PartInfo>,
    /// The whole body as received.
    pub body_bytes: u64,
    /// The parts' contents together.
    pub content_bytes: u64,
}

/// Count `content` as the current part's (nothing in the preamble).
fn take_content(current: &mut Option<PartInfo>, content: &[u8]) {
    let Some(part) = current.as_mut() else {
        return;
    };
    part.length += content.len() as u64;
    if part.head.len() < HEAD_LENGTH {
        let wanted = (HEAD_LENGTH - part.head.len()).min(content.len());
        part.head.extend_from_slice(&content[..wanted]);
    }
}

/// The boundary parameter of a Content-Type, unquoted.
pub fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim();
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        (!value.is_empty()).then(|| value.to_string())
    })
}

fn content_type_of(response: &reqwest::Response) -> String {
    response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

// ---------------------------------------------------------------- retrieve

#[derive(Debug, Serialize)]
struct RetrieveReport {
    study: String,
    series: String,
    requests: usize,
    concurrency: usize,
    instances: u64,
    body_bytes: u64,
    content_bytes: u64,
    seconds: f64,
    megabytes_per_second: f64,
    instances_per_second: f64,
    latency: Latency,
}

/// Run `jobs` jobs on `concurrency` workers; each returns its result and the job's duration.
async fn run_jobs<T, F, Fut>(jobs: usize, concurrency: usize, progress: &ProgressBar, job: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.clamp(1, jobs.max(1)) {
        let next = Arc::clone(&next);
        let job = Arc::clone(&job);
        let progress = progress.clone();
        tasks.spawn(async move {
            let mut results = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= jobs {
                    return anyhow::Ok(results);
                }
                results.push(job(index).await?);
                progress.inc(1);
            }
        });
    }
    let mut all = Vec::with_capacity(jobs);
    while let Some(joined) = tasks.join_next().await {
        all.append(&mut joined.context("bench task panicked")??);
    }
    Ok(all)
}

async fn retrieve_series(args: RetrieveArgs) -> anyhow::Result<ExitCode> {
    if args.repetitions == 0 || args.concurrency == 0 {
        bail!("--repetitions and --concurrency must be at least 1");
    }
    let client = client(&args.server, args.concurrency)?;
    let series = choose_series(&client, &args.server, &args.choice).await?;
    let url = Arc::new(series.url(&args.server));
    let accept = Arc::new(args.accept.clone());
    let expected = series.expected;
    let progress = progress_bar(args.repetitions as u64, "series");
    let started = Instant::now();
    let results = run_jobs(args.repetitions, args.concurrency, &progress, move |_| {
        let (client, url, accept) = (client.clone(), Arc::clone(&url), Arc::clone(&accept));
        async move {
            let sent = Instant::now();
            let response = get(&client, &url, &accept).await?;
            let mut scanner = MultipartScanner::for_content_type(&content_type_of(&response))?;
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                scanner.feed(&chunk.with_context(|| format!("reading {url}"))?)?;
            }
            let elapsed = sent.elapsed();
            let summary = scanner.finish()?;
            check_instances(&summary, expected)?;
            anyhow::Ok((elapsed, summary))
        }
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let instances: u64 = results.iter().map(|(_, s)| s.parts.len() as u64).sum();
    let body_bytes: u64 = results.iter().map(|(_, s)| s.body_bytes).sum();
    let content_bytes: u64 = results.iter().map(|(_, s)| s.content_bytes).sum();
    let report = RetrieveReport {
        study: series.study,
        series: series.series,
        requests: results.len(),
        concurrency: args.concurrency,
        instances,
        body_bytes,
        content_bytes,
        seconds,
        megabytes_per_second: body_bytes as f64 / seconds / 1e6,
        instances_per_second: instances as f64 / seconds,
        latency: percentiles(results.iter().map(|(d, _)| *d).collect()),
    };
    print(args.server.json, &report, || {
        format!(
            "{} series retrievals ({} instances, {:.1} MB each) {} at a time: {:.1} MB/s, {:.1} instances/s, per series p50 {:.0} ms max {:.0} ms",
            report.requests,
            report.instances / report.requests.max(1) as u64,
            report.body_bytes as f64 / report.requests.max(1) as f64 / 1e6,
            report.concurrency,
            report.megabytes_per_second,
            report.instances_per_second,
            report.latency.p50_ms,
            report.latency.max_ms
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Every part is a Part 10 file, and there are as many as the series holds.
fn check_instances(summary: &MultipartSummary, expected: Option<u64>) -> anyhow::Result<()> {
    if let Some(expected) = expected.filter(|&e| e != summary.parts.len() as u64) {
        bail!("the series came with {} instances, QIDO-RS said {expected}", summary.parts.len());
    }
    for (index, part) in summary.parts.iter().enumerate() {
        let is_dicom =
            part.content_type.as_deref().is_some_and(|t| t.to_ascii_lowercase().starts_with("application/dicom"));
        if !is_dicom || part.head.get(128..132) != Some(b"DICM".as_slice()) {
            bail!("part {} ({:?}, {} bytes) is not a DICOM file", index + 1, part.content_type, part.length);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- frames

#[derive(Debug, Serialize)]
struct FramesReport {
    study: String,
    series: String,
    frames: usize,
    concurrency: usize,
    bytes: u64,
    seconds: f64,
    frames_per_second: f64,
    megabytes_per_second: f64,
    latency: Latency,
}

async fn frames(args: FramesArgs) -> anyhow::Result<ExitCode> {
    if args.repetitions == 0 || args.concurrency == 0 {
        bail!("--repetitions and --concurrency must be at least 1");
    }
    let client = client(&args.server, args.concurrency)?;
    let series = choose_series(&client, &args.server, &args.choice).await?;
    let instances = list_instances(&client, &args.server, &series).await?;
    let urls: Arc<Vec<String>> = Arc::new(
        instances.iter().map(|uid| format!("{}/instances/{uid}/frames/1", series.url(&args.server))).collect(),
    );
    let accept = Arc::new(args.accept.clone());
    let jobs = urls.len() * args.repetitions;
    let progress = progress_bar(jobs as u64, "frames");
    let started = Instant::now();
    let results = run_jobs(jobs, args.concurrency, &progress, move |index| {
        let (client, urls, accept) = (client.clone(), Arc::clone(&urls), Arc::clone(&accept));
        async move {
            let url = &urls[index % urls.len()];
            let sent = Instant::now();
            let response = get(&client, url, &accept).await?;
            let content_type = content_type_of(&response);
            let body = response.bytes().await.with_context(|| format!("reading {url}"))?;
            let elapsed = sent.elapsed();
            let length = frame_length(&content_type, &body).with_context(|| format!("frame from {url}"))?;
            anyhow::Ok((elapsed, length))
        }
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let bytes: u64 = results.iter().map(|(_, b)| b).sum();
    let report = FramesReport {
        study: series.study,
        series: series.series,
        frames: results.len(),
        concurrency: args.concurrency,
        bytes,
        seconds,
        frames_per_second: results.len() as f64 / seconds,
        megabytes_per_second: bytes as f64 / seconds / 1e6,
        latency: percentiles(results.iter().map(|(d, _)| *d).collect()),
    };
    print(args.server.json, &report, || {
        format!(
            "{} frames {} at a time: {:.1} frames/s, {:.1} MB/s, latency p50 {:.2} ms p95 {:.2} ms",
            report.frames,
            report.concurrency,
            report.frames_per_second,
            report.megabytes_per_second,
            report.latency.p50_ms,
            report.latency.p95_ms
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The bytes of the one frame in an answer, multipart or not.
fn frame_length(content_type: &str, body: &Bytes) -> anyhow::Result<u64> {
    if !content_type.trim_start().to_ascii_lowercase().starts_with("multipart/") {
        return Ok(body.len() as u64);
    }
    let mut scanner = MultipartScanner::for_content_type(content_type)?;
    scanner.feed(body)?;
    let summary = scanner.finish()?;
    match summary.parts.as_slice() {
        [part] if part.length > 0 => Ok(part.length),
        parts => bail!("expected one non-empty part, got {} parts", parts.len()),
    }
}

// ---------------------------------------------------------------- stow

#[derive(Debug, Serialize)]
struct StowReport {
    kind: String,
    instances: usize,
    concurrency: usize,
    batch: usize,
    requests: usize,
    failures: usize,
    seconds: f64,
    instances_per_second: f64,
    megabytes_per_second: f64,
    /// Per request.
    latency: Latency,
}

/// One instance as a Part 10 file in pieces: file meta, header, shared pixels.
struct Part10 {
    meta: Bytes,
    header: Bytes,
}

async fn stow(args: StowArgs) -> anyhow::Result<ExitCode> {
    if args.count == 0 || args.concurrency == 0 || args.batch == 0 {
        bail!("--count, --concurrency and --batch must be at least 1");
    }
    let geometry = Geometry::for_kind(args.kind, args.size_mb);
    let pixels = Bytes::from(synth::pixels(geometry));
    let mut files = Vec::with_capacity(args.count);
    for instance in synth::instances(args.seed, args.count, args.per_study, geometry) {
        let meta = encode_file_meta(&NewFileMeta {
            sop_class_uid: instance.sop_class_uid,
            sop_instance_uid: &instance.sop_instance_uid,
            transfer_syntax_uid: ts::EXPLICIT_VR_LITTLE_ENDIAN,
            source_ae_title: Some("HANEULBENCH"),
        });
        files.push(Part10 { meta: Bytes::from(meta), header: Bytes::from(instance.header) });
    }
    let total_bytes: usize = files.iter().map(|f| f.meta.len() + f.header.len() + pixels.len()).sum();
    // Round-robin over the connections, then in batches, as `bench store` splits over associations.
    let mut queues: Vec<Vec<Part10>> = (0..args.concurrency).map(|_| Vec::new()).collect();
    for (index, file) in files.into_iter().enumerate() {
        queues[index % args.concurrency].push(file);
    }
    let client = client(&args.server, args.concurrency)?;
    let url = format!("{}/studies", base(&args.server));
    let progress = progress_bar(args.count as u64, "instances");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (worker, queue) in queues.into_iter().enumerate() {
        let (client, url, pixels, progress) = (client.clone(), url.clone(), pixels.clone(), progress.clone());
        let batch = args.batch;
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0usize;
            for (number, chunk) in queue.chunks(batch).enumerate() {
                let boundary = format!("haneul-bench-{worker}-{number}-{:016x}", rand::random::<u64>());
                let (pieces, length) = stow_body(chunk, &pixels, &boundary);
                let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
                    pieces.into_iter().map(Ok::<Bytes, std::io::Error>),
                ));
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header(CONTENT_TYPE, format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"))
                    .header(CONTENT_LENGTH, length)
                    .header(ACCEPT, DICOM_JSON)
                    .body(body)
                    .send()
                    .await
                    .with_context(|| format!("POST {url}"))?;
                let status = response.status();
                let answer = response.bytes().await.with_context(|| format!("reading the answer of {url}"))?;
                latencies.push(sent.elapsed());
                failures += stow_failures(status, &answer, chunk.len());
                progress.inc(chunk.len() as u64);
            }
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
    progress.finish_and_clear();
    let report = StowReport {
        kind: format!("{:?}", args.kind).to_lowercase(),
        instances: args.count,
        concurrency: args.concurrency,
        batch: args.batch,
        requests: latencies.len(),
        failures,
        seconds,
        instances_per_second: args.count as f64 / seconds,
        megabytes_per_second: total_bytes as f64 / seconds / 1e6,
        latency: percentiles(latencies),
    };
    print(args.server.json, &report, || {
        format!(
            "{} × {} by STOW-RS, {} per request, {} at a time: {:.1} instances/s, {:.1} MB/s, request latency p50 {:.2} ms p95 {:.2} ms, {} failures",
            report.instances,
            report.kind,
            report.batch,
            report.concurrency,
            report.instances_per_second,
            report.megabytes_per_second,
            report.latency.p50_ms,
            report.latency.p95_ms,
            report.failures
        )
    })?;
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The pieces of one STOW-RS body (sharing the pixel bytes) and its length.
fn stow_body(files: &[Part10], pixels: &Bytes, boundary: &str) -> (Vec<Bytes>, usize) {
    let mut pieces = Vec::with_capacity(files.len() * 5 + 1);
    for file in files {
        pieces.push(Bytes::from(format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n")));
        pieces.push(file.meta.clone());
        pieces.push(file.header.clone());
        pieces.push(pixels.clone());
        pieces.push(Bytes::from_static(b"\r\n"));
    }
    pieces.push(Bytes::from(format!("--{boundary}--\r\n")));
    let length = pieces.iter().map(Bytes::len).sum();
    (pieces, length)
}

/// Instances of a request that were not stored: none on 200, those in the
/// Failed SOP Sequence on 202, all of them otherwise.
fn stow_failures(status: StatusCode, answer: &[u8], sent: usize) -> usize {
    match status {
        StatusCode::OK => 0,
        // Warnings alone (duplicates ignored) also answer 202.
        StatusCode::ACCEPTED => match serde_json::from_slice::<Json>(answer) {
            Ok(json) => json.get("00081198").and_then(|s| s.get("Value")?.as_array().map(Vec::len)).unwrap_or(0),
            Err(_) => sent,
        },
        other => {
            let text: String = String::from_utf8_lossy(answer).chars().take(300).collect();
            eprintln!("STOW-RS answered {other}: {text}");
            sent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(boundary: &str, parts: &[(&str, &[u8])], preamble: &[u8]) -> Vec<u8> {
        let mut out = preamble.to_vec();
        for (content_type, content) in parts {
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            if !content_type.is_empty() {
                out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(content);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        out
    }

    fn scan(bytes: &[u8], boundary: &str, chunk: usize) -> anyhow::Result<MultipartSummary> {
        let mut scanner = MultipartScanner::new(boundary);
        for piece in bytes.chunks(chunk) {
            scanner.feed(piece)?;
        }
        scanner.finish()
    }

    #[test]
    fn parts_are_counted_whatever_the_chunking() {
        let mut dicom = vec![0u8; 128];
        dicom.extend_from_slice(b"DICM");
        // Content that looks like a delimiter's start but is not one.
        dicom.extend_from_slice(b"\r\n--bound\r\n--boundar\r\n-");
        dicom.extend(std::iter::repeat_n(7u8, 1000));
        let second: &[u8] = b"--boundary is not at a line start";
        let bytes =
            body("boundary", &[("application/dicom", &dicom), ("", second), ("text/plain", b"")], b"preamble\r\n");
        for chunk in [1, 2, 3, 7, 64, 1000, bytes.len()] {
            let summary = scan(&bytes, "boundary", chunk).expect("parses");
            assert_eq!(summary.parts.len(), 3, "chunk {chunk}");
            assert_eq!(summary.parts[0].content_type.as_deref(), Some("application/dicom"));
            assert_eq!(summary.parts[0].length, dicom.len() as u64);
            assert_eq!(summary.parts[0].head, dicom[..HEAD_LENGTH]);
            assert_eq!(summary.parts[1].content_type, None);
            assert_eq!(summary.parts[1].length, second.len() as u64);
            assert_eq!(summary.parts[2].length, 0);
            assert_eq!(summary.content_bytes, (dicom.len() + second.len()) as u64);
            assert_eq!(summary.body_bytes, bytes.len() as u64);
        }
        let summary = scan(&bytes, "boundary", 5).expect("parses");
        check_instances(
            &MultipartSummary { parts: summary.parts[..1].to_vec(), body_bytes: 0, content_bytes: 0 },
            Some(1),
        )
        .expect("a DICOM part");
        assert!(check_instances(&summary, None).is_err());
    }

    #[test]
    fn truncated_and_malformed_bodies_are_errors() {
        let bytes = body("b0", &[("application/dicom", b"abc")], b"");
        for cut in [0, 5, bytes.len() - 4] {
            assert!(scan(&bytes[..cut], "b0", 3).is_err(), "cut at {cut}");
        }
        assert!(scan(b"--b0junk\r\n\r\nx\r\n--b0--", "b0", 4).is_err());
        let endless = [b"--b0\r\n".as_slice(), &vec![b'x'; MAX_PART_HEADERS + 10]].concat();
        assert!(scan(&endless, "b0", 1000).is_err());
        // Epilogue after the close delimiter is ignored.
        let mut with_epilogue = bytes.clone();
        with_epilogue.extend_from_slice(b"trailing words\r\n--b0\r\n");
        assert_eq!(scan(&with_epilogue, "b0", 2).expect("parses").parts.len(), 1);
    }

    #[test]
    fn boundaries_come_out_of_content_types() {
        assert_eq!(
            boundary_of("multipart/related; type=\"application/dicom\"; boundary=abc123").as_deref(),
            Some("abc123")
        );
        assert_eq!(boundary_of("multipart/related;BOUNDARY=\"a b\";type=x").as_deref(), Some("a b"));
        assert_eq!(boundary_of("multipart/related; type=x"), None);
        assert_eq!(boundary_of("boundary=x"), None);
        assert_eq!(boundary_of("multipart/related; boundary=\"\""), None);
    }

    #[test]
    fn single_frames_are_measured_in_both_forms() {
        let bytes = Bytes::from(body("f", &[("application/octet-stream", &[1, 2, 3, 4])], b""));
        assert_eq!(
            frame_length("multipart/related; type=\"application/octet-stream\"; boundary=f", &bytes).expect("ok"),
            4
        );
        assert_eq!(frame_length("application/octet-stream", &Bytes::from_static(&[9; 10])).expect("ok"), 10);
        let two = Bytes::from(body("f", &[("a", b"1"), ("a", b"2")], b""));
        assert!(frame_length("multipart/related; boundary=f", &two).is_err());
    }

    #[test]
    fn stow_bodies_are_well_formed_multipart() {
        let pixels = Bytes::from_static(&[5; 64]);
        let mut meta = vec![0u8; 128];
        meta.extend_from_slice(b"DICM");
        let files: Vec<Part10> =
            (0..3).map(|_| Part10 { meta: Bytes::from(meta.clone()), header: Bytes::from_static(b"hdr") }).collect();
        let (pieces, length) = stow_body(&files, &pixels, "zz");
        let joined: Vec<u8> = pieces.concat();
        assert_eq!(joined.len(), length);
        let summary = scan(&joined, "zz", 100).expect("parses");
        assert_eq!(summary.parts.len(), 3);
        check_instances(&summary, Some(3)).expect("DICOM parts");
        assert_eq!(summary.parts[0].length, (meta.len() + 3 + 64) as u64);
    }

    #[test]
    fn stow_answers_count_failures() {
        assert_eq!(stow_failures(StatusCode::OK, b"{}", 4), 0);
        let partial = br#"{"00081198":{"vr":"SQ","Value":[{},{}]}}"#;
        assert_eq!(stow_failures(StatusCode::ACCEPTED, partial, 4), 2);
        assert_eq!(stow_failures(StatusCode::ACCEPTED, b"not json", 4), 4);
        assert_eq!(stow_failures(StatusCode::ACCEPTED, br#"{"00081199":{"vr":"SQ"}}"#, 4), 0);
        assert_eq!(stow_failures(StatusCode::CONFLICT, b"", 4), 4);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_component("Kim^Min*"), "Kim^Min*");
        assert_eq!(encode_component("김"), "%EA%B9%80");
        assert_eq!(encode_component("O'Brien&x=1 +"), "O%27Brien%26x%3D1%20%2B");
    }
}
