// The OHIF end-to-end check, run by crates/haneul/tests/ohif_e2e.rs:
//
//   node e2e.mjs DICOMWEB_ROOT WADO_URI_ROOT EXPECTED_JSON OUT_DIR
//
// Serves the built OHIF viewer pointed at DICOMWEB_ROOT, drives Debian's
// Chromium with playwright-core and checks that
//   1. the study list shows every study of EXPECTED_JSON (patient name,
//      modality, instance count), the Korean name exactly and drawn with real
//      glyphs (not the missing-glyph box);
//   2. the CT study opens in the Basic Viewer, its series has all its slices,
//      the series thumbnail loads, and the image appears in the viewport
//      (the viewport is not blank: many distinct grey levels, real contrast);
//   3. no DICOMweb request failed or answered an HTTP error.
// Screenshots go to OUT_DIR (study-list.png, viewer.png, viewport.png, and
// failure.png when a check fails). Exits 1 with "OHIF E2E FAILED: ..." and
// the browser's console, page errors and network errors.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { distDir, serveOhif } from './serve.mjs';

const [dicomwebRoot, wadoUriRoot, expectedPath, outDir] = process.argv.slice(2);
if (!outDir) {
  console.error('usage: node e2e.mjs DICOMWEB_ROOT WADO_URI_ROOT EXPECTED_JSON OUT_DIR');
  process.exit(2);
}
const expected = JSON.parse(readFileSync(expectedPath, 'utf8'));
const chromiumPath = process.env.HANEUL_CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = 45_000;
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
const step = text => console.log(`[${elapsed()}] ${text}`);

// Everything the browser reports, printed when a check fails.
const consoleLines = [];
const pageErrors = [];
const networkErrors = [];
const dicomwebLog = [];
const isDicomweb = url => url.startsWith(dicomwebRoot) || url.startsWith(wadoUriRoot);

let browser;
let page;
let server;

async function fail(message) {
  console.log(`\nOHIF E2E FAILED: ${message}\n`);
  if (page) {
    try {
      const file = join(outDir, 'failure.png');
      await page.screenshot({ path: file, timeout: 10_000 });
      console.log(`screenshot at failure: ${file}  (page URL ${page.url()})`);
    } catch (e) {
      console.log(`(no failure screenshot: ${e.message})`);
    }
  }
  const section = (title, lines) => {
    console.log(`---- ${title} (${lines.length}) ----`);
    for (const line of lines.slice(-80)) console.log(line);
  };
  section('network errors (failed requests, HTTP status >= 400)', networkErrors);
  section('page errors', pageErrors);
  section('browser console errors and warnings', consoleLines);
  section('DICOMweb requests', dicomwebLog);
  await shutdown();
  process.exit(1);
}

async function shutdown() {
  await browser?.close().catch(() => {});
  server?.close();
}

// Never hang the Rust test: give up well inside its budget.
setTimeout(() => fail(`gave up after ${elapsed()}`), 110_000).unref();

/** Wait for `fn` (run in the page) to return a truthy value; fail with `what` on timeout. */
async function waitInPage(what, fn, arg, timeout = TIMEOUT) {
  try {
    return await (await page.waitForFunction(fn, arg, { timeout, polling: 100 })).jsonValue();
  } catch (e) {
    return fail(`${what} (waited ${timeout / 1000} s: ${e.message.split('\n')[0]})`);
  }
}

/** OHIF's study list writes a person name's alphabetic group with "^" as ", ". */
const listName = name =>
  name
    .split('=')[0]
    .split('^')
    .filter(part => part)
    .join(', ');

if (!existsSync(chromiumPath)) {
  await fail(`no Chromium at ${chromiumPath}; scripts/test.sh installs Debian's chromium`);
}
if (!existsSync(join(distDir, 'index.html'))) {
  await fail(`no OHIF build at ${distDir}; run npm ci in crates/haneul/tests/ohif (scripts/test.sh does)`);
}

const authorization = process.env.HANEUL_AUTHORIZATION ?? '';
server = (await serveOhif({ dicomwebRoot, wadoUriRoot, authorization, log: line => networkErrors.push(line) })).server;
const appUrl = `http://127.0.0.1:${server.address().port}`;
step(`OHIF served at ${appUrl}, DICOMweb at ${dicomwebRoot}`);

browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  // playwright-core gives every launch a fresh, temporary user-data-dir.
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, deviceScaleFactor: 1 });
// A returning user: OHIF's first-visit tour would cover the viewport.
await context.addInitScript(() => localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour'])));
page = await context.newPage();
page.on('console', message => {
  if (message.type() === 'error' || message.type() === 'warning') {
    consoleLines.push(`${message.type()}: ${message.text().slice(0, 500)}`);
  }
});
page.on('pageerror', error => pageErrors.push(String(error.stack || error).slice(0, 1000)));
page.on('requestfailed', request => {
  const line = `FAILED ${request.method()} ${request.url()}: ${request.failure()?.errorText}`;
  networkErrors.push(line);
  if (isDicomweb(request.url())) dicomwebLog.push(line);
});
page.on('response', async response => {
  const request = response.request();
  const url = response.url();
  if (response.status() >= 400) networkErrors.push(`HTTP ${response.status()} ${request.method()} ${url}`);
  if (isDicomweb(url)) {
    const accept = request.headers().accept ?? '';
    dicomwebLog.push(
      `${response.status()} ${request.method()} ${url}  [Accept: ${accept}] -> ${response.headers()['content-type'] ?? '-'}`,
    );
  }
});

// 1. The study list.
step('opening the study list');
const studySearch = page.waitForResponse(
  response => response.url().startsWith(`${dicomwebRoot}/studies?`) && response.request().method() === 'GET',
  { timeout: TIMEOUT },
);
await page.goto(appUrl, { waitUntil: 'domcontentloaded', timeout: TIMEOUT });
const rowCount = expected.studies.length;
try {
  const response = await studySearch;
  const body = response.ok() ? await response.json().catch(() => null) : null;
  if (!Array.isArray(body) || body.length === 0) {
    await fail(
      `QIDO-RS ${response.url()} answered ${response.status()} with ` +
        `${Array.isArray(body) ? 'no studies' : 'no JSON array'}; ${rowCount} were stored`,
    );
  }
} catch (e) {
  await fail(`OHIF did not search for studies (QIDO-RS): ${e.message.split('\n')[0]}`);
}
await waitInPage(
  `the study list did not show the ${rowCount} stored studies`,
  n => document.querySelectorAll('tbody tr[aria-selected]').length >= n,
  rowCount,
);
const rows = await page.$$eval('tbody tr[aria-selected]', trs =>
  trs.map(tr => [...tr.querySelectorAll('td')].map(td => td.innerText.trim())),
);
step(`study list rows:\n${rows.map(cells => '    ' + cells.join(' | ')).join('\n')}`);
if (rows.length !== rowCount) {
  await fail(`the study list shows ${rows.length} studies, ${rowCount} were stored`);
}
for (const study of expected.studies) {
  const name = listName(study.patientName);
  // Columns: patient, date, modalities, description, accession, instances.
  const row = rows.find(cells => cells[0] === name);
  if (!row) {
    await fail(
      `no study-list row for patient ${JSON.stringify(name)} (study ${study.studyInstanceUid}); ` +
        `patient names shown: ${JSON.stringify(rows.map(cells => cells[0]))}`,
    );
  }
  if (row[2] !== study.modality || row[5] !== String(study.instances)) {
    await fail(
      `row of ${name}: modality ${JSON.stringify(row[2])}, instances ${JSON.stringify(row[5])}; ` +
        `expected ${study.modality} and ${study.instances}`,
    );
  }
}

// The Korean name: the exact string in the DOM, and drawn with real glyphs
// (with no Korean font, every syllable is the same missing-glyph box).
const korean = expected.koreanName;
const glyphs = await page.evaluate(name => {
  const cell = [...document.querySelectorAll('tbody tr[aria-selected] td')].find(td => td.innerText.trim() === name);
  if (!cell) return null;
  const style = getComputedStyle(cell.querySelector('div') ?? cell);
  const draw = ch => {
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 48;
    const ctx = canvas.getContext('2d');
    ctx.font = `32px ${style.fontFamily}`;
    ctx.fillStyle = '#000';
    ctx.fillText(ch, 4, 38);
    return canvas.toDataURL();
  };
  const missing = draw('\u{10FFFD}'); // a private-use code point: no font draws it
  const chars = [...new Set(name)];
  return { font: style.fontFamily, chars: chars.map(ch => ({ ch, real: draw(ch) !== missing, image: draw(ch) })) };
}, korean);
if (!glyphs) {
  await fail(`the Korean patient name ${JSON.stringify(korean)} is not in the study list as that exact text`);
}
const distinctImages = new Set(glyphs.chars.map(c => c.image)).size;
if (glyphs.chars.some(c => !c.real) || distinctImages !== glyphs.chars.length) {
  await fail(
    `the Korean name ${korean} is in the page but drawn as missing-glyph boxes (font ${glyphs.font}); ` +
      `install a Korean font (Debian fonts-nanum; scripts/test.sh does)`,
  );
}
step(`Korean patient name ${korean} shown and drawn with real glyphs`);
await page.screenshot({ path: join(outDir, 'study-list.png') });

// Search by the start of the Korean name in the Patient filter: OHIF sends
// QIDO-RS PatientName=*<text>* (UTF-8 in the URL) and only that study stays.
const typed = [...korean].slice(0, 2).join('');
const patientFilter = page.locator('xpath=(//input[@data-cy="input-date-range-start"]/preceding::input)[last()]');
const filtered = page.waitForResponse(
  response => response.url().startsWith(`${dicomwebRoot}/studies?`) && response.url().includes('PatientName='),
  { timeout: TIMEOUT },
);
try {
  await patientFilter.fill(typed, { timeout: TIMEOUT });
  await filtered;
} catch (e) {
  await fail(`filtering the study list by patient name ${typed} sent no QIDO-RS query: ${e.message.split('\n')[0]}`);
}
const onlyKorean = await waitInPage(
  `filtering by patient name ${typed} did not leave just the study of ${korean}`,
  name => {
    const names = [...document.querySelectorAll('tbody tr[aria-selected] td:first-child')].map(td => td.innerText.trim());
    return names.length === 1 && names[0] === name ? names : null;
  },
  korean,
);
step(`patient filter ${typed}: ${JSON.stringify(onlyKorean)}`);
await patientFilter.fill('');
await waitInPage(
  'clearing the patient filter did not bring back every study',
  n => document.querySelectorAll('tbody tr[aria-selected]').length === n,
  rowCount,
);

// 2. Open the CT study in the Basic Viewer.
const ct = expected.studies.find(study => study.studyInstanceUid === expected.ctStudyUid);
step(`opening CT study ${ct.studyInstanceUid}`);
await page.locator('tbody tr[aria-selected]', { hasText: ct.description }).click();
const launch = page.getByRole('button', { name: 'Basic Viewer', exact: true });
try {
  await launch.waitFor({ state: 'visible', timeout: TIMEOUT });
  await launch.click();
  await page.waitForURL(/\/viewer\?/, { timeout: TIMEOUT });
} catch (e) {
  await fail(`could not open the study in the Basic Viewer: ${e.message.split('\n')[0]}`);
}
if (!page.url().includes(ct.studyInstanceUid)) {
  await fail(`the viewer opened ${page.url()}, not study ${ct.studyInstanceUid}`);
}

// The image is drawn: cornerstone copies every render into the viewport's
// 2D canvas; wait until it holds a real image (many grey levels).
const canvasStats = () => {
  const canvas = document.querySelector('[data-cy="viewport-pane"] canvas.cornerstone-canvas');
  if (!canvas || canvas.width < 64 || canvas.height < 64) return null;
  // Copy it out rather than read back from the viewer's own canvas.
  const copy = document.createElement('canvas');
  copy.width = canvas.width;
  copy.height = canvas.height;
  const ctx = copy.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(canvas, 0, 0);
  const { data } = ctx.getImageData(0, 0, copy.width, copy.height);
  const levels = new Set();
  let sum = 0;
  let sumSq = 0;
  for (let i = 0; i < data.length; i += 4) {
    const y = Math.round(0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2]);
    levels.add(y);
    sum += y;
    sumSq += y * y;
  }
  const n = data.length / 4;
  const std = Math.sqrt(sumSq / n - (sum / n) ** 2);
  return levels.size >= 64 && std >= 20 ? { width: canvas.width, height: canvas.height, levels: levels.size, std } : null;
};
const drawn = await waitInPage('the CT image did not appear in the viewport (its canvas stayed blank)', canvasStats);
step(`image drawn: canvas ${drawn.width}x${drawn.height}, ${drawn.levels} grey levels, std ${drawn.std.toFixed(1)}`);

// The whole series is in the stack: the overlay reads "I: n (k/12)".
const overlay = await waitInPage(
  `the viewport overlay does not show a stack of ${ct.instances} images`,
  n => {
    const text = document.querySelector('[data-cy="viewport-overlay-bottom-right"]')?.innerText ?? '';
    return text.includes(`/${n})`) ? text.trim() : null;
  },
  ct.instances,
);
step(`viewport overlay: ${overlay.replace(/\s+/g, ' ')}`);

// The series thumbnail in the study browser (WADO-RS .../thumbnail).
await waitInPage(
  'the series thumbnail did not load in the study browser',
  () => [...document.querySelectorAll('[data-cy="study-browser-thumbnail"] img')].some(img => img.complete && img.naturalWidth > 0),
);

const viewerShot = join(outDir, 'viewer.png');
await page.screenshot({ path: viewerShot });
// The image area of the screenshot itself must not be blank either.
const viewportShot = join(outDir, 'viewport.png');
const png = await page.locator('[data-cy="viewport-pane"]').first().screenshot({ path: viewportShot });
const shotStats = await page.evaluate(async b64 => {
  const image = new Image();
  image.src = `data:image/png;base64,${b64}`;
  await image.decode();
  const canvas = document.createElement('canvas');
  canvas.width = image.width;
  canvas.height = image.height;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(image, 0, 0);
  const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const levels = new Set();
  let bright = 0;
  for (let i = 0; i < data.length; i += 4) {
    const y = Math.round(0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2]);
    levels.add(y);
    if (y > 40) bright++;
  }
  return { width: canvas.width, height: canvas.height, levels: levels.size, brightFraction: bright / (data.length / 4) };
}, png.toString('base64'));
step(
  `viewport screenshot ${shotStats.width}x${shotStats.height}: ${shotStats.levels} grey levels, ` +
    `${(100 * shotStats.brightFraction).toFixed(1)}% of pixels brighter than 40`,
);
if (shotStats.levels < 64 || shotStats.brightFraction < 0.1) {
  await fail(`the viewport screenshot ${viewportShot} is blank or nearly so: ${JSON.stringify(shotStats)}`);
}

// 3. Every DICOMweb request succeeded.
const dicomwebErrors = networkErrors.filter(line => line.includes(dicomwebRoot) || line.includes(wadoUriRoot));
if (dicomwebErrors.length) {
  await fail(`${dicomwebErrors.length} DICOMweb requests failed`);
}
if (pageErrors.length) {
  await fail(`${pageErrors.length} uncaught errors in the page`);
}

step(`${dicomwebLog.length} DICOMweb requests, all successful`);
writeFileSync(join(outDir, 'dicomweb-requests.txt'), dicomwebLog.join('\n') + '\n');
if (consoleLines.length) {
  console.log(`browser console errors/warnings (not failures):\n  ${consoleLines.join('\n  ')}`);
}
console.log(`OHIF E2E PASSED in ${elapsed()}; screenshot: ${viewerShot}`);
await shutdown();
process.exit(0);
