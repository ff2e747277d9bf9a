//! Replays saved inputs on the stable toolchain: every file under
//! `regressions/<target>/` and `seeds/<target>/` (and, when present,
//! `artifacts/<target>/` and `corpus/<target>/`) goes through the target of
//! that name.

use std::path::Path;

type Target = (&'static str, fn(&[u8]));

fn targets() -> [Target; 14] {
    [
        ("read_dataset", haneul_fuzz::read_dataset),
        ("read_layout", haneul_fuzz::read_layout),
        ("command_decode", haneul_fuzz::command_decode),
        ("pdu_reader", haneul_fuzz::pdu_reader),
        ("dimse_reader", haneul_fuzz::dimse_reader),
        ("transcode", haneul_fuzz::transcode),
        ("qido_params", haneul_fuzz::qido_params),
        ("dicom_json", haneul_fuzz::dicom_json),
        ("pixel_frame", haneul_fuzz::pixel_frame),
        ("charset_decode", haneul_fuzz::charset_decode),
        ("multipart", haneul_fuzz::multipart),
        ("coerce", haneul_fuzz::coerce),
        ("wado_multipart", haneul_fuzz::wado_multipart),
        ("backup_snapshot", haneul_fuzz::backup_snapshot),
    ]
}

fn replay(folder: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut replayed = 0;
    for (name, target) in targets() {
        let Ok(entries) = std::fs::read_dir(root.join(name)) else { continue };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_file() {
                let data = std::fs::read(&path).expect("reading input");
                eprintln!("{name}: {}", path.display());
                target(&data);
                replayed += 1;
            }
        }
    }
    replayed
}

#[test]
fn saved_regressions_pass() {
    eprintln!("replayed {} regression inputs", replay("regressions"));
}

#[test]
fn seeds_pass() {
    eprintln!("replayed {} seed inputs", replay("seeds"));
}

#[test]
fn artifacts_and_corpus_pass() {
    eprintln!("replayed {} inputs", replay("artifacts") + replay("corpus"));
}

#[test]
fn small_inputs_pass() {
    for (_, target) in targets() {
        target(&[]);
        for byte in 0..=255u8 {
            target(&[byte]);
            target(&[byte; 8]);
        }
    }
}
