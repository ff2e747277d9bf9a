// The DICOM attribute browser: the metadata JSON of the image on screen as a
// table (sequences indented), filtered as you type.
import { T } from './dicom.js';

// Names for the tags a reader looks for most; others show their tag only.
const NAMES = Object.fromEntries(Object.entries(T).map(([name, tag]) => [tag, name]));
Object.assign(NAMES, {
  '00080008': 'ImageType', '00080012': 'InstanceCreationDate', '00080013': 'InstanceCreationTime',
  '00080022': 'AcquisitionDate', '00080023': 'ContentDate', '00080031': 'SeriesTime', '00080033': 'ContentTime',
  '00080070': 'Manufacturer', '00080080': 'InstitutionName', '00080090': 'ReferringPhysicianName',
  '00081010': 'StationName', '00081090': 'ManufacturerModelName', '00180015': 'BodyPartExamined',
  '00180060': 'KVP', '00180088': 'SpacingBetweenSlices', '00181030': 'ProtocolName', '00181151': 'XRayTubeCurrent',
  '00185100': 'PatientPosition', '00200052': 'FrameOfReferenceUID', '00200060': 'Laterality',
  '00280301': 'BurnedInAnnotation', '00282110': 'LossyImageCompression',
});

function tagText(tag) {
  return `(${tag.slice(0, 4)},${tag.slice(4)})`;
}

function valueText(element) {
  if (!element) return '';
  if (element.BulkDataURI) return `bulk data: ${element.BulkDataURI}`;
  if (element.InlineBinary) return `inline binary (${element.InlineBinary.length} base64 characters)`;
  const list = Array.isArray(element.Value) ? element.Value : [];
  return list
    .map(v => {
      if (v === null || v === undefined) return '';
      if (element.vr === 'PN' && typeof v === 'object') {
        return [v.Alphabetic, v.Ideographic, v.Phonetic].filter(x => x !== undefined).join('=');
      }
      return typeof v === 'object' ? JSON.stringify(v) : String(v);
    })
    .join('\\')
    .slice(0, 2000);
}

/** Rows for a data set: [{depth, tag, name, vr, value}], sequences expanded. */
export function attributeRows(ds, depth = 0, rows = []) {
  for (const tag of Object.keys(ds || {}).sort()) {
    const element = ds[tag];
    const name = NAMES[tag] || (tag.slice(4) === '0000' ? 'GroupLength' : '');
    if (element && element.vr === 'SQ') {
      const items = Array.isArray(element.Value) ? element.Value : [];
      rows.push({ depth, tag, name, vr: 'SQ', value: `${items.length} item${items.length === 1 ? '' : 's'}` });
      items.forEach((item, i) => {
        rows.push({ depth: depth + 1, tag: '', name: `Item ${i + 1}`, vr: '', value: '' });
        attributeRows(item, depth + 2, rows);
      });
    } else {
      rows.push({ depth, tag, name, vr: element?.vr || '', value: valueText(element) });
    }
  }
  return rows;
}

/** Fill `tbody` with the rows matching `filter`. */
export function showAttributes(tbody, ds, filter = '') {
  const needle = filter.trim().toLowerCase();
  tbody.replaceChildren();
  const fragment = document.createDocumentFragment();
  for (const row of attributeRows(ds)) {
    const tagLabel = row.tag ? tagText(row.tag) : '';
    if (needle && ![tagLabel, row.tag, row.name, row.value].some(s => String(s).toLowerCase().includes(needle))) continue;
    const tr = document.createElement('tr');
    const cells = [tagLabel, row.name, row.vr, row.value];
    cells.forEach((value, i) => {
      const td = document.createElement('td');
      td.textContent = value;
      if (i === 0 && row.depth) td.style.paddingLeft = `${8 + row.depth * 10}px`;
      tr.append(td);
    });
    if (row.tag) tr.dataset.tag = row.tag;
    fragment.append(tr);
  }
  tbody.append(fragment);
}
