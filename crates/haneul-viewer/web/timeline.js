// The patient timeline: every study of the patient, newest first, one tap to open.
import { formatDate } from './dicom.js';
import { studyRow } from './studylist.js';

export async function loadTimeline(api, patientId, signal) {
  if (!patientId) return [];
  const answer = await api.patientStudies(patientId, signal);
  return answer
    .map(studyRow)
    .sort((a, b) => (b.date || '').localeCompare(a.date || '') || a.uid.localeCompare(b.uid));
}

/** Fill the list; `shown` holds the UIDs of studies on screen (marked current). */
export function renderTimeline(list, studies, shown, onOpen, testid = 'timeline-item') {
  const fragment = document.createDocumentFragment();
  for (const study of studies) {
    const li = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.testid = testid;
    button.dataset.studyUid = study.uid;
    button.classList.toggle('current', shown.has(study.uid));
    const count = study.instances !== null && study.instances !== undefined ? ` (${study.instances})` : '';
    button.textContent = `${formatDate(study.date) || 'no date'} ${study.modality}${count}\n${study.description || ''}`.trim();
    button.title = 'Open in the active pane';
    button.addEventListener('click', () => onOpen(study));
    li.append(button);
    fragment.append(li);
  }
  if (studies.length === 0) {
    const li = document.createElement('li');
    li.textContent = 'No other studies.';
    fragment.append(li);
  }
  list.replaceChildren(fragment);
}
