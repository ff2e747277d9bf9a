// One viewing pane: a stack on a canvas, its view (window, zoom, pan,
// rotation, flips, invert), overlays, measurements and pointer interaction
// (mouse, pen and touch through pointer events).
import { T, first, formatDate, num, personName, text } from './dicom.js';
import { fullRangeWindow, render } from './pixels.js';
import { drawMeasurements, label, measure } from './tools.js';
import { SliceState } from './stack.js';

const SCROLL_STEP_PX = 10; // drag or swipe distance per slice
const RENDER_DEBOUNCE_MS = 200; // low-bandwidth mode: wait for W/L to settle before asking the server

const windowKey = w => (w ? `${+w.center.toFixed(2)},${+w.width.toFixed(2)}` : 'default');

function el(tag, className, testid) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (testid) node.dataset.testid = testid;
  return node;
}

export class Viewport {
  constructor(app, number) {
    this.app = app;
    this.number = number;
    this.element = el('div', 'pane', `pane-${number}`);
    this.canvas = el('canvas', '', `pane-canvas-${number}`);
    this.ctx = this.canvas.getContext('2d');
    this.overlays = {};
    for (const corner of ['tl', 'tr', 'bl', 'br']) {
      this.overlays[corner] = el('div', `overlay ${corner}`, `overlay-${corner}-${number}`);
    }
    this.sliceText = el('div', '', `overlay-slice-${number}`);
    this.positionText = el('div', '', `overlay-position-${number}`);
    this.loadText = el('div', '', `overlay-loaded-${number}`);
    this.overlays.bl.append(this.sliceText, this.positionText, this.loadText);
    this.wlText = el('div', '', `overlay-wl-${number}`);
    this.zoomText = el('div', '', `overlay-zoom-${number}`);
    this.overlays.br.append(this.wlText, this.zoomText);
    this.message = el('div', 'pane-message', `pane-message-${number}`);
    this.progress = el('div', 'progress', `pane-progress-${number}`);
    this.progressBar = el('div');
    this.progress.append(this.progressBar);
    this.element.append(this.canvas, ...Object.values(this.overlays), this.message, this.progress);
    this.offscreen = document.createElement('canvas');
    this.offctx = this.offscreen.getContext('2d', { willReadFrequently: false });
    this.stack = null;
    this.index = 0;
    this.view = null;
    this.pointers = new Map();
    this.gesture = null;
    this.pendingAngle = null;
    this.renderedKey = null;
    this.frameScheduled = false;
    this.showMessage('Empty pane: choose a series.', 'info');
    this.bindEvents();
    new ResizeObserver(() => this.draw()).observe(this.element);
  }

  // ---- content -------------------------------------------------------------

  setStack(stack, { index } = {}) {
    this.unsubscribe?.();
    this.stack = stack;
    this.pendingAngle = null;
    this.index = Math.max(0, Math.min(index ?? 0, stack.size - 1));
    this.view = this.defaultView();
    this.renderedKey = null;
    this.renderRequest = null;
    this.unsubscribe = stack.onChange(changed => {
      this.updateProgress();
      if (changed === this.index) this.draw();
    });
    this.app.loader.prioritize(stack, this.index);
    this.updateProgress();
    this.draw();
  }

  clear() {
    this.unsubscribe?.();
    this.unsubscribe = null;
    clearTimeout(this.renderTimer);
    this.stack = null;
    this.view = null;
    this.index = 0;
    this.renderedKey = null;
    this.renderRequest = null;
    this.pendingAngle = null;
    this.gesture = null;
    this.pointers.clear();
    // Nothing of the patient stays in the overlays or the offscreen image.
    for (const node of [this.sliceText, this.positionText, this.loadText, this.wlText, this.zoomText]) node.textContent = '';
    for (const corner of ['tl', 'tr']) this.overlays[corner].textContent = '';
    this.offscreen.width = 1;
    this.offscreen.height = 1;
    this.imageData = null;
    this.renderedFrame = null;
    this.progress.hidden = true;
    this.showMessage('Empty pane: choose a series.', 'info');
    this.paint();
  }

  defaultView() {
    return {
      zoom: 1, panX: 0, panY: 0, rotation: 0, flipH: false, flipV: false, invert: false,
      center: null, width: null, preset: '', presetName: '', lut: null,
    };
  }

  resetView() {
    if (!this.view) return;
    this.view = this.defaultView();
    this.renderedKey = null;
    this.draw();
    this.app.viewChanged(this);
  }

  get slice() {
    return this.stack && this.stack.slices[this.index];
  }

  get frame() {
    return this.stack && this.stack.frames[this.index];
  }

  setWindow(center, width, preset = '', presetName = '') {
    if (!this.view) return;
    this.view.center = center;
    this.view.width = Math.max(1, width);
    this.view.preset = preset;
    this.view.presetName = presetName;
    this.view.lut = null;
    this.draw();
    this.app.viewChanged(this);
  }

  /** Apply the file's VOI LUT `index` (its data are loaded with the frames). */
  setVoiLut(index) {
    const lut = this.slice?.info.voiLuts[index];
    if (!this.view || !lut) return;
    Object.assign(this.view, this.lutView(index));
    this.draw();
    this.app.viewChanged(this);
  }

  /** A view of VOI LUT `index`; its centre and width (the table's input range) are where a W/L drag starts. */
  lutView(index) {
    const lut = this.slice.info.voiLuts[index];
    return { center: lut.first + lut.entries / 2, width: lut.entries, preset: `lut-${index}`, presetName: lut.name, lut: index };
  }

  /**
   * Low-bandwidth mode: the window to ask the server for, null for its
   * default (the file's first window, else its first VOI LUT, else the range).
   */
  renderWindow() {
    const v = this.view;
    if (!v || v.lut !== null || v.center === null) return null;
    return { center: v.center, width: v.width, fn: this.slice?.info.voiFunction };
  }

  /** What the server applies for a requested window (null: its default), for the overlay. */
  describeRendered(window, info) {
    if (window) return { text: `W: ${Math.round(window.width)} L: ${Math.round(window.center)}`, key: windowKey(window) };
    const own = info.windows[0];
    if (own) return { text: `W: ${Math.round(own.width)} L: ${Math.round(own.center)} (${own.name})`, key: windowKey(own) };
    if (info.voiLuts[0]) return { text: `VOI LUT: ${info.voiLuts[0].name}`, key: 'lut' };
    return { text: 'Full range (server)', key: 'default' };
  }

  /** The file's own window, else its VOI LUT, else the whole range of the first frame shown. */
  initialWindow(slice, frame) {
    const own = slice.info.windows[0];
    if (own) return { center: own.center, width: own.width, preset: 'file-0', presetName: own.name, lut: null };
    if (slice.info.voiLuts[0]?.data || (frame.rendered && slice.info.voiLuts[0])) return this.lutView(0);
    if (frame.rendered) return null; // the server's full range: no numbers to show
    return { ...fullRangeWindow(slice.info, frame), preset: 'full', presetName: 'Full range', lut: null };
  }

  scroll(delta, wrap = false) {
    if (!this.stack || this.stack.size === 0) return;
    let next = this.index + delta;
    if (wrap) next = ((next % this.stack.size) + this.stack.size) % this.stack.size;
    next = Math.max(0, Math.min(this.stack.size - 1, next));
    this.goTo(next);
  }

  goTo(index) {
    if (!this.stack || index === this.index || index < 0 || index >= this.stack.size) return;
    this.index = index;
    if (this.pendingAngle) this.pendingAngle = null;
    this.app.loader.prioritize(this.stack, index);
    this.draw();
  }

  measurements(create = false) {
    if (!this.stack) return [];
    let list = this.stack.measurements.get(this.index);
    if (!list && create) {
      list = [];
      this.stack.measurements.set(this.index, list);
    }
    return list || [];
  }

  clearMeasurements() {
    if (this.stack) this.stack.measurements.delete(this.index);
    this.pendingAngle = null;
    this.draw();
  }

  // ---- geometry ------------------------------------------------------------

  /** Image (column, row) → canvas CSS pixels. */
  matrix() {
    const slice = this.slice;
    const frame = this.frame;
    const width = frame?.width || slice?.info.columns || 1;
    const height = frame?.height || slice?.info.rows || 1;
    const spacing = slice?.info.pixelSpacing;
    const aspect = spacing ? spacing[0] / spacing[1] : 1;
    const cw = this.canvas.clientWidth || 1;
    const ch = this.canvas.clientHeight || 1;
    const v = this.view || this.defaultView();
    const turned = v.rotation % 2 === 1;
    const w = turned ? height * aspect : width;
    const h = turned ? width : height * aspect;
    const scale = Math.min(cw / w, ch / h) * v.zoom;
    return new DOMMatrix()
      .translate(cw / 2 + v.panX, ch / 2 + v.panY)
      .rotate(v.rotation * 90)
      .scale(scale * (v.flipH ? -1 : 1), scale * aspect * (v.flipV ? -1 : 1))
      .translate(-width / 2, -height / 2);
  }

  imageToScreen(point) {
    const p = this.matrix().transformPoint(new DOMPoint(point.x, point.y));
    return { x: p.x, y: p.y };
  }

  screenToImage(point) {
    const p = this.matrix().inverse().transformPoint(new DOMPoint(point.x, point.y));
    return { x: p.x, y: p.y };
  }

  /** Image coordinates → page (client) coordinates, for tests and tools. */
  imageToClient(x, y) {
    const rect = this.canvas.getBoundingClientRect();
    const p = this.imageToScreen({ x, y });
    return { x: rect.left + p.x, y: rect.top + p.y };
  }

  // ---- drawing -------------------------------------------------------------

  draw() {
    if (this.frameScheduled) return;
    this.frameScheduled = true;
    requestAnimationFrame(() => {
      this.frameScheduled = false;
      this.paint();
    });
  }

  showMessage(textValue, kind = 'info') {
    this.message.textContent = textValue || '';
    this.message.hidden = !textValue;
    this.message.classList.toggle('error', kind === 'error');
  }

  updateProgress() {
    const s = this.stack;
    if (!s || s.size === 0) {
      this.progress.hidden = true;
      return;
    }
    this.progress.hidden = false;
    const done = s.loaded + s.failed;
    this.progressBar.style.width = `${((100 * done) / s.size).toFixed(1)}%`;
    this.progress.classList.toggle('done', s.complete);
    this.progress.dataset.loaded = String(s.loaded);
    this.progress.dataset.total = String(s.size);
    this.loadText.textContent = s.complete
      ? s.failed
        ? `${s.failed} of ${s.size} images failed to load`
        : ''
      : `Loading ${done} / ${s.size}`;
  }

  paint() {
    const dpr = window.devicePixelRatio || 1;
    const cw = this.canvas.clientWidth;
    const ch = this.canvas.clientHeight;
    const pw = Math.max(1, Math.round(cw * dpr));
    const ph = Math.max(1, Math.round(ch * dpr));
    if (this.canvas.width !== pw || this.canvas.height !== ph) {
      this.canvas.width = pw;
      this.canvas.height = ph;
    }
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, pw, ph);
    this.element.classList.toggle('active', this.app.activePane === this);
    const stack = this.stack;
    if (!stack) {
      for (const o of Object.values(this.overlays)) o.hidden = true;
      return;
    }
    for (const o of Object.values(this.overlays)) o.hidden = false;
    if (stack.why) {
      this.writeOverlays();
      this.showMessage(stack.why, 'info');
      return;
    }
    const slice = this.slice;
    const frame = this.frame;
    const state = stack.state[this.index];
    if (state === SliceState.FAILED) {
      this.showMessage(`Image ${this.index + 1} cannot be shown:\n${stack.errors[this.index]}`, 'error');
    } else if (!frame) {
      this.showMessage(`Loading image ${this.index + 1} of ${stack.size}…`, 'info');
      this.app.loader.prioritize(stack, this.index);
    } else {
      this.showMessage('');
      if (this.view.center === null && !this.view.serverDefault) {
        const initial = this.initialWindow(slice, frame);
        if (initial) Object.assign(this.view, initial);
        else this.view.serverDefault = true;
        this.app.viewChanged(this);
      }
      this.drawFrame(slice, frame, dpr);
      this.app.imageShown(this);
    }
    this.writeOverlays();
  }

  drawFrame(slice, frame, dpr) {
    const v = this.view;
    let source;
    if (frame.rendered) {
      source = frame.bitmap;
      this.requestRendered(slice, frame);
    } else {
      const key = `${this.index}|${v.center}|${v.width}|${v.invert}|${v.lut}`;
      if (this.renderedKey !== key || this.renderedFrame !== frame) {
        if (this.offscreen.width !== frame.width || this.offscreen.height !== frame.height) {
          this.offscreen.width = frame.width;
          this.offscreen.height = frame.height;
          this.imageData = null;
        }
        if (!this.imageData) this.imageData = this.offctx.createImageData(frame.width, frame.height);
        render(slice.info, frame, v, this.imageData);
        this.offctx.putImageData(this.imageData, 0, 0);
        this.renderedKey = key;
        this.renderedFrame = frame;
      }
      source = this.offscreen;
    }
    const ctx = this.ctx;
    const m = this.matrix();
    ctx.setTransform(new DOMMatrix().scale(dpr, dpr).multiply(m));
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = 'high';
    ctx.filter = frame.rendered && v.invert ? 'invert(1)' : 'none';
    ctx.drawImage(source, 0, 0, frame.width, frame.height);
    ctx.filter = 'none';
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const list = this.measurements();
    if (list.length) drawMeasurements(ctx, list, p => this.imageToScreen(p), slice.info.pixelSpacing);
  }

  /** Low-bandwidth mode: ask the server again (debounced) when the view wants another window than the frame's. */
  requestRendered(slice, frame) {
    const stack = this.stack;
    const wanted = this.renderWindow();
    const want = this.describeRendered(wanted, slice.info).key;
    stack.renderWindow = wanted;
    const pending = want !== this.describeRendered(frame.window, slice.info).key;
    const request = `${this.index}|${want}`;
    if (!pending || this.renderRequest === request) return;
    clearTimeout(this.renderTimer);
    const index = this.index;
    this.renderTimer = setTimeout(() => {
      this.renderRequest = request;
      if (this.stack === stack) this.app.loader.refreshRendered(stack, index, wanted);
    }, RENDER_DEBOUNCE_MS);
  }

  writeOverlays() {
    const stack = this.stack;
    const ds = this.slice?.attrs || stack.first;
    const name = personName(first(ds, T.PatientName));
    const sex = text(ds, T.PatientSex);
    const birth = formatDate(text(ds, T.PatientBirthDate));
    this.overlays.tl.textContent = [name, text(ds, T.PatientID), [birth, sex].filter(Boolean).join(' ')]
      .filter(Boolean)
      .join('\n');
    const seriesNumber = text(ds, T.SeriesNumber);
    this.overlays.tr.textContent = [
      text(ds, T.StudyDescription),
      formatDate(text(ds, T.StudyDate)),
      `${text(ds, T.Modality)} S${seriesNumber} ${text(ds, T.SeriesDescription)}`.trim(),
    ]
      .filter(Boolean)
      .join('\n');
    if (stack.size === 0) {
      this.sliceText.textContent = '';
      this.positionText.textContent = '';
      this.wlText.textContent = '';
      this.zoomText.textContent = '';
      return;
    }
    const slice = this.slice;
    const frames = slice.frames > 1 ? `  (frame ${slice.frame}/${slice.frames})` : '';
    this.sliceText.textContent = `Im: ${this.index + 1} / ${stack.size}${frames}`;
    const location = slice.position ?? num(slice.attrs, T.SliceLocation, null);
    const thickness = num(slice.attrs, T.SliceThickness, null);
    this.positionText.textContent = [
      location !== null && location !== undefined ? `Pos: ${location.toFixed(2)} mm` : '',
      thickness ? `Thk: ${thickness} mm` : '',
    ]
      .filter(Boolean)
      .join('  ');
    const v = this.view;
    const frame = this.frame;
    if (frame?.rendered) {
      // What the server applied to the image on screen, and what is on its way.
      const applied = this.describeRendered(frame.window, slice.info);
      const wanted = this.describeRendered(this.renderWindow(), slice.info);
      this.wlText.textContent = applied.key === wanted.key ? applied.text : `${applied.text} → ${wanted.text}…`;
      this.wlText.dataset.pending = String(applied.key !== wanted.key);
    } else if (v.lut !== null && slice.info.voiLuts[v.lut]) {
      this.wlText.textContent = `VOI LUT: ${slice.info.voiLuts[v.lut].name}`;
      this.wlText.dataset.pending = 'false';
    } else {
      this.wlText.textContent =
        v.center === null ? '' : `W: ${Math.round(v.width)} L: ${Math.round(v.center)}${v.presetName ? ` (${v.presetName})` : ''}`;
      this.wlText.dataset.pending = 'false';
    }
    const flags = [v.invert ? 'inverted' : '', v.rotation ? `${v.rotation * 90}°` : '', v.flipH ? 'flip H' : '', v.flipV ? 'flip V' : '']
      .filter(Boolean)
      .join(' ');
    this.zoomText.textContent = `Zoom: ${v.zoom.toFixed(2)}×${flags ? ' ' + flags : ''}`;
  }

  // ---- interaction ---------------------------------------------------------

  bindEvents() {
    const c = this.canvas;
    c.addEventListener('pointerdown', e => this.pointerDown(e));
    c.addEventListener('pointermove', e => this.pointerMove(e));
    c.addEventListener('pointerup', e => this.pointerUp(e));
    c.addEventListener('pointercancel', e => this.pointerUp(e, true));
    c.addEventListener('wheel', e => this.wheel(e), { passive: false });
    c.addEventListener('contextmenu', e => e.preventDefault());
    c.addEventListener('dblclick', () => this.app.toggleMaximize?.(this));
  }

  position(e) {
    const rect = this.canvas.getBoundingClientRect();
    return { x: e.clientX - rect.left, y: e.clientY - rect.top };
  }

  pointerDown(e) {
    this.app.setActive(this);
    if (!this.stack || !this.view) return;
    e.preventDefault();
    try {
      this.canvas.setPointerCapture(e.pointerId);
    } catch {
      // a synthetic pointer may not be capturable
    }
    const p = this.position(e);
    this.pointers.set(e.pointerId, p);
    if (this.pointers.size === 2) {
      this.abandonDrawing();
      const [a, b] = [...this.pointers.values()];
      this.gesture = {
        type: 'pinch',
        distance: Math.max(1, Math.hypot(a.x - b.x, a.y - b.y)),
        mid: { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 },
        zoom: this.view.zoom,
        panX: this.view.panX,
        panY: this.view.panY,
      };
      return;
    }
    if (this.pointers.size > 2) return;
    let tool = this.app.tool;
    if (e.pointerType === 'mouse') {
      if (e.button === 1 || (e.button === 0 && e.shiftKey)) tool = 'pan';
      else if (e.button === 2 || (e.button === 0 && (e.ctrlKey || e.metaKey))) tool = 'zoom';
    }
    const g = { type: tool, last: p, accumulated: 0, k: Math.max(0.25, (this.view.width || 256) / 250) };
    const at = this.screenToImage(p);
    if (tool === 'length') {
      g.measurement = { type: 'length', points: [at, { ...at }] };
      this.measurements(true).push(g.measurement);
    } else if (tool === 'angle') {
      if (this.pendingAngle && this.measurements().includes(this.pendingAngle)) {
        g.measurement = this.pendingAngle;
        g.measurement.points.push({ ...at });
      } else {
        g.measurement = { type: 'angle', points: [at, { ...at }] };
        this.measurements(true).push(g.measurement);
      }
    }
    this.gesture = g;
    this.draw();
  }

  pointerMove(e) {
    if (!this.pointers.has(e.pointerId) || !this.gesture) return;
    const p = this.position(e);
    this.pointers.set(e.pointerId, p);
    const g = this.gesture;
    const v = this.view;
    if (g.type === 'pinch') {
      if (this.pointers.size < 2) return;
      const [a, b] = [...this.pointers.values()];
      const distance = Math.max(1, Math.hypot(a.x - b.x, a.y - b.y));
      const mid = { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
      v.zoom = Math.min(40, Math.max(0.1, (g.zoom * distance) / g.distance));
      v.panX = g.panX + mid.x - g.mid.x;
      v.panY = g.panY + mid.y - g.mid.y;
      this.draw();
      this.app.viewChanged(this);
      return;
    }
    const dx = p.x - g.last.x;
    const dy = p.y - g.last.y;
    g.last = p;
    switch (g.type) {
      case 'wl':
        if (v.center === null) return;
        v.width = Math.max(1, v.width + dx * g.k);
        v.center += dy * g.k;
        v.preset = '';
        v.presetName = '';
        v.lut = null;
        this.app.viewChanged(this);
        break;
      case 'scroll': {
        g.accumulated += dy;
        const steps = Math.trunc(g.accumulated / SCROLL_STEP_PX);
        if (steps) {
          g.accumulated -= steps * SCROLL_STEP_PX;
          this.scroll(steps);
          this.app.sliceChanged(this);
        }
        break;
      }
      case 'pan':
        v.panX += dx;
        v.panY += dy;
        break;
      case 'zoom':
        v.zoom = Math.min(40, Math.max(0.1, v.zoom * Math.exp(-dy / 150)));
        this.app.viewChanged(this);
        break;
      case 'length':
      case 'angle':
        g.measurement.points[g.measurement.points.length - 1] = this.screenToImage(p);
        break;
      default:
        break;
    }
    this.draw();
  }

  pointerUp(e, cancelled = false) {
    if (!this.pointers.has(e.pointerId)) return;
    this.pointers.delete(e.pointerId);
    const g = this.gesture;
    if (!g) return;
    if (g.type === 'pinch') {
      if (this.pointers.size === 0) this.gesture = null;
      return;
    }
    if (this.pointers.size > 0) return;
    this.gesture = null;
    const m = g.measurement;
    if (!m) return;
    if (cancelled) {
      this.removeMeasurement(m);
      return;
    }
    const [a, b] = m.points;
    const tiny = Math.hypot(a.x - b.x, a.y - b.y) < 0.5;
    if (m.type === 'length') {
      if (tiny) this.removeMeasurement(m);
      else this.app.measured(this, m, label(measure(m, this.slice.info.pixelSpacing)));
    } else if (m.points.length === 2) {
      if (tiny) this.removeMeasurement(m);
      else this.pendingAngle = m;
    } else {
      this.pendingAngle = null;
      this.app.measured(this, m, label(measure(m, this.slice.info.pixelSpacing)));
    }
    this.draw();
  }

  abandonDrawing() {
    const m = this.gesture?.measurement;
    if (m && m !== this.pendingAngle) this.removeMeasurement(m);
    else if (m) m.points.length = Math.min(m.points.length, 2);
    this.gesture = null;
  }

  removeMeasurement(m) {
    const list = this.measurements();
    const at = list.indexOf(m);
    if (at >= 0) list.splice(at, 1);
    this.draw();
  }

  wheel(e) {
    if (!this.stack || !this.view) return;
    e.preventDefault();
    this.app.setActive(this);
    if (e.ctrlKey || e.metaKey || e.altKey) {
      const p = this.position(e);
      const v = this.view;
      const zoom = Math.min(40, Math.max(0.1, v.zoom * Math.exp(-e.deltaY / 400)));
      const cx = this.canvas.clientWidth / 2 + v.panX;
      const cy = this.canvas.clientHeight / 2 + v.panY;
      // Keep the point under the cursor in place.
      v.panX += (p.x - cx) * (1 - zoom / v.zoom);
      v.panY += (p.y - cy) * (1 - zoom / v.zoom);
      v.zoom = zoom;
      this.draw();
      this.app.viewChanged(this);
      return;
    }
    if (e.deltaY === 0) return;
    this.scroll(e.deltaY > 0 ? 1 : -1);
    this.app.sliceChanged(this);
  }
}
