use std::io::Cursor;

use super::*;
use crate::meta::{encode_file_meta, NewFileMeta};
use crate::model::Value;
use crate::read::{read_dataset, read_dataset_bytes, ReadOptions, SeekSource};

const NOW: &str = "20261123101500+0000";
const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const NATIVE: [&str; 4] = [
    ts::IMPLICIT_VR_LITTLE_ENDIAN,
    ts::EXPLICIT_VR_LITTLE_ENDIAN,
    ts::EXPLICIT_VR_BIG_ENDIAN,
    ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
];
/// Recognisable pixel bytes.
const PIXELS: [u8; 16] = *b"PIXELS-0123456!!";

fn syntax(uid: &str) -> &'static TransferSyntax {
    ts::lookup(uid).expect("known transfer syntax")
}

fn encoding(uid: &str) -> Encoding {
    let syntax = syntax(uid);
    Encoding { explicit_vr: syntax.explicit_vr, big_endian: syntax.big_endian }
}

fn text(tag: Tag, vr: VR, value: &str) -> Element {
    Element::text(tag, vr, value)
}

fn item(elements: Vec<Element>) -> Dataset {
    elements.into_iter().collect()
}

fn sequence(tag: Tag, items: Vec<Dataset>) -> Element {
    Element::new(tag, VR::SQ, Value::Sequence(items))
}

/// A legacy instance: text in UTF-8 but declared ISO_IR 100, private elements before and after
/// (0400,0561) and after Pixel Data, undefined-length sequences on both sides of the coerced elements.
fn legacy() -> Dataset {
    let referenced =
        item(vec![text(Tag(0x0008, 0x1150), VR::UI, CT_IMAGE), text(Tag(0x0008, 0x1155), VR::UI, "1.2.3.3")]);
    let request = item(vec![
        text(Tag(0x0032, 0x1060), VR::LO, "CT CHEST"),
        sequence(Tag(0x0032, 0x1064), vec![item(vec![text(Tag(0x0008, 0x0100), VR::SH, "C1")])]),
    ]);
    let private_item = item(vec![text(Tag(0x2001, 0x0010), VR::LO, "Philips Imaging DD 001")]);
    let shared = item(vec![sequence(
        Tag(0x0020, 0x9116),
        vec![item(vec![Element::new(Tag(0x0020, 0x0037), VR::DS, Value::Strings(vec!["1".into(), "0".into()]))])],
    )]);
    vec![
        text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100"),
        text(tags::SOP_CLASS_UID, VR::UI, CT_IMAGE),
        text(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4"),
        text(tags::MODALITY, VR::CS, "CT"),
        sequence(Tag(0x0008, 0x1140), vec![referenced]),
        text(Tag(0x0009, 0x0010), VR::LO, "OLDPACS PRIVATE"),
        text(Tag(0x0009, 0x1001), VR::LO, "internal note"),
        text(tags::PATIENT_NAME, VR::PN, "홍^길동"),
        text(tags::PATIENT_ID, VR::LO, "12345"),
        text(tags::PATIENT_BIRTH_DATE, VR::DA, "19700101"),
        text(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3.1"),
        text(tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.2"),
        text(Tag(0x0029, 0x0010), VR::LO, "SIEMENS CSA HEADER"),
        Element::new(Tag(0x0029, 0x1010), VR::OB, Value::Bytes(vec![1, 2, 3, 4])),
        sequence(Tag(0x0040, 0x0275), vec![request]),
        text(Tag(0x2001, 0x0010), VR::LO, "Philips Imaging DD 001"),
        sequence(Tag(0x2001, 0x1001), vec![private_item]),
        sequence(Tag(0x5200, 0x9229), vec![shared]),
        Element::new(tags::PIXEL_DATA, VR::OW, Value::Bytes(PIXELS.to_vec())),
        text(Tag(0x7FE1, 0x0010), VR::LO, "GEMS_Ultrasound_MovieGroup_001"),
        Element::new(Tag(0x7FE1, 0x1001), VR::OB, Value::Bytes(vec![9; 6])),
    ]
    .into_iter()
    .collect()
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("deflates");
    encoder.finish().expect("deflates")
}

/// A Part 10 file around an already encoded data set.
fn file_with(uid: &str, body: &[u8]) -> Vec<u8> {
    let mut file = encode_file_meta(&NewFileMeta {
        sop_class_uid: CT_IMAGE,
        sop_instance_uid: "1.2.3.4",
        transfer_syntax_uid: uid,
        source_ae_title: Some("OLDPACS"),
    });
    if ts::lookup(uid).is_some_and(|syntax| syntax.deflated) {
        file.extend(deflate(body));
    } else {
        file.extend_from_slice(body);
    }
    file
}

/// `dataset` as a Part 10 file, its text written in `charset` whatever it declares.
fn part10(uid: &str, dataset: &Dataset, charset: &SpecificCharacterSet) -> Vec<u8> {
    let mut body = Vec::new();
    write_dataset(&mut body, dataset, encoding(uid), charset).expect("encodes");
    file_with(uid, &body)
}

fn dataset_offset(file: &[u8]) -> usize {
    let Ok(FileLayout::Part10(meta)) = read_layout(&mut Cursor::new(file)) else { panic!("not a part 10 file") };
    meta.dataset_offset as usize
}

/// The data set of a file, read with the crate's reader (everything, Pixel Data skipped).
fn parse(file: &[u8]) -> Dataset {
    let Ok(FileLayout::Part10(meta)) = read_layout(&mut Cursor::new(file)) else { panic!("not a part 10 file") };
    read_dataset_bytes(&file[meta.dataset_offset as usize..], syntax(&meta.transfer_syntax_uid)).expect("parses")
}

fn coerce(file: &[u8], rules: &CoercionRules) -> (Vec<u8>, CoercionOutcome) {
    let mut out = Vec::new();
    let outcome = coerce_part10(&mut Cursor::new(file), &mut out, rules, NOW).expect("coerces");
    (out, outcome)
}

fn every_rule() -> CoercionRules {
    CoercionRules {
        issuer_of_patient_id: Some("HOSP_A".into()),
        patient_id_prefix: Some("A-".into()),
        character_set: Some("ISO_IR 192".into()),
        character_set_from: Some("ISO_IR 100".into()),
        remove_private_tags: true,
        modifying_system: "HANEUL".into(),
        source_of_previous_values: "OLDPACS".into(),
        ..CoercionRules::default()
    }
}

/// The item this coercion added: the last of the Original Attributes Sequence.
fn our_item(dataset: &Dataset) -> &Dataset {
    let items = dataset.items(tags::ORIGINAL_ATTRIBUTES_SEQUENCE);
    let item = items.last().expect("an original attributes item");
    assert_eq!(item.string(tags::ATTRIBUTE_MODIFICATION_DATE_TIME), Some(NOW));
    assert_eq!(item.string(tags::REASON_FOR_THE_ATTRIBUTE_MODIFICATION), Some("COERCE"));
    let modified = item.items(tags::MODIFIED_ATTRIBUTES_SEQUENCE);
    assert_eq!(modified.len(), 1);
    &modified[0]
}

fn private_tags(dataset: &Dataset) -> Vec<Tag> {
    dataset.iter().map(|e| e.tag).filter(|tag| tag.group() % 2 == 1).collect()
}

#[test]
fn every_rule_in_every_native_syntax() {
    let utf8 = SpecificCharacterSet::utf8();
    for uid in NATIVE {
        let file = part10(uid, &legacy(), &utf8);
        let before = parse(&file);
        assert_ne!(before.string(tags::PATIENT_NAME), Some("홍^길동"), "declared wrongly: {uid}");
        let (out, outcome) = coerce(&file, &every_rule());
        assert!(outcome.changed, "{uid}");
        assert!(outcome.warnings.is_empty(), "{uid}: {:?}", outcome.warnings);
        for expected in ["(0008,0005) SpecificCharacterSet", "(0010,0020) PatientID", "(0010,0021) IssuerOfPatientID"] {
            assert!(outcome.modified.iter().any(|m| m == expected), "{uid}: {:?}", outcome.modified);
        }
        assert_eq!(out[..dataset_offset(&out)], file[..dataset_offset(&file)], "file meta copied unchanged");

        let after = parse(&out);
        assert_eq!(after.strings(tags::SPECIFIC_CHARACTER_SET), ["ISO_IR 192"], "{uid}");
        assert_eq!(after.string(tags::PATIENT_NAME), Some("홍^길동"), "{uid}");
        assert_eq!(after.string(tags::PATIENT_ID), Some("A-12345"), "{uid}");
        assert_eq!(after.string(tags::ISSUER_OF_PATIENT_ID), Some("HOSP_A"), "{uid}");
        assert!(private_tags(&after).is_empty(), "{uid}: {:?}", private_tags(&after));
        for tag in [
            tags::SOP_INSTANCE_UID,
            Tag(0x0008, 0x1140),
            tags::PATIENT_BIRTH_DATE,
            Tag(0x0040, 0x0275),
            Tag(0x5200, 0x9229),
        ] {
            assert_eq!(after.get(tag), before.get(tag), "{uid}: {tag}");
        }
        let oas = &after.items(tags::ORIGINAL_ATTRIBUTES_SEQUENCE);
        assert_eq!(oas.len(), 1, "{uid}");
        assert_eq!(oas[0].string(tags::MODIFYING_SYSTEM), Some("HANEUL"));
        assert_eq!(oas[0].string(tags::SOURCE_OF_PREVIOUS_VALUES), Some("OLDPACS"));
        let original = our_item(&after);
        assert_eq!(original.strings(tags::SPECIFIC_CHARACTER_SET), ["ISO_IR 100"], "{uid}");
        assert_eq!(original.string(tags::PATIENT_ID), Some("12345"), "{uid}");
        let issuer = original.get(tags::ISSUER_OF_PATIENT_ID).expect("absent issuer recorded as empty");
        assert_eq!(issuer.value, Value::Empty);
        assert_eq!(
            private_tags(original),
            [
                Tag(0x0009, 0x0010),
                Tag(0x0009, 0x1001),
                Tag(0x0029, 0x0010),
                Tag(0x0029, 0x1010),
                Tag(0x2001, 0x0010),
                Tag(0x2001, 0x1001),
                Tag(0x7FE1, 0x0010),
                Tag(0x7FE1, 0x1001),
            ],
            "{uid}"
        );
        assert_eq!(original.items(Tag(0x2001, 0x1001)).len(), 1, "{uid}: private sequence kept whole");
        assert!(original.get(tags::PATIENT_NAME).is_none(), "only what changed is recorded");

        // Ingest reads headers in this mode; the pixel data must still be where it says.
        let data = &out[dataset_offset(&out)..];
        if !syntax(uid).deflated {
            let source = SeekSource::new(Cursor::new(data), 0, data.len() as u64);
            let parsed = read_dataset(source, syntax(uid), &ReadOptions::default()).expect("header mode");
            let pixels = parsed.pixel_data.expect("pixel data");
            let offset = pixels.offset as usize;
            let stored = &data[offset..offset + PIXELS.len()];
            if syntax(uid).big_endian {
                let swapped: Vec<u8> = PIXELS.chunks(2).flat_map(|pair| [pair[1], pair[0]]).collect();
                assert_eq!(stored, swapped);
            } else {
                assert_eq!(stored, PIXELS);
            }
        }
    }
}

#[test]
fn nothing_to_change_is_the_identity() {
    let mut clean = legacy();
    clean.retain(|e| e.tag.group() % 2 == 0);
    clean.put(text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"));
    clean.put(text(tags::ISSUER_OF_PATIENT_ID, VR::LO, "HOSP_A"));
    let rules = CoercionRules {
        issuer_of_patient_id: Some("HOSP_A".into()),
        patient_id_map: [("99999".to_string(), "1".to_string())].into(),
        character_set: Some("ISO_IR 100".into()),
        character_set_from: Some("ISO 2022 IR 149".into()),
        remove_private_tags: true,
        ..CoercionRules::default()
    };
    for uid in NATIVE {
        let file = part10(uid, &clean, &SpecificCharacterSet::utf8());
        let (out, outcome) = coerce(&file, &rules);
        assert!(!outcome.changed, "{uid}: {:?}", outcome.modified);
        assert!(outcome.modified.is_empty());
        if syntax(uid).deflated {
            assert_eq!(parse(&out), parse(&file), "{uid}");
        } else {
            assert!(out == file, "{uid}: output differs from input");
        }
    }
    // No rules at all, and private elements present.
    let file = part10(ts::EXPLICIT_VR_LITTLE_ENDIAN, &legacy(), &SpecificCharacterSet::utf8());
    let (out, outcome) = coerce(&file, &CoercionRules::default());
    assert!(!outcome.changed && out == file);
}

#[test]
fn patient_ids_are_mapped_then_prefixed() {
    let rules = CoercionRules {
        patient_id_prefix: Some("A-".into()),
        patient_id_map: [("12345".to_string(), "P77".to_string()), ("".to_string(), "UNKNOWN".to_string())].into(),
        ..CoercionRules::default()
    };
    let with_id = |id: &str| {
        let mut ds = legacy();
        ds.put(text(tags::PATIENT_ID, VR::LO, id));
        part10(ts::EXPLICIT_VR_LITTLE_ENDIAN, &ds, &SpecificCharacterSet::utf8())
    };
    for (id, expected) in [("12345", Some("A-P77")), ("  777 ", Some("A-777")), ("", Some("A-UNKNOWN"))] {
        let (out, outcome) = coerce(&with_id(id), &rules);
        assert!(outcome.changed);
        let after = parse(&out);
        assert_eq!(after.string(tags::PATIENT_ID), expected, "{id:?}");
        assert_eq!(our_item(&after).string(tags::PATIENT_ID), Some(id.trim()).filter(|id| !id.is_empty()));
        assert_eq!(private_tags(&after).len(), 8, "private elements stay without the rule");
    }
    // Without a map entry an empty ID stays empty rather than becoming the prefix alone.
    let prefix_only = CoercionRules { patient_id_prefix: Some("A-".into()), ..CoercionRules::default() };
    let (out, outcome) = coerce(&with_id(""), &prefix_only);
    assert!(!outcome.changed && out == with_id(""));
    // Too long for LO.
    let long = CoercionRules { patient_id_prefix: Some("X".repeat(60)), ..CoercionRules::default() };
    let mut out = Vec::new();
    let error = coerce_part10(&mut Cursor::new(with_id("12345")), &mut out, &long, NOW).expect_err("too long");
    assert!(matches!(error, CoerceError::Value { tag: tags::PATIENT_ID, .. }), "{error}");
}

#[test]
fn a_patient_id_to_set_replaces_any_id_and_is_inserted_where_absent() {
    let rules = CoercionRules { patient_id: Some("P-2".into()), ..CoercionRules::default() };
    let mut with_id = legacy();
    with_id.put(text(tags::PATIENT_ID, VR::LO, "12345"));
    let mut without_id = legacy();
    without_id.remove(tags::PATIENT_ID);
    for (ds, was) in [(with_id, Some("12345")), (without_id, None)] {
        for uid in NATIVE {
            let (out, outcome) = coerce(&part10(uid, &ds, &SpecificCharacterSet::utf8()), &rules);
            assert!(outcome.changed, "{uid}");
            let after = parse(&out);
            assert_eq!(after.string(tags::PATIENT_ID), Some("P-2"), "{uid}");
            // An inserted attribute is recorded as present and empty (PS3.3 C.12.1.1.9.2).
            let original = our_item(&after);
            assert!(original.contains(tags::PATIENT_ID), "{uid}");
            assert_eq!(original.string(tags::PATIENT_ID), was, "{uid}");
        }
    }
    // Already that ID: nothing changes.
    let mut same = legacy();
    same.put(text(tags::PATIENT_ID, VR::LO, "P-2"));
    let file = part10(ts::EXPLICIT_VR_LITTLE_ENDIAN, &same, &SpecificCharacterSet::utf8());
    let (out, outcome) = coerce(&file, &rules);
    assert!(!outcome.changed && out == file);
    // Not with a map or a prefix, and never empty.
    let both = CoercionRules { patient_id_prefix: Some("A-".into()), ..rules.clone() };
    assert!(both.validate().is_err());
    assert!(CoercionRules { patient_id: Some(String::new()), ..CoercionRules::default() }.validate().is_err());
}

/// A study moved to another patient: the new identity and name inserted in tag order (the file names
/// neither), every other patient attribute of the patient it named removed and kept as an original.
#[test]
fn a_moved_patient_is_written_in_tag_order_and_nothing_of_the_old_one_stays() {
    let mut ds = legacy();
    ds.remove(tags::PATIENT_NAME);
    ds.remove(tags::PATIENT_ID);
    ds.put(text(Tag(0x0010, 0x1000), VR::LO, "OLD-ALIAS"));
    ds.put(text(Tag(0x0010, 0x4000), VR::LT, "allergic to contrast"));
    let rules = CoercionRules {
        patient_id: Some("P-2".into()),
        issuer_of_patient_id: Some("HOSP_B".into()),
        remove_other_patient_attributes: true,
        set: [(tags::PATIENT_NAME, (VR::PN, "Kim^Minsu".to_string()))].into(),
        ..CoercionRules::default()
    };
    let file = part10(ts::EXPLICIT_VR_LITTLE_ENDIAN, &ds, &SpecificCharacterSet::utf8());
    let (out, outcome) = coerce(&file, &rules);
    assert!(outcome.changed);
    // Explicit VR little endian headers: tag, then VR.
    let at = |group: u16, element: u16, vr: &[u8]| {
        let header = [&group.to_le_bytes()[..], &element.to_le_bytes()[..], vr].concat();
        out.windows(header.len()).position(|window| window == header).unwrap_or(usize::MAX)
    };
    let (name, id, issuer) = (at(0x0010, 0x0010, b"PN"), at(0x0010, 0x0020, b"LO"), at(0x0010, 0x0021, b"LO"));
    assert!(name < id && id < issuer && issuer < at(0x0020, 0x000D, b"UI"), "{name} {id} {issuer}");
    let after = parse(&out);
    assert_eq!(after.string(tags::PATIENT_NAME), Some("Kim^Minsu"));
    assert_eq!(after.string(tags::PATIENT_ID), Some("P-2"));
    for removed in [tags::PATIENT_BIRTH_DATE, Tag(0x0010, 0x1000), Tag(0x0010, 0x4000)] {
        assert!(!after.contains(removed), "{removed} stayed");
    }
    let original = our_item(&after);
    assert_eq!(original.string(tags::PATIENT_BIRTH_DATE), Some("19700101"));
    assert_eq!(original.string(Tag(0x0010, 0x4000)), Some("allergic to contrast"));
    assert!(original.contains(tags::PATIENT_NAME) && original.contains(tags::PATIENT_ID), "inserted: recorded empty");
    assert_eq!(after.string(tags::STUDY_INSTANCE_UID), Some("1.2.3.1"), "study attributes stay");
}

/// The legacy instance without private elements, declaring `\ISO 2022 IR 149`, and that character set.
fn korean_legacy() -> (SpecificCharacterSet, Dataset) {
    let mut ds = legacy();
    ds.retain(|e| e.tag.group() % 2 == 0);
    ds.put(Element::new(
        tags::SPECIFIC_CHARACTER_SET,
        VR::CS,
        Value::Strings(vec![String::new(), "ISO 2022 IR 149".into()]),
    ));
    (SpecificCharacterSet::from_terms(&["", "ISO 2022 IR 149"]), ds)
}

#[test]
fn a_prefix_keeps_the_received_bytes_of_a_korean_id() {
    let (korean, mut ds) = korean_legacy();
    ds.put(text(tags::PATIENT_ID, VR::LO, "홍길동7"));
    ds.put(text(tags::ISSUER_OF_PATIENT_ID, VR::LO, "옛병원"));
    let file = part10(ts::EXPLICIT_VR_LITTLE_ENDIAN, &ds, &korean);
    let received = korean.encode("홍길동7", TextKind::MultiValued).expect("encodable");
    let rules = CoercionRules {
        patient_id_prefix: Some("K".into()),
        issuer_of_patient_id: Some("새병원".into()),
        ..CoercionRules::default()
    };
    let (out, _) = coerce(&file, &rules);
    let mut expected = b"K".to_vec();
    expected.extend_from_slice(&received);
    assert!(out.windows(expected.len()).any(|w| w == expected), "prefix + received bytes");
    let after = parse(&out);
    assert_eq!(after.string(tags::PATIENT_ID), Some("K홍길동7"));
    assert_eq!(after.string(tags::ISSUER_OF_PATIENT_ID), Some("새병원"));
    assert_eq!(our_item(&after).string(tags::ISSUER_OF_PATIENT_ID), Some("옛병원"));
    // A value the declared set cannot carry is refused.
    let latin = CoercionRules { issuer_of_patient_id: Some("😀".into()), ..CoercionRules::default() };
    let mut sink = Vec::new();
    let error = coerce_part10(&mut Cursor::new(&file), &mut sink, &latin, NOW).expect_err("not in the set");
    assert!(error.to_string().contains("cannot be written"), "{error}");
}

#[test]
fn character_set_rules() {
    let mut undeclared = legacy();
    undeclared.remove(tags::SPECIFIC_CHARACTER_SET);
    let file = part10(ts::EXPLICIT_VR_LITTLE_ENDIAN, &undeclared, &SpecificCharacterSet::utf8());
    // "" matches a data set that declares nothing; the declaration is inserted in order.
    let rules = CoercionRules {
        character_set: Some("ISO_IR 192".into()),
        character_set_from: Some(String::new()),
        ..CoercionRules::default()
    };
    let (out, outcome) = coerce(&file, &rules);
    assert!(outcome.changed);
    let after = parse(&out);
    assert_eq!(after.strings(tags::SPECIFIC_CHARACTER_SET), ["ISO_IR 192"]);
    assert_eq!(after.string(tags::PATIENT_NAME), Some("홍^길동"));
    assert_eq!(our_item(&after).get(tags::SPECIFIC_CHARACTER_SET).map(|e| e.value.clone()), Some(Value::Empty));
    // A declaration that does not match `from` stays.
    let declared = part10(ts::EXPLICIT_VR_LITTLE_ENDIAN, &legacy(), &SpecificCharacterSet::utf8());
    let (out, outcome) = coerce(&declared, &rules);
    assert!(!outcome.changed && out == declared);
    // Spelling does not matter for `from`; without `from` any other declaration is replaced.
    for from in [Some("iso-ir 100"), None] {
        let rules = CoercionRules { character_set_from: from.map(String::from), ..rules.clone() };
        let (out, outcome) = coerce(&declared, &rules);
        assert!(outcome.changed, "{from:?}");
        assert_eq!(parse(&out).string(tags::PATIENT_NAME), Some("홍^길동"));
    }
}

/// Explicit VR Little Endian bytes of one element.
fn raw_element(tag: Tag, vr: VR, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_header(&mut out, tag, vr, value.len() as u32, Encoding::EXPLICIT_LE);
    out.extend_from_slice(value);
    out
}

fn group_length(group: u16, elements: &[Vec<u8>]) -> Vec<u8> {
    let length: usize = elements.iter().map(Vec::len).sum();
    raw_element(Tag(group, 0x0000), VR::UL, &(length as u32).to_le_bytes())
}

#[test]
fn group_lengths_of_changed_groups_are_dropped() {
    let group8 = vec![
        raw_element(tags::SPECIFIC_CHARACTER_SET, VR::CS, b"ISO_IR 100"),
        raw_element(tags::SOP_CLASS_UID, VR::UI, b"1.2.840.10008.5.1.4.1.1.2\0"),
    ];
    let group9 = vec![raw_element(Tag(0x0009, 0x0010), VR::LO, b"OLD ")];
    let group10 =
        vec![raw_element(tags::PATIENT_NAME, VR::PN, b"Doe^John"), raw_element(tags::PATIENT_ID, VR::LO, b"12")];
    let group20 = vec![raw_element(tags::STUDY_INSTANCE_UID, VR::UI, b"1.2.3.1\0")];
    let mut body = Vec::new();
    for (group, elements) in [(0x0008, &group8), (0x0009, &group9), (0x0010, &group10), (0x0020, &group20)] {
        body.extend(group_length(group, elements));
        body.extend(elements.concat());
    }
    let file = file_with(ts::EXPLICIT_VR_LITTLE_ENDIAN, &body);
    let (out, outcome) = coerce(&file, &CoercionRules { patient_id_prefix: Some("A".into()), ..Default::default() });
    assert!(outcome.changed);
    let data = &out[dataset_offset(&out)..];
    let contains = |bytes: &[u8]| data.windows(bytes.len()).any(|w| w == bytes);
    assert!(contains(&group_length(0x0008, &group8)), "unchanged group keeps its length");
    assert!(contains(&group_length(0x0020, &group20)));
    assert!(!contains(&group_length(0x0010, &group10)), "changed group loses its stale length");
    assert_eq!(parse(&out).string(tags::PATIENT_ID), Some("A12"));

    // Removing private elements removes their group length too, recorded with the group.
    let (out, _) = coerce(&file, &CoercionRules { remove_private_tags: true, ..Default::default() });
    let after = parse(&out);
    assert!(private_tags(&after).is_empty());
    assert_eq!(our_item(&after).string(Tag(0x0009, 0x0010)), Some("OLD"));
    // Nothing to change: every group length stays.
    let rules = CoercionRules { issuer_of_patient_id: Some(String::new()), ..Default::default() };
    let (out, outcome) = coerce(&file, &rules);
    assert!(!outcome.changed && out == file);
}

#[test]
fn an_existing_original_attributes_sequence_gets_another_item() {
    let earlier = item(vec![
        sequence(tags::MODIFIED_ATTRIBUTES_SEQUENCE, vec![item(vec![text(tags::PATIENT_NAME, VR::PN, "Old^Name")])]),
        text(tags::ATTRIBUTE_MODIFICATION_DATE_TIME, VR::DT, "20200101"),
        text(tags::MODIFYING_SYSTEM, VR::LO, "SOMEONE"),
        text(tags::REASON_FOR_THE_ATTRIBUTE_MODIFICATION, VR::CS, "CORRECT"),
    ]);
    let mut ds = legacy();
    ds.put(sequence(tags::ORIGINAL_ATTRIBUTES_SEQUENCE, vec![earlier.clone()]));
    for remove_private_tags in [false, true] {
        let rules = CoercionRules { remove_private_tags, ..every_rule() };
        for uid in NATIVE {
            let (out, outcome) = coerce(&part10(uid, &ds, &SpecificCharacterSet::utf8()), &rules);
            assert!(outcome.changed);
            let after = parse(&out);
            let items = after.items(tags::ORIGINAL_ATTRIBUTES_SEQUENCE);
            assert_eq!(items.len(), 2, "{uid}");
            assert_eq!(items[0], earlier, "{uid}");
            assert_eq!(our_item(&after).string(tags::PATIENT_ID), Some("12345"));
            assert_eq!(private_tags(&after).is_empty(), remove_private_tags);
        }
    }

    // Defined lengths, and a sequence sent as UN whose items are in Implicit VR Little Endian.
    let mut implicit_item = Vec::new();
    write_dataset(&mut implicit_item, &earlier, Encoding::IMPLICIT_LE, &SpecificCharacterSet::default()).expect("ok");
    let mut defined_item = Vec::new();
    write_dataset(&mut defined_item, &earlier, Encoding::EXPLICIT_LE, &SpecificCharacterSet::default()).expect("ok");
    let wrap = |items: &[u8], encoding: Encoding| {
        let mut out = Vec::new();
        write_tag_length(&mut out, ITEM, items.len() as u32, encoding);
        out.extend_from_slice(items);
        out
    };
    let pid = raw_element(tags::PATIENT_ID, VR::LO, b"12");
    for (vr, items) in
        [(VR::SQ, wrap(&defined_item, Encoding::EXPLICIT_LE)), (VR::UN, wrap(&implicit_item, Encoding::IMPLICIT_LE))]
    {
        let mut body = pid.clone();
        body.extend(raw_element(tags::ORIGINAL_ATTRIBUTES_SEQUENCE, vr, &items));
        let file = file_with(ts::EXPLICIT_VR_LITTLE_ENDIAN, &body);
        let (out, outcome) =
            coerce(&file, &CoercionRules { patient_id_prefix: Some("A".into()), ..Default::default() });
        assert!(outcome.changed);
        let after = parse(&out);
        let items = after.items(tags::ORIGINAL_ATTRIBUTES_SEQUENCE);
        assert_eq!(items.len(), 2, "{vr:?}");
        assert_eq!(items[0].string(tags::MODIFYING_SYSTEM), Some("SOMEONE"), "{vr:?}");
        assert_eq!(our_item(&after).string(tags::PATIENT_ID), Some("12"), "{vr:?}");
        let (same, unchanged) = coerce(&file, &CoercionRules::default());
        assert!(!unchanged.changed && same == file, "{vr:?}");
    }
}

#[test]
fn private_elements_after_large_pixel_data_are_kept_with_a_warning() {
    let mut ds = legacy();
    ds.put(Element::new(tags::PIXEL_DATA, VR::OW, Value::Bytes(vec![7; LOOKAHEAD + 1024])));
    let file = part10(ts::EXPLICIT_VR_LITTLE_ENDIAN, &ds, &SpecificCharacterSet::utf8());
    let (out, outcome) = coerce(&file, &every_rule());
    assert!(outcome.changed);
    assert_eq!(outcome.warnings.len(), 2, "{:?}", outcome.warnings);
    let after = parse(&out);
    assert_eq!(private_tags(&after), [Tag(0x7FE1, 0x0010), Tag(0x7FE1, 0x1001)]);
    assert_eq!(private_tags(our_item(&after)).len(), 6);
    assert_eq!(after.string(tags::PATIENT_ID), Some("A-12345"));
    let data = &out[dataset_offset(&out)..];
    let source = SeekSource::new(Cursor::new(data), 0, data.len() as u64);
    let parsed = read_dataset(source, syntax(ts::EXPLICIT_VR_LITTLE_ENDIAN), &ReadOptions::default()).expect("reads");
    assert_eq!(parsed.pixel_data.and_then(|p| p.length), Some((LOOKAHEAD + 1024) as u64));
}

#[test]
fn encapsulated_pixel_data_is_copied_fragment_by_fragment() {
    let mut body = raw_element(tags::PATIENT_ID, VR::LO, b"12");
    body.extend(raw_element(Tag(0x0009, 0x0010), VR::LO, b"OLD "));
    let mut pixel = Vec::new();
    write_header(&mut pixel, tags::PIXEL_DATA, VR::OB, UNDEFINED, Encoding::EXPLICIT_LE);
    write_tag_length(&mut pixel, ITEM, 4, Encoding::EXPLICIT_LE);
    pixel.extend_from_slice(&[0, 0, 0, 0]);
    for fragment in [&b"\xFF\xD8JPEGDATA1\xFF\xD9"[..], b"FRAGMENT2!"] {
        write_tag_length(&mut pixel, ITEM, fragment.len() as u32, Encoding::EXPLICIT_LE);
        pixel.extend_from_slice(fragment);
    }
    write_tag_length(&mut pixel, SEQUENCE_END, 0, Encoding::EXPLICIT_LE);
    body.extend_from_slice(&pixel);
    let file = file_with(JPEG_BASELINE, &body);
    let (out, outcome) = coerce(&file, &every_rule());
    assert!(outcome.changed);
    assert!(out.ends_with(&pixel), "pixel data copied as received");
    let data = &out[dataset_offset(&out)..];
    let source = SeekSource::new(Cursor::new(data), 0, data.len() as u64);
    let parsed = read_dataset(source, syntax(JPEG_BASELINE), &ReadOptions::default()).expect("reads");
    assert_eq!(parsed.pixel_data.expect("pixel data").fragments.len(), 2);
    assert_eq!(parsed.dataset.string(tags::PATIENT_ID), Some("A-12"));
    assert!(private_tags(&parsed.dataset).is_empty());
}

#[test]
fn unusable_input_and_rules_are_refused() {
    let run = |file: &[u8], rules: &CoercionRules, now: &str| {
        coerce_part10(&mut Cursor::new(file), &mut Vec::new(), rules, now).expect_err("refused")
    };
    let rules = every_rule();
    let file = part10(ts::EXPLICIT_VR_LITTLE_ENDIAN, &legacy(), &SpecificCharacterSet::utf8());
    let bare = &file[dataset_offset(&file)..];
    assert!(matches!(run(bare, &rules, NOW), CoerceError::NotPart10));
    let private_syntax = file_with("1.2.840.113619.5.2", bare);
    assert!(matches!(run(&private_syntax, &rules, NOW), CoerceError::UnsupportedTransferSyntax(_)));
    let truncated = &file[..file.len() - 3];
    assert!(matches!(run(truncated, &rules, NOW), CoerceError::Read(ReadError::Truncated { .. })));
    assert!(matches!(run(&file, &rules, "yesterday"), CoerceError::InvalidRule(_)));
    for bad in [
        CoercionRules { issuer_of_patient_id: Some("A\\B".into()), ..CoercionRules::default() },
        CoercionRules { character_set: Some("ISO_IR 999".into()), ..CoercionRules::default() },
        CoercionRules { patient_id_prefix: Some("\n".into()), ..CoercionRules::default() },
    ] {
        assert!(matches!(run(&file, &bad, NOW), CoerceError::InvalidRule(_)), "{bad:?}");
        assert!(bad.validate().is_err());
    }
    assert!(CoercionRules::default().is_empty());
    assert!(CoercionRules { patient_id_prefix: Some(String::new()), ..Default::default() }.is_empty());
    assert!(!every_rule().is_empty());
}

#[test]
fn garbage_never_panics() {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let rules = every_rule();
    for uid in NATIVE.into_iter().chain([JPEG_BASELINE]) {
        let valid = part10(uid, &legacy(), &SpecificCharacterSet::utf8());
        let start = dataset_offset(&valid);
        for round in 0..300 {
            let mut bytes = valid.clone();
            match round % 3 {
                0 => {
                    let at = start + (next() as usize) % (bytes.len() - start);
                    bytes[at] = next() as u8;
                    let again = start + (next() as usize) % (bytes.len() - start);
                    bytes[again] ^= 0xFF;
                }
                1 => bytes.truncate(start + (next() as usize) % (bytes.len() - start)),
                _ => {
                    bytes.truncate(start);
                    bytes.extend((0..(next() % 200)).map(|_| next() as u8));
                }
            }
            let _ = coerce_part10(&mut Cursor::new(&bytes), &mut Vec::new(), &rules, NOW);
        }
    }
}

#[test]
fn set_values_replace_insert_and_keep_the_originals() {
    let (korean, mut ds) = korean_legacy();
    ds.put(text(tags::STUDY_DESCRIPTION, VR::LO, "CT CHEST"));
    ds.put(Element::new(Tag(0x0010, 0x0000), VR::UL, Value::Strings(vec!["0".into()])));
    let rules = CoercionRules {
        set: [
            (tags::PATIENT_NAME, (VR::PN, "Hong^Gildong=洪^吉洞=홍^길동".to_string())),
            (tags::STUDY_DESCRIPTION, (VR::LO, "CT CHEST".to_string())),
            (tags::ACCESSION_NUMBER, (VR::SH, "A-77".to_string())),
            (tags::REFERRING_PHYSICIAN_NAME, (VR::PN, String::new())),
        ]
        .into(),
        reason: REASON_CORRECT.into(),
        modifying_system: "SITEA".into(),
        ..CoercionRules::default()
    };
    for uid in NATIVE {
        let file = part10(uid, &ds, &korean);
        let (out, outcome) = coerce(&file, &rules);
        assert!(outcome.changed, "{uid}");
        let after = parse(&out);
        assert_eq!(after.string(tags::PATIENT_NAME), Some("Hong^Gildong=洪^吉洞=홍^길동"), "{uid}");
        assert_eq!(after.string(tags::ACCESSION_NUMBER), Some("A-77"), "{uid}: inserted");
        assert_eq!(after.string(tags::STUDY_DESCRIPTION), Some("CT CHEST"), "{uid}: unchanged");
        assert!(!after.contains(tags::REFERRING_PHYSICIAN_NAME), "{uid}: absent and empty are the same");
        assert!(!after.contains(Tag(0x0010, 0x0000)), "{uid}: the stale group length is dropped");
        assert_eq!(after.get(tags::PIXEL_DATA), parse(&file).get(tags::PIXEL_DATA), "{uid}");
        let item = after.items(tags::ORIGINAL_ATTRIBUTES_SEQUENCE).last().expect("an item");
        assert_eq!(item.string(tags::REASON_FOR_THE_ATTRIBUTE_MODIFICATION), Some("CORRECT"));
        assert_eq!(item.string(tags::MODIFYING_SYSTEM), Some("SITEA"));
        let originals = &item.items(tags::MODIFIED_ATTRIBUTES_SEQUENCE)[0];
        assert_eq!(originals.string(tags::PATIENT_NAME), Some("홍^길동"), "{uid}");
        assert!(originals.contains(tags::ACCESSION_NUMBER), "{uid}: recorded as absent");
        assert!(!originals.contains(tags::STUDY_DESCRIPTION), "{uid}");
        // Applying the same rules again changes nothing more than the first time did.
        let (again, _) = coerce(&out, &rules);
        assert_eq!(parse(&again).string(tags::PATIENT_NAME), after.string(tags::PATIENT_NAME));
    }
    // A value the declared character set cannot carry is refused, not mangled.
    let latin = part10(ts::EXPLICIT_VR_LITTLE_ENDIAN, &legacy(), &SpecificCharacterSet::utf8());
    let chinese =
        CoercionRules { set: [(tags::PATIENT_NAME, (VR::PN, "洪^吉洞".to_string()))].into(), ..rules.clone() };
    let error = coerce_part10(&mut Cursor::new(latin), &mut Vec::new(), &chinese, NOW).expect_err("not in latin-1");
    assert!(matches!(error, CoerceError::Value { tag: tags::PATIENT_NAME, .. }), "{error}");
    for forbidden in [tags::PATIENT_ID, tags::SPECIFIC_CHARACTER_SET, tags::PIXEL_DATA, Tag(0x0009, 0x1001)] {
        let bad = CoercionRules { set: [(forbidden, (VR::LO, "x".to_string()))].into(), ..CoercionRules::default() };
        assert!(bad.validate().is_err(), "{forbidden}");
    }
}
