// A small static server for the built OHIF viewer: files from
// node_modules/@ohif/app/dist, /app-config.js from app-config.template.js
// pointed at a DICOMweb server, and the SPA fallback (paths that are not
// files get index.html). Served cross-origin isolated (COOP/COEP), as OHIF
// recommends, so the DICOMweb server must send CORS/CORP headers.
import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { dirname, extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const distDir = join(here, 'node_modules', '@ohif', 'app', 'dist');

const types = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.ttf': 'font/ttf',
  '.map': 'application/json',
  '.txt': 'text/plain; charset=utf-8',
};

/** Start serving on 127.0.0.1 (a free port); resolves to { server, url }.
 * `authorization` is the Authorization header value sent to Haneul. */
export async function serveOhif({ dicomwebRoot, wadoUriRoot, authorization, log = () => {} }) {
  const template = await readFile(join(here, 'app-config.template.js'), 'utf8');
  const appConfig = template
    .replaceAll('__DICOMWEB_ROOT__', dicomwebRoot)
    .replaceAll('__WADO_URI_ROOT__', wadoUriRoot)
    .replaceAll('__HANEUL_AUTHORIZATION__', authorization.replaceAll("'", ''));
  const index = await readFile(join(distDir, 'index.html'));
  const isolation = {
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Embedder-Policy': 'require-corp',
    'Cache-Control': 'no-store',
  };

  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const send = (status, type, body) => {
      res.writeHead(status, { 'Content-Type': type, ...isolation });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (path === '/app-config.js') {
      return send(200, types['.js'], appConfig);
    }
    const file = normalize(join(distDir, path));
    if (file.startsWith(distDir + sep)) {
      try {
        if ((await stat(file)).isFile()) {
          return send(200, types[extname(file)] ?? 'application/octet-stream', await readFile(file));
        }
      } catch {
        // not a file: fall through
      }
    }
    // Client-side routes (/viewer, /segmentation, ...) get the app; missing
    // assets (a path with an extension) are real 404s.
    if (extname(path) === '') {
      return send(200, types['.html'], index);
    }
    log(`static 404 ${path}`);
    return send(404, 'text/plain', 'not found');
  });
  await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}

// `node serve.mjs DICOMWEB_ROOT [WADO_URI_ROOT]`: serve until killed (for a
// human to look at the viewer against a running Haneul).
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dicomwebRoot = process.argv[2] ?? 'http://127.0.0.1:8042/dicom-web';
  const wadoUriRoot = process.argv[3] ?? dicomwebRoot.replace(/\/[^/]*$/, '/wado');
  const authorization = process.env.HANEUL_AUTHORIZATION ?? '';
  const { url } = await serveOhif({ dicomwebRoot, wadoUriRoot, authorization, log: console.log });
  console.log(`OHIF at ${url} for ${dicomwebRoot}`);
}
