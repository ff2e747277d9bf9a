//! Synthetic studies for benchmarks and tests: CT-like headers with Korean
//! and Latin patient names, written by Haneul's own encoder.

use haneul_dicom::charset::SpecificCharacterSet;
use haneul_dicom::write::{write_dataset, Encoding};
use haneul_dicom::{tags, uid, Dataset, Element, Tag, Value, VR};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// Korean surnames as (romanised, hanja, hangul, share of the population in per mille).
const SURNAMES: &[(&str, &str, &str, u32)] = &[
    ("Kim", "金", "김", 215),
    ("Lee", "李", "이", 147),
    ("Park", "朴", "박", 84),
    ("Choi", "崔", "최", 47),
    ("Jung", "鄭", "정", 43),
    ("Kang", "姜", "강", 23),
    ("Cho", "趙", "조", 21),
    ("Yoon", "尹", "윤", 20),
    ("Jang", "張", "장", 20),
    ("Lim", "林", "임", 17),
    ("Han", "韓", "한", 15),
    ("Oh", "吳", "오", 15),
    ("Seo", "徐", "서", 15),
    ("Shin", "申", "신", 15),
    ("Kwon", "權", "권", 14),
    ("Hwang", "黃", "황", 14),
    ("Ahn", "安", "안", 13),
    ("Song", "宋", "송", 13),
    ("Jeon", "全", "전", 11),
    ("Hong", "洪", "홍", 11),
    ("Yoo", "柳", "유", 11),
    ("Ko", "高", "고", 9),
    ("Moon", "文", "문", 9),
    ("Yang", "梁", "양", 9),
    ("Son", "孫", "손", 9),
    ("Bae", "裵", "배", 8),
    ("Baek", "白", "백", 7),
    ("Heo", "許", "허", 6),
    ("Nam", "南", "남", 6),
    ("Noh", "盧", "노", 4),
];

/// Syllables of Korean given names as (romanised, hanja, hangul); a given
/// name is two of them, which gives thousands of names as in a real register.
const SYLLABLES: &[(&str, &str, &str)] = &[
    ("min", "敏", "민"),
    ("jun", "俊", "준"),
    ("seo", "瑞", "서"),
    ("yeon", "姸", "연"),
    ("do", "道", "도"),
    ("yun", "允", "윤"),
    ("ha", "夏", "하"),
    ("eun", "恩", "은"),
    ("ji", "智", "지"),
    ("ho", "浩", "호"),
    ("u", "宇", "우"),
    ("su", "秀", "수"),
    ("a", "雅", "아"),
    ("hyeon", "賢", "현"),
    ("ye", "藝", "예"),
    ("jin", "珍", "진"),
    ("yeong", "英", "영"),
    ("hui", "姬", "희"),
    ("cheol", "哲", "철"),
    ("na", "娜", "나"),
    ("tae", "太", "태"),
    ("yang", "陽", "양"),
    ("seong", "成", "성"),
    ("jae", "在", "재"),
    ("hye", "惠", "혜"),
    ("gyeong", "京", "경"),
    ("mi", "美", "미"),
    ("jeong", "貞", "정"),
    ("dong", "東", "동"),
    ("seok", "錫", "석"),
    ("sang", "相", "상"),
    ("hun", "勳", "훈"),
    ("gi", "基", "기"),
    ("yong", "龍", "용"),
    ("ju", "周", "주"),
    ("won", "元", "원"),
    ("seung", "承", "승"),
    ("hyeok", "赫", "혁"),
    ("so", "素", "소"),
    ("yu", "柔", "유"),
    ("chae", "彩", "채"),
    ("da", "多", "다"),
    ("bin", "彬", "빈"),
    ("geon", "健", "건"),
    ("gyu", "奎", "규"),
    ("han", "漢", "한"),
    ("seul", "瑟", "슬"),
    ("il", "一", "일"),
];

const LATIN_SURNAMES: &[&str] = &[
    "Smith",
    "Garcia",
    "Müller",
    "Dubois",
    "Rossi",
    "Nguyen",
    "Tanaka",
    "Silva",
    "Novak",
    "Jensen",
    "Kowalski",
    "Ivanova",
    "O'Brien",
    "Andersson",
    "Yilmaz",
    "Papadopoulos",
    "Fernández",
    "Schneider",
    "Moreau",
    "Haddad",
    "Nakamura",
    "Kumar",
    "Okafor",
    "Dvořák",
    "Lindqvist",
    "Costa",
    "Bianchi",
    "Weber",
    "Petrov",
    "Sato",
    "Wong",
    "Singh",
    "Horvat",
    "Nowak",
    "Eriksen",
    "Gallagher",
    "Rahman",
    "Schmidt",
    "Lopez",
    "Tran",
    "Kaya",
    "Mendes",
];
const LATIN_GIVEN: &[&str] = &[
    "John", "Maria", "Jürgen", "Élodie", "Luca", "Anh", "Hiroshi", "Ana", "Petra", "Lars", "Fatima", "Olga", "Sean",
    "Ingrid", "Mehmet", "Eleni", "Javier", "Anja", "Camille", "Omar", "Aiko", "Priya", "Chinedu", "Tomáš", "Astrid",
    "Beatriz", "Giulia", "Felix", "Dmitri", "Yuki", "Mei", "Arjun", "Zeynep", "Siobhan", "Nadia", "Klaus", "Carmen",
    "Linh", "Emre", "Rosa",
];

const STUDY_DESCRIPTIONS: &[&str] =
    &["CT CHEST W/O CONTRAST", "CT ABDOMEN PELVIS", "흉부 CT", "CT BRAIN", "복부 CT 조영", "CT SPINE"];

/// What kind of instances to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// 64×64 16-bit images (about 10 KB each).
    Small,
    /// 512×512 16-bit CT slices (about 515 KB each).
    Ct,
    /// One multi-frame image per instance of about --size-mb MB.
    Large,
}

/// A patient with a name in all three component groups (Korean) or one (Latin).
#[derive(Debug, Clone)]
pub struct Patient {
    pub id: String,
    pub name: String,
    pub korean: bool,
    pub birth_date: String,
    pub sex: &'static str,
}

/// Deterministic patient `index` (same seed and index give the same patient).
pub fn patient(seed: u64, index: u64) -> Patient {
    let mut rng = StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // A Korean hospital's register: about one patient in twenty has a foreign name.
    let korean = index % 20 != 19;
    let name = if korean {
        let total: u32 = SURNAMES.iter().map(|s| s.3).sum();
        let mut pick = rng.gen_range(0..total);
        let (sr, sh, sk, _) = SURNAMES
            .iter()
            .find(|s| {
                if pick < s.3 {
                    return true;
                }
                pick -= s.3;
                false
            })
            .copied()
            .unwrap_or(SURNAMES[0]);
        let (r1, h1, k1) = SYLLABLES[rng.gen_range(0..SYLLABLES.len())];
        let (r2, h2, k2) = SYLLABLES[rng.gen_range(0..SYLLABLES.len())];
        let romanised = capitalise(&format!("{r1}{r2}"));
        format!("{sr}^{romanised}={sh}^{h1}{h2}={sk}^{k1}{k2}")
    } else {
        let surname = LATIN_SURNAMES[rng.gen_range(0..LATIN_SURNAMES.len())];
        let given = LATIN_GIVEN[rng.gen_range(0..LATIN_GIVEN.len())];
        format!("{surname}^{given}")
    };
    Patient {
        id: format!("P{:08}", index),
        name,
        korean,
        birth_date: format!("{:04}{:02}{:02}", rng.gen_range(1930..2020), rng.gen_range(1..=12), rng.gen_range(1..=28)),
        sex: if rng.gen_bool(0.5) { "M" } else { "F" },
    }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// One study's shared attributes.
#[derive(Debug, Clone)]
pub struct Study {
    pub patient: Patient,
    pub study_uid: String,
    pub series_uid: String,
    pub frame_of_reference_uid: String,
    pub accession: String,
    pub date: String,
    pub description: &'static str,
}

/// The years studies are dated in, and the last day of a month used (every
/// month has it).
const STUDY_YEARS: std::ops::Range<u32> = 2015..2027;
const LAST_STUDY_DAY: u32 = 28;

/// `days` consecutive days within one month on which `study` dates studies,
/// as the first and last date.
pub fn study_date_range(rng: &mut StdRng, days: u32) -> (String, String) {
    let days = days.clamp(1, LAST_STUDY_DAY);
    let (year, month) = (rng.gen_range(STUDY_YEARS), rng.gen_range(1..=12));
    let first = rng.gen_range(1..=LAST_STUDY_DAY + 1 - days);
    let date = |day: u32| format!("{year:04}{month:02}{day:02}");
    (date(first), date(first + days - 1))
}

pub fn study(seed: u64, index: u64, patient: Patient) -> Study {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(index).wrapping_mul(0xD134_2543_DE82_EF95));
    Study {
        patient,
        study_uid: uid::generate(),
        series_uid: uid::generate(),
        frame_of_reference_uid: uid::generate(),
        accession: format!("A{:09}", index),
        date: format!(
            "{:04}{:02}{:02}",
            rng.gen_range(STUDY_YEARS),
            rng.gen_range(1..=12),
            rng.gen_range(1..=LAST_STUDY_DAY)
        ),
        description: STUDY_DESCRIPTIONS[rng.gen_range(0..STUDY_DESCRIPTIONS.len())],
    }
}

/// An encoded instance: the data set bytes up to Pixel Data's value, and the
/// pixel bytes kept apart so large ones can be shared.
pub struct Instance {
    pub sop_class_uid: &'static str,
    pub sop_instance_uid: String,
    pub header: Vec<u8>,
}

impl Instance {
    pub fn len(&self, pixels: &[u8]) -> usize {
        self.header.len() + pixels.len()
    }
}

/// Geometry of the generated images.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub rows: u16,
    pub columns: u16,
    pub frames: u32,
}

impl Geometry {
    pub fn for_kind(kind: Kind, size_mb: u64) -> Geometry {
        match kind {
            Kind::Small => Geometry { rows: 64, columns: 64, frames: 1 },
            Kind::Ct => Geometry { rows: 512, columns: 512, frames: 1 },
            Kind::Large => {
                let frame_bytes = 512u64 * 512 * 2;
                let frames = ((size_mb * 1024 * 1024) / frame_bytes).max(1) as u32;
                Geometry { rows: 512, columns: 512, frames }
            }
        }
    }

    pub fn pixel_bytes(&self) -> usize {
        usize::from(self.rows) * usize::from(self.columns) * 2 * self.frames as usize
    }
}

/// A CT-like phantom: a disc of soft tissue in air, same for every slice.
pub fn pixels(geometry: Geometry) -> Vec<u8> {
    let frame_len = usize::from(geometry.rows) * usize::from(geometry.columns);
    let mut frame = Vec::with_capacity(frame_len * 2);
    let (cx, cy) = (f32::from(geometry.columns) / 2.0, f32::from(geometry.rows) / 2.0);
    let radius = cx.min(cy) * 0.8;
    for y in 0..geometry.rows {
        for x in 0..geometry.columns {
            let distance = ((f32::from(x) - cx).powi(2) + (f32::from(y) - cy).powi(2)).sqrt();
            // Stored values with rescale intercept -1024: air 0 (-1024 HU), tissue 1064 (40 HU).
            let value: u16 = if distance < radius { 1064 + ((x ^ y) & 0x0F) } else { 0 };
            frame.extend_from_slice(&value.to_le_bytes());
        }
    }
    let mut all = Vec::with_capacity(geometry.pixel_bytes());
    for _ in 0..geometry.frames {
        all.extend_from_slice(&frame);
    }
    all
}

fn strings(values: &[&str]) -> Value {
    Value::Strings(values.iter().map(|v| v.to_string()).collect())
}

/// `count` instances in studies of `per_study` each (the last may be
/// shorter), patients and studies drawn from `seed`.
pub fn instances(seed: u64, count: usize, per_study: usize, geometry: Geometry) -> Vec<Instance> {
    let per_study = per_study.max(1);
    let mut instances = Vec::with_capacity(count);
    let mut study_index = 0u64;
    while instances.len() < count {
        let study = study(seed, study_index, patient(seed, study_index));
        let in_this_study = per_study.min(count - instances.len());
        instances.extend((1..=in_this_study as u32).map(|number| instance(&study, number, geometry)));
        study_index += 1;
    }
    instances
}

/// Build the header of instance `number` of a study (everything but the pixel values).
pub fn instance(study: &Study, number: u32, geometry: Geometry) -> Instance {
    let sop_instance_uid = uid::generate();
    let charset = if study.patient.korean {
        SpecificCharacterSet::from_terms(&["", "ISO 2022 IR 149"])
    } else {
        SpecificCharacterSet::from_terms(&["ISO_IR 192"])
    };
    let mut ds = Dataset::new();
    let mut text = |tag: Tag, vr: VR, value: &str| ds.put(Element::text(tag, vr, value));
    text(tags::SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE);
    text(tags::SOP_INSTANCE_UID, VR::UI, &sop_instance_uid);
    text(tags::STUDY_DATE, VR::DA, &study.date);
    text(tags::SERIES_DATE, VR::DA, &study.date);
    text(tags::CONTENT_DATE, VR::DA, &study.date);
    text(tags::STUDY_TIME, VR::TM, "093000");
    text(tags::CONTENT_TIME, VR::TM, "093012.250");
    text(tags::ACCESSION_NUMBER, VR::SH, &study.accession);
    text(tags::MODALITY, VR::CS, "CT");
    text(tags::MANUFACTURER, VR::LO, "HANEUL SYNTHETIC");
    text(
        tags::INSTITUTION_NAME,
        VR::LO,
        if study.patient.korean { "하늘대학교병원" } else { "Haneul University Hospital" },
    );
    text(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "Park^Jiyoung");
    text(tags::STATION_NAME, VR::SH, "CT01");
    text(tags::STUDY_DESCRIPTION, VR::LO, study.description);
    text(tags::SERIES_DESCRIPTION, VR::LO, "AXIAL 1.0");
    text(tags::MANUFACTURER_MODEL_NAME, VR::LO, "SYNTH-128");
    text(tags::PATIENT_NAME, VR::PN, &study.patient.name);
    text(tags::PATIENT_ID, VR::LO, &study.patient.id);
    text(tags::PATIENT_BIRTH_DATE, VR::DA, &study.patient.birth_date);
    text(tags::PATIENT_SEX, VR::CS, study.patient.sex);
    text(tags::PATIENT_AGE, VR::AS, "045Y");
    text(tags::BODY_PART_EXAMINED, VR::CS, "CHEST");
    text(tags::SLICE_THICKNESS, VR::DS, "1.0");
    text(tags::KVP, VR::DS, "120");
    text(tags::PROTOCOL_NAME, VR::LO, "CHEST ROUTINE");
    text(tags::PATIENT_POSITION, VR::CS, "HFS");
    text(tags::STUDY_INSTANCE_UID, VR::UI, &study.study_uid);
    text(tags::SERIES_INSTANCE_UID, VR::UI, &study.series_uid);
    text(tags::STUDY_ID, VR::SH, "1");
    text(tags::SERIES_NUMBER, VR::IS, "2");
    text(tags::INSTANCE_NUMBER, VR::IS, &number.to_string());
    text(tags::FRAME_OF_REFERENCE_UID, VR::UI, &study.frame_of_reference_uid);
    text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    text(tags::RESCALE_INTERCEPT, VR::DS, "-1024");
    text(tags::RESCALE_SLOPE, VR::DS, "1");
    text(tags::RESCALE_TYPE, VR::LO, "HU");
    let z = format!("{:.1}", -100.0 + f64::from(number));
    ds.put(Element::new(tags::IMAGE_POSITION_PATIENT, VR::DS, strings(&["-250.0", "-250.0", &z])));
    ds.put(Element::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, strings(&["1", "0", "0", "0", "1", "0"])));
    ds.put(Element::new(tags::SLICE_LOCATION, VR::DS, strings(&[&z])));
    ds.put(Element::new(tags::PIXEL_SPACING, VR::DS, strings(&["0.976", "0.976"])));
    ds.put(Element::new(tags::WINDOW_CENTER, VR::DS, strings(&["40", "-600"])));
    ds.put(Element::new(tags::WINDOW_WIDTH, VR::DS, strings(&["400", "1500"])));
    ds.put(Element::new(tags::SAMPLES_PER_PIXEL, VR::US, Value::U16(vec![1])));
    ds.put(Element::new(tags::ROWS, VR::US, Value::U16(vec![geometry.rows])));
    ds.put(Element::new(tags::COLUMNS, VR::US, Value::U16(vec![geometry.columns])));
    ds.put(Element::new(tags::BITS_ALLOCATED, VR::US, Value::U16(vec![16])));
    ds.put(Element::new(tags::BITS_STORED, VR::US, Value::U16(vec![12])));
    ds.put(Element::new(tags::HIGH_BIT, VR::US, Value::U16(vec![11])));
    ds.put(Element::new(tags::PIXEL_REPRESENTATION, VR::US, Value::U16(vec![0])));
    if geometry.frames > 1 {
        ds.put(Element::new(tags::NUMBER_OF_FRAMES, VR::IS, strings(&[&geometry.frames.to_string()])));
    }
    ds.put(Element::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, Value::Strings(charset.terms())));
    let mut header = Vec::with_capacity(4096);
    // Every value above is encodable in the chosen set; a failure here is a bug in this generator.
    write_dataset(&mut header, &ds, Encoding::EXPLICIT_LE, &charset).expect("synthetic header encodes");
    // Pixel Data header; the value follows separately.
    header.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
    header.extend_from_slice(&(geometry.pixel_bytes() as u32).to_le_bytes());
    Instance { sop_class_uid: CT_IMAGE_STORAGE, sop_instance_uid, header }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haneul_dicom::read::read_dataset_bytes;
    use haneul_dicom::ts;

    #[test]
    fn generated_instances_parse_back_with_their_korean_names() {
        let patient = patient(7, 0);
        assert!(patient.korean);
        let study = study(7, 0, patient.clone());
        let geometry = Geometry::for_kind(Kind::Small, 0);
        let instance = instance(&study, 1, geometry);
        let mut bytes = instance.header.clone();
        bytes.extend(pixels(geometry));
        let ds = read_dataset_bytes(&bytes, ts::lookup(ts::EXPLICIT_VR_LITTLE_ENDIAN).expect("known")).expect("parses");
        assert_eq!(ds.string(tags::PATIENT_NAME), Some(patient.name.as_str()));
        assert_eq!(ds.string(tags::SOP_INSTANCE_UID), Some(instance.sop_instance_uid.as_str()));
        assert_eq!(ds.int(tags::ROWS), Some(64));
    }

    #[test]
    fn patients_are_deterministic() {
        assert_eq!(patient(1, 42).name, patient(1, 42).name);
        assert!(!patient(1, 19).korean);
    }

    #[test]
    fn date_ranges_span_the_days_asked_for_among_the_dates_studies_get() {
        let mut rng = StdRng::seed_from_u64(3);
        for index in 0..2_000 {
            let (from, to) = study_date_range(&mut rng, 3);
            let (first, last): (u32, u32) = (from[6..].parse().expect("day"), to[6..].parse().expect("day"));
            assert_eq!(from[..6], to[..6], "one month: {from}-{to}");
            assert_eq!(last - first, 2, "three days: {from}-{to}");
            assert!((1..=LAST_STUDY_DAY).contains(&first) && last <= LAST_STUDY_DAY, "{from}-{to}");
            let date = study(1, index, patient(1, index / 2)).date;
            assert!(date.as_str() >= "20150101" && date.as_str() <= "20261228", "{date}");
        }
    }
}
