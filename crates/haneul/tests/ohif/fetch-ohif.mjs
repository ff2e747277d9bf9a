// Fetch the prebuilt OHIF viewer (the `dist` of @ohif/app, at the version and
// integrity pinned in package.json) into node_modules/@ohif/app. Run by
// `npm ci` as the postinstall step.
//
// @ohif/app is not a normal dependency: its published dependencies cannot be
// installed (it names @ohif/i18n@3.13.2, which is not on the registry), and the
// built viewer needs none of them. `npm pack` downloads just its tarball.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const { version, integrity } = JSON.parse(readFileSync(join(here, 'package.json'), 'utf8')).ohifApp;
const dest = join(here, 'node_modules', '@ohif', 'app');

const installed = join(dest, 'package.json');
if (existsSync(installed) && JSON.parse(readFileSync(installed, 'utf8')).version === version) {
  console.log(`@ohif/app ${version} already present`);
  process.exit(0);
}

const work = mkdtempSync(join(tmpdir(), 'ohif-app-'));
try {
  // Inside `npm ci`, npm_execpath is the running npm; otherwise use npm on PATH.
  const npm = process.env.npm_execpath;
  const [cmd, pre] = npm && npm.endsWith('.js') ? [process.execPath, [npm]] : ['npm', []];
  const out = execFileSync(cmd, [...pre, 'pack', `@ohif/app@${version}`, '--json', '--pack-destination', work], {
    cwd: work,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const tarball = join(work, JSON.parse(out)[0].filename);
  const actual = 'sha512-' + createHash('sha512').update(readFileSync(tarball)).digest('base64');
  if (actual !== integrity) {
    throw new Error(`@ohif/app@${version} integrity mismatch: expected ${integrity}, got ${actual}`);
  }
  rmSync(dest, { recursive: true, force: true });
  mkdirSync(dest, { recursive: true });
  // The ONNX runtime (AI segmentation) and the slide-microscopy viewer are
  // 156 MB of the 204 MB and are loaded only by modes this test does not use.
  execFileSync('tar', [
    '-xzf', tarball, '-C', dest, '--strip-components=1',
    '--exclude=package/dist/ort', '--exclude=package/dist/dicom-microscopy-viewer',
  ]);
  console.log(`@ohif/app ${version} unpacked into ${dest}`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
