// The built-in viewer in a real browser, run by crates/haneul/tests/viewer_e2e.rs:
//
//   node viewer.mjs flows HTTP_ROOT EXPECTED_JSON OUT_DIR
//   node viewer.mjs bench HTTP_ROOT EXPECTED_JSON OUT_DIR
//   node viewer.mjs auth  HTTP_ROOT EXPECTED_JSON OUT_DIR
//
// Credentials come in the environment: HANEUL_E2E_USER and HANEUL_E2E_PASSWORD
// (a clinician, for every mode), and for `auth` HANEUL_E2E_ADMIN (an
// administrator), HANEUL_E2E_RESEARCHER, HANEUL_E2E_LOCKED (an account to lock
// out), all with HANEUL_E2E_PASSWORD, and HANEUL_E2E_FIRST_ADMIN with
// HANEUL_E2E_FIRST_ADMIN_PASSWORD (an account that must change its password).
//
// `flows`, on a desktop window and then on an emulated tablet (1024×768,
// touch, landscape and portrait), each signed in through the sign-in form:
// search the Korean name, open the CT, scroll
// to a slice (overlay and the slice's marker pixels), window presets and drag
// (disc bright under soft tissue, dark under bone), length and angle
// measurements (the disc's 80 mm within 1 %), 1×2 layout with the prior,
// invert/rotate/reset, cine, attribute browser, the patient timeline from the
// study list, low-bandwidth mode (server-rendered JPEG re-requested with the
// window), RGB pixels, VOI LUTs, PALETTE COLOR (8- and 16-bit), YBR_FULL_422
// (uncompressed and JPEG), a multi-frame object fetched in batches, an SR's message, a failing frame's message,
// nothing in browser storage; the viewer's HTTP headers (CSP, ETag/304,
// gzip) and the JSON 404.
// `bench`: open the large CT, report time to first image and to full stack.
// `auth` (in Korean locale and Seoul time): the sign-in form before anything;
// a wrong password (message, no data, no cookie); a lockout (message with the
// wait from Retry-After); signing in (HttpOnly SameSite=Strict cookie, CSRF
// token in memory only); signing out (X-CSRF-Token sent, everything of the
// patient gone from page and memory, the old cookie refused: printed as
// OLD_COOKIE for the Rust side to try too); a session ended elsewhere (the
// next request's 401 brings back the form, "session ended"); a researcher's
// readable 403; a forced password change; the administrator's audit page
// finding the clinician's sign-ins, queries and failures, which the clinician
// never sees.
// Screenshots go to OUT_DIR. Exits 1 with "VIEWER E2E FAILED: ...".
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [mode, root, expectedPath, outDir] = process.argv.slice(2);
if (!outDir || !['flows', 'bench', 'auth'].includes(mode)) {
  console.error('usage: node viewer.mjs flows|bench|auth HTTP_ROOT EXPECTED_JSON OUT_DIR');
  process.exit(2);
}
const env = name => {
  const value = process.env[name];
  if (!value) {
    console.error(`VIEWER E2E FAILED: ${name} is not set`);
    process.exit(2);
  }
  return value;
};
const USER = env('HANEUL_E2E_USER');
const PASSWORD = env('HANEUL_E2E_PASSWORD');
const expected = JSON.parse(readFileSync(expectedPath, 'utf8'));
const chromiumPath = process.env.HANEUL_CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = 30_000;
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
const step = text => console.log(`[${elapsed()}] ${text}`);

const consoleLines = [];
const pageErrors = [];
const httpErrors = []; // {status, method, path, text}: every answer ≥ 400 the pages got
const expectedHttp = []; // {status, method, path: RegExp, why}: the ones the test provokes
let browser;
let page;

async function fail(message) {
  console.log(`\nVIEWER E2E FAILED: ${message}\n`);
  if (page) {
    try {
      const file = join(outDir, 'failure.png');
      await page.screenshot({ path: file, timeout: 10_000 });
      console.log(`screenshot at failure: ${file}`);
    } catch (e) {
      console.log(`(no failure screenshot: ${e.message})`);
    }
  }
  const httpLines = httpErrors.map(e => e.text);
  const expectedLines = expectedHttp.map(e => `HTTP ${e.status} ${e.method} ${e.path} (${e.why})`);
  for (const [title, lines] of [['HTTP errors', httpLines], ['expected HTTP errors', expectedLines], ['page errors', pageErrors], ['console', consoleLines]]) {
    console.log(`---- ${title} (${lines.length}) ----`);
    for (const line of lines.slice(-60)) console.log(line);
  }
  await browser?.close().catch(() => {});
  process.exit(1);
}

function check(condition, message) {
  if (!condition) return fail(message);
}

setTimeout(() => fail(`gave up after ${elapsed()}`), 150_000).unref();

async function waitInPage(what, fn, arg, timeout = TIMEOUT) {
  try {
    return await (await page.waitForFunction(fn, arg, { timeout, polling: 50 })).jsonValue();
  } catch (e) {
    return fail(`${what} (waited ${timeout / 1000} s: ${e.message.split('\n')[0]})`);
  }
}

const testid = id => `[data-testid="${id}"]`;
const textOf = async id => (await page.textContent(testid(id)))?.trim() ?? '';

async function waitText(id, pattern, what) {
  await waitInPage(
    `${what}: ${id} should match ${pattern}`,
    ([sel, source]) => new RegExp(source).test(document.querySelector(sel)?.textContent ?? ''),
    [testid(id), pattern.source],
  );
  return textOf(id);
}

/** RGB of the canvas at image coordinates (x, y) of pane n, after the next paint. */
async function pixel(n, x, y) {
  return page.evaluate(async ([n, x, y]) => {
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    const vp = window.haneulViewer.panes[n];
    const p = vp.imageToScreen({ x, y });
    const dpr = window.devicePixelRatio || 1;
    const d = vp.canvas.getContext('2d').getImageData(Math.floor(p.x * dpr), Math.floor(p.y * dpr), 1, 1).data;
    return [d[0], d[1], d[2]];
  }, [n, x, y]);
}

async function client(n, x, y) {
  return page.evaluate(([n, x, y]) => window.haneulViewer.panes[n].imageToClient(x, y), [n, x, y]);
}

/** Client coordinates of the disc's left and right edges on the row through its centre (half-maximum, sub-pixel). */
async function discEdges(n) {
  return page.evaluate(async n => {
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    const vp = window.haneulViewer.panes[n];
    const dpr = window.devicePixelRatio || 1;
    const size = vp.slice.info.columns;
    const centre = vp.imageToScreen({ x: size / 2, y: size / 2 });
    const row = Math.floor(centre.y * dpr);
    const w = vp.canvas.width;
    const data = vp.canvas.getContext('2d').getImageData(0, row, w, 1).data;
    const v = i => data[i * 4];
    const cx = Math.floor(centre.x * dpr);
    const body = vp.imageToScreen({ x: size / 2 - size * 0.37, y: size / 2 });
    const disc = v(cx);
    const water = v(Math.floor(body.x * dpr));
    const t = (disc + water) / 2;
    let i = cx;
    while (i > 0 && v(i) >= t) i--;
    const left = i + 0.5 + (t - v(i)) / (v(i + 1) - v(i));
    let j = cx;
    while (j < w - 1 && v(j) >= t) j++;
    const right = j - 0.5 + (v(j - 1) - t) / (v(j - 1) - v(j));
    const rect = vp.canvas.getBoundingClientRect();
    return { left: rect.left + left / dpr, right: rect.left + right / dpr, y: rect.top + (row + 0.5) / dpr, disc, water };
  }, n);
}

async function shot(name) {
  await page.screenshot({ path: join(outDir, `${name}.png`) });
}

function watch(p) {
  p.on('console', m => {
    if (m.type() === 'error' || m.type() === 'warning') consoleLines.push(`${m.type()}: ${m.text().slice(0, 300)}`);
  });
  p.on('pageerror', e => pageErrors.push(String(e.stack || e).slice(0, 800)));
  p.on('response', r => {
    if (r.status() >= 400) {
      const method = r.request().method();
      httpErrors.push({ status: r.status(), method, path: new URL(r.url()).pathname, text: `HTTP ${r.status()} ${method} ${r.url()}` });
    }
  });
  p.on('requestfailed', r => {
    const why = r.failure()?.errorText ?? '';
    if (!/ERR_ABORTED/.test(why)) httpErrors.push({ status: 0, method: r.method(), path: '', text: `FAILED ${r.method()} ${r.url()}: ${why}` });
  });
}

/** The test provokes an error answer: `status` to `method` on a path matching `path`. */
function expectHttp(status, method, path, why) {
  expectedHttp.push({ status, method, path, why });
}

/** Every error answer was provoked by the test, and every provoked one came: as many, no others. */
function checkHttpErrors() {
  const unmatched = [...expectedHttp];
  const unexpected = [];
  for (const error of httpErrors) {
    const at = unmatched.findIndex(e => e.status === error.status && e.method === error.method && e.path.test(error.path));
    if (at >= 0) unmatched.splice(at, 1);
    else unexpected.push(error.text);
  }
  check(unexpected.length === 0, `unexpected HTTP errors:\n${unexpected.join('\n')}`);
  check(unmatched.length === 0, `HTTP errors that should have happened but did not:\n${unmatched.map(e => `${e.status} ${e.method} ${e.path} (${e.why})`).join('\n')}`);
}

const visible = id => page.isVisible(testid(id));

/** The sign-in form is on screen and nothing of the archive is. */
async function atSignInForm(what, messagePattern) {
  await waitInPage(`${what}: the sign-in form`, () => {
    const shown = id => !document.querySelector(`[data-testid="${id}"]`).closest('[hidden]');
    return shown('signin-form') && !shown('studies-page') && !shown('viewer-page') && !shown('audit-page') && document.body.classList.contains('signed-out');
  });
  check(!(await visible('nav-studies')) && !(await visible('sign-out')) && !(await visible('low-bandwidth')), `${what}: the viewer's chrome is hidden while signed out`);
  const rows = await page.$$eval('[data-testid="study-row"], [data-testid="thumb"], [data-testid="audit-row"], [data-testid="timeline-item"]', e => e.length);
  check(rows === 0, `${what}: ${rows} rows of patient data on the sign-in page`);
  if (messagePattern) await waitText('signin-message', messagePattern, what);
}

/** Fill and send the sign-in form (tapping on a touch device). */
async function submitSignIn(user, password, tap = false) {
  await page.fill(testid('signin-user'), user);
  await page.fill(testid('signin-password'), password);
  if (tap) await page.tap(testid('signin-submit'));
  else await page.click(testid('signin-submit'));
}

/**
 * Load the page without a session, sign in through the form and wait for the
 * study list. Returns the login answer (with the CSRF token).
 */
async function signIn(user, password, { tap = false, role = 'clinician', load = true } = {}) {
  if (load) {
    await page.goto(root + '/', { waitUntil: 'domcontentloaded' });
    expectHttp(401, 'GET', /^\/api\/session$/, 'the page asks who it is before anyone signed in');
  }
  await atSignInForm(`signing in as ${user}`);
  const answer = page.waitForResponse(r => r.url().endsWith('/api/login') && r.request().method() === 'POST', { timeout: TIMEOUT });
  await submitSignIn(user, password, tap);
  const response = await answer;
  check(response.status() === 200, `signing in as ${user}: HTTP ${response.status()}`);
  const session = await response.json();
  await waitInPage(`signed in as ${user}: the study list`, () =>
    !document.body.classList.contains('signed-out') && !document.querySelector('[data-testid="studies-page"]').hidden);
  const who = await textOf('user-info');
  check(who === `${user} · ${role}`, `the chrome names the user and role: ${JSON.stringify(who)}`);
  check(await visible('sign-out'), 'a sign-out button');
  check(await page.evaluate(() => document.querySelector('[data-testid="signin-password"]').value === ''), 'the password does not stay in the form');
  return session;
}

async function newPage(options) {
  const context = await browser.newContext(options);
  page = await context.newPage();
  watch(page);
  return context;
}

/** Search the Korean name and open the current CT. */
async function searchAndOpen(tap) {
  await page.goto(root + '/', { waitUntil: 'domcontentloaded' });
  await waitInPage('the study list shows the stored studies', () => document.querySelectorAll('[data-testid="study-row"]').length >= 3);
  await page.fill(testid('search-name'), expected.koreanSearch);
  if (tap) await page.tap(testid('search-submit'));
  else await page.click(testid('search-submit'));
  await waitInPage(
    'searching the Korean name lists exactly its two studies',
    name => {
      const rows = [...document.querySelectorAll('[data-testid="study-row"]')];
      return rows.length === 2 && rows.every(r => r.textContent.includes(name));
    },
    expected.koreanName,
  );
  const row = `[data-testid="study-row"][data-study-uid="${expected.current.study}"]`;
  if (tap) await page.tap(row);
  else await page.click(row);
  await waitText('overlay-slice-0', /^Im: 1 \/ 40$/, 'the CT opens at its first image');
  await waitInPage('the first image is drawn', () => window.haneulViewer.timings.firstImage !== undefined);
  const tl = await textOf('overlay-tl-0');
  check(tl.includes(expected.koreanName) && tl.includes(expected.patientId), `patient overlay: ${JSON.stringify(tl)}`);
}

async function measureDisc(what, drag) {
  await page.selectOption(testid('preset'), 'ct-abdomen');
  await waitText('overlay-wl-0', /W: 400 L: 50/, 'abdomen preset before measuring');
  const edges = await discEdges(0);
  check(edges.disc > edges.water + 60, `${what}: the disc does not stand out (${JSON.stringify(edges)})`);
  await drag(edges);
  const m = await waitInPage(`${what}: a length measurement`, () => window.haneulViewer.lastMeasurement?.type === 'length' && window.haneulViewer.lastMeasurement);
  const mm = parseFloat(m.label);
  step(`${what}: disc measured ${m.label} (expected ${expected.discMm} mm)`);
  check(m.label.endsWith('mm') && Math.abs(mm - expected.discMm) <= expected.discMm * 0.01,
    `${what}: the disc measures ${m.label}, expected ${expected.discMm} mm within 1 %`);
}

async function noStorage(what) {
  const stored = await page.evaluate(async () => ({
    local: localStorage.length,
    session: sessionStorage.length,
    idb: (await indexedDB.databases()).length,
  }));
  check(stored.local === 0 && stored.session === 0 && stored.idb === 0, `${what}: browser storage is not empty: ${JSON.stringify(stored)}`);
}

// ---------------------------------------------------------------------------

async function desktop() {
  const context = await newPage({ viewport: { width: 1400, height: 900 }, deviceScaleFactor: 1 });
  step(`desktop: sign in as ${USER}, study list`);
  await signIn(USER, PASSWORD);
  check(!(await visible('nav-audit')), 'a clinician has no audit page');
  await waitInPage('the study list shows the stored studies', () => document.querySelectorAll('[data-testid="study-row"]').length === 3);
  const csp = (await page.request.get(root + '/')).headers()['content-security-policy'] ?? '';
  check(csp.startsWith("default-src 'self'"), `Content-Security-Policy: ${csp}`);
  const asset = await page.request.get(root + '/viewer/app.js');
  const etag = asset.headers().etag;
  const again = await page.request.get(root + '/viewer/app.js', { headers: { 'If-None-Match': etag } });
  check(asset.headers()['content-type']?.startsWith('text/javascript') && again.status() === 304, `app.js: ${asset.headers()['content-type']}, revalidation ${again.status()}`);
  for (const path of ['/', '/viewer/app.js', '/viewer/viewer.css']) {
    const gz = await page.request.get(root + path, { headers: { 'Accept-Encoding': 'gzip' } });
    check(gz.headers()['content-encoding'] === 'gzip', `${path} is sent gzip-compressed: ${JSON.stringify(gz.headers()['content-encoding'])}`);
  }
  const missing = await page.request.get(root + '/no/such/path');
  check(missing.status() === 404 && (await missing.json()).status === 404, `unknown paths keep the JSON 404: ${missing.status()}`);
  // Latin prefix, wildcard, modality filter.
  for (const [field, value, count] of [['search-name', 'Hong', 1], ['search-name', '*민준', 2]]) {
    await page.fill(testid('search-name'), value);
    await page.click(testid('search-submit'));
    await waitInPage(`searching ${value} gives ${count} studies`, n => document.querySelectorAll('[data-testid="study-row"]').length === n &&
      !document.querySelector('[data-testid="list-message"]').textContent.startsWith('Searching'), count);
    void field;
  }
  await page.fill(testid('search-name'), '');
  await page.selectOption(testid('search-modality'), 'MR');
  await page.click(testid('search-submit'));
  await waitInPage('the MR filter gives the one MR study', () => {
    const rows = document.querySelectorAll('[data-testid="study-row"]');
    return rows.length === 1 && rows[0].textContent.includes('Hong');
  });
  await page.selectOption(testid('search-modality'), '');
  await page.click(testid('search-clear'));
  await waitInPage('clearing lists all studies', () => document.querySelectorAll('[data-testid="study-row"]').length === 3);
  await page.click(testid('sort-date'));
  const dates = await page.$$eval('[data-testid="study-row"] td:nth-child(3)', tds => tds.map(td => td.textContent));
  check(dates.join() === [...dates].sort().join(), `sorting by date (ascending): ${dates}`);
  await shot('desktop-study-list');

  step('desktop: patient timeline from the study list, one click to the prior');
  await page.click(`[data-testid="study-row"][data-study-uid="${expected.current.study}"] [data-testid="patient-timeline-open"]`);
  await waitInPage('the patient timeline lists both studies of the patient, newest first', ([current, prior]) => {
    const items = [...document.querySelectorAll('[data-testid="patient-timeline-item"]')];
    return items.length === 2 && items[0].dataset.studyUid === current && items[1].dataset.studyUid === prior;
  }, [expected.current.study, expected.prior.study]);
  check(!(await page.isVisible(testid('viewer-page'))), 'clicking the patient name shows the timeline, not a study');
  await shot('desktop-patient-timeline');
  await page.click(`[data-testid="patient-timeline-item"][data-study-uid="${expected.prior.study}"]`);
  await waitText('overlay-slice-0', /^Im: 1 \/ 5$/, 'one click on the prior opens it');
  check((await textOf('overlay-tr-0')).includes(expected.prior.description), 'the prior study is shown');
  await page.waitForFunction(() => window.haneulViewer.panes[0].frame, null, { timeout: TIMEOUT });
  {
    // The prior's disc is 50 mm: bright in the centre, water 32.5 mm out.
    const centre = await pixel(0, 128, 128);
    const out = await pixel(0, 128, 128 + 65);
    check(centre[0] > 200 && out[0] < 150, `the prior's pixels: centre ${centre}, 32.5 mm out ${out}`);
  }

  step('desktop: search the Korean name, open the CT');
  await searchAndOpen(false);
  const wl = await textOf('overlay-wl-0');
  check(wl.startsWith('W: 350 L: 40'), `the file's window applies first: ${wl}`);

  step('desktop: scroll to slice 20 (wheel), arrow keys');
  const centre = await client(0, 128, 128);
  await page.mouse.move(centre.x, centre.y);
  for (let i = 0; i < 19; i++) await page.mouse.wheel(0, 100);
  await waitText('overlay-slice-0', /^Im: 20 \/ 40$/, 'nineteen wheel steps');
  await page.keyboard.press('ArrowDown');
  await waitText('overlay-slice-0', /^Im: 21 \/ 40$/, 'arrow down');
  await page.keyboard.press('ArrowUp');
  await waitText('overlay-slice-0', /^Im: 20 \/ 40$/, 'arrow up');
  const position = await textOf('overlay-position-0');
  check(position.includes('Pos: 47.50 mm'), `slice 20 lies at 47.5 mm (sorted by position): ${position}`);
  // Slice 20 (index 19) has its marker at columns 103..108; slice 1's at 8..13 is air here.
  const marker = await pixel(0, 106, expected.markerRow);
  const otherMarker = await pixel(0, 11, expected.markerRow);
  check(marker[0] > 200 && otherMarker[0] < 30, `slice 20's marker: ${marker} there, ${otherMarker} where slice 1's is`);

  step('desktop: window presets');
  await page.selectOption(testid('preset'), 'ct-abdomen');
  await waitText('overlay-wl-0', /W: 400 L: 50/, 'abdomen preset');
  const softDisc = await pixel(0, 128, 128);
  const softWater = await pixel(0, 128, 128 + 95);
  await shot('desktop-soft-tissue');
  await page.selectOption(testid('preset'), 'ct-bone');
  await waitText('overlay-wl-0', /W: 2000 L: 300/, 'bone preset');
  const boneDisc = await pixel(0, 128, 128);
  await shot('desktop-bone');
  step(`disc grey level: ${softDisc[0]} soft tissue, ${boneDisc[0]} bone (water ${softWater[0]})`);
  check(softDisc[0] > 200, `the disc (${expected.discHu} HU) is bright under the soft-tissue window: ${softDisc}`);
  check(boneDisc[0] < 128, `the disc is dark under the bone window: ${boneDisc}`);
  check(Math.abs(softWater[0] - 96) <= 3, `water under W 400 / L 50 is grey 96: ${softWater}`);

  step('desktop: window by drag');
  await page.mouse.move(centre.x, centre.y);
  await page.mouse.down();
  await page.mouse.move(centre.x - 100, centre.y - 100, { steps: 10 });
  await page.mouse.up();
  const dragged = await textOf('overlay-wl-0');
  const [, w, l] = /W: (-?\d+) L: (-?\d+)/.exec(dragged) ?? [];
  // 8 HU per pixel for a 2000 HU window: left narrows, up lowers the level.
  check(Math.abs(Number(w) - 1200) <= 20 && Math.abs(Number(l) + 500) <= 20, `after dragging left and up by 100 px: ${dragged}`);
  const dragDisc = await pixel(0, 128, 128);
  check(dragDisc[0] > 240, `a lower level brightens the disc: ${dragDisc}`);

  step('desktop: length and angle');
  await page.click(testid('tool-length'));
  await measureDisc('desktop', async e => {
    await page.mouse.move(e.left, e.y);
    await page.mouse.down();
    await page.mouse.move(e.right, e.y, { steps: 8 });
    await page.mouse.up();
  });
  await page.click(testid('tool-angle'));
  const a = await client(0, 128, 60);
  const vertex = await client(0, 128, 128);
  const c = await client(0, 200, 128);
  await page.mouse.move(a.x, a.y);
  await page.mouse.down();
  await page.mouse.move(vertex.x, vertex.y, { steps: 5 });
  await page.mouse.up();
  await page.mouse.move(c.x, c.y);
  await page.mouse.down();
  await page.mouse.up();
  const angle = await waitInPage('an angle measurement', () => window.haneulViewer.lastMeasurement?.type === 'angle' && window.haneulViewer.lastMeasurement.label);
  check(Math.abs(parseFloat(angle) - 90) < 1, `the angle measures ${angle}, expected 90°`);
  await shot('desktop-measurements');

  step('desktop: attribute browser');
  await page.click(testid('action-attributes'));
  await waitInPage('the attribute browser lists the patient name', name =>
    [...document.querySelectorAll('[data-testid="attr-rows"] tr[data-tag="00100010"]')].some(tr => tr.textContent.includes(name)), '김^민준');
  await page.fill(testid('attr-filter'), 'PixelSpacing');
  await waitInPage('filtering the attributes', () => {
    const rows = document.querySelectorAll('[data-testid="attr-rows"] tr');
    return rows.length === 1 && rows[0].textContent.includes('0.5\\0.5');
  });
  await shot('desktop-attributes');
  await page.click(testid('attr-close'));

  step('desktop: 1×2 layout with the prior');
  await page.click(testid('layout-1x2'));
  await page.click(`[data-testid="timeline-item"][data-study-uid="${expected.prior.study}"]`);
  await waitText('overlay-slice-1', /^Im: 1 \/ 5$/, 'the prior opens in the second pane');
  check((await textOf('overlay-tr-1')).includes(expected.prior.description), 'the second pane shows the prior study');
  check((await textOf('overlay-slice-0')).startsWith('Im: 20 / 40'), 'the first pane keeps its slice');
  await page.waitForFunction(() => window.haneulViewer.panes[1].frame, null, { timeout: TIMEOUT });
  // 65 px from the centre: inside the current disc (80 mm), outside the prior's (50 mm).
  const currentAt = await pixel(0, 128, 128 + 65);
  const priorAt = await pixel(1, 128, 128 + 65);
  const priorDisc = await pixel(1, 128, 128);
  check(currentAt[0] > 200 && priorAt[0] < 150 && priorDisc[0] > 200, `current ${currentAt}, prior ${priorAt} (disc ${priorDisc}) at 32.5 mm from the centre`);
  await page.click(testid('action-invert'));
  const inverted = await pixel(1, 128, 128);
  check(Math.abs(inverted[0] - (255 - priorDisc[0])) <= 2, `invert: ${priorDisc} became ${inverted}`);
  await page.click(testid('action-rotate'));
  await waitText('overlay-zoom-1', /90°/, 'rotation');
  await page.click(testid('action-reset'));
  await waitText('overlay-zoom-1', /^Zoom: 1\.00×$/, 'reset');
  await page.click(testid('action-cine'));
  await waitText('overlay-slice-1', /^Im: [3-5] \/ 5$/, 'cine plays the prior');
  await page.click(testid('action-cine'));
  await shot('desktop-compare');

  step('desktop: low-bandwidth mode (server-rendered JPEG)');
  let rendered = 0;
  page.on('request', r => {
    if (/\/frames\/\d+\/rendered/.test(r.url())) rendered++;
  });
  await page.check(testid('low-bandwidth'));
  await page.waitForFunction(() => window.haneulViewer.panes[1].frame?.rendered, null, { timeout: TIMEOUT });
  const jpegDisc = await pixel(1, 128, 128);
  check(rendered > 0 && jpegDisc[0] > 150, `rendered frames: ${rendered} requests, disc ${jpegDisc}`);
  // Window changes ask the server for the image again; the overlay shows the applied window.
  const windowed = [];
  page.on('request', r => {
    const m = /\/frames\/\d+\/rendered\?.*window=([^&]+)/.exec(r.url());
    if (m) windowed.push(decodeURIComponent(m[1]));
  });
  const settled = async (pattern, what) => {
    await waitInPage(`${what}: overlay-wl-1 should match ${pattern} with nothing pending`, source => {
      const wl = document.querySelector('[data-testid="overlay-wl-1"]');
      return wl.dataset.pending === 'false' && new RegExp(source).test(wl.textContent);
    }, pattern.source);
  };
  await page.selectOption(testid('preset'), 'ct-abdomen');
  await settled(/^W: 400 L: 50$/, 'low bandwidth, abdomen preset');
  const lbSoft = await pixel(1, 128, 128);
  await page.selectOption(testid('preset'), 'ct-bone');
  await settled(/^W: 2000 L: 300$/, 'low bandwidth, bone preset');
  const lbBone = await pixel(1, 128, 128);
  await shot('desktop-low-bandwidth-bone');
  step(`low bandwidth: disc ${lbSoft[0]} under soft tissue, ${lbBone[0]} under bone; windows asked: ${windowed.join(' ')}`);
  check(lbSoft[0] > 200 && lbBone[0] < 128, `low bandwidth: the disc is bright under soft tissue (${lbSoft}) and dark under bone (${lbBone})`);
  check(windowed.includes('300,2000,linear'), `the bone window was asked of the server: ${windowed.join(' ')}`);
  // A drag of ten steps asks the server once or twice (debounced), not ten times.
  await page.click(testid('tool-wl'));
  const before = windowed.length;
  const prior = await client(1, 128, 128);
  await page.mouse.move(prior.x, prior.y);
  await page.mouse.down();
  await page.mouse.move(prior.x - 100, prior.y - 100, { steps: 10 });
  await page.mouse.up();
  await waitInPage('the dragged window is applied', () => document.querySelector('[data-testid="overlay-wl-1"]').dataset.pending === 'false');
  const wlAfterDrag = await textOf('overlay-wl-1');
  check(windowed.length - before >= 1 && windowed.length - before <= 3 && /^W: \d+ L: -?\d+$/.test(wlAfterDrag),
    `a drag in low-bandwidth mode: ${windowed.length - before} rendered requests, overlay ${wlAfterDrag}`);
  await page.uncheck(testid('low-bandwidth'));
  await page.waitForFunction(() => window.haneulViewer.panes[1].frame && !window.haneulViewer.panes[1].frame.rendered, null, { timeout: TIMEOUT });

  step('desktop: MR, RGB, SR and a failing frame');
  const mrFrames = `**/series/${expected.hong.mr}/instances/*/frames/*`;
  await page.route(mrFrames, async route => {
    if (route.request().url().includes(`/instances/${encodeURIComponent(expected.hong.mrFailing)}/`)) {
      expectHttp(503, 'GET', /\/frames\//, 'the injected frame failure');
      return route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":"injected failure","status":503}' });
    }
    return route.fallback();
  });
  await page.click(testid('nav-studies'));
  await page.fill(testid('search-name'), 'Hong');
  await page.click(testid('search-submit'));
  await waitInPage('Hong', () => document.querySelectorAll('[data-testid="study-row"]').length === 1);
  await page.click('[data-testid="study-row"]');
  await waitText('overlay-slice-0', /^Im: 1 \/ 3$/, 'the MR opens');
  await waitText('overlay-wl-0', /Full range/, 'an MR without a window in the file shows its full range');
  await page.click(testid('pane-canvas-0'));
  await page.keyboard.press('ArrowDown');
  await waitText('pane-message-0', /Image 2 cannot be shown[\s\S]*503/, 'a failing frame says so in place');
  await shot('desktop-failed-frame');
  await page.click(`[data-testid="thumb"][data-series-uid="${expected.hong.sr}"]`);
  await waitText('pane-message-0', /structured report/, 'an SR says it has no image');
  await shot('desktop-sr');
  await page.click(`[data-testid="thumb"][data-series-uid="${expected.hong.rgb}"]`);
  await page.waitForFunction(() => window.haneulViewer.panes[0].frame?.rgba, null, { timeout: TIMEOUT });
  const red = await pixel(0, 16, 32);
  const blue = await pixel(0, 48, 32);
  check(red[0] > 200 && red[2] < 40 && blue[2] > 200 && blue[0] < 40, `RGB pixels: left ${red}, right ${blue}`);

  step('desktop: VOI LUTs');
  let bulk = 0;
  page.on('request', r => {
    if (/\/bulkdata\//.test(r.url())) bulk++;
  });
  const near = (got, want, what) => check(got.every((v, i) => Math.abs(v - want[i]) <= 3), `${what}: ${got}, expected ${want}`);
  await page.click(`[data-testid="thumb"][data-series-uid="${expected.hong.voi}"]`);
  await page.waitForFunction(() => window.haneulViewer.panes[0].frame?.gray, null, { timeout: TIMEOUT });
  await waitText('overlay-wl-0', /^W: 1000 L: 500/, "the file's window comes first");
  near(await pixel(0, 16, 32), [25, 25, 25], 'left half (100) under W 1000 / L 500');
  near(await pixel(0, 48, 32), [229, 229, 229], 'right half (900) under W 1000 / L 500');
  const presets = await page.$$eval('[data-testid="preset"] option', os => os.map(o => o.value));
  check(presets.includes('lut-0') && presets.includes('lut-1'), `the file's VOI LUTs are presets: ${presets}`);
  await page.selectOption(testid('preset'), 'lut-0');
  await waitText('overlay-wl-0', /^VOI LUT: INVERSE$/, 'the first VOI LUT');
  near(await pixel(0, 16, 32), [230, 230, 230], 'left half under the inverse VOI LUT');
  near(await pixel(0, 48, 32), [31, 31, 31], 'right half under the inverse VOI LUT');
  await shot('desktop-voi-lut');
  await page.selectOption(testid('preset'), 'lut-1');
  await waitText('overlay-wl-0', /^VOI LUT: STEP$/, 'the second VOI LUT');
  near(await pixel(0, 16, 32), [200, 200, 200], 'left half under the 8-bit step VOI LUT');
  near(await pixel(0, 48, 32), [50, 50, 50], 'right half under the 8-bit step VOI LUT');
  check(bulk >= 1, `the large VOI LUT came as bulk data: ${bulk} bulkdata requests`);

  step('desktop: PALETTE COLOR');
  for (const [series, left, right, what] of [
    [expected.hong.palette8, [10, 245, 0], [200, 55, 255], '8-bit indices, 16-bit entries inline'],
    [expected.hong.palette16, [255, 0, 128], [0, 255, 128], '16-bit indices, 8-bit entries from 100 as bulk data'],
  ]) {
    await page.click(`[data-testid="thumb"][data-series-uid="${series}"]`);
    await page.waitForFunction(s => window.haneulViewer.panes[0].stack?.seriesUid === s && window.haneulViewer.panes[0].frame?.rgba, series, { timeout: TIMEOUT });
    near(await pixel(0, 16, 32), left, `palette (${what}), left`);
    near(await pixel(0, 48, 32), right, `palette (${what}), right`);
  }
  await shot('desktop-palette');

  step('desktop: YBR_FULL_422, uncompressed and JPEG Baseline');
  for (const [series, what, tolerance] of [[expected.hong.ybr422, 'uncompressed', 3], [expected.hong.jpeg422, 'JPEG Baseline', 12]]) {
    await page.click(`[data-testid="thumb"][data-series-uid="${series}"]`);
    await page.waitForFunction(s => window.haneulViewer.panes[0].stack?.seriesUid === s && window.haneulViewer.panes[0].frame?.rgba, series, { timeout: TIMEOUT });
    const left = await pixel(0, 16, 32);
    const right = await pixel(0, 48, 32);
    const close = (got, want) => got.every((v, i) => Math.abs(v - want[i]) <= tolerance);
    check(close(left, [220, 20, 20]) && close(right, [20, 20, 220]), `YBR_FULL_422 (${what}): left ${left} (red 220,20,20), right ${right} (blue 20,20,220)`);
  }

  step('desktop: a multi-frame object in batches');
  const frameRequests = [];
  page.on('request', r => {
    const m = new RegExp(`/instances/[^/]+/frames/([0-9,]+)$`).exec(r.url());
    if (m && r.url().includes(`/series/${expected.hong.multiframe}/`)) frameRequests.push(m[1]);
  });
  const frames = expected.hong.multiframeFrames;
  await page.click(`[data-testid="thumb"][data-series-uid="${expected.hong.multiframe}"]`);
  await page.waitForFunction(n => {
    const s = window.haneulViewer.panes[0].stack;
    return s && s.size === n && s.complete && s.loaded === n;
  }, frames, { timeout: TIMEOUT });
  step(`multi-frame: ${frames} frames in ${frameRequests.length} requests: ${frameRequests.join(' ')}`);
  const asked = frameRequests.flatMap(list => list.split(',').map(Number)).sort((a, b) => a - b);
  check(frameRequests.length <= 3 && asked.join() === Array.from({ length: frames }, (_, i) => i + 1).join(),
    `${frames} frames in ${frameRequests.length} requests (${frameRequests.join(' ')})`);
  await page.click(testid('pane-canvas-0'));
  await page.keyboard.press('End');
  await page.keyboard.press('ArrowUp');
  await page.keyboard.press('ArrowUp');
  await waitText('overlay-slice-0', new RegExp(`^Im: ${frames - 2} / ${frames}  \\(frame ${frames - 2}/${frames}\\)$`), 'frame 10');
  near(await pixel(0, 48, 32), Array(3).fill(10 + 20 * (frames - 3)), `frame ${frames - 2}, right half`);
  near(await pixel(0, 16, 32), [0, 0, 0], `frame ${frames - 2}, left half`);
  await noStorage('desktop');
  await context.close();
}

async function tablet() {
  const context = await newPage({ viewport: { width: 1024, height: 768 }, deviceScaleFactor: 2, hasTouch: true, isMobile: true });
  const cdp = await context.newCDPSession(page);
  // Touch gestures carry explicit timestamps, 16 ms apart like a finger
  // sampled at 60 Hz, and end with the finger held still for 150 ms: a
  // sequence that ends moving makes Chromium start a fling, and the next tap
  // then only stops the fling and never becomes a click (as on a real
  // tablet), so a later tap in the test would be lost at random. Timestamps
  // are laid out to end at the moment the gesture is sent, so they stay in
  // order with the taps Playwright sends in real time.
  let last = 0;
  const gesture = async steps => {
    const span = steps.reduce((sum, step) => sum + (step.dt ?? 0.016), 0);
    let at = Math.max(last + 0.001, Date.now() / 1000 - span);
    for (const { type, points, dt = 0.016 } of steps) {
      at += dt;
      await cdp.send('Input.dispatchTouchEvent', { type, timestamp: at, touchPoints: points.map((p, id) => ({ x: p.x, y: p.y, id })) });
    }
    last = at;
  };
  // Fingers that go from `from` to `to` (lists of points) in `moves` moves.
  const drag = (from, to, moves) => {
    const steps = [{ type: 'touchStart', points: from, dt: 0 }];
    for (let i = 1; i <= moves; i++) {
      steps.push({ type: 'touchMove', points: from.map((p, k) => ({ x: p.x + ((to[k].x - p.x) * i) / moves, y: p.y + ((to[k].y - p.y) * i) / moves })) });
    }
    steps.push({ type: 'touchMove', points: to, dt: 0.15 }, { type: 'touchEnd', points: [] });
    return gesture(steps);
  };
  const swipe = (from, to, moves = 10) => drag([from], [to], moves);

  step(`tablet: sign in as ${USER}, search and open by tapping`);
  await signIn(USER, PASSWORD, { tap: true });
  await searchAndOpen(true);
  await shot('tablet-landscape');
  const centre = await client(0, 128, 128);

  step('tablet: swipe to scroll');
  await page.tap(testid('tool-scroll'));
  await swipe(centre, { x: centre.x, y: centre.y + 100 });
  await waitText('overlay-slice-0', /^Im: 11 \/ 40$/, 'a 100 px swipe scrolls ten slices');

  step('tablet: window by touch drag, presets');
  await page.selectOption(testid('preset'), 'ct-bone');
  await waitText('overlay-wl-0', /W: 2000 L: 300/, 'bone preset');
  const before = await pixel(0, 128, 128);
  await page.tap(testid('tool-wl'));
  await swipe(centre, { x: centre.x, y: centre.y - 100 });
  const wl = await textOf('overlay-wl-0');
  const after = await pixel(0, 128, 128);
  check(/L: -5\d\d/.test(wl) && after[0] > before[0] + 80, `touch W/L: ${wl}, disc ${before} → ${after}`);

  step('tablet: pinch to zoom');
  await drag(
    [{ x: centre.x - 40, y: centre.y }, { x: centre.x + 40, y: centre.y }],
    [{ x: centre.x - 120, y: centre.y }, { x: centre.x + 120, y: centre.y }],
    8,
  );
  const zoom = parseFloat((await textOf('overlay-zoom-0')).replace('Zoom: ', ''));
  check(Math.abs(zoom - 3) < 0.15, `pinching from 80 to 240 px zooms 3×: ${zoom}`);
  await page.tap(testid('action-reset'));

  step('tablet: portrait, measure by touch');
  await page.setViewportSize({ width: 768, height: 1024 });
  // The pane has taken the portrait layout (the series strip moves below it).
  await waitInPage('the portrait layout', () => {
    const pane = document.querySelector('[data-testid="pane-canvas-0"]').getBoundingClientRect();
    return innerWidth === 768 && pane.width > 600 && pane.height > 400;
  });
  const box = await page.locator(testid('pane-canvas-0')).boundingBox();
  check(box && box.width > 600 && box.height > 400, `portrait: the pane is ${JSON.stringify(box)}`);
  check(await page.locator('[data-testid="thumb"]').first().isVisible(), 'portrait: the series strip is visible');
  await page.tap(testid('tool-length'));
  await measureDisc('tablet portrait', async e => swipe({ x: e.left, y: e.y }, { x: e.right, y: e.y }, 8));
  await shot('tablet-portrait');

  step('tablet: 1×2 with the prior by tapping the timeline');
  await page.setViewportSize({ width: 1024, height: 768 });
  await page.tap(testid('layout-1x2'));
  await waitInPage('tapping 1×2 splits the view', () => window.haneulViewer.layout === '1x2');
  await page.tap(`[data-testid="timeline-item"][data-study-uid="${expected.prior.study}"]`);
  await waitText('overlay-slice-1', /^Im: 1 \/ 5$/, 'the prior opens in the second pane');
  await page.waitForFunction(() => window.haneulViewer.panes[1].frame, null, { timeout: TIMEOUT });
  await shot('tablet-compare');
  await noStorage('tablet');
  await context.close();
}

/** A request from outside the browser (Node's fetch) with a session cookie, and the CSRF token for POST. */
async function outside(method, path, cookie, csrf) {
  const headers = { Accept: 'application/json', Cookie: `haneul_session=${cookie}` };
  if (csrf) headers['X-CSRF-Token'] = csrf;
  const response = await fetch(root + path, { method, headers });
  return { status: response.status, body: await response.text() };
}

async function sessionCookie(context) {
  return (await context.cookies(root)).find(c => c.name === 'haneul_session');
}

/** Nothing of the patient is left on the page or in the viewer's memory. */
async function nothingOfThePatient(what) {
  const left = await page.evaluate(([name, id, studyUid]) => {
    const app = window.haneulViewer;
    const found = [];
    const text = document.body.innerText + document.body.textContent;
    if (text.includes(name)) found.push('the patient name in the page text');
    if (text.includes(studyUid)) found.push('a study UID in the page text');
    for (const input of document.querySelectorAll('input, select')) {
      if (input.value && (input.value.includes(name) || input.value === id)) found.push(`the field ${input.name}`);
    }
    if (document.querySelectorAll('[data-testid="study-row"], [data-testid="thumb"], [data-testid="timeline-item"], [data-testid="patient-timeline-item"], [data-testid="audit-row"], [data-testid="attr-rows"] tr').length) {
      found.push('rows or thumbnails');
    }
    if (app.studyList.studies.length) found.push('the study list in memory');
    if (app.stacks.size || app.studies.size || app.timelineStudies.length || app.sidebarStudies.length) found.push('studies or stacks in memory');
    if (app.panes.some(p => p.stack || p.view)) found.push('a pane with a stack');
    if (app.patient || app.lastMeasurement || app.attributeSource || app.timedStack) found.push('the patient, a measurement or attributes in memory');
    if (app.api.csrf !== null || app.session !== null) found.push('the session or its CSRF token in memory');
    for (const pane of app.panes) {
      const c = pane.canvas;
      const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < data.length; i += 4) {
        if (data[i] || data[i + 1] || data[i + 2]) {
          found.push(`pane ${pane.number} still shows an image`);
          break;
        }
      }
      if (pane.offscreen.width > 1) found.push(`pane ${pane.number} keeps an image offscreen`);
    }
    return found;
  }, [expected.koreanName, expected.patientId, expected.current.study]);
  check(left.length === 0, `${what}: ${left.join(', ')}`);
}

/** The audit page's rows after one search with these fields (the others empty). */
async function auditSearch(fields) {
  for (const id of ['patient', 'study', 'actor', 'from', 'to']) await page.fill(testid(`audit-${id}`), fields[id] ?? '');
  await page.selectOption(testid('audit-action'), fields.action ?? '');
  const before = await page.$eval(testid('audit-count'), e => Number(e.dataset.searches || 0));
  await page.click(testid('audit-submit'));
  await waitInPage('the audit search answers', n => {
    const count = document.querySelector('[data-testid="audit-count"]');
    return Number(count.dataset.searches || 0) > n && count.dataset.state === 'done';
  }, before);
  const message = await textOf('audit-message');
  const rows = await page.$$eval('[data-testid="audit-row"]', trs => trs.map(tr => ({
    seq: Number(tr.dataset.seq),
    action: tr.dataset.action,
    actor: tr.dataset.actor,
    outcome: tr.dataset.outcome,
    time: tr.cells[0].textContent,
    utc: tr.cells[0].title,
    source: tr.cells[2].textContent,
    patients: tr.cells[5].textContent,
    studies: tr.cells[6].textContent,
    detail: tr.cells[7].textContent,
  })));
  const count = await page.$eval(testid('audit-count'), e => (e.dataset.count === undefined ? null : Number(e.dataset.count)));
  return { rows, count, message };
}

/**
 * Search until `found(rows)` holds: records reach the trail asynchronously
 * (within about 100 ms), so search again, every 100 ms, for up to 10 s.
 */
async function auditUntil(what, fields, found) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const result = await auditSearch(fields);
    if (found(result.rows)) return result;
    if (Date.now() > deadline) {
      return fail(`${what}: not in the audit trail after 10 s of searching ${JSON.stringify(fields)}: ${result.message} ${JSON.stringify(result.rows.slice(0, 12))}`);
    }
    await new Promise(r => setTimeout(r, 100));
  }
}

async function auth() {
  const ADMIN = env('HANEUL_E2E_ADMIN');
  const RESEARCHER = env('HANEUL_E2E_RESEARCHER');
  const LOCKED = env('HANEUL_E2E_LOCKED');
  const FIRST_ADMIN = env('HANEUL_E2E_FIRST_ADMIN');
  const FIRST_ADMIN_PASSWORD = env('HANEUL_E2E_FIRST_ADMIN_PASSWORD');
  const startedAt = Date.now();
  const context = await newPage({ viewport: { width: 1400, height: 900 }, deviceScaleFactor: 1, locale: 'ko-KR', timezoneId: 'Asia/Seoul' });
  const dicomweb = [];
  page.on('request', r => {
    if (new URL(r.url()).pathname.startsWith('/dicom-web/')) dicomweb.push(r.url());
  });

  step('auth: the sign-in form before anything');
  await page.goto(root + '/', { waitUntil: 'domcontentloaded' });
  expectHttp(401, 'GET', /^\/api\/session$/, 'the page asks who it is before anyone signed in');
  await atSignInForm('on load');
  const zone = await page.evaluate(() => [Intl.DateTimeFormat().resolvedOptions().timeZone, new Date().getTimezoneOffset()]);
  check(zone[0] === 'Asia/Seoul' && zone[1] === -540, `the browser runs in Seoul time: ${zone}`);

  step('auth: a wrong password');
  await submitSignIn(USER, `${PASSWORD}-wrong`);
  expectHttp(401, 'POST', /^\/api\/login$/, 'a wrong password');
  await waitText('signin-message', /Wrong user name or password/, 'a wrong password says so');
  await atSignInForm('after a wrong password');
  check(!(await sessionCookie(context)), 'a wrong password sets no session cookie');
  check(dicomweb.length === 0, `nothing was asked of DICOMweb before signing in: ${dicomweb.join(' ')}`);
  check(await page.evaluate(() => document.querySelector('[data-testid="signin-password"]').value === ''), 'the wrong password is cleared from the form');

  step(`auth: ${LOCKED} locked out after repeated failures`);
  for (let i = 1; i <= 5; i++) {
    const answer = page.waitForResponse(r => r.url().endsWith('/api/login'), { timeout: TIMEOUT });
    await submitSignIn(LOCKED, `not-the-password-${i}`);
    check((await answer).status() === 401, `failed sign-in ${i} of ${LOCKED}`);
    expectHttp(401, 'POST', /^\/api\/login$/, `failed sign-in ${i} of ${LOCKED}`);
    await waitText('signin-message', /Wrong user name or password/, `failed sign-in ${i}`);
  }
  // Now even the right password is refused, with the wait.
  const lockedAnswer = page.waitForResponse(r => r.url().endsWith('/api/login'), { timeout: TIMEOUT });
  await submitSignIn(LOCKED, PASSWORD);
  const locked = await lockedAnswer;
  expectHttp(429, 'POST', /^\/api\/login$/, `${LOCKED} is locked out`);
  const retryAfter = Number(locked.headers()['retry-after']);
  check(locked.status() === 429 && retryAfter > 0, `the sixth sign-in of ${LOCKED}: HTTP ${locked.status()}, Retry-After ${retryAfter}`);
  const lockText = await waitText('signin-message', /locked.*Try again in/, 'the lockout says so');
  const shown = /Try again in (\d+) min(?: (\d+) s)?/.exec(lockText);
  check(shown && Number(shown[1]) * 60 + Number(shown[2] ?? 0) === retryAfter,
    `the lockout message gives the wait of Retry-After (${retryAfter} s): ${JSON.stringify(lockText)}`);
  await shot('auth-locked-out');
  await atSignInForm('while locked out');

  step(`auth: ${USER} signs in`);
  const login = await signIn(USER, PASSWORD, { load: false });
  check(typeof login.csrf_token === 'string' && login.csrf_token.length >= 16 && login.permissions.includes('query') && !login.permissions.includes('audit'),
    `the clinician's session: ${JSON.stringify({ ...login, csrf_token: login.csrf_token ? '…' : login.csrf_token })}`);
  await waitInPage('the study list shows the stored studies', () => document.querySelectorAll('[data-testid="study-row"]').length === 3);
  check(!(await visible('nav-audit')) && !(await visible('audit-page')), 'a clinician sees no audit page');
  check(!(await visible('nav-replication')), 'a clinician sees no replication page');
  const cookie = await sessionCookie(context);
  check(cookie && cookie.httpOnly && cookie.sameSite === 'Strict' && cookie.path === '/', `the session cookie: ${JSON.stringify({ ...cookie, value: '…' })}`);
  check(!(await page.evaluate(() => document.cookie)).includes('haneul_session'), 'scripts cannot read the session cookie');
  const before = await outside('GET', '/api/session', cookie.value);
  check(before.status === 200 && JSON.parse(before.body).user === USER, `the cookie works outside the browser while signed in: ${before.status} ${before.body}`);
  await noStorage('signed in');
  await page.click(`[data-testid="study-row"][data-study-uid="${expected.current.study}"]`);
  await waitText('overlay-slice-0', /^Im: 1 \/ 40$/, 'the CT opens');
  await page.waitForFunction(() => window.haneulViewer.panes[0].frame, null, { timeout: TIMEOUT });
  await page.click(testid('action-attributes'));
  await waitInPage('the attribute browser', () => document.querySelectorAll('[data-testid="attr-rows"] tr').length > 10);
  await page.click(testid('attr-close'));
  await shot('auth-signed-in');

  step('auth: sign out');
  const logoutRequest = page.waitForRequest(r => r.url().endsWith('/api/logout'), { timeout: TIMEOUT });
  const logoutAnswer = page.waitForResponse(r => r.url().endsWith('/api/logout'), { timeout: TIMEOUT });
  await page.click(testid('sign-out'));
  const sent = await logoutRequest;
  check(sent.method() === 'POST' && sent.headers()['x-csrf-token'] === login.csrf_token, `the sign-out sends the session's CSRF token: ${JSON.stringify(sent.headers()['x-csrf-token'])}`);
  check((await logoutAnswer).status() === 204, 'the server ends the session');
  await atSignInForm('after signing out', /signed out/);
  await nothingOfThePatient('after signing out');
  check(!(await sessionCookie(context)), 'the cookie is gone from the browser');
  for (const path of ['/api/session', '/dicom-web/studies']) {
    const after = await outside('GET', path, cookie.value);
    check(after.status === 401, `the old cookie is refused for ${path}: ${after.status} ${after.body}`);
  }
  console.log(`OLD_COOKIE ${cookie.value}`);
  await noStorage('signed out');
  await shot('auth-signed-out');

  step('auth: the session ends elsewhere; the next request brings back the form');
  const again = await signIn(USER, PASSWORD, { load: false });
  await waitInPage('the study list', () => document.querySelectorAll('[data-testid="study-row"]').length === 3);
  const second = await sessionCookie(context);
  check(second && second.value !== cookie.value, 'a new sign-in gets a new session cookie');
  const ended = await outside('POST', '/api/logout', second.value, again.csrf_token);
  check(ended.status === 204, `ending the session from outside: ${ended.status} ${ended.body}`);
  await page.fill(testid('search-name'), expected.koreanSearch);
  await page.click(testid('search-submit'));
  expectHttp(401, 'GET', /^\/dicom-web\/studies$/, 'a search after the session ended');
  await atSignInForm('after the session ended', /session ended/i);
  await nothingOfThePatient('after the session ended');
  check(await page.evaluate(user => document.querySelector('[data-testid="signin-user"]').value === user &&
    document.querySelector('[data-testid="signin-password"]').value === '', USER), 'the form offers the same user name again, no password');
  await shot('auth-session-ended');

  step(`auth: ${RESEARCHER} (no query permission) gets readable refusals`);
  await signIn(RESEARCHER, PASSWORD, { load: false, role: 'researcher' });
  await waitText('list-message', /researcher.*may not search/, 'a researcher is told the role may not search');
  check(!(await visible('nav-audit')), 'a researcher sees no audit page');
  await page.click(testid('search-submit'));
  expectHttp(403, 'GET', /^\/dicom-web\/studies$/, 'a researcher searches anyway');
  await waitText('list-message', /not allowed — the researcher role may not query/, 'a 403 reads as a refusal, with the reason');
  check((await page.$$('[data-testid="study-row"]')).length === 0, 'a researcher sees no studies');
  await shot('auth-researcher');
  await page.click(testid('sign-out'));
  await atSignInForm('the researcher signed out', /signed out/);

  step(`auth: ${FIRST_ADMIN} must change the password first`);
  const askedBefore = dicomweb.length;
  await submitSignIn(FIRST_ADMIN, FIRST_ADMIN_PASSWORD);
  await waitInPage('the change-password form, and nothing else', () => {
    const shown = id => !document.querySelector(`[data-testid="${id}"]`).closest('[hidden]');
    return shown('password-form') && !shown('signin-form') && !shown('studies-page') && document.body.classList.contains('signed-out');
  });
  check(dicomweb.length === askedBefore && (await page.$$('[data-testid="study-row"]')).length === 0, 'nothing is searched before the password is changed');
  const fillPassword = async (current, next, again2) => {
    await page.fill(testid('password-current'), current);
    await page.fill(testid('password-new'), next);
    await page.fill(testid('password-again'), again2);
    await page.click(testid('password-submit'));
  };
  await fillPassword(FIRST_ADMIN_PASSWORD, 'new-pass-one-1', 'new-pass-two-2');
  await waitText('password-message', /differ/, 'two different new passwords');
  await fillPassword(FIRST_ADMIN_PASSWORD, 'short', 'short');
  expectHttp(400, 'POST', /^\/api\/password$/, 'a too short new password');
  await waitText('password-message', /not accepted/, 'a too short password is refused with the reason');
  await shot('auth-change-password');
  const newPassword = `${FIRST_ADMIN_PASSWORD}-changed`;
  const changed = page.waitForRequest(r => r.url().endsWith('/api/password'), { timeout: TIMEOUT });
  await fillPassword(FIRST_ADMIN_PASSWORD, newPassword, newPassword);
  check((await changed).headers()['x-csrf-token']?.length >= 16, 'the password change sends X-CSRF-Token');
  await waitInPage('the viewer starts once the password is changed', () =>
    !document.body.classList.contains('signed-out') && !document.querySelector('[data-testid="studies-page"]').hidden);
  check(await visible('nav-audit'), 'an administrator has the audit page');
  await page.click(testid('sign-out'));
  await atSignInForm('the first administrator signed out', /signed out/);

  step(`auth: ${ADMIN} searches the audit trail for ${USER}`);
  await signIn(ADMIN, PASSWORD, { load: false, role: 'admin' });
  check(await visible('nav-audit'), 'an administrator has the audit page');
  await page.click(testid('nav-audit'));
  await waitInPage('the audit page', () => !document.querySelector('[data-testid="audit-page"]').hidden);
  // From a minute before this scenario began, in the browser's (Seoul) time: the viewer sends it in UTC.
  const from = await page.evaluate(ms => {
    const d = new Date(ms);
    const pad = n => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }, startedAt - 60_000);
  const mine = await auditUntil(`${USER}'s sign-ins, sign-outs and queries`, { actor: USER, from }, rows =>
    rows.filter(r => r.action === 'login' && r.outcome === 'success').length === 2 &&
    rows.some(r => r.action === 'login-failed' && r.outcome === 'failure') &&
    rows.filter(r => r.action === 'logout').length === 2 &&
    rows.some(r => r.action === 'query' && r.patients.split(', ').includes(expected.patientId)) &&
    rows.some(r => r.action === 'retrieve' && r.studies.split('\n').includes(expected.current.study)));
  check(mine.rows.every(r => r.actor === USER), `only ${USER}'s records: ${[...new Set(mine.rows.map(r => r.actor))]}`);
  check(mine.count === mine.rows.length && (await textOf('audit-count')).startsWith(`${mine.count} records`), `the count: ${mine.count}, ${mine.rows.length} rows, ${await textOf('audit-count')}`);
  check(mine.rows.every((r, i) => i === 0 || r.seq < mine.rows[i - 1].seq), 'newest first');
  const seoul = new Intl.DateTimeFormat('sv-SE', { timeZone: 'Asia/Seoul', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  for (const r of mine.rows) {
    const utc = new Date(r.utc);
    check(utc.getTime() >= startedAt - 60_000 && utc.getTime() <= Date.now() + 1000, `a record from before the from time or the future: ${r.utc}`);
    check(r.time === seoul.format(utc), `times are shown in local (Seoul) time: ${r.time} for ${r.utc}`);
    check(r.source === '127.0.0.1', `the source of ${r.action}: ${r.source}`);
  }
  check(mine.rows.some(r => r.action === 'query' && /\bmatches: 3\b/.test(r.detail)),
    `the study list's query (3 matches) in the details: ${JSON.stringify(mine.rows.filter(r => r.action === 'query').map(r => r.detail))}`);
  await shot('auth-audit');

  const logins = await auditSearch({ actor: USER, action: 'login', from });
  check(logins.rows.length === 2 && logins.rows.every(r => r.action === 'login' && r.actor === USER), `action=login: ${JSON.stringify(logins.rows)}`);
  const failed = await auditSearch({ actor: USER, action: 'login-failed', from });
  check(failed.rows.length === 1 && /wrong password/.test(failed.rows[0].detail), `action=login-failed: ${JSON.stringify(failed.rows)}`);
  const patient = await auditSearch({ actor: USER, patient: expected.patientId, from });
  check(patient.rows.length > 0 && patient.rows.every(r => r.patients.split(', ').includes(expected.patientId)) &&
    patient.rows.some(r => r.action === 'query') && patient.rows.some(r => r.action === 'retrieve'),
  `patient=${expected.patientId}: ${JSON.stringify(patient.rows.map(r => [r.action, r.patients]))}`);
  const denied = await auditUntil(`${RESEARCHER}'s refused search`, { actor: RESEARCHER, action: 'permission-denied', from }, rows => rows.length === 1);
  check(/query/.test(denied.rows[0].detail) && denied.rows[0].outcome === 'failure', `the refusal's record: ${JSON.stringify(denied.rows[0])}`);
  const lockedOut = await auditSearch({ actor: LOCKED, from });
  check(lockedOut.rows.length === 6 && lockedOut.rows.every(r => r.action === 'login-failed') && /locked out/.test(lockedOut.rows[0].detail),
    `${LOCKED}'s five failures and the locked-out attempt: ${JSON.stringify(lockedOut.rows.map(r => r.detail))}`);
  // A later "from" finds nothing: the time filter is applied.
  const future = await page.evaluate(() => {
    const d = new Date(Date.now() + 3_600_000);
    const pad = n => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:00`;
  });
  const none = await auditSearch({ actor: USER, from: future });
  check(none.rows.length === 0 && none.count === 0 && /No audit records/.test(none.message), `from an hour ahead: ${none.rows.length} rows, ${none.message}`);

  step('auth: the administrator sees the replication page, with the unreachable peer as an alarm');
  check(await visible('nav-replication'), 'an administrator has the replication page');
  await page.click(testid('nav-replication'));
  await waitInPage('the peer with its failures and an alarm', () => {
    const row = document.querySelector('[data-testid="replication-peer"]');
    const alarms = document.querySelector('[data-testid="replication-alarms"]');
    return row && row.dataset.peer === 'dr-site' && Number(row.dataset.failures) > 0 && !alarms.hidden && /dr-site: not shipping/.test(alarms.textContent);
  });
  // The test ran one backup into a file, which wrote nothing: said, and an alarm.
  const backupLine = await page.evaluate(() => {
    const line = document.querySelector('[data-testid="replication-backup-target"]');
    return { outcome: line?.dataset.outcome, text: line?.textContent, alarms: document.querySelector('[data-testid="replication-alarms"]').textContent };
  });
  check(backupLine.outcome === 'failed' && /not-a-directory: no snapshot written yet; the last run failed/.test(backupLine.text) && /backup to \S*not-a-directory: the last backup failed/.test(backupLine.alarms),
    `the failed backup on the replication page: ${JSON.stringify(backupLine)}`);
  const refreshes = Number(await page.getAttribute(testid('replication-peers'), 'data-refreshes'));
  await waitInPage('the page refreshing itself', refreshes => Number(document.querySelector('[data-testid="replication-peers"]').dataset.refreshes) > refreshes, refreshes);
  await shot('auth-replication');
  await page.click(testid('nav-audit'));

  step('auth: signing out clears the audit page too');
  await auditSearch({ actor: USER, from });
  await page.click(testid('sign-out'));
  await atSignInForm('the administrator signed out', /signed out/);
  await nothingOfThePatient('after the administrator signed out');
  check(await page.evaluate(() => document.querySelector('[data-testid="audit-rows"]').children.length === 0 && !document.querySelector('[data-testid="audit-actor"]').value),
    'the audit results and search are cleared');
  await noStorage('auth');
  await context.close();

  step('auth: with no request for the idle timeout, the page asks the server and leaves the screen');
  const idleContext = await newPage({ viewport: { width: 1024, height: 768 }, deviceScaleFactor: 1, locale: 'ko-KR', timezoneId: 'Asia/Seoul' });
  await idleContext.clock.install();
  const idleLogin = await signIn(USER, PASSWORD);
  check(idleLogin.idle_timeout_seconds > 0, `the session's idle timeout: ${idleLogin.idle_timeout_seconds}`);
  await waitInPage('the study list', () => document.querySelectorAll('[data-testid="study-row"]').length === 3);
  await page.click(`[data-testid="study-row"][data-study-uid="${expected.current.study}"]`);
  await page.waitForFunction(() => window.haneulViewer.panes[0].stack?.complete && window.haneulViewer.timings.firstImage !== undefined, null, { timeout: TIMEOUT });
  // Halfway through, the page asks nothing: the session is not over yet.
  const probes = [];
  page.on('request', r => {
    if (r.url().endsWith('/api/session')) probes.push(r.url());
  });
  await page.clock.fastForward(Math.floor(idleLogin.idle_timeout_seconds / 2) * 1000);
  check(probes.length === 0 && !(await page.evaluate(() => document.body.classList.contains('signed-out'))), 'halfway through the idle timeout nothing happens');
  // The server forgets the session (as its idle timeout would); the page learns it once the time is up.
  const idleCookie = await sessionCookie(idleContext);
  check((await outside('POST', '/api/logout', idleCookie.value, idleLogin.csrf_token)).status === 204, 'ending the session from outside');
  await page.clock.fastForward((Math.ceil(idleLogin.idle_timeout_seconds / 2) + 5) * 1000);
  expectHttp(401, 'GET', /^\/api\/session$/, 'the idle check finds the session over');
  await atSignInForm('after the idle timeout', /session ended/i);
  check(probes.length === 1, `one idle check: ${probes.length}`);
  await nothingOfThePatient('after the idle timeout');
  await idleContext.close();
}

async function bench() {
  await newPage({ viewport: { width: 1400, height: 900 }, deviceScaleFactor: 1 });
  const b = expected.bench;
  await signIn(USER, PASSWORD);
  await waitInPage('the study list', () => document.querySelectorAll('[data-testid="study-row"]').length >= 1);
  await page.fill(testid('search-id'), b.patientId);
  await page.click(testid('search-submit'));
  await waitInPage('the benchmark study', () => document.querySelectorAll('[data-testid="study-row"]').length === 1);
  await page.click('[data-testid="study-row"]');
  const timings = await waitInPage('the whole stack loads', () => window.haneulViewer.timings.fullStack !== undefined && window.haneulViewer.timings, null, 120_000);
  check(timings.frames === b.slices, `the stack has ${timings.frames} images, ${b.slices} stored`);
  check((await textOf('overlay-slice-0')) === `Im: 1 / ${b.slices}`, 'the overlay counts the whole stack');
  // Scrolling once loaded: paint every image in turn.
  const scroll = await page.evaluate(() => {
    const vp = window.haneulViewer.panes[0];
    const t0 = performance.now();
    for (let i = 0; i < vp.stack.size; i++) {
      vp.index = i;
      vp.paint();
    }
    return (performance.now() - t0) / vp.stack.size;
  });
  const stats = await page.evaluate(() => window.haneulViewer.api.stats);
  await shot('bench-loaded');
  console.log(
    `BENCH viewer ${b.slices}-slice CT 512×512: metadata ${timings.metadata.toFixed(0)} ms, ` +
      `first image ${timings.firstImage.toFixed(0)} ms, full stack ${timings.fullStack.toFixed(0)} ms ` +
      `(${(stats.bytes / 1048576).toFixed(0)} MiB in ${stats.requests} requests), scroll ${scroll.toFixed(1)} ms per image`,
  );
}

if (!existsSync(chromiumPath)) await fail(`no Chromium at ${chromiumPath}; scripts/test.sh installs Debian's chromium`);
browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  if (mode === 'flows') {
    await desktop();
    await tablet();
  } else if (mode === 'auth') {
    await auth();
  } else {
    await bench();
  }
} catch (e) {
  await fail(`${e.message.split('\n')[0]}`);
}
check(pageErrors.length === 0, `page errors: ${pageErrors.join('\n')}`);
checkHttpErrors();
step(`${mode}: all checks passed`);
await browser.close();
