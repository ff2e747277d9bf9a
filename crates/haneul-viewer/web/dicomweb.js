// The only module that talks to the server: DICOMweb (QIDO-RS, WADO-RS) and
// the documented REST API (/api/session, /api/login, /api/logout,
// /api/password, /api/audit, /api/status, /api/replication/conflicts). Credentials are the session cookie
// (HttpOnly, set by the server) and the CSRF token, which lives in this
// object's memory only and goes in X-CSRF-Token on every POST and DELETE.
import { T } from './dicom.js';

export class HttpError extends Error {
  constructor(status, message, { detail = '', retryAfter = null } = {}) {
    super(message);
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }
}

const UNCOMPRESSED = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1';
const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** The server's error text of a failed answer (its JSON `error`, else the body). */
async function errorDetail(response) {
  try {
    const body = await response.text();
    try {
      return String(JSON.parse(body).error || body);
    } catch {
      return body;
    }
  } catch {
    return '';
  }
}

/** A readable error for a failed answer: what failed, why, and the status. */
async function failure(response, what) {
  const detail = (await errorDetail(response)).slice(0, 300);
  const retry = Number(response.headers.get('retry-after'));
  const retryAfter = Number.isFinite(retry) && retry > 0 ? retry : null;
  let message;
  if (response.status === 401) {
    message = `${what}: not signed in${detail ? ` — ${detail}` : ''} (HTTP 401)`;
  } else if (response.status === 403) {
    message = `${what}: not allowed${detail ? ` — ${detail}` : ''} (HTTP 403)`;
  } else {
    message = `${what}: HTTP ${response.status}${detail ? ` — ${detail}` : ''}`;
  }
  return new HttpError(response.status, message, { detail, retryAfter });
}

/** Whether a 403 says the user must change their password before anything else. */
export function isPasswordChangeRequired(error) {
  return error instanceof HttpError && error.status === 403 && /change your password first/i.test(error.detail);
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
    /** The session's CSRF token (memory only), sent in X-CSRF-Token on POST and DELETE. */
    this.csrf = null;
    /** Called with the HttpError when a request answers 401 (the session has ended). */
    this.onUnauthorized = null;
    /** Called when a request answers 403 "change your password first". */
    this.onPasswordRequired = null;
    /** When the last request was sent (ms, Date.now()): the server's idle timeout counts from it. */
    this.lastRequest = 0;
    this.controller = new AbortController();
  }

  /** Abort every request under way (signing out) and forget what was counted. */
  abortAll() {
    this.controller.abort();
    this.controller = new AbortController();
    this.stats = { requests: 0, bytes: 0 };
  }

  /** Note a request made outside this object (an <img> loading a thumbnail). */
  touch() {
    this.lastRequest = Date.now();
  }

  /**
   * One request. `quiet`: a 401 is the caller's business (signing in, asking
   * whether a session exists), not the end of a session.
   */
  async request(url, { method = 'GET', accept = 'application/json', body, what, signal, quiet = false } = {}) {
    const headers = { Accept: accept };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (UNSAFE.has(method) && this.csrf) headers['X-CSRF-Token'] = this.csrf;
    const signals = [this.controller.signal, signal].filter(Boolean);
    const combined = signals.length > 1 && AbortSignal.any ? AbortSignal.any(signals) : signals[signals.length - 1];
    let response;
    this.lastRequest = Date.now();
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: combined,
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch (error) {
      if (error.name === 'AbortError') throw error;
      throw new HttpError(0, `${what}: the server cannot be reached (${error.message})`);
    }
    if (response.ok) return response;
    const error = await failure(response, what);
    if (error.status === 401 && !quiet) this.onUnauthorized?.(error);
    if (isPasswordChangeRequired(error)) this.onPasswordRequired?.(error);
    throw error;
  }

  get(url, accept, what, signal) {
    return this.request(url, { accept, what, signal });
  }

  async json(path, what, signal) {
    this.stats.requests++;
    const response = await this.get(this.base + path, 'application/dicom+json', what, signal);
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
    const response = await this.get(this.frameUrl(study, series, instance, list), UNCOMPRESSED, what, signal);
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
    const response = await this.get(target, 'application/octet-stream', 'Loading bulk data', signal);
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
    const response = await this.get(url, 'image/jpeg', `Rendered frame ${frame}`, signal);
    const blob = await response.blob();
    this.stats.bytes += blob.size;
    return createImageBitmap(blob);
  }

  thumbnailUrl(study, series) {
    return `${this.base}/studies/${enc(study)}/series/${enc(series)}/thumbnail?viewport=128,128`;
  }

  /** REST: the server's status (version, counts); needs the monitor permission. */
  async status() {
    const response = await this.get('/api/status', 'application/json', 'Server status');
    return response.json();
  }

  // ---- sign-in (REST, tag Authentication) ----------------------------------

  /** Who this browser is signed in as: the session (with its CSRF token), or null. */
  async session() {
    try {
      const response = await this.request('/api/session', { what: 'Checking the session', quiet: true });
      return await response.json();
    } catch (error) {
      if (error.status === 401) return null;
      throw error;
    }
  }

  /** Sign in; the server sets the session cookie and answers with the session. */
  async login(user, password) {
    const response = await this.request('/api/login', { method: 'POST', body: { user, password }, what: 'Signing in', quiet: true });
    return response.json();
  }

  /** End the session on the server (its cookie stops working). */
  async logout() {
    await this.request('/api/logout', { method: 'POST', what: 'Signing out', quiet: true });
  }

  async changePassword(currentPassword, newPassword) {
    await this.request('/api/password', {
      method: 'POST',
      body: { current_password: currentPassword, new_password: newPassword },
      what: 'Changing the password',
    });
  }

  /** The conflicting versions kept for review (replication); needs the query permission. */
  async replicationConflicts() {
    const response = await this.request('/api/replication/conflicts', { what: 'Listing replication conflicts' });
    return response.json();
  }

  /** Search the audit trail: `filter` holds patient, study, actor, action, from, to, limit. */
  async audit(filter, signal) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(filter)) if (value !== undefined && value !== null && value !== '') params.set(key, String(value));
    const response = await this.request(`/api/audit?${params}`, { what: 'Searching the audit trail', signal });
    return response.json();
  }
}

function enc(uid) {
  return encodeURIComponent(uid);
}
