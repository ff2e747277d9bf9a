// The only module that talks to the server: DICOMweb (QIDO-RS, WADO-RS) and
// the documented REST API (/api/status).
import { T } from './dicom.js';

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const UNCOMPRESSED = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1';

async function failure(response, what) {
  let detail = '';
  try {
    const body = await response.text();
    try {
      detail = JSON.parse(body).error || body;
    } catch {
      detail = body;
    }
  } catch {
    // no body
  }
  return new HttpError(response.status, `${what}: HTTP ${response.status}${detail ? ` — ${String(detail).slice(0, 300)}` : ''}`);
}

async function get(url, accept, what, signal) {
  let response;
  try {
    response = await fetch(url, { headers: { Accept: accept }, signal, credentials: 'same-origin', cache: 'no-store' });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new HttpError(0, `${what}: the server cannot be reached (${error.message})`);
  }
  if (!response.ok) throw await failure(response, what);
  return response;
}

/** Split a multipart/related body into parts ({headers, body: Uint8Array}). */
export function parseMultipart(buffer, contentType) {
  const match = /boundary="?([^";]+)"?/i.exec(contentType || '');
  if (!match) throw new Error(`not a multipart answer (${contentType})`);
  const bytes = new Uint8Array(buffer);
  const encoder = new TextEncoder();
  const delimiter = encoder.encode(`--${match[1]}`);
  const indexOf = (needle, from) => {
    outer: for (let i = from; i <= bytes.length - needle.length; i++) {
      if (bytes[i] !== needle[0]) continue;
      for (let j = 1; j < needle.length; j++) if (bytes[i + j] !== needle[j]) continue outer;
      return i;
    }
    return -1;
  };
  const parts = [];
  let at = indexOf(delimiter, 0);
  while (at >= 0) {
    let start = at + delimiter.length;
    if (bytes[start] === 0x2d && bytes[start + 1] === 0x2d) break; // closing delimiter
    const headerEnd = indexOf(encoder.encode('\r\n\r\n'), start);
    if (headerEnd < 0) break;
    const headerText = new TextDecoder().decode(bytes.subarray(start, headerEnd));
    const headers = {};
    for (const line of headerText.split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    start = headerEnd + 4;
    // The body ends at CRLF + delimiter; skip to the next delimiter by length when given.
    let next;
    const length = Number(headers['content-length']);
    if (Number.isFinite(length) && length >= 0 && start + length <= bytes.length) {
      next = indexOf(delimiter, start + length);
    } else {
      next = indexOf(encoder.encode(`\r\n--${match[1]}`), start);
      if (next >= 0) next += 2;
    }
    if (next < 0) throw new Error('the multipart answer is cut short');
    let end = next;
    if (bytes[end - 2] === 0x0d && bytes[end - 1] === 0x0a) end -= 2;
    parts.push({ headers, body: bytes.subarray(start, end) });
    at = next;
  }
  return parts;
}

export class DicomWeb {
  constructor(base) {
    this.base = String(base || '/dicom-web').replace(/\/+$/, '');
    this.stats = { requests: 0, bytes: 0 };
  }

  async json(path, what, signal) {
    this.stats.requests++;
    const response = await get(this.base + path, 'application/dicom+json', what, signal);
    if (response.status === 204) return [];
    const text = await response.text();
    this.stats.bytes += text.length;
    return text ? JSON.parse(text) : [];
  }

  /** QIDO-RS study search; `query` holds DICOM attribute keywords or tags → values. */
  searchStudies(query, { limit = 25, offset = 0 } = {}, signal) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) if (value) params.append(key, value);
    for (const field of [T.StudyDescription, T.ModalitiesInStudy, T.NumberOfStudyRelatedInstances,
      T.NumberOfStudyRelatedSeries, T.PatientBirthDate, T.PatientSex, T.StudyTime]) params.append('includefield', field);
    params.set('limit', String(limit));
    params.set('offset', String(offset));
    return this.json(`/studies?${params}`, 'Study search failed', signal);
  }

  /** All studies of one patient (the timeline). */
  patientStudies(patientId, signal) {
    const params = new URLSearchParams({ PatientID: patientId, limit: '200' });
    for (const field of [T.StudyDescription, T.ModalitiesInStudy, T.NumberOfStudyRelatedInstances]) {
      params.append('includefield', field);
    }
    return this.json(`/studies?${params}`, 'Loading the patient timeline failed', signal);
  }

  studySeries(study, signal) {
    const params = new URLSearchParams();
    for (const field of [T.SeriesDescription, T.NumberOfSeriesRelatedInstances, T.SeriesNumber, T.Modality]) {
      params.append('includefield', field);
    }
    return this.json(`/studies/${enc(study)}/series?${params}`, 'Loading the series of the study failed', signal);
  }

  seriesMetadata(study, series, signal) {
    return this.json(`/studies/${enc(study)}/series/${enc(series)}/metadata`, 'Loading the series metadata failed', signal);
  }

  frameUrl(study, series, instance, frame) {
    return `${this.base}/studies/${enc(study)}/series/${enc(series)}/instances/${enc(instance)}/frames/${frame}`;
  }

  /** One frame as uncompressed little-endian samples (the server decompresses). */
  async frame(study, series, instance, frame, signal) {
    return (await this.frames(study, series, instance, [frame], signal))[0];
  }

  /**
   * Several frames of one instance in one request (`frames/1,2,3`), as
   * uncompressed little-endian samples, in the order asked.
   */
  async frames(study, series, instance, numbers, signal) {
    this.stats.requests++;
    const list = numbers.join(',');
    const what = numbers.length === 1
      ? `Frame ${list} of instance …${String(instance).slice(-12)}`
      : `Frames ${numbers[0]}–${numbers[numbers.length - 1]} of instance …${String(instance).slice(-12)}`;
    const response = await get(this.frameUrl(study, series, instance, list), UNCOMPRESSED, what, signal);
    const buffer = await response.arrayBuffer();
    this.stats.bytes += buffer.byteLength;
    const type = response.headers.get('content-type') || '';
    if (!/^multipart\//i.test(type)) {
      if (numbers.length === 1) return [new Uint8Array(buffer)];
      throw new HttpError(response.status, `${what}: a single part for ${numbers.length} frames`);
    }
    const parts = parseMultipart(buffer, type);
    if (parts.length !== numbers.length) {
      throw new HttpError(response.status, `${what}: ${parts.length} parts for ${numbers.length} frames`);
    }
    return parts.map(part => part.body);
  }

  /** Bulk data (a BulkDataURI of the metadata, e.g. LUT Data) as bytes. */
  async bulk(uri, signal) {
    this.stats.requests++;
    // The URI names the server as the request's Host saw it; ask this origin.
    const url = new URL(uri, location.href);
    const target = url.origin === location.origin ? url.href : url.pathname + url.search;
    const response = await get(target, 'application/octet-stream', 'Loading bulk data', signal);
    const buffer = await response.arrayBuffer();
    this.stats.bytes += buffer.byteLength;
    const type = response.headers.get('content-type') || '';
    if (/^multipart\//i.test(type)) return parseMultipart(buffer, type)[0]?.body ?? new Uint8Array(0);
    return new Uint8Array(buffer);
  }

  /** One frame rendered by the server (JPEG), optionally with a window. */
  async renderedFrame(study, series, instance, frame, window, signal) {
    this.stats.requests++;
    let url = `${this.frameUrl(study, series, instance, frame)}/rendered?quality=85`;
    if (window) url += `&window=${encodeURIComponent(`${+window.center.toFixed(2)},${+window.width.toFixed(2)},${(window.fn || 'linear').toLowerCase()}`)}`;
    const response = await get(url, 'image/jpeg', `Rendered frame ${frame}`, signal);
    const blob = await response.blob();
    this.stats.bytes += blob.size;
    return createImageBitmap(blob);
  }

  thumbnailUrl(study, series) {
    return `${this.base}/studies/${enc(study)}/series/${enc(series)}/thumbnail?viewport=128,128`;
  }

  /** REST: the server's status (version, counts). */
  async status() {
    const response = await get('/api/status', 'application/json', 'Server status');
    return response.json();
  }
}

function enc(uid) {
  return encodeURIComponent(uid);
}
