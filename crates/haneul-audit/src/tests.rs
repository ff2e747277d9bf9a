use std::path::Path;

use time::macros::datetime;

use super::*;

fn entry(patient: &str) -> Entry {
    Entry::new(Action::Query, "STORESCU", "127.0.0.1:4242", "a1").patient(patient).study("1.2.3").detail("matches", 1)
}

fn write(dir: &Path, entries: Vec<Entry>) -> OpenReport {
    let (auditor, report) = Auditor::open(dir).unwrap();
    for entry in entries {
        auditor.record(entry);
    }
    auditor.flush();
    assert_eq!(auditor.stats().lost, 0);
    report
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

fn put_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// A trail of `n` records in one file; returns the file.
fn trail(dir: &Path, n: usize) -> PathBuf {
    write(dir, (0..n).map(|i| entry(&format!("P{i}"))).collect());
    let files = trail_files(dir).unwrap();
    assert_eq!(files.len(), 1);
    files[0].clone()
}

#[test]
fn chain_continues_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(write(dir.path(), vec![entry("A"), entry("B"), entry("C")]).last_seq, 0);
    assert_eq!(write(dir.path(), vec![entry("D"), entry("E")]).last_seq, 3);
    let report = verify(dir.path()).unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!((report.records, report.last_seq), (5, 5));
    let records = search(dir.path(), &Filter::default(), 100).unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![5, 4, 3, 2, 1]);
    assert_eq!(records[4].prev, GENESIS);
    assert_eq!(records[0].patients, vec!["E"]);
    assert_eq!(records[0].action, Action::Query);
}

#[test]
fn chain_continues_across_days() {
    let dir = tempfile::tempdir().unwrap();
    let at = |time: OffsetDateTime, patient: &str| {
        let mut entry = entry(patient);
        entry.time = time;
        entry
    };
    write(dir.path(), vec![at(datetime!(2026-03-01 23:59:58 UTC), "A"), at(datetime!(2026-03-02 00:00:01 UTC), "B")]);
    // A late record of the day before goes into the newest file, never back.
    write(dir.path(), vec![at(datetime!(2026-03-01 23:59:59 UTC), "C"), at(datetime!(2026-03-03 08:00:00 UTC), "D")]);
    let files = trail_files(dir.path()).unwrap();
    let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["audit-2026-03-01.jsonl", "audit-2026-03-02.jsonl", "audit-2026-03-03.jsonl"]);
    assert_eq!(lines(&files[1]).len(), 2);
    let first_of_second: Record = serde_json::from_str(&lines(&files[1])[0]).unwrap();
    assert_eq!(first_of_second.prev, line_digest(lines(&files[0])[0].as_bytes()));
    let report = verify(dir.path()).unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, 4);

    let day = |text| Filter {
        from: Some(parse_bound(text, false).unwrap()),
        to: Some(parse_bound(text, true).unwrap()),
        ..Filter::default()
    };
    let on_first: Vec<String> =
        search(dir.path(), &day("2026-03-01"), 10).unwrap().into_iter().map(|r| r.patients[0].clone()).collect();
    assert_eq!(on_first, vec!["C", "A"]);
    assert_eq!(search(dir.path(), &day("2026-03-03"), 10).unwrap().len(), 1);

    // Removing a whole file in the middle breaks the chain at the next one.
    std::fs::remove_file(&files[1]).unwrap();
    let report = verify(dir.path()).unwrap();
    let broken = report.first_break.unwrap();
    assert_eq!((broken.at.file.clone(), broken.at.line), (files[2].clone(), 1));
}

#[test]
fn verify_finds_an_edited_byte() {
    let dir = tempfile::tempdir().unwrap();
    let file = trail(dir.path(), 4);
    let mut bytes = std::fs::read(&file).unwrap();
    let second = lines(&file)[0].len() + 1;
    let at = second + lines(&file)[1].find("P1").unwrap() + 1;
    bytes[at] = b'7';
    std::fs::write(&file, bytes).unwrap();
    let broken = verify(dir.path()).unwrap().first_break.unwrap();
    assert_eq!(broken.at.line, 2);
    assert!(broken.reason.contains("altered"), "{}", broken.reason);
}

#[test]
fn verify_finds_an_edit_with_a_recomputed_hash() {
    let dir = tempfile::tempdir().unwrap();
    let file = trail(dir.path(), 3);
    let mut all = lines(&file);
    let record: Record = serde_json::from_str(&all[1]).unwrap();
    let mut forged = entry("SOMEONE-ELSE");
    forged.time = record.time().unwrap();
    all[1] = forged.to_line(record.seq, &record.prev);
    put_lines(&file, &all);
    let broken = verify(dir.path()).unwrap().first_break.unwrap();
    assert_eq!(broken.at.line, 3);
}

#[test]
fn verify_finds_a_removed_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = trail(dir.path(), 4);
    let mut all = lines(&file);
    all.remove(1);
    put_lines(&file, &all);
    let broken = verify(dir.path()).unwrap().first_break.unwrap();
    assert_eq!(broken.at.line, 2);
    assert!(broken.reason.contains("removed"), "{}", broken.reason);
}

#[test]
fn verify_finds_a_swapped_pair() {
    let dir = tempfile::tempdir().unwrap();
    let file = trail(dir.path(), 4);
    let mut all = lines(&file);
    all.swap(1, 2);
    put_lines(&file, &all);
    assert_eq!(verify(dir.path()).unwrap().first_break.unwrap().at.line, 2);
}

#[test]
fn verify_finds_an_inserted_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = trail(dir.path(), 3);
    let mut all = lines(&file);
    let copy = all[0].clone();
    all.insert(2, copy);
    put_lines(&file, &all);
    assert_eq!(verify(dir.path()).unwrap().first_break.unwrap().at.line, 3);

    // A fresh, self-consistent record slipped in also breaks the chain.
    let mut all = lines(&file);
    all.remove(2);
    all.insert(1, entry("X").to_line(2, &line_digest(all[0].as_bytes())));
    put_lines(&file, &all);
    assert_eq!(verify(dir.path()).unwrap().first_break.unwrap().at.line, 3);
}

#[test]
fn torn_tail_is_reported_and_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let file = trail(dir.path(), 2);
    let intact = std::fs::read(&file).unwrap();
    let mut torn = intact.clone();
    torn.extend_from_slice(br#"{"seq":3,"time":"2026-"#);
    std::fs::write(&file, &torn).unwrap();

    let report = verify(dir.path()).unwrap();
    assert!(report.intact());
    assert_eq!(report.partial_tail.as_ref().map(|at| at.line), Some(3));

    let opened = write(dir.path(), vec![entry("C")]);
    assert_eq!(opened.truncated, Some((file.clone(), 22)));
    assert_eq!(opened.last_seq, 2);
    assert!(std::fs::read(&file).unwrap().starts_with(&intact));
    let report = verify(dir.path()).unwrap();
    assert!(report.intact() && report.partial_tail.is_none(), "{report:?}");
    assert_eq!(report.records, 3);
}

#[test]
fn an_unsound_last_record_stops_the_writer_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let file = trail(dir.path(), 2);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    assert!(matches!(Auditor::open(dir.path()), Err(AuditError::Corrupt(_))));
}

#[test]
fn long_lists_are_capped_and_filters_apply() {
    let dir = tempfile::tempdir().unwrap();
    let many =
        Entry::new(Action::Retrieve, "VIEWER", "10.1.2.3:5000", "r1").patients((0..150).map(|i| format!("P{i}")));
    write(
        dir.path(),
        vec![
            many,
            entry("A").failed("disk full"),
            Entry::new(Action::Store, "MODALITY", "10.9.9.9:104", "s").patient("A"),
        ],
    );
    let all = search(dir.path(), &Filter::default(), 100).unwrap();
    let retrieve = &all[2];
    assert_eq!(retrieve.patients.len(), MAX_IDS);
    assert_eq!(retrieve.detail["patients_omitted"], 50);
    assert_eq!(all[1].outcome, Outcome::Failure);
    assert_eq!(all[1].detail["error"], "disk full");

    let by = |filter: Filter| search(dir.path(), &filter, 100).unwrap().len();
    assert_eq!(by(Filter { patient: Some("A".into()), ..Filter::default() }), 2);
    assert_eq!(by(Filter { actor: Some("10.1.2.3".into()), ..Filter::default() }), 1);
    assert_eq!(by(Filter { actor: Some("MODALITY".into()), ..Filter::default() }), 1);
    assert_eq!(by(Filter { study: Some("1.2.3".into()), ..Filter::default() }), 1);
    assert_eq!(by(Filter { action: Some(Action::Store), ..Filter::default() }), 1);
    assert_eq!(search(dir.path(), &Filter::default(), 2).unwrap().len(), 2);
    assert!(verify(dir.path()).unwrap().intact());
}

#[test]
fn bounds_and_sources_parse() {
    assert_eq!(parse_bound("2026-03-01", false).unwrap(), datetime!(2026-03-01 00:00 UTC));
    assert_eq!(parse_bound("2026-03-01", true).unwrap(), datetime!(2026-03-02 00:00 UTC));
    assert_eq!(parse_bound("2026-03-01T09:00:00+09:00", false).unwrap(), datetime!(2026-03-01 00:00 UTC));
    assert!(parse_bound("yesterday", false).is_err());
    assert_eq!(source_host("10.0.0.1:4242"), "10.0.0.1");
    assert_eq!(source_host("[::1]:80"), "::1");
    assert_eq!(source_host("local"), "local");
}

#[test]
fn one_process_writes_and_others_submit_through_the_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, _) = Auditor::open(dir.path()).unwrap();
    assert!(matches!(Auditor::open(dir.path()), Err(AuditError::Busy(_))), "a second writer is refused");
    auditor.record(entry("FIRST"));
    let change = Entry::new(Action::ConfigChange, "kim (cli)", "localhost", "cli").detail("change", "user add");
    assert_eq!(submit(dir.path(), change).unwrap(), Submitted::Queued);
    auditor.flush();
    let records = search(dir.path(), &Filter::default(), 10).unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    let queued = records.iter().find(|record| record.action == Action::ConfigChange).expect("the submitted record");
    assert_eq!(queued.actor, "kim (cli)");
    assert_eq!(queued.detail["change"], "user add");
    let inbox: Vec<_> = std::fs::read_dir(dir.path().join("inbox")).unwrap().collect();
    assert!(inbox.is_empty(), "the inbox is emptied once the records are on disk");

    // Without a running writer the record goes straight into the trail.
    drop(auditor);
    assert_eq!(submit(dir.path(), entry("LATER")).unwrap(), Submitted::Written);
    let report = verify(dir.path()).unwrap();
    assert!(report.intact() && report.records == 3, "{report:?}");
}

#[test]
fn records_left_in_the_inbox_are_appended_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, _) = Auditor::open(dir.path()).unwrap();
    // Submitted while the writer runs, which then stops before its next look.
    let inbox = dir.path().join("inbox");
    let record = serde_json::to_vec(&entry("QUEUED")).unwrap();
    drop(auditor);
    std::fs::write(inbox.join("000000000000000000000001-1-00000000.json"), record).unwrap();
    std::fs::write(inbox.join("000000000000000000000002-1-00000000.json"), b"{ not a record").unwrap();
    write(dir.path(), vec![]);
    let records = search(dir.path(), &Filter::default(), 10).unwrap();
    assert_eq!(records.iter().map(|r| r.patients.clone()).collect::<Vec<_>>(), vec![vec!["QUEUED".to_string()]]);
    let left: Vec<String> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["000000000000000000000002-1-00000000.bad"], "an unreadable record is kept aside");
}
