// DICOM JSON (PS3.18 F.2) helpers: tags, values, person names, dates.

export const T = {
  SpecificCharacterSet: '00080005', SOPClassUID: '00080016', SOPInstanceUID: '00080018',
  StudyDate: '00080020', SeriesDate: '00080021', StudyTime: '00080030', AccessionNumber: '00080050',
  Modality: '00080060', ModalitiesInStudy: '00080061', StudyDescription: '00081030', SeriesDescription: '0008103E',
  PatientName: '00100010', PatientID: '00100020', PatientBirthDate: '00100030', PatientSex: '00100040',
  SliceThickness: '00180050', ImagerPixelSpacing: '00181164',
  StudyInstanceUID: '0020000D', SeriesInstanceUID: '0020000E', StudyID: '00200010', SeriesNumber: '00200011',
  InstanceNumber: '00200013', ImagePositionPatient: '00200032', ImageOrientationPatient: '00200037',
  SliceLocation: '00201041', NumberOfStudyRelatedSeries: '00201206', NumberOfStudyRelatedInstances: '00201208',
  NumberOfSeriesRelatedInstances: '00201209',
  SamplesPerPixel: '00280002', PhotometricInterpretation: '00280004', PlanarConfiguration: '00280006',
  NumberOfFrames: '00280008', Rows: '00280010', Columns: '00280011', PixelSpacing: '00280030',
  BitsAllocated: '00280100', BitsStored: '00280101', HighBit: '00280102', PixelRepresentation: '00280103',
  WindowCenter: '00281050', WindowWidth: '00281051', RescaleIntercept: '00281052', RescaleSlope: '00281053',
  WindowExplanation: '00281055', VOILUTFunction: '00281056',
  RedPaletteDescriptor: '00281101', GreenPaletteDescriptor: '00281102', BluePaletteDescriptor: '00281103',
  RedPaletteData: '00281201', GreenPaletteData: '00281202', BluePaletteData: '00281203',
  LUTDescriptor: '00283002', LUTExplanation: '00283003', LUTData: '00283006', VOILUTSequence: '00283010',
  SharedFunctionalGroups: '52009229', PerFrameFunctionalGroups: '52009230',
  PixelData: '7FE00010', FloatPixelData: '7FE00008', DoubleFloatPixelData: '7FE00009',
};

export function values(ds, tag) {
  const element = ds && ds[tag];
  return element && Array.isArray(element.Value) ? element.Value : [];
}

export function first(ds, tag) {
  return values(ds, tag)[0];
}

export function has(ds, tag) {
  return !!(ds && ds[tag]);
}

/** A value as display text (person names formatted). */
export function text(ds, tag) {
  const element = ds && ds[tag];
  if (!element) return '';
  if (element.vr === 'PN') return values(ds, tag).map(personName).join('; ');
  return values(ds, tag)
    .map(v => (v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v)))
    .join('\\');
}

export function num(ds, tag, fallback) {
  const v = Number(first(ds, tag));
  return first(ds, tag) !== undefined && first(ds, tag) !== '' && Number.isFinite(v) ? v : fallback;
}

export function nums(ds, tag) {
  return values(ds, tag).map(Number).filter(Number.isFinite);
}

/** One person-name group ("Hong^Gildong") for display: "Hong, Gildong"; CJK names run together ("김민준"). */
function nameGroup(group) {
  const parts = String(group || '').split('^');
  const [family = '', given = '', middle = '', prefix = '', suffix = ''] = parts.map(p => p.trim());
  const latin = /^[\x00-\x7f]*$/.test(group || '');
  if (!latin) return [prefix, family + given + middle, suffix].filter(Boolean).join(' ');
  const rest = [given, middle].filter(Boolean).join(' ');
  return [prefix, [family, rest].filter(Boolean).join(', '), suffix].filter(Boolean).join(' ');
}

/** A PN value of DICOM JSON ({Alphabetic, Ideographic, Phonetic}) for display. */
export function personName(pn) {
  if (!pn) return '';
  if (typeof pn === 'string') return nameGroup(pn);
  const groups = [pn.Alphabetic, pn.Ideographic, pn.Phonetic].filter(Boolean).map(nameGroup);
  if (groups.length === 0) return '';
  const [main, ...others] = [...new Set(groups)];
  return others.length ? `${main} (${others.join(' / ')})` : main;
}

/** "20240115" → "2024-01-15". */
export function formatDate(da) {
  const s = String(da || '');
  return /^\d{8}$/.test(s) ? `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}` : s;
}

/** A Date → "20240115" (local calendar day). */
export function dicomDate(date) {
  const pad = n => String(n).padStart(2, '0');
  return `${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}`;
}

/** Attributes of a frame: top level, then the functional groups (shared, then per frame). */
export function frameAttributes(ds, frameIndex) {
  const merged = {};
  const addGroups = item => {
    for (const value of Object.values(item || {})) {
      if (value && value.vr === 'SQ' && Array.isArray(value.Value) && value.Value[0]) {
        Object.assign(merged, value.Value[0]);
      }
    }
  };
  addGroups(first(ds, T.SharedFunctionalGroups));
  addGroups(values(ds, T.PerFrameFunctionalGroups)[frameIndex]);
  return Object.keys(merged).length ? { ...ds, ...merged } : ds;
}

/** SOP classes that never carry pixel data, for a clear message. */
export function describeNonImage(ds) {
  const sopClass = String(first(ds, T.SOPClassUID) || '');
  const modality = String(first(ds, T.Modality) || '');
  if (sopClass.startsWith('1.2.840.10008.5.1.4.1.1.88.') || modality === 'SR') return 'a structured report (SR)';
  if (sopClass === '1.2.840.10008.5.1.4.1.1.104.1' || modality === 'DOC') return 'an encapsulated PDF document';
  if (sopClass.startsWith('1.2.840.10008.5.1.4.1.1.77.1.4.1') || sopClass === '1.2.840.10008.5.1.4.1.1.77.1.1.1')
    return 'a video';
  if (modality === 'PR' || sopClass.startsWith('1.2.840.10008.5.1.4.1.1.11.')) return 'a presentation state';
  if (modality === 'KO') return 'a key object selection';
  if (modality === 'RTSTRUCT' || modality === 'RTPLAN') return `an ${modality} object`;
  return 'an object without image pixels';
}

export function hasPixels(ds) {
  return has(ds, T.PixelData) || has(ds, T.FloatPixelData) || has(ds, T.DoubleFloatPixelData);
}
