// A displayable stack: the frames of one series in slice order, and the
// background loader that fetches them with limited concurrency.
import { T, first, frameAttributes, hasPixels, num, nums, describeNonImage } from './dicom.js';
import { decodeFrame, imageInfo, resolveLuts, unsupported } from './pixels.js';

const NONE = 0, QUEUED = 1, LOADING = 2, DONE = 3, FAILED = 4;
// Frames of one multi-frame instance asked in one request (frames/1,2,3,…).
const BATCH_FRAMES = 16;
const BATCH_BYTES = 16 << 20;

function normalOf(ds) {
  const o = nums(ds, T.ImageOrientationPatient);
  if (o.length !== 6) return null;
  const n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
  return Math.hypot(...n) > 0.5 ? n : null;
}

export class Stack {
  /** `metadata`: the series metadata (DICOM JSON, one object per instance). */
  constructor(api, studyUid, seriesUid, metadata) {
    this.api = api;
    this.studyUid = studyUid;
    this.seriesUid = seriesUid;
    this.metadata = metadata;
    this.slices = [];
    this.nonImage = [];
    for (const ds of metadata) {
      if (!hasPixels(ds) && !num(ds, T.Rows, 0)) {
        this.nonImage.push(ds);
        continue;
      }
      const frames = Math.max(1, num(ds, T.NumberOfFrames, 1));
      for (let f = 0; f < frames; f++) {
        const attrs = frames > 1 ? frameAttributes(ds, f) : frameAttributes(ds, 0);
        this.slices.push({
          ds,
          attrs,
          sop: String(first(ds, T.SOPInstanceUID)),
          frame: f + 1,
          frames,
          info: imageInfo(attrs),
          instanceNumber: num(ds, T.InstanceNumber, 0),
          ipp: nums(attrs, T.ImagePositionPatient),
          normal: normalOf(attrs),
        });
      }
    }
    this.sortSlices();
    this.first = this.metadata[0] || {};
    const n = this.slices.length;
    this.frames = new Array(n);
    this.state = new Uint8Array(n);
    this.errors = new Array(n);
    this.loaded = 0;
    this.failed = 0;
    this.listeners = new Set();
    this.measurements = new Map(); // slice index → [{type, points}]
    this.why = n === 0 ? this.describeEmpty() : null;
  }

  describeEmpty() {
    if (this.metadata.length === 0) return 'This series has no instances.';
    return `This series holds ${describeNonImage(this.nonImage[0] || this.metadata[0])}, which has no image to show.`;
  }

  sortSlices() {
    const normal = this.slices.find(s => s.normal)?.normal;
    const all = normal && this.slices.every(s => s.ipp.length === 3);
    for (const s of this.slices) {
      s.position = all ? s.ipp[0] * normal[0] + s.ipp[1] * normal[1] + s.ipp[2] * normal[2] : null;
    }
    const distinct = all && new Set(this.slices.map(s => s.position.toFixed(4))).size === this.slices.length;
    this.slices.sort((a, b) => {
      if (distinct) return a.position - b.position;
      return a.instanceNumber - b.instanceNumber || a.frame - b.frame || (a.sop < b.sop ? -1 : a.sop > b.sop ? 1 : 0);
    });
  }

  get size() {
    return this.slices.length;
  }

  get complete() {
    return this.loaded + this.failed >= this.slices.length;
  }

  onChange(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  notify(index) {
    for (const fn of this.listeners) fn(index);
  }
}

/** Fetches frames, at most `concurrency` at a time; the most wanted first. */
export class Loader {
  constructor(api, concurrency = 6) {
    this.api = api;
    this.concurrency = concurrency;
    this.queue = []; // {stack, index}
    this.running = 0;
    this.lowBandwidth = false;
    this.controller = new AbortController();
  }

  /** Queue every slice of a stack, nearest to `from` first. */
  enqueueAll(stack, from = 0) {
    const order = [...stack.slices.keys()].sort((a, b) => Math.abs(a - from) - Math.abs(b - from) || a - b);
    for (const index of order) {
      if (stack.state[index] === NONE) {
        stack.state[index] = QUEUED;
        this.queue.push({ stack, index });
      }
    }
    this.pump();
  }

  /** Fetch this slice next (the one on screen). */
  prioritize(stack, index) {
    if (index < 0 || index >= stack.size) return;
    const state = stack.state[index];
    if (state === DONE || state === LOADING || state === FAILED) return;
    const at = this.queue.findIndex(task => task.stack === stack && task.index === index);
    if (at >= 0) this.queue.splice(at, 1);
    stack.state[index] = QUEUED;
    this.queue.unshift({ stack, index });
    this.pump();
  }

  /** Forget every stack (closing the study): abort what is in flight, empty the queue. */
  reset() {
    this.controller.abort();
    this.controller = new AbortController();
    for (const task of this.queue) task.stack.state[task.index] = NONE;
    this.queue = [];
    this.running = 0;
  }

  pump() {
    while (this.running < this.concurrency && this.queue.length) {
      const task = this.queue.shift();
      if (!this.lowBandwidth) this.batch(task);
      this.running++;
      this.fetch(task, this.controller).finally(() => {
        if (task.controller === this.controller) this.running--;
        this.pump();
      });
    }
  }

  /** Add to `task` the queued frames of the same multi-frame instance (task.indexes). */
  batch(task) {
    const { stack, index } = task;
    const slice = stack.slices[index];
    task.indexes = [index];
    if (slice.frames < 2) return;
    const info = slice.info;
    const frameBytes = Math.max(1, (info.rows * info.columns * info.samples * info.bitsAllocated) / 8);
    const most = Math.max(1, Math.min(BATCH_FRAMES, Math.floor(BATCH_BYTES / frameBytes)));
    for (let i = 0; i < this.queue.length && task.indexes.length < most; ) {
      const other = this.queue[i];
      if (other.stack === stack && stack.slices[other.index].sop === slice.sop) {
        task.indexes.push(other.index);
        this.queue.splice(i, 1);
      } else {
        i++;
      }
    }
  }

  async fetch(task, controller) {
    task.controller = controller;
    const { stack } = task;
    const indexes = task.indexes || [task.index];
    for (const index of indexes) stack.state[index] = LOADING;
    const settle = (index, frame, error) => {
      if (error) {
        stack.state[index] = FAILED;
        stack.errors[index] = error.message || String(error);
        stack.failed++;
      } else {
        stack.frames[index] = frame;
        stack.state[index] = DONE;
        stack.loaded++;
      }
      stack.notify(index);
    };
    try {
      if (this.lowBandwidth) {
        const index = indexes[0];
        const slice = stack.slices[index];
        const window = stack.renderWindow || null;
        const bitmap = await this.api.renderedFrame(stack.studyUid, stack.seriesUid, slice.sop, slice.frame, window, controller.signal);
        if (controller.signal.aborted) return;
        settle(index, { bitmap, width: bitmap.width, height: bitmap.height, rendered: true, window });
        return;
      }
      const slices = indexes.map(i => stack.slices[i]);
      const problem = unsupported(slices[0].info);
      if (problem) throw new Error(problem);
      await Promise.all(slices.map(s => resolveLuts(this.api, s.info, controller.signal)));
      const parts = await this.api.frames(stack.studyUid, stack.seriesUid, slices[0].sop, slices.map(s => s.frame), controller.signal);
      if (controller.signal.aborted) return;
      indexes.forEach((index, i) => {
        let frame;
        try {
          frame = decodeFrame(slices[i].info, parts[i]);
        } catch (error) {
          return settle(index, null, error);
        }
        settle(index, frame, null);
      });
    } catch (error) {
      if (error.name === 'AbortError' || controller.signal.aborted) return;
      for (const index of indexes) settle(index, null, error);
    }
  }

  /**
   * Low-bandwidth mode: fetch the rendered frame again with another window
   * (null: the server's default), replacing the one shown when it arrives.
   */
  async refreshRendered(stack, index, window) {
    const slice = stack.slices[index];
    const controller = this.controller;
    try {
      const bitmap = await this.api.renderedFrame(stack.studyUid, stack.seriesUid, slice.sop, slice.frame, window, controller.signal);
      if (controller.signal.aborted || stack.state[index] !== DONE || !stack.frames[index]?.rendered) return;
      stack.frames[index] = { bitmap, width: bitmap.width, height: bitmap.height, rendered: true, window };
    } catch (error) {
      if (error.name === 'AbortError' || controller.signal.aborted) return;
      stack.errors[index] = error.message || String(error);
    }
    stack.notify(index);
  }
}

export const SliceState = { NONE, QUEUED, LOADING, DONE, FAILED };
