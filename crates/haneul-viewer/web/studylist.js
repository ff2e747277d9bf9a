// The study list: QIDO-RS search form, quick filters, sortable columns, paging.
import { T, dicomDate, first, formatDate, num, personName, text, values } from './dicom.js';

const PAGE = 25;

/** A study of a QIDO-RS answer, flattened for the table. */
export function studyRow(ds) {
  return {
    ds,
    uid: String(first(ds, T.StudyInstanceUID) || ''),
    name: personName(first(ds, T.PatientName)),
    id: text(ds, T.PatientID),
    date: text(ds, T.StudyDate),
    modality: values(ds, T.ModalitiesInStudy).join('/') || text(ds, T.Modality),
    description: text(ds, T.StudyDescription),
    accession: text(ds, T.AccessionNumber),
    instances: num(ds, T.NumberOfStudyRelatedInstances, null),
  };
}

const hasWildcard = s => /[*?]/.test(s);

/** The QIDO-RS query of the form's values. */
export function queryOf(form) {
  const get = name => String(form.get(name) || '').trim();
  const query = {};
  const name = get('name');
  if (name) query.PatientName = hasWildcard(name) ? name : `${name}*`;
  if (get('id')) query.PatientID = get('id');
  if (get('accession')) query.AccessionNumber = get('accession');
  const from = get('from').replaceAll('-', '');
  const to = get('to').replaceAll('-', '');
  if (from || to) query.StudyDate = from === to ? from : `${from}-${to}`;
  if (get('modality')) query.ModalitiesInStudy = get('modality');
  const description = get('description');
  if (description) query.StudyDescription = hasWildcard(description) ? description : `*${description}*`;
  return query;
}

export class StudyList {
  /** `onOpen(study)` opens a study; `onPatient(study)` shows its patient's timeline. */
  constructor(api, onOpen, onPatient) {
    this.api = api;
    this.onOpen = onOpen;
    this.onPatient = onPatient;
    this.form = document.getElementById('search-form');
    this.rows = document.getElementById('study-rows');
    this.message = document.getElementById('list-message');
    this.pageInfo = document.getElementById('page-info');
    this.prev = document.getElementById('page-prev');
    this.next = document.getElementById('page-next');
    this.offset = 0;
    this.studies = [];
    this.more = false;
    this.sort = { key: 'date', descending: true };
    this.generation = 0;
    this.form.addEventListener('submit', e => {
      e.preventDefault();
      this.offset = 0;
      this.search();
    });
    document.getElementById('quick-today').addEventListener('click', () => this.quick(0));
    document.getElementById('quick-week').addEventListener('click', () => this.quick(6));
    document.getElementById('search-clear').addEventListener('click', () => {
      this.form.reset();
      this.offset = 0;
      this.search();
    });
    this.prev.addEventListener('click', () => {
      this.offset = Math.max(0, this.offset - PAGE);
      this.search();
    });
    this.next.addEventListener('click', () => {
      this.offset += PAGE;
      this.search();
    });
    for (const th of document.querySelectorAll('table.studies th[data-sort]')) {
      th.addEventListener('click', () => {
        const key = th.dataset.sort;
        this.sort = { key, descending: this.sort.key === key ? !this.sort.descending : key === 'date' };
        this.render();
      });
    }
  }

  /** Forget every study and the search (signing out): nothing of them stays on the page. */
  clear() {
    this.generation++;
    this.form.reset();
    this.offset = 0;
    this.studies = [];
    this.more = false;
    this.sort = { key: 'date', descending: true };
    this.showMessage('');
    this.render();
    this.pageInfo.textContent = '';
  }

  quick(daysBack) {
    const today = new Date();
    const start = new Date(today);
    start.setDate(today.getDate() - daysBack);
    const iso = d => formatDate(dicomDate(d));
    this.form.elements.from.value = iso(start);
    this.form.elements.to.value = iso(today);
    this.offset = 0;
    this.search();
  }

  showMessage(textValue, kind = 'error') {
    this.message.textContent = textValue;
    this.message.hidden = !textValue;
    this.message.classList.toggle('info', kind === 'info');
  }

  async search() {
    const generation = ++this.generation;
    const query = queryOf(new FormData(this.form));
    this.showMessage('Searching…', 'info');
    try {
      const answer = await this.api.searchStudies(query, { limit: PAGE + 1, offset: this.offset });
      if (generation !== this.generation) return;
      this.more = answer.length > PAGE;
      this.studies = answer.slice(0, PAGE).map(studyRow);
      this.showMessage(this.studies.length ? '' : 'No studies match the search.', 'info');
    } catch (error) {
      if (generation !== this.generation || error.name === 'AbortError') return;
      this.studies = [];
      this.more = false;
      this.showMessage(error.message);
    }
    this.render();
  }

  render() {
    const { key, descending } = this.sort;
    const sorted = [...this.studies].sort((a, b) => {
      const x = a[key] ?? '';
      const y = b[key] ?? '';
      const order = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
      return descending ? -order : order;
    });
    for (const th of document.querySelectorAll('table.studies th[data-sort]')) {
      th.classList.toggle('sorted-asc', th.dataset.sort === key && !descending);
      th.classList.toggle('sorted-desc', th.dataset.sort === key && descending);
    }
    const fragment = document.createDocumentFragment();
    for (const study of sorted) {
      const tr = document.createElement('tr');
      tr.tabIndex = 0;
      tr.dataset.testid = 'study-row';
      tr.dataset.studyUid = study.uid;
      const cells = [study.name, study.id, formatDate(study.date), study.modality, study.description, study.accession, study.instances ?? ''];
      cells.forEach((value, i) => {
        const td = document.createElement('td');
        if (i === 0 && study.id && this.onPatient) {
          // The patient's name opens the patient's timeline (all studies, priors one click away).
          const link = document.createElement('button');
          link.type = 'button';
          link.className = 'patient-link';
          link.dataset.testid = 'patient-timeline-open';
          link.title = 'All studies of this patient';
          link.textContent = value || study.id;
          link.addEventListener('click', e => {
            e.stopPropagation();
            this.onPatient(study);
          });
          link.addEventListener('keydown', e => e.stopPropagation());
          td.append(link);
        } else {
          td.textContent = value;
        }
        if (i === 6) td.className = 'num';
        tr.append(td);
      });
      tr.addEventListener('click', () => this.onOpen(study));
      tr.addEventListener('keydown', e => {
        if (e.key === 'Enter') this.onOpen(study);
      });
      fragment.append(tr);
    }
    this.rows.replaceChildren(fragment);
    const from = this.studies.length ? this.offset + 1 : 0;
    this.pageInfo.textContent = `${from}–${this.offset + this.studies.length}${this.more ? ' of more' : ''}`;
    this.prev.disabled = this.offset === 0;
    this.next.disabled = !this.more;
  }
}
