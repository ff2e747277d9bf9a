//! The in-memory data set model: decoded, character-set independent values.
//!
//! Text is held as Unicode (decoded once, with the data set's Specific
//! Character Set); binary numbers are held in native form and byte-order
//! independent; large binary values are references into the stored file
//! (`Bulk`), so a header never holds pixel data in memory.

use dicom_core::{Tag, VR};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A data set: elements kept sorted by tag.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    elements: Vec<Element>,
}

/// One data element.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub tag: Tag,
    pub vr: VR,
    pub value: Value,
}

/// Where a large binary value lives in the stored instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkRef {
    /// Offset of the value's first byte, counted from the start of the data
    /// set stream (after the file meta group, after inflation for deflated syntaxes).
    pub offset: u64,
    /// Value length; `None` for encapsulated (undefined length) pixel data.
    pub length: Option<u64>,
}

/// A decoded element value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// Zero-length value.
    Empty,
    /// Text VRs, split into values for multi-valued VRs; PN values keep their
    /// `alphabetic=ideographic=phonetic` form with `^` component separators.
    Strings(Vec<String>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// AT values as `(group << 16) | element`.
    Tags(Vec<u32>),
    /// Small OB/OW/OF/OD/OL/OV/UN values, in little-endian byte order.
    Bytes(Vec<u8>),
    /// Large binary value left in the stored file.
    Bulk(BulkRef),
    Sequence(Vec<Dataset>),
}

impl Value {
    pub fn is_empty(&self) -> bool {
        match self {
            Value::Empty => true,
            Value::Strings(values) => values.iter().all(|v| v.is_empty()),
            Value::U16(v) => v.is_empty(),
            Value::I16(v) => v.is_empty(),
            Value::U32(v) => v.is_empty(),
            Value::I32(v) => v.is_empty(),
            Value::U64(v) => v.is_empty(),
            Value::I64(v) => v.is_empty(),
            Value::F32(v) => v.is_empty(),
            Value::F64(v) => v.is_empty(),
            Value::Tags(v) => v.is_empty(),
            Value::Bytes(v) => v.is_empty(),
            Value::Bulk(_) => false,
            Value::Sequence(items) => items.is_empty(),
        }
    }

    /// The values as text, the way DICOM would print them (numbers in decimal).
    pub fn to_strings(&self) -> Vec<String> {
        fn all<T: ToString>(values: &[T]) -> Vec<String> {
            values.iter().map(ToString::to_string).collect()
        }
        match self {
            Value::Strings(values) => values.clone(),
            Value::U16(v) => all(v),
            Value::I16(v) => all(v),
            Value::U32(v) => all(v),
            Value::I32(v) => all(v),
            Value::U64(v) => all(v),
            Value::I64(v) => all(v),
            Value::F32(v) => all(v),
            Value::F64(v) => all(v),
            Value::Tags(v) => v.iter().map(|t| format!("{t:08X}")).collect(),
            Value::Empty | Value::Bytes(_) | Value::Bulk(_) | Value::Sequence(_) => Vec::new(),
        }
    }
}

impl Element {
    pub fn new(tag: Tag, vr: VR, value: Value) -> Self {
        Element { tag, vr, value }
    }

    pub fn text(tag: Tag, vr: VR, text: impl Into<String>) -> Self {
        let text = text.into();
        let value = if text.is_empty() { Value::Empty } else { Value::Strings(vec![text]) };
        Element { tag, vr, value }
    }

    /// `text` as it would be written in a data set: values split at `\\`
    /// (except for LT, ST and UT, where it is an ordinary character).
    pub fn from_written_text(tag: Tag, vr: VR, text: &str) -> Self {
        if text.is_empty() {
            return Element::empty(tag, vr);
        }
        let values = match vr {
            VR::LT | VR::ST | VR::UT => vec![text.to_string()],
            _ => text.split('\\').map(str::to_string).collect(),
        };
        Element { tag, vr, value: Value::Strings(values) }
    }

    pub fn empty(tag: Tag, vr: VR) -> Self {
        Element { tag, vr, value: Value::Empty }
    }

    /// First text value, if any.
    pub fn first_string(&self) -> Option<&str> {
        match &self.value {
            Value::Strings(values) => values.first().map(String::as_str),
            _ => None,
        }
    }
}

impl Dataset {
    pub fn new() -> Self {
        Dataset::default()
    }

    pub fn len(&self) -> usize {
        self.elements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Element> {
        self.elements.iter()
    }

    pub fn get(&self, tag: Tag) -> Option<&Element> {
        self.elements.binary_search_by(|e| e.tag.cmp(&tag)).ok().map(|i| &self.elements[i])
    }

    pub fn contains(&self, tag: Tag) -> bool {
        self.get(tag).is_some()
    }

    /// Insert or replace the element with the same tag.
    pub fn put(&mut self, element: Element) {
        match self.elements.binary_search_by(|e| e.tag.cmp(&element.tag)) {
            Ok(i) => self.elements[i] = element,
            Err(i) => self.elements.insert(i, element),
        }
    }

    pub fn remove(&mut self, tag: Tag) -> Option<Element> {
        self.elements.binary_search_by(|e| e.tag.cmp(&tag)).ok().map(|i| self.elements.remove(i))
    }

    /// Append while reading a stream: cheap when tags arrive in order, which
    /// well-formed data sets guarantee; out-of-order input still ends sorted.
    pub(crate) fn push_read(&mut self, element: Element) {
        match self.elements.last() {
            Some(last) if last.tag >= element.tag => self.put(element),
            _ => self.elements.push(element),
        }
    }

    /// First text value of an element, trimmed; `None` when absent or empty.
    pub fn string(&self, tag: Tag) -> Option<&str> {
        self.get(tag).and_then(Element::first_string).filter(|s| !s.is_empty())
    }

    /// All text values of an element.
    pub fn strings(&self, tag: Tag) -> &[String] {
        match self.get(tag).map(|e| &e.value) {
            Some(Value::Strings(values)) => values,
            _ => &[],
        }
    }

    /// First value of a numeric element (binary or IS/DS text), as i64.
    pub fn int(&self, tag: Tag) -> Option<i64> {
        let element = self.get(tag)?;
        match &element.value {
            Value::U16(v) => v.first().map(|&x| i64::from(x)),
            Value::I16(v) => v.first().map(|&x| i64::from(x)),
            Value::U32(v) => v.first().map(|&x| i64::from(x)),
            Value::I32(v) => v.first().map(|&x| i64::from(x)),
            Value::U64(v) => v.first().and_then(|&x| i64::try_from(x).ok()),
            Value::I64(v) => v.first().copied(),
            Value::Strings(v) => v.first().and_then(|s| s.trim().parse::<f64>().ok()).map(|f| f as i64),
            _ => None,
        }
    }

    pub fn items(&self, tag: Tag) -> &[Dataset] {
        match self.get(tag).map(|e| &e.value) {
            Some(Value::Sequence(items)) => items,
            _ => &[],
        }
    }

    /// Keep only the elements whose tag satisfies `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&Element) -> bool) {
        self.elements.retain(|e| keep(e));
    }

    /// Every text value in the data set, nested sequences included (used to
    /// choose a character set that can carry all of them).
    pub fn all_texts(&self) -> Vec<&str> {
        let mut texts = Vec::new();
        collect_texts(self, &mut texts);
        texts
    }
}

fn collect_texts<'a>(ds: &'a Dataset, out: &mut Vec<&'a str>) {
    for element in ds.iter() {
        match &element.value {
            Value::Strings(values) => out.extend(values.iter().map(String::as_str)),
            Value::Sequence(items) => items.iter().for_each(|item| collect_texts(item, out)),
            _ => {}
        }
    }
}

impl FromIterator<Element> for Dataset {
    fn from_iter<I: IntoIterator<Item = Element>>(iter: I) -> Self {
        let mut ds = Dataset::new();
        for element in iter {
            ds.put(element);
        }
        ds
    }
}

impl<'a> IntoIterator for &'a Dataset {
    type Item = &'a Element;
    type IntoIter = std::slice::Iter<'a, Element>;
    fn into_iter(self) -> Self::IntoIter {
        self.elements.iter()
    }
}

/// Serialized form of an element: the tag as one number and the VR as its two letters.
#[derive(Serialize, Deserialize)]
struct ElementRepr {
    tag: u32,
    vr: [u8; 2],
    value: Value,
}

impl Serialize for Element {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ElementRepr { tag: tag_to_u32(self.tag), vr: self.vr.to_bytes(), value: self.value.clone() }
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = ElementRepr::deserialize(deserializer)?;
        let vr = VR::from_binary(repr.vr).unwrap_or(VR::UN);
        Ok(Element { tag: tag_from_u32(repr.tag), vr, value: repr.value })
    }
}

pub fn tag_to_u32(tag: Tag) -> u32 {
    (u32::from(tag.group()) << 16) | u32::from(tag.element())
}

pub fn tag_from_u32(value: u32) -> Tag {
    Tag((value >> 16) as u16, (value & 0xFFFF) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_keeps_elements_sorted_and_replaces() {
        let mut ds = Dataset::new();
        ds.put(Element::text(Tag(0x0020, 0x000D), VR::UI, "1.2"));
        ds.put(Element::text(Tag(0x0010, 0x0010), VR::PN, "Hong^Gildong"));
        ds.put(Element::text(Tag(0x0010, 0x0010), VR::PN, "Kim"));
        let tags: Vec<Tag> = ds.iter().map(|e| e.tag).collect();
        assert_eq!(tags, vec![Tag(0x0010, 0x0010), Tag(0x0020, 0x000D)]);
        assert_eq!(ds.string(Tag(0x0010, 0x0010)), Some("Kim"));
    }

    #[test]
    fn serde_round_trip_keeps_vr_and_nesting() {
        let mut item = Dataset::new();
        item.put(Element::new(Tag(0x0008, 0x1150), VR::UI, Value::Strings(vec!["1.2.3".into()])));
        let mut ds = Dataset::new();
        ds.put(Element::new(Tag(0x0008, 0x1140), VR::SQ, Value::Sequence(vec![item])));
        ds.put(Element::new(Tag(0x0028, 0x0010), VR::US, Value::U16(vec![512])));
        ds.put(Element::new(Tag(0x7FE0, 0x0010), VR::OW, Value::Bulk(BulkRef { offset: 10, length: Some(4) })));
        let bytes = postcard::to_allocvec(&ds).expect("serialize");
        let back: Dataset = postcard::from_bytes(&bytes).expect("deserialize");
        assert_eq!(back, ds);
        assert_eq!(back.get(Tag(0x0028, 0x0010)).map(|e| e.vr), Some(VR::US));
    }
}
