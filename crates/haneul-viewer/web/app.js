// The application: sign-in and session, pages, study opening, panes and
// layouts, toolbar, keyboard, cine, timings, the audit page. Nothing is
// written to browser storage: patient data and the session's CSRF token live
// in memory only, are dropped on signing out, and are gone with the tab.
import { showAttributes } from './attributes.js';
import { AuditPage } from './audit.js';
import { ReplicationPage } from './replication.js';
import { T, first, formatDate, num, text } from './dicom.js';
import { DicomWeb } from './dicomweb.js';
import { CT_PRESETS } from './pixels.js';
import { SignIn } from './signin.js';
import { Loader, SliceState, Stack } from './stack.js';
import { StudyList, studyRow } from './studylist.js';
import { loadTimeline, renderTimeline } from './timeline.js';
import { Viewport } from './viewport.js';

const NON_IMAGE_MODALITIES = new Set(['SR', 'PR', 'KO', 'DOC', 'RTSTRUCT', 'RTPLAN', 'SEG', 'REG']);
const LAYOUTS = { '1x1': 1, '1x2': 2, '2x2': 4 };
const PAGES = ['signin', 'studies', 'viewer', 'audit', 'replication'];
const SESSION_ENDED = 'Your session ended (no activity for a while, signed out elsewhere, or the server restarted). Sign in again.';
const $ = id => document.getElementById(id);

class App {
  constructor() {
    const base = document.querySelector('meta[name="haneul-dicomweb"]')?.content || '/dicom-web';
    this.api = new DicomWeb(base);
    this.api.onUnauthorized = () => this.sessionEnded(SESSION_ENDED);
    this.api.onPasswordRequired = () => this.passwordRequired();
    this.loader = new Loader(this.api, 6);
    this.session = null;
    this.epoch = 0;
    this.tool = 'wl';
    this.layout = '1x1';
    this.panes = [0, 1, 2, 3].map(i => new Viewport(this, i));
    this.activePane = this.panes[0];
    this.stacks = new Map(); // "study|series" → Promise<Stack>
    this.studies = new Map(); // study UID → {row, series: [ds]}
    this.sidebarStudies = []; // study UIDs with thumbnails in the sidebar
    this.timelineStudies = [];
    this.timings = {};
    this.cine = null;
    this.lastMeasurement = null;
    this.studyList = new StudyList(this.api, study => this.openStudy(study), study => this.showPatientTimeline(study));
    this.audit = new AuditPage(this.api);
    this.replication = new ReplicationPage(this.api, permission => this.can(permission));
    this.signIn = new SignIn(this.api, { onSignedIn: session => this.begin(session), onSignOut: () => this.signOut() });
    this.bindUi();
    this.setLayout('1x1');
    this.boot();
  }

  // ---- session -------------------------------------------------------------

  /** On load: carry on with the browser's session, or ask to sign in. */
  async boot() {
    this.showPage('signin');
    let session;
    try {
      session = await this.api.session();
    } catch (error) {
      this.signIn.show(`The server cannot be asked who you are: ${error.message}`, 'error');
      return;
    }
    if (session) this.begin(session);
    else this.signIn.show('');
  }

  /** A session is open: change the password first if the server asks, else start. */
  begin(session) {
    if (session.must_change_password) {
      this.session = null;
      this.api.csrf = session.csrf_token || null;
      this.showPage('signin');
      this.signIn.showPasswordChange(session);
      return;
    }
    this.start(session);
  }

  can(permission) {
    return !!this.session?.permissions?.includes(permission);
  }

  start(session) {
    this.session = session;
    this.api.csrf = session.csrf_token || null;
    this.signIn.hide();
    document.body.classList.remove('signed-out');
    $('user-info').textContent = `${session.user} · ${session.role}`;
    $('user-info').title = `Signed in as ${session.user} (${session.role})${session.sites?.length ? `, sites ${session.sites.join(', ')}` : ''}`;
    $('sign-out').textContent = session.method === 'anonymous' ? 'Sign in' : 'Sign out';
    $('nav-audit').hidden = !this.can('audit');
    $('nav-replication').hidden = !this.can('monitor');
    $('nav-viewer').disabled = true;
    this.showPage('studies');
    if (this.can('query')) {
      this.studyList.search();
    } else {
      this.studyList.showMessage(`Your role (${session.role}) may not search or view studies.`, 'info');
    }
    if (this.can('monitor')) {
      this.api
        .status()
        .then(s => this.session === session && ($('server-status').textContent = `Haneul ${s.version} · ${s.statistics?.studies ?? '?'} studies`))
        .catch(() => this.session === session && ($('server-status').textContent = 'server status unavailable'));
    }
    this.watchIdle();
  }

  /** The sign-out button: end the session on the server, drop everything, back to the form. */
  async signOut() {
    const session = this.session;
    this.clearSession();
    if (session?.method === 'anonymous') {
      this.signIn.show('');
      return;
    }
    let message = 'You have signed out.';
    let kind = 'info';
    try {
      await this.api.logout();
    } catch (error) {
      if (error.status !== 401) {
        message = `Signed out here, but the server did not confirm it: ${error.message}`;
        kind = 'error';
      }
    }
    this.api.csrf = null;
    this.signIn.show(message, kind);
  }

  /** A request answered 401: the session is over; nothing of it stays on the page. */
  sessionEnded(message) {
    if (!this.session && $('password-form').hidden) return; // signed out already
    // The same person is most likely still there: offer their name again.
    const user = this.session?.user || $('password-form').elements.user.value;
    this.clearSession();
    this.api.csrf = null;
    this.signIn.show(message, 'info', { user });
  }

  /** A request answered 403 "change your password first" (set by an administrator meanwhile). */
  passwordRequired() {
    const session = this.session;
    if (!session) return;
    this.clearSession();
    this.api.csrf = session.csrf_token || null;
    this.signIn.showPasswordChange(session, 'An administrator asks you to change your password before you go on.');
  }

  /**
   * The server ends a session after `idle_timeout_seconds` without a request;
   * images on screen make none. Once that time has passed since the last
   * request, ask the server: a 401 ends the session here too, and patient
   * data leaves the screen instead of staying there unattended.
   */
  watchIdle() {
    clearTimeout(this.idleTimer);
    const session = this.session;
    const idle = Number(session?.idle_timeout_seconds);
    if (!session || !(idle > 0)) return;
    const due = this.api.lastRequest + idle * 1000 + 2000;
    this.idleTimer = setTimeout(async () => {
      if (this.session !== session) return;
      if (Date.now() < this.api.lastRequest + idle * 1000 + 2000) return this.watchIdle();
      let alive;
      try {
        alive = await this.api.session();
      } catch {
        alive = session; // unreachable: try again later
      }
      if (this.session !== session) return;
      if (alive) this.watchIdle();
      else this.sessionEnded(SESSION_ENDED);
    }, Math.max(1000, due - Date.now()));
  }

  /** Forget the session and every piece of patient data, on the page and in memory. */
  clearSession() {
    clearTimeout(this.idleTimer);
    this.session = null;
    this.epoch = (this.epoch || 0) + 1; // answers still under way are dropped
    this.api.abortAll();
    this.closeStudy();
    this.studyList.clear();
    this.audit.clear();
    this.replication.clear();
    this.patientGeneration = (this.patientGeneration || 0) + 1;
    $('patient-panel').hidden = true;
    $('patient-title').textContent = '';
    $('patient-timeline').replaceChildren();
    const dialog = $('attributes');
    if (dialog.open) dialog.close();
    $('attr-rows').replaceChildren();
    $('attr-filter').value = '';
    $('attr-title').textContent = 'Attributes';
    this.attributeSource = null;
    this.patient = null;
    this.timelineStudies = [];
    this.timings = {};
    this.timedStack = null;
    this.lastMeasurement = null;
    this.setLayout('1x1');
    this.setActive(this.panes[0]);
    $('nav-viewer').disabled = true;
    $('nav-audit').hidden = true;
    $('nav-replication').hidden = true;
    $('server-status').textContent = '';
    $('user-info').textContent = '';
    $('user-info').title = '';
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    document.body.classList.add('signed-out');
    this.showPage('signin');
  }

  // ---- pages ---------------------------------------------------------------

  showPage(page) {
    if (page !== 'signin' && !this.session) page = 'signin';
    if (page === 'audit' && !this.can('audit')) page = 'studies';
    if (page === 'replication' && !this.can('monitor')) page = 'studies';
    for (const name of PAGES) $(`${name}-page`).hidden = page !== name;
    $('nav-studies').classList.toggle('active', page === 'studies');
    $('nav-viewer').classList.toggle('active', page === 'viewer');
    $('nav-audit').classList.toggle('active', page === 'audit');
    $('nav-replication').classList.toggle('active', page === 'replication');
    if (page === 'viewer') this.panes.forEach(p => p.draw());
    if (page === 'audit') this.audit.shown();
    if (page === 'replication') this.replication.shown();
    else this.replication.hidden();
  }

  /** Open a study from the list: its first image series in pane 1, one pane. */
  async openStudy(study) {
    this.closeStudy();
    this.timings = { study: study.uid, start: performance.now() };
    performance.clearMarks('haneul-open');
    performance.mark('haneul-open');
    this.patient = { id: study.id, name: study.name };
    $('nav-viewer').disabled = false;
    this.showPage('viewer');
    this.setLayout('1x1');
    this.setActive(this.panes[0]);
    this.sidebarStudies = [];
    this.refreshTimeline(study);
    await this.openStudyInPane(study, this.panes[0], { timed: true });
  }

  /** The study list's patient timeline: every study of the patient, one click to open. */
  async showPatientTimeline(study) {
    const panel = $('patient-panel');
    const list = $('patient-timeline');
    const generation = (this.patientGeneration = (this.patientGeneration || 0) + 1);
    $('patient-title').textContent = `${study.name} · ${study.id}`;
    list.replaceChildren();
    panel.hidden = false;
    let studies;
    try {
      studies = await loadTimeline(this.api, study.id);
    } catch (error) {
      if (generation === this.patientGeneration && error.name !== 'AbortError') list.textContent = error.message;
      return;
    }
    if (generation !== this.patientGeneration) return;
    renderTimeline(list, studies, new Set([study.uid]), chosen => this.openStudy(chosen), 'patient-timeline-item');
  }

  /** Forget everything of the open study (memory only; nothing was stored). */
  closeStudy() {
    this.stopCine();
    this.loader.reset();
    this.stacks.clear();
    this.studies.clear();
    this.sidebarStudies = [];
    for (const pane of this.panes) pane.clear();
    $('thumbnails').replaceChildren();
    $('timeline').replaceChildren();
  }

  async refreshTimeline(study) {
    const epoch = this.epoch;
    try {
      const studies = await loadTimeline(this.api, study.id);
      if (epoch !== this.epoch) return;
      this.timelineStudies = studies.length ? studies : [study];
    } catch (error) {
      if (epoch !== this.epoch || error.name === 'AbortError') return;
      this.timelineStudies = [study];
      $('timeline').textContent = error.message;
      return;
    }
    this.renderTimeline();
  }

  renderTimeline() {
    const shown = new Set(this.panes.filter(p => p.stack).map(p => p.stack.studyUid));
    renderTimeline($('timeline'), this.timelineStudies, shown, study => this.openStudyInPane(study, this.activePane));
  }

  async studySeries(study) {
    let entry = this.studies.get(study.uid);
    if (!entry) {
      entry = { row: study, series: null };
      this.studies.set(study.uid, entry);
    }
    if (!entry.series) {
      const series = await this.api.studySeries(study.uid);
      series.sort((a, b) => num(a, T.SeriesNumber, 0) - num(b, T.SeriesNumber, 0));
      entry.series = series;
    }
    return entry.series;
  }

  /** Show a study's series in the sidebar and its first image series in `pane`. */
  async openStudyInPane(study, pane, { timed = false } = {}) {
    pane.showMessage(`Loading study ${formatDate(study.date)} ${study.description || ''}…`, 'info');
    const epoch = this.epoch;
    let series;
    try {
      series = await this.studySeries(study);
    } catch (error) {
      if (epoch === this.epoch && error.name !== 'AbortError') pane.showMessage(error.message, 'error');
      return;
    }
    if (epoch !== this.epoch) return;
    if (!this.sidebarStudies.includes(study.uid)) this.sidebarStudies.push(study.uid);
    this.renderThumbnails();
    if (series.length === 0) {
      pane.showMessage('This study has no series.', 'info');
      return;
    }
    const chosen = series.find(s => !NON_IMAGE_MODALITIES.has(text(s, T.Modality))) || series[0];
    await this.openSeries(study.uid, String(first(chosen, T.SeriesInstanceUID)), pane, { timed });
  }

  stack(studyUid, seriesUid) {
    const key = `${studyUid}|${seriesUid}`;
    if (!this.stacks.has(key)) {
      const promise = this.api.seriesMetadata(studyUid, seriesUid).then(metadata => new Stack(this.api, studyUid, seriesUid, metadata));
      promise.catch(() => this.stacks.delete(key));
      this.stacks.set(key, promise);
    }
    return this.stacks.get(key);
  }

  async openSeries(studyUid, seriesUid, pane, { timed = false } = {}) {
    this.stopCine();
    pane.showMessage('Loading series…', 'info');
    const epoch = this.epoch;
    let stack;
    try {
      stack = await this.stack(studyUid, seriesUid);
    } catch (error) {
      if (epoch === this.epoch && error.name !== 'AbortError') pane.showMessage(error.message, 'error');
      return;
    }
    if (epoch !== this.epoch) return;
    if (timed) {
      this.timings.series = seriesUid;
      this.timings.metadata = performance.now() - this.timings.start;
      this.timings.frames = stack.size;
      this.timedStack = stack;
      const done = () => {
        if (stack.complete && this.timings.fullStack === undefined && this.timedStack === stack) {
          this.timings.fullStack = performance.now() - this.timings.start;
          performance.mark('haneul-full-stack');
        }
      };
      stack.onChange(done);
    }
    pane.setStack(stack, { index: 0 });
    this.loader.enqueueAll(stack, 0);
    this.renderThumbnails();
    this.renderTimeline();
    this.updatePresets();
  }

  /** Called by a pane each time it paints an image. */
  imageShown(pane) {
    if (this.timings.firstImage === undefined && pane.stack && pane.stack === this.timedStack) {
      this.timings.firstImage = performance.now() - this.timings.start;
      performance.mark('haneul-first-image');
    }
  }

  renderThumbnails() {
    const fragment = document.createDocumentFragment();
    const onScreen = new Set(this.panes.filter(p => p.stack).map(p => `${p.stack.studyUid}|${p.stack.seriesUid}`));
    this.sidebarStudies.forEach((studyUid, i) => {
      const entry = this.studies.get(studyUid);
      if (!entry?.series) return;
      if (this.sidebarStudies.length > 1 || i > 0) {
        const head = document.createElement('div');
        head.className = 'study-of';
        head.textContent = `${formatDate(entry.row.date)} ${entry.row.description || ''}`;
        fragment.append(head);
      }
      for (const s of entry.series) {
        const seriesUid = String(first(s, T.SeriesInstanceUID));
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'thumb';
        button.dataset.testid = 'thumb';
        button.dataset.seriesUid = seriesUid;
        button.dataset.studyUid = studyUid;
        button.classList.toggle('active', onScreen.has(`${studyUid}|${seriesUid}`));
        const pic = document.createElement('div');
        pic.className = 'pic';
        const modality = text(s, T.Modality);
        if (NON_IMAGE_MODALITIES.has(modality)) {
          pic.textContent = modality;
        } else {
          const img = document.createElement('img');
          img.alt = '';
          img.loading = 'lazy';
          img.src = this.api.thumbnailUrl(studyUid, seriesUid);
          img.addEventListener('error', () => pic.replaceChildren(modality || 'no image'));
          img.addEventListener('load', () => this.api.touch()); // the server counts it as activity
          pic.append(img);
        }
        const labelText = document.createElement('div');
        labelText.className = 'label';
        const count = num(s, T.NumberOfSeriesRelatedInstances, null);
        labelText.textContent = `S${text(s, T.SeriesNumber)} ${modality}${count !== null ? ` · ${count}` : ''} ${text(s, T.SeriesDescription)}`;
        button.append(pic, labelText);
        button.addEventListener('click', () => this.openSeries(studyUid, seriesUid, this.activePane));
        fragment.append(button);
      }
    });
    $('thumbnails').replaceChildren(fragment);
  }

  // ---- panes ---------------------------------------------------------------

  setLayout(layout) {
    const count = LAYOUTS[layout] || 1;
    this.layout = layout;
    const grid = $('panes');
    grid.className = `panes layout-${layout}`;
    grid.replaceChildren(...this.panes.slice(0, count).map(p => p.element));
    for (const button of document.querySelectorAll('[data-layout]')) {
      button.classList.toggle('active', button.dataset.layout === layout);
    }
    const visible = this.panes.slice(0, count);
    if (!visible.includes(this.activePane)) this.setActive(visible[0]);
    else if (this.activePane.stack) {
      // A new pane for comparison: make the first empty one active.
      const empty = visible.find(p => !p.stack);
      if (empty) this.setActive(empty);
    }
    if (this.cine && !visible.includes(this.cine.pane)) this.stopCine();
    visible.forEach(p => p.draw());
  }

  setActive(pane) {
    if (this.activePane === pane) return;
    this.activePane = pane;
    for (const p of this.panes) p.element.classList.toggle('active', p === pane);
    this.updatePresets();
  }

  viewChanged(pane) {
    if (pane === this.activePane) this.syncPresetSelect();
  }

  sliceChanged() {}

  measured(pane, m, labelText) {
    const spacing = pane.slice?.info.pixelSpacing;
    this.lastMeasurement = { type: m.type, label: labelText, points: m.points.map(p => ({ ...p })), pixelSpacing: spacing };
  }

  updatePresets() {
    const select = $('preset');
    const pane = this.activePane;
    const slice = pane?.slice;
    const options = [['', 'W/L preset…']];
    for (const [i, w] of (slice?.info.windows || []).entries()) {
      options.push([`file-${i}`, `${w.name} (${Math.round(w.width)}/${Math.round(w.center)})`]);
    }
    // The server renders a VOI LUT only as its default (no window in the file, first LUT).
    for (const [i, lut] of (slice?.info.voiLuts || []).entries()) {
      const renderable = !this.loader.lowBandwidth || (i === 0 && slice.info.windows.length === 0);
      options.push([`lut-${i}`, `VOI LUT: ${lut.name}`, !renderable]);
    }
    for (const p of CT_PRESETS) options.push([`ct-${p.name.split(' ')[0].toLowerCase()}`, `CT ${p.name} (${p.width}/${p.center})`]);
    options.push(['full', 'Full range']);
    select.replaceChildren(
      ...options.map(([value, label, disabled]) => {
        const option = document.createElement('option');
        option.value = value;
        option.textContent = label;
        option.disabled = !!disabled;
        return option;
      }),
    );
    this.syncPresetSelect();
  }

  syncPresetSelect() {
    const select = $('preset');
    const preset = this.activePane?.view?.preset || '';
    const match = [...select.options].find(o => o.value === preset);
    select.value = match ? match.value : '';
  }

  applyPreset(value) {
    const pane = this.activePane;
    if (!pane?.slice || !pane.view) return;
    if (value.startsWith('file-')) {
      const w = pane.slice.info.windows[Number(value.slice(5))];
      if (w) pane.setWindow(w.center, w.width, value, w.name);
    } else if (value.startsWith('lut-')) {
      pane.setVoiLut(Number(value.slice(4)));
    } else if (value.startsWith('ct-')) {
      const p = CT_PRESETS.find(x => `ct-${x.name.split(' ')[0].toLowerCase()}` === value);
      if (p) pane.setWindow(p.center, p.width, value, `CT ${p.name}`);
    } else if (value === 'full' && pane.frame && !pane.frame.rendered) {
      const frame = pane.frame;
      const a = frame.min * pane.slice.info.slope + pane.slice.info.intercept;
      const b = frame.max * pane.slice.info.slope + pane.slice.info.intercept;
      pane.setWindow((Math.min(a, b) + Math.max(a, b)) / 2 + 0.5, Math.abs(b - a) + 1, 'full', 'Full range');
    }
  }

  // ---- cine ----------------------------------------------------------------

  toggleCine() {
    if (this.cine) return this.stopCine();
    const pane = this.activePane;
    if (!pane?.stack || pane.stack.size < 2) return;
    const fps = Number($('cine-fps').value) || 10;
    const timer = setInterval(() => {
      const s = pane.stack;
      if (!s) return this.stopCine();
      // The next loaded image (skip those still loading).
      for (let step = 1; step <= s.size; step++) {
        const index = (pane.index + step) % s.size;
        if (s.state[index] === SliceState.DONE) {
          pane.goTo(index);
          break;
        }
      }
    }, 1000 / fps);
    this.cine = { pane, timer };
    document.querySelector('[data-action="cine"]').classList.add('active');
    document.querySelector('[data-action="cine"]').textContent = '■ Stop';
  }

  stopCine() {
    if (!this.cine) return;
    clearInterval(this.cine.timer);
    this.cine = null;
    const button = document.querySelector('[data-action="cine"]');
    button.classList.remove('active');
    button.textContent = '▶ Cine';
  }

  // ---- toolbar and keys ----------------------------------------------------

  setTool(tool) {
    this.tool = tool;
    for (const b of document.querySelectorAll('[data-tool]')) b.classList.toggle('active', b.dataset.tool === tool);
    for (const p of this.panes) p.pendingAngle = null;
  }

  action(name) {
    const pane = this.activePane;
    const v = pane?.view;
    switch (name) {
      case 'invert':
        if (v) v.invert = !v.invert;
        break;
      case 'rotate':
        if (v) v.rotation = (v.rotation + 1) % 4;
        break;
      case 'flipH':
        if (v) v.flipH = !v.flipH;
        break;
      case 'flipV':
        if (v) v.flipV = !v.flipV;
        break;
      case 'reset':
        pane?.resetView();
        break;
      case 'clear':
        pane?.clearMeasurements();
        break;
      case 'cine':
        this.toggleCine();
        break;
      case 'attributes':
        this.showAttributes();
        break;
      case 'fullscreen':
        if (document.fullscreenElement) document.exitFullscreen();
        else $('viewer-page').requestFullscreen?.().catch(() => {});
        break;
      default:
        break;
    }
    pane?.draw();
  }

  showAttributes() {
    const pane = this.activePane;
    const dialog = $('attributes');
    const ds = pane?.slice?.ds || pane?.stack?.first;
    if (!ds) return;
    $('attr-title').textContent = `Attributes of image ${pane.index + 1}`;
    $('attr-filter').value = '';
    showAttributes($('attr-rows'), ds);
    this.attributeSource = ds;
    if (!dialog.open) dialog.showModal();
  }

  setLowBandwidth(on) {
    this.loader.lowBandwidth = on;
    this.loader.reset();
    const reloaded = new Set();
    for (const pane of this.panes) {
      const s = pane.stack;
      if (!s || reloaded.has(s)) continue;
      reloaded.add(s);
      s.frames = new Array(s.size);
      s.state.fill(SliceState.NONE);
      s.errors = new Array(s.size);
      s.loaded = 0;
      s.failed = 0;
      s.renderWindow = pane.renderWindow();
      pane.renderedKey = null;
      pane.renderRequest = null;
      this.loader.prioritize(s, pane.index);
      this.loader.enqueueAll(s, pane.index);
      pane.updateProgress();
      pane.draw();
    }
    this.updatePresets();
  }

  bindUi() {
    $('nav-studies').addEventListener('click', () => this.showPage('studies'));
    $('patient-close').addEventListener('click', () => ($('patient-panel').hidden = true));
    $('nav-viewer').addEventListener('click', () => this.showPage('viewer'));
    $('nav-audit').addEventListener('click', () => this.showPage('audit'));
    $('nav-replication').addEventListener('click', () => this.showPage('replication'));
    $('sign-out').addEventListener('click', () => this.signOut());
    $('low-bandwidth').addEventListener('change', e => this.setLowBandwidth(e.target.checked));
    for (const b of document.querySelectorAll('[data-tool]')) b.addEventListener('click', () => this.setTool(b.dataset.tool));
    for (const b of document.querySelectorAll('[data-action]')) b.addEventListener('click', () => this.action(b.dataset.action));
    for (const b of document.querySelectorAll('[data-layout]')) b.addEventListener('click', () => this.setLayout(b.dataset.layout));
    $('preset').addEventListener('change', e => this.applyPreset(e.target.value));
    $('cine-fps').addEventListener('change', () => {
      if (this.cine) {
        this.stopCine();
        this.toggleCine();
      }
    });
    $('attr-filter').addEventListener('input', e => showAttributes($('attr-rows'), this.attributeSource, e.target.value));
    document.addEventListener('keydown', e => this.key(e));
    // Leaving the page: drop the pixel data and abort the downloads.
    window.addEventListener('pagehide', () => this.closeStudy());
  }

  key(e) {
    if ($('viewer-page').hidden || $('attributes').open) return;
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
    const pane = this.activePane;
    if (!pane?.stack) return;
    const steps = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
    if (e.key in steps) pane.scroll(steps[e.key]);
    else if (e.key === 'Home') pane.goTo(0);
    else if (e.key === 'End') pane.goTo(pane.stack.size - 1);
    else if (e.key === 'i') this.action('invert');
    else if (e.key === 'r') this.action('reset');
    else if (e.key === 'Escape') this.setTool('wl');
    else return;
    e.preventDefault();
  }
}

const app = new App();
// For tests and the console: the state of the viewer (never persisted).
window.haneulViewer = app;
export { app, studyRow };
