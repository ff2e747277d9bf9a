//! `haneul backup`, `backup list`, `backup drill` and `restore` with the real
//! binary: backups beside a running server, incremental runs that leave old
//! objects untouched, point-in-time restore, a restored node serving
//! byte-identical instances, and backups that Haneul refuses to overwrite.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{haneul_bin, held_instances, pydicom_data, run, stored_file, Server};

const FIRST_SET: [&str; 3] = ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm"];
const SECOND_SET: [&str; 2] = ["SC_rgb_small_odd.dcm", "rtplan.dcm"];
/// Files `haneul import` takes (rtdose and rtplan announce another SOP Instance UID in their meta group).
const IMPORT_SET: [&str; 3] = ["CT_small.dcm", "MR_small.dcm", "SC_rgb_small_odd.dcm"];

fn haneul() -> Command {
    Command::new(haneul_bin())
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Run `haneul backup` and return the snapshot name it printed.
fn backup(args: &[&str], to: &Path) -> (String, Output) {
    let output = run(haneul().arg("backup").arg("--to").arg(to).args(args));
    assert!(output.status.success(), "haneul backup failed: {}", stderr(&output));
    let text = stdout(&output);
    let snapshot = text
        .lines()
        .find_map(|line| line.strip_prefix("snapshot:"))
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|| panic!("no snapshot name in:\n{text}"));
    (snapshot, output)
}

/// The number after `label` in a summary line (`objects written: 2 (…)`).
fn count(output: &Output, label: &str) -> u64 {
    let text = stdout(output);
    let line =
        text.lines().find_map(|line| line.strip_prefix(label)).unwrap_or_else(|| panic!("no {label} in:\n{text}"));
    line.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no count in {line:?}"))
}

/// Every file under `dir`, by path relative to it, with its bytes.
fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap_or_else(|e| panic!("listing {}: {e}", current.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).expect("under dir").display().to_string();
                files.insert(relative, std::fs::read(&path).expect("reading a file"));
            }
        }
    }
    files
}

/// (inode, modification time, change time) of every object in a backup.
fn object_identities(backup: &Path) -> BTreeMap<String, (u64, i64, i64)> {
    files_under(&backup.join("objects"))
        .into_keys()
        .map(|relative| {
            let metadata = std::fs::metadata(backup.join("objects").join(&relative)).expect("object metadata");
            let identity = (metadata.ino(), metadata.mtime_nsec() + metadata.mtime() * 1_000_000_000, metadata.ctime());
            (relative, identity)
        })
        .collect()
}

/// The JSON report of `haneul verify`, which must be clean.
fn verify_clean(data_dir: &Path) -> serde_json::Value {
    let output = run(haneul().args(["verify", "--json", "--data"]).arg(data_dir));
    assert!(output.status.success(), "verify of {} is not clean:\n{}", data_dir.display(), stdout(&output));
    serde_json::from_slice(&output.stdout).expect("verify JSON")
}

/// Every instance file of an archive (path under `blobs/` → bytes). A
/// running server keeps empty files created ahead of use; they hold no instance.
fn blob_files(data_dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files_under(&data_dir.join("blobs")).into_iter().filter(|(_, bytes)| !bytes.is_empty()).collect()
}

/// The trail's records of backups, once there are `count` of them (the
/// running server appends what the command left in its inbox).
fn backups_recorded(data_dir: &Path, count: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let exports: Vec<serde_json::Value> = common::audit_search(data_dir, &["--action", "export"])
            .into_iter()
            .filter(|record| record["detail"]["operation"] == "backup")
            .collect();
        if exports.len() >= count || std::time::Instant::now() > deadline {
            assert_eq!(exports.len(), count, "backup records: {exports:#?}");
            let mut exports = exports;
            // Oldest first (a search lists the newest first).
            exports.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
            return exports;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The snapshots `haneul backup list --json` shows: (name, complete).
fn snapshots(backup: &Path) -> Vec<(String, bool)> {
    let output = run(haneul().args(["backup", "list", "--json", "--from"]).arg(backup));
    assert!(output.status.success(), "backup list: {}", stderr(&output));
    let listing: serde_json::Value = serde_json::from_slice(&output.stdout).expect("list JSON");
    listing
        .as_array()
        .expect("an array")
        .iter()
        .map(|item| (item["snapshot"].as_str().expect("name").to_string(), item["complete"] == true))
        .collect()
}

#[test]
fn backups_beside_a_running_server_restore_to_byte_identical_archives() {
    let mut server = Server::start();
    let config = server.config_path().display().to_string();
    let work = tempfile::tempdir().expect("tempdir");
    let backup_dir = work.path().join("backup");

    server.store_samples("MODALITY", &FIRST_SET);
    let blobs_at_first = blob_files(&server.data_dir());
    assert_eq!(blobs_at_first.len(), FIRST_SET.len());
    let (first, output) = backup(&["--config", &config], &backup_dir);
    assert_eq!(count(&output, "objects written:"), FIRST_SET.len() as u64);
    assert_eq!(manifest_objects(&backup_dir, &first).len(), FIRST_SET.len());
    // The server's audit trail goes with it (one file a day).
    assert!(count(&output, "audit trail:") >= 1, "{}", stdout(&output));
    let objects_at_first = object_identities(&backup_dir);

    server.store_samples("MODALITY", &SECOND_SET);
    let (second, output) = backup(&["--config", &config], &backup_dir);
    assert_ne!(first, second);
    // Each backup is an export of every patient's data in the server's trail
    // (queued by the command, appended by the running server).
    let exports = backups_recorded(&server.data_dir(), 2);
    assert_eq!(exports[0]["detail"]["snapshot"], first.as_str(), "{exports:#?}");
    assert_eq!(exports[1]["detail"]["snapshot"], second.as_str(), "{exports:#?}");
    assert_eq!(exports[1]["detail"]["instances"], (FIRST_SET.len() + SECOND_SET.len()) as u64, "{exports:#?}");
    assert_eq!(count(&output, "objects written:"), SECOND_SET.len() as u64, "only the new instances are copied");
    assert_eq!(count(&output, "objects already present:"), FIRST_SET.len() as u64);
    let objects_at_second = object_identities(&backup_dir);
    for (object, identity) in &objects_at_first {
        assert_eq!(objects_at_second.get(object), Some(identity), "object {object} was rewritten");
    }
    assert_eq!(snapshots(&backup_dir), vec![(first.clone(), true), (second.clone(), true)]);

    // The running server shows the last backup to each target, for
    // monitoring; a run that wrote nothing is the last run there, and its
    // last success stays. Another target has a status of its own.
    let backups = |status: &serde_json::Value| status["backup"]["targets"].as_array().expect("targets").clone();
    let status = server.get("/api/status", "application/json").json();
    let targets = backups(&status);
    assert_eq!(targets.len(), 1, "{status:#}");
    assert_eq!(targets[0]["target"], backup_dir.display().to_string(), "{status:#}");
    assert_eq!(targets[0]["last_success"]["snapshot"], second.as_str(), "{status:#}");
    assert_eq!(targets[0]["last_run"]["outcome"], "complete", "{status:#}");
    assert!(targets[0]["seconds_since_success"].as_i64().is_some_and(|age| (0..600).contains(&age)));
    let not_a_directory = work.path().join("not-a-directory");
    std::fs::write(&not_a_directory, b"a file").expect("file");
    let failed = run(haneul().args(["backup", "--config", &config, "--to"]).arg(&not_a_directory));
    assert_eq!(failed.status.code(), Some(2), "a backup into a file succeeded");
    let status = server.get("/api/status", "application/json").json();
    let targets = backups(&status);
    let failed = targets.iter().find(|target| target["target"] == not_a_directory.display().to_string());
    let failed = failed.unwrap_or_else(|| panic!("no status for the failed target: {status:#}"));
    assert_eq!(failed["last_run"]["outcome"], "failed", "{status:#}");
    assert!(failed["last_run"]["error"].as_str().is_some_and(|error| !error.is_empty()), "{status:#}");
    assert!(failed["last_success"].is_null(), "{status:#}");
    let good = targets.iter().find(|target| target["target"] == backup_dir.display().to_string()).expect("first");
    assert_eq!(good["last_success"]["snapshot"], second.as_str(), "{status:#}");
    let metrics = server.get("/metrics", "text/plain").text();
    let gauge = |name: &str, target: &Path| -> f64 {
        let series = format!("{name}{{target=\"{}\"}} ", target.display());
        let line = metrics.lines().find(|line| line.starts_with(&series)).unwrap_or_else(|| panic!("{series}"));
        line[series.len()..].trim().parse().expect("a number")
    };
    assert_eq!(gauge("haneul_backup_last_run_failed", &not_a_directory), 1.0);
    assert_eq!(gauge("haneul_backup_last_run_failed", &backup_dir), 0.0);
    assert_eq!(gauge("haneul_backup_last_success_timestamp_seconds", &not_a_directory), 0.0);
    assert_eq!(
        gauge("haneul_backup_last_success_timestamp_seconds", &backup_dir),
        good["last_success"]["finished_unix"].as_f64().expect("a time")
    );
    assert!(metrics.contains("\nhaneul_backup_status_readable 1\n"), "{metrics}");

    // Point in time: the first snapshot holds exactly the first set.
    let at_first = work.path().join("at-first");
    let output =
        run(haneul().args(["restore", "--from"]).arg(&backup_dir).args(["--at", &first, "--data"]).arg(&at_first));
    assert!(output.status.success(), "restore --at {first}: {}", stderr(&output));
    assert_eq!(blob_files(&at_first), blobs_at_first, "the first snapshot restores the first set's files exactly");
    assert_eq!(verify_clean(&at_first)["instances_checked"], FIRST_SET.len());

    // The newest snapshot, as a node: byte for byte what the original serves.
    let restored = Server::start_on("RESTORED", |latest| {
        let output = run(haneul().args(["restore", "--from"]).arg(&backup_dir).arg("--data").arg(latest));
        assert!(output.status.success(), "restore: {}", stderr(&output));
        assert_eq!(blob_files(latest), blob_files(&server.data_dir()), "restored files are byte-identical");
        // The trail as it was at the backup: each file a prefix of the
        // server's (which has gone on recording), its chain intact.
        // The restore's own record, appended after them, is left out here.
        const RESTORE: &[u8] = b"\"operation\":\"restore\"";
        let trail = files_under(&latest.join("audit"));
        let trail_files: Vec<(&String, Vec<u8>)> = trail
            .iter()
            .filter(|(name, _)| name.starts_with("audit-"))
            .map(|(name, bytes)| {
                let lines = bytes.split_inclusive(|byte| *byte == b'\n');
                let restore_record = |line: &[u8]| line.windows(RESTORE.len()).any(|window| window == RESTORE);
                let restored: Vec<u8> = lines.filter(|line| !restore_record(line)).flatten().copied().collect();
                (name, restored)
            })
            .filter(|(_, restored)| !restored.is_empty())
            .collect();
        assert!(!trail_files.is_empty(), "the audit trail is restored");
        for (name, restored_bytes) in &trail_files {
            let now = std::fs::read(server.data_dir().join("audit").join(name)).expect("the server's trail file");
            assert!(now.starts_with(restored_bytes) && restored_bytes.ends_with(b"\n"), "{name}");
        }
        // The restore itself is the restored trail's newest record, attributed.
        let restores = common::audit_search(latest, &["--action", "store"]);
        let restore = restores.iter().find(|record| record["detail"]["operation"] == "restore");
        let restore = restore.unwrap_or_else(|| panic!("no restore record in {restores:#?}"));
        assert_eq!(restore["detail"]["snapshot"], second.as_str(), "{restore:#}");
        assert!(restore["actor"].as_str().is_some_and(|actor| actor.ends_with("(command line)")), "{restore:#}");
        let verified = run(haneul().args(["audit", "verify", "--json", "--data"]).arg(latest));
        assert!(verified.status.success(), "audit verify: {}{}", stdout(&verified), stderr(&verified));
        let verified: serde_json::Value = serde_json::from_slice(&verified.stdout).expect("audit verify JSON");
        assert!(verified["records"].as_u64().is_some_and(|records| records > 0), "{verified:#}");
    });
    let latest = restored.data_dir();
    let authorization = server.authorization();
    let original = held_instances(server.http_port, &authorization);
    assert_eq!(original.len(), FIRST_SET.len() + SECOND_SET.len());
    assert_eq!(
        held_instances(restored.http_port, &authorization),
        original,
        "the restored node holds the same instances"
    );
    for instance in &original {
        assert_eq!(
            stored_file(restored.http_port, &authorization, instance),
            stored_file(server.http_port, &authorization, instance),
            "instance {} differs after the restore",
            instance.2
        );
    }
    assert_eq!(verify_clean(&latest)["instances_checked"], FIRST_SET.len() + SECOND_SET.len());
    drop(restored);

    let scratch = work.path().join("scratch");
    std::fs::create_dir(&scratch).expect("scratch");
    let output = run(haneul().args(["backup", "drill", "--from"]).arg(&backup_dir).arg("--scratch").arg(&scratch));
    assert!(output.status.success(), "drill failed:\n{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("result:            complete"), "{}", stdout(&output));
    assert_eq!(count(&output, "objects verified:"), (FIRST_SET.len() + SECOND_SET.len()) as u64);
    assert!(count(&output, "audit trail:") > 0, "{}", stdout(&output));
    assert!(std::fs::read_dir(&scratch).expect("scratch").next().is_none(), "the drill removed its restore");
    server.stop();
}

/// `haneul` with the credentials of `bucket` in the environment, as a
/// backup job gets its own keys.
fn haneul_for(bucket: &haneul_storage::testing::TestBucket) -> Command {
    let mut command = haneul();
    command
        .env("AWS_ACCESS_KEY_ID", bucket.options.access_key_id.as_deref().unwrap_or_default())
        .env("AWS_SECRET_ACCESS_KEY", bucket.options.secret_access_key.as_deref().unwrap_or_default());
    command
}

#[test]
fn a_backup_in_a_bucket_restores_to_a_byte_identical_archive_and_passes_its_drill() {
    let bucket = haneul_storage::testing::TestBucket::create();
    let url = format!("s3://{}/{}", bucket.options.bucket, bucket.options.prefix);
    let endpoint = ["--s3-endpoint", bucket.endpoint()];
    let mut server = Server::start();
    let config = server.config_path().display().to_string();
    let work = tempfile::tempdir().expect("tempdir");
    let in_bucket = |command: &mut Command| -> Output {
        let output = run(command.args(endpoint));
        assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
        output
    };

    server.store_samples("MODALITY", &FIRST_SET);
    let first = in_bucket(haneul_for(&bucket).args(["backup", "--config", &config, "--to", &url]));
    assert_eq!(count(&first, "objects written:"), FIRST_SET.len() as u64);
    server.store_samples("MODALITY", &SECOND_SET);
    let second = in_bucket(haneul_for(&bucket).args(["backup", "--config", &config, "--to", &url]));
    assert_eq!(count(&second, "objects written:"), SECOND_SET.len() as u64, "only the new instances are copied");
    assert_eq!(count(&second, "objects already present:"), FIRST_SET.len() as u64);
    let listing = in_bucket(haneul_for(&bucket).args(["backup", "list", "--json", "--from", &url]));
    let listing: serde_json::Value = serde_json::from_slice(&listing.stdout).expect("list JSON");
    let complete: Vec<bool> =
        listing.as_array().expect("an array").iter().map(|item| item["complete"] == true).collect();
    assert_eq!(complete, [true, true], "{listing:#}");

    let restored = work.path().join("restored");
    in_bucket(haneul_for(&bucket).args(["restore", "--from", &url, "--data"]).arg(&restored));
    assert_eq!(blob_files(&restored), blob_files(&server.data_dir()), "restored files are byte-identical");
    assert_eq!(verify_clean(&restored)["instances_checked"], FIRST_SET.len() + SECOND_SET.len());

    let drill = in_bucket(haneul_for(&bucket).args(["backup", "drill", "--from", &url]));
    assert!(stdout(&drill).contains("result:            complete"), "{}", stdout(&drill));
    assert_eq!(count(&drill, "objects verified:"), (FIRST_SET.len() + SECOND_SET.len()) as u64);

    // Wrong keys: a clear error naming the bucket, exit code 2.
    let refused = run(haneul_for(&bucket)
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .args(["backup", "list", "--from", &url])
        .args(endpoint));
    assert_eq!(refused.status.code(), Some(2), "{}", stdout(&refused));
    assert!(stderr(&refused).contains(&bucket.options.bucket), "{}", stderr(&refused));
    server.stop();
}

#[test]
fn a_backup_in_a_bucket_with_object_lock_survives_someone_holding_the_backup_keys() {
    // A bucket of its own (Object Lock is set when a bucket is created), with
    // one day of compliance retention: it outlives the test on a developer's
    // server, and goes with the temporary server in scripts/test.sh.
    let bucket = haneul_storage::testing::TestBucket::create();
    let name = format!("lock-{}", bucket.options.prefix.to_lowercase());
    let owner_url = bucket.endpoint().replacen(
        "://",
        &format!(
            "://{}:{}@",
            bucket.options.access_key_id.as_deref().unwrap_or_default(),
            bucket.options.secret_access_key.as_deref().unwrap_or_default()
        ),
        1,
    );
    let locked = common::parse_peer_output(
        "s3_lock.py",
        &common::run_peer("s3_lock.py", &["lock-bucket", &owner_url, &name, "1"]),
    );
    assert!(locked["configuration"].as_str().is_some_and(|xml| xml.contains("COMPLIANCE")), "{locked:#}");

    let mut server = Server::start();
    server.store_samples("MODALITY", &FIRST_SET);
    let url = format!("s3://{name}/site1");
    let endpoint = ["--s3-endpoint", bucket.endpoint()];
    let config = server.config_path().display().to_string();
    // Signed, with a key the backup's write keys cannot reach.
    let work = tempfile::tempdir().expect("tempdir");
    let key_file = work.path().join("backup.key");
    assert!(run(haneul().args(["backup", "keygen"]).arg(&key_file)).status.success());
    let signing_key = key_file.to_str().expect("a UTF-8 path");
    let verify_key = format!("{signing_key}.pub");
    let key = verify_key.as_str();
    let output = run(haneul_for(&bucket)
        .args(["backup", "--config", &config, "--key", signing_key, "--to", &url])
        .args(endpoint));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(count(&output, "objects written:"), FIRST_SET.len() as u64, "a locked bucket takes Haneul's writes");

    // With the same keys: deleting the version Haneul wrote is refused,
    // overwriting only adds a version, and the original is still there.
    let saved = work.path().join("original");
    let saved_arg = saved.to_str().expect("a UTF-8 path");
    let attack = common::parse_peer_output(
        "s3_lock.py",
        &common::run_peer("s3_lock.py", &["attack", &owner_url, &name, "site1/objects/", saved_arg]),
    );
    let deletes = attack["deletes"].as_array().expect("delete statuses");
    assert!(!deletes.is_empty() && deletes.iter().all(|status| status == 403), "{attack:#}");
    assert_eq!(attack["overwrite"], 200, "{attack:#}");
    let written = &attack["before"][0]["version"];
    assert!(attack["after"].as_array().is_some_and(|after| after.iter().any(|entry| &entry["version"] == written)));
    let original = std::fs::read(&saved).expect("the saved original");
    // The object is an instance file or a file of the audit trail as it was then.
    let kept = blob_files(&server.data_dir()).values().any(|blob| *blob == original)
        || files_under(&server.data_dir().join("audit")).values().any(|trail| trail.starts_with(&original));
    assert!(!original.is_empty() && kept, "the original bytes are kept");

    // A delete marker over another object, the snapshot's catalog hidden
    // too, its manifest overwritten: to a plain reader the object is gone
    // and the snapshot incomplete.
    let change = |prefix: &str, pattern: &str, how: &str, status: u64| {
        let changed = common::parse_peer_output(
            "s3_lock.py",
            &common::run_peer("s3_lock.py", &["change", &owner_url, &name, prefix, pattern, how]),
        );
        assert_eq!(changed["status"], status, "{changed:#}");
        assert!(changed["after"].as_array().is_some_and(|after| after.len() >= 2), "{changed:#}");
        changed["key"].as_str().expect("key").to_string()
    };
    let hidden_object = change("site1/objects/", ".", "delete", 204);
    assert_ne!(hidden_object, attack["key"].as_str().expect("key"), "two different objects");
    let hidden_catalog = change("site1/snapshots/", "catalog[.]sqlite$", "delete", 204);
    change("site1/snapshots/", "manifest[.]json$", "overwrite", 200);
    change("site1/snapshots/", "manifest[.]sig$", "overwrite", 200);

    // Haneul reads the versions it wrote: the snapshot is listed complete
    // (its manifest as written), the drill restores everything and names
    // what was changed (exit 3),
    // and a restore gives the archive back byte for byte.
    let listing =
        run(haneul_for(&bucket).args(["backup", "list", "--json", "--key", key, "--from", &url]).args(endpoint));
    assert!(listing.status.success(), "{}", stderr(&listing));
    let listing: serde_json::Value = serde_json::from_slice(&listing.stdout).expect("list JSON");
    // Both read as Haneul wrote them: the signature holds.
    assert_eq!((&listing[0]["state"], &listing[0]["signed"]), (&"complete".into(), &true.into()), "{listing:#}");
    let drill = run(haneul_for(&bucket).args(["backup", "drill", "--key", key, "--from", &url]).args(endpoint));
    assert_eq!(drill.status.code(), Some(3), "{}{}", stdout(&drill), stderr(&drill));
    assert_eq!(count(&drill, "replaced:"), 3, "{}", stdout(&drill));
    assert_eq!(count(&drill, "objects verified:"), FIRST_SET.len() as u64, "{}", stdout(&drill));
    for key in [attack["key"].as_str().expect("key"), hidden_object.as_str(), hidden_catalog.as_str()] {
        assert!(stdout(&drill).contains(key), "{key} not named in\n{}", stdout(&drill));
    }
    let restored = work.path().join("restored");
    let restore = run(haneul_for(&bucket).args(["restore", "--from", &url, "--data"]).arg(&restored).args(endpoint));
    assert_eq!(restore.status.code(), Some(3), "{}{}", stdout(&restore), stderr(&restore));
    assert_eq!(count(&restore, "replaced:"), 3, "{}", stdout(&restore));
    assert_eq!(blob_files(&restored), blob_files(&server.data_dir()), "restored files are byte-identical");
    assert_eq!(verify_clean(&restored)["instances_checked"], FIRST_SET.len());

    // Backups go on: one more instance object overwritten, the next backup
    // refers to every replaced instance object as written, names each and
    // exits 3, and writes the hidden one again; its drill restores it all.
    let instance_keys: BTreeSet<String> = blob_files(&server.data_dir())
        .values()
        .map(|bytes| {
            let digest = blake3::hash(bytes).to_hex().to_string();
            format!("site1/objects/{}/{digest}", &digest[..2])
        })
        .collect();
    let attacked = attack["key"].as_str().expect("key").to_string();
    let untouched = instance_keys.iter().find(|key| **key != attacked && **key != hidden_object).expect("a third");
    let overwritten = change("site1/objects/", &format!("{untouched}$"), "overwrite", 200);
    let replaced_instances: Vec<&String> =
        [&attacked, &overwritten].into_iter().filter(|key| instance_keys.contains(*key)).collect();
    let next = run(haneul_for(&bucket)
        .args(["backup", "--config", &config, "--key", signing_key, "--to", &url])
        .args(endpoint));
    assert_eq!(next.status.code(), Some(3), "{}{}", stdout(&next), stderr(&next));
    assert!(count(&next, "replaced:") >= replaced_instances.len() as u64, "{}", stdout(&next));
    for key in &replaced_instances {
        assert!(stdout(&next).contains(key.as_str()), "{key} not named in\n{}", stdout(&next));
    }
    if instance_keys.contains(&hidden_object) {
        assert!(count(&next, "objects written:") >= 1, "{}", stdout(&next));
    }
    let drill = run(haneul_for(&bucket).args(["backup", "drill", "--key", key, "--from", &url]).args(endpoint));
    assert_eq!(drill.status.code(), Some(3), "{}{}", stdout(&drill), stderr(&drill));
    assert_eq!(count(&drill, "objects verified:"), FIRST_SET.len() as u64, "{}", stdout(&drill));
    assert!(!stdout(&drill).contains("passed over"), "{}", stdout(&drill));
    assert!(stdout(&drill).contains(&overwritten), "{overwritten} not named in\n{}", stdout(&drill));
    server.stop();
}

/// The objects of a snapshot, from its manifest: blob path → object file.
fn manifest_objects(backup: &Path, snapshot: &str) -> BTreeMap<String, PathBuf> {
    let manifest = std::fs::read(backup.join("snapshots").join(snapshot).join("manifest.json")).expect("manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest JSON");
    manifest["blobs"]
        .as_array()
        .expect("blobs")
        .iter()
        .map(|blob| {
            let digest = blob["digest"].as_str().expect("digest");
            (blob["path"].as_str().expect("path").to_string(), backup.join("objects").join(&digest[..2]).join(digest))
        })
        .collect()
}

/// What an attacker with the backup host's account could do: make a file writable and change it.
fn tamper(object: &Path, content: &[u8]) {
    std::fs::set_permissions(object, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::write(object, content).expect("overwrite");
}

/// A work directory with an archive made by `haneul import` of IMPORT_SET
/// in `data`, and where its backup goes (`backup`).
fn imported_archive() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let work = tempfile::tempdir().expect("tempdir");
    let data_dir = work.path().join("data");
    let backup_dir = work.path().join("backup");
    let files: Vec<PathBuf> = IMPORT_SET.iter().map(|file| pydicom_data().join("test_files").join(file)).collect();
    let output = run(haneul().arg("import").arg("--data").arg(&data_dir).args(&files));
    assert!(output.status.success(), "import: {}", stderr(&output));
    (work, data_dir, backup_dir)
}

#[test]
fn damaged_backups_fail_the_drill_and_are_never_overwritten() {
    let (work, data_dir, backup_dir) = imported_archive();
    let data = data_dir.display().to_string();
    let (snapshot, _) = backup(&["--data", &data], &backup_dir);
    let objects: Vec<PathBuf> = manifest_objects(&backup_dir, &snapshot).into_values().collect();
    assert_eq!(objects.len(), IMPORT_SET.len());
    for object in &objects {
        let mode = std::fs::metadata(object).expect("object").permissions().mode();
        assert_eq!(mode & 0o222, 0, "{} is writable", object.display());
    }

    // A restore never goes into a directory that holds something.
    let busy = work.path().join("busy");
    std::fs::create_dir(&busy).expect("dir");
    std::fs::write(busy.join("notes.txt"), b"keep me").expect("file");
    let output = run(haneul().args(["restore", "--from"]).arg(&backup_dir).arg("--data").arg(&busy));
    assert!(!output.status.success(), "restore into a non-empty directory succeeded");
    assert!(stderr(&output).contains("is not empty"), "{}", stderr(&output));
    assert_eq!(std::fs::read_dir(&busy).expect("dir").count(), 1);

    // An object whose content differs is refused, named, and left as it is.
    let (damaged, removed) = (&objects[0], &objects[1]);
    tamper(damaged, b"not the instance");
    let output = run(haneul().arg("backup").arg("--to").arg(&backup_dir).args(["--data", &data]));
    assert!(!output.status.success(), "a backup over a differing object succeeded");
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "backup object {} differs from the archive's copy; refusing to overwrite",
            damaged.display()
        )),
        "{message}"
    );
    assert_eq!(std::fs::read(damaged).expect("object"), b"not the instance", "the object was overwritten");
    let listed = snapshots(&backup_dir);
    assert_eq!(
        listed.iter().filter(|(_, complete)| *complete).count(),
        1,
        "the failed run completed a snapshot: {listed:?}"
    );

    // The drill names every damaged or missing object and fails.
    std::fs::remove_file(removed).expect("remove");
    let output = run(haneul().args(["backup", "drill", "--from"]).arg(&backup_dir).args(["--at", &snapshot]));
    assert_eq!(output.status.code(), Some(1), "drill of a damaged backup:\n{}{}", stdout(&output), stderr(&output));
    let report = stdout(&output);
    assert!(report.contains(&format!("backup object {} (for ", damaged.display())), "{report}");
    assert!(report.contains("does not match its digest"), "{report}");
    assert!(report.contains(&format!("backup object {} (for ", removed.display())), "{report}");
    assert!(report.contains("is missing"), "{report}");
    assert!(report.contains("result:            INCOMPLETE"), "{report}");

    // A restore of it fails too and leaves no catalog to start from.
    let into = work.path().join("restored");
    let output = run(haneul().args(["restore", "--from"]).arg(&backup_dir).arg("--data").arg(&into));
    assert!(!output.status.success(), "restore of a damaged backup succeeded");
    assert!(stderr(&output).contains(&removed.display().to_string()), "{}", stderr(&output));
    assert!(!into.join("catalog.sqlite").exists());
}

#[test]
fn restores_with_the_key_pass_over_snapshots_someone_else_wrote() {
    let (work, data_dir, backup_dir) = imported_archive();

    let key_file = work.path().join("backup.key");
    let output = run(haneul().args(["backup", "keygen"]).arg(&key_file));
    assert!(output.status.success(), "keygen: {}", stderr(&output));
    let key_id = stdout(&output).split_whitespace().nth(2).expect("key id").to_string();
    let output = run(haneul().args(["backup", "keygen"]).arg(&key_file));
    assert_eq!(output.status.code(), Some(2), "a second keygen over the key succeeded");
    assert!(stderr(&output).contains("cannot make a new key pair"), "{}", stderr(&output));

    // Signed on the archive node with the signing key, checked elsewhere with the verify key.
    let signing_key = key_file.display().to_string();
    let key = format!("{signing_key}.pub");
    let data = data_dir.display().to_string();
    let (genuine, output) = backup(&["--data", &data, "--key", &signing_key], &backup_dir);
    let with_verify_key =
        run(haneul().arg("backup").arg("--to").arg(&backup_dir).args(["--data", &data, "--key", &key]));
    assert_eq!(with_verify_key.status.code(), Some(2), "the verify key signed a backup");
    assert!(stdout(&output).contains(&format!("signed:                  with key {key_id}")), "{}", stdout(&output));

    // Someone who may write to the backup adds a newer snapshot: the
    // genuine one under another name, with its signature copied.
    let forged = "20991124T101500Z";
    let (from, to) = (backup_dir.join("snapshots").join(&genuine), backup_dir.join("snapshots").join(forged));
    std::fs::create_dir(&to).expect("forged snapshot");
    for file in ["catalog.sqlite", "manifest.sig"] {
        std::fs::copy(from.join(file), to.join(file)).expect("copy");
    }
    let manifest = std::fs::read_to_string(from.join("manifest.json")).expect("manifest");
    std::fs::write(to.join("manifest.json"), manifest.replace(&genuine, forged)).expect("forged manifest");

    let listing = run(haneul().args(["backup", "list", "--json", "--key", &key, "--from"]).arg(&backup_dir));
    assert_eq!(listing.status.code(), Some(3), "a snapshot would be passed over: {}", stderr(&listing));
    let listing: serde_json::Value = serde_json::from_slice(&listing.stdout).expect("list JSON");
    let states: Vec<(&str, &str)> = listing
        .as_array()
        .expect("array")
        .iter()
        .map(|item| (item["snapshot"].as_str().expect("name"), item["state"].as_str().expect("state")))
        .collect();
    assert_eq!(states, [(genuine.as_str(), "complete"), (forged, "passed-over")]);
    assert!(listing[1]["reason"].as_str().is_some_and(|reason| reason.contains("signature does not match")));

    // Without the key the newest complete snapshot is taken, whoever wrote it.
    let unchecked = work.path().join("unchecked");
    let output = run(haneul().args(["restore", "--from"]).arg(&backup_dir).arg("--data").arg(&unchecked));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains(&format!("restored snapshot {forged}")), "{}", stdout(&output));

    let restored = work.path().join("restored");
    let output = run(haneul().args(["restore", "--key", &key, "--from"]).arg(&backup_dir).arg("--data").arg(&restored));
    assert_eq!(output.status.code(), Some(3), "{}{}", stdout(&output), stderr(&output));
    let report = stdout(&output);
    assert!(report.contains(&format!("restored snapshot {genuine}")), "{report}");
    assert!(report.contains("passed over: 1 newer"), "{report}");
    assert!(report.contains(&format!("  {forged}: signature does not match")), "{report}");
    assert_eq!(blob_files(&restored), blob_files(&data_dir), "restored files are byte-identical");

    let output = run(haneul().args(["backup", "drill", "--key", &key, "--from"]).arg(&backup_dir));
    assert_eq!(output.status.code(), Some(3), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains(&format!("snapshot:          {genuine}")), "{}", stdout(&output));
    assert!(stdout(&output).contains("passed over: 1 newer"), "{}", stdout(&output));

    // Another key signed nothing here: nothing to restore, said so.
    let other_key = work.path().join("other.key");
    assert!(run(haneul().args(["backup", "keygen"]).arg(&other_key)).status.success());
    let output = run(haneul().args(["backup", "drill", "--from"]).arg(&backup_dir).arg("--key").arg(&other_key));
    assert_eq!(output.status.code(), Some(2), "{}{}", stdout(&output), stderr(&output));
    assert!(stderr(&output).contains("no complete snapshot signed with this key"), "{}", stderr(&output));
    std::fs::write(work.path().join("bad.key"), "not a key\n").expect("bad key");
    let output = run(haneul()
        .args(["backup", "drill", "--from"])
        .arg(&backup_dir)
        .arg("--key")
        .arg(work.path().join("bad.key")));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("cannot read the backup key"), "{}", stderr(&output));
}
