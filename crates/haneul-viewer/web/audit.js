// The audit page, for users whose role has the `audit` permission: search
// the audit trail (GET /api/audit) by patient, study, user, action and time,
// newest first. Times are entered and shown in the browser's local time and
// sent to the server in UTC.
const $ = id => document.getElementById(id);
const pad = n => String(n).padStart(2, '0');

/** A `datetime-local` value (local time) as RFC 3339 in UTC; '' when empty or invalid. */
export function localToUtc(value) {
  if (!value) return '';
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return '';
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** An RFC 3339 time as local "YYYY-MM-DD HH:MM:SS". */
export function localTime(rfc3339) {
  const date = new Date(rfc3339);
  if (Number.isNaN(date.getTime())) return String(rfc3339 ?? '');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** A Date as a `datetime-local` value (local time, to the second). */
export function localInputValue(date) {
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

function detailText(detail) {
  if (!detail || typeof detail !== 'object') return '';
  return Object.entries(detail)
    .map(([key, value]) => `${key}: ${typeof value === 'object' && value !== null ? JSON.stringify(value) : value}`)
    .join('; ');
}

/** The query of the form's values. */
export function auditQuery(form) {
  const get = name => String(form.get(name) || '').trim();
  return {
    patient: get('patient'),
    study: get('study'),
    actor: get('actor'),
    action: get('action'),
    from: localToUtc(get('from')),
    to: localToUtc(get('to')),
    limit: get('limit') || '100',
  };
}

export class AuditPage {
  constructor(api) {
    this.api = api;
    this.form = $('audit-form');
    this.rows = $('audit-rows');
    this.message = $('audit-message');
    this.count = $('audit-count');
    this.generation = 0;
    this.searches = 0;
    this.searched = false;
    this.form.addEventListener('submit', e => {
      e.preventDefault();
      this.search();
    });
    $('audit-today').addEventListener('click', () => {
      const start = new Date();
      start.setHours(0, 0, 0, 0);
      this.form.elements.from.value = localInputValue(start);
      this.form.elements.to.value = '';
      this.search();
    });
    $('audit-clear').addEventListener('click', () => {
      this.form.reset();
      this.search();
    });
  }

  /** The page was opened: the newest records, unless a search was made already. */
  shown() {
    if (!this.searched) this.search();
  }

  showMessage(textValue, kind = 'error') {
    this.message.textContent = textValue || '';
    this.message.hidden = !textValue;
    this.message.classList.toggle('info', kind === 'info');
  }

  async search() {
    const generation = ++this.generation;
    this.searched = true;
    const query = auditQuery(new FormData(this.form));
    this.showMessage('Searching the audit trail…', 'info');
    this.count.dataset.state = 'searching';
    let answer;
    try {
      answer = await this.api.audit(query);
    } catch (error) {
      if (generation !== this.generation || error.name === 'AbortError') return;
      this.rows.replaceChildren();
      this.count.textContent = '';
      this.showMessage(error.message);
      this.finish();
      return;
    }
    if (generation !== this.generation) return;
    const records = Array.isArray(answer.records) ? answer.records : [];
    const count = Number.isFinite(answer.count) ? answer.count : records.length;
    this.render(records);
    const limit = Number(query.limit);
    this.count.textContent = `${count} record${count === 1 ? '' : 's'}, newest first${count >= limit ? ` (at most ${limit}: narrow the search for older ones)` : ''}`;
    this.count.dataset.count = String(count);
    this.showMessage(count ? '' : 'No audit records match the search.', 'info');
    this.finish();
  }

  finish() {
    this.searches++;
    this.count.dataset.searches = String(this.searches);
    this.count.dataset.state = 'done';
  }

  render(records) {
    const fragment = document.createDocumentFragment();
    for (const record of records) {
      const tr = document.createElement('tr');
      tr.dataset.testid = 'audit-row';
      tr.dataset.seq = String(record.seq ?? '');
      tr.dataset.action = String(record.action ?? '');
      tr.dataset.actor = String(record.actor ?? '');
      tr.dataset.outcome = String(record.outcome ?? '');
      const patients = Array.isArray(record.patients) ? record.patients : [];
      const studies = Array.isArray(record.studies) ? record.studies : [];
      const detail = detailText(record.detail);
      const cells = [
        [localTime(record.time), 'time', record.time],
        [record.actor, 'actor'],
        [record.source, 'source'],
        [record.action, 'action'],
        [record.outcome, `outcome ${record.outcome === 'success' ? 'ok' : 'bad'}`],
        [patients.join(', '), 'patients'],
        [studies.join('\n'), 'uids'],
        [detail, 'detail', detail],
      ];
      for (const [value, className, title] of cells) {
        const td = document.createElement('td');
        td.className = className;
        td.textContent = value ?? '';
        if (title) td.title = title;
        tr.append(td);
      }
      fragment.append(tr);
    }
    this.rows.replaceChildren(fragment);
  }

  /** Forget every record and the search (signing out). */
  clear() {
    this.generation++;
    this.searched = false;
    this.form.reset();
    this.rows.replaceChildren();
    this.count.textContent = '';
    delete this.count.dataset.count;
    this.showMessage('');
  }
}
