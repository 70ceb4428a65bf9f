import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { isBuiltin } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Connect, type Plugin, type UserConfig, defaultClientConditions, defineConfig } from 'vite';

/** Where the trained tiny models land: packages/tiny-models/models/<preset>/. */
export const TINY_MODELS_DIR = fileURLToPath(new URL('../../packages/tiny-models/models/', import.meta.url));

/**
 * The playground's Vite config: the page imports the packages' sources (the '@phalanx/source' condition, so
 * no build of the packages is needed) and their browser entries; `modelsDir` is served at /models/.
 */
export function playgroundConfig(modelsDir = TINY_MODELS_DIR): UserConfig {
  return {
    root: fileURLToPath(new URL('.', import.meta.url)),
    resolve: { conditions: ['@phalanx/source', ...defaultClientConditions] },
    plugins: [refuseNodeModules(), serveModels(modelsDir)],
    build: { target: 'es2022' },
  };
}

/**
 * Fails the build (and shows an error in dev) when the page's imports reach a Node module: Vite would
 * otherwise put in a stub that throws only when used. The packages' browser entries must avoid them.
 */
function refuseNodeModules(): Plugin {
  return {
    name: 'phalanx-refuse-node-modules',
    enforce: 'pre',
    resolveId(id, importer) {
      if (isBuiltin(id)) this.error(`${importer ?? 'the page'} imports the Node module '${id}'; the browser entries of the packages must not`);
    },
  };
}

/**
 * Serves checkpoint folders at /models/<name>/<file>, with Content-Length (the page shows download progress)
 * and a plain 404 for a missing file (not the page's HTML, which loadModel would take for the file).
 */
function serveModels(dir: string): Plugin {
  const handler: Connect.NextHandleFunction = async (req, res, next) => {
    // The URL parser has removed '..' segments; escapes are not decoded, so '..%2F' stays a literal name and
    // no request leaves dir.
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (!path.startsWith('/models/')) return next();
    const file = join(dir, path.slice('/models/'.length));
    const info = await stat(file).catch(() => null);
    if (!info?.isFile()) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-length': info.size, 'content-type': 'application/octet-stream', 'cache-control': 'no-cache' });
    if (req.method === 'HEAD') return void res.end();
    createReadStream(file).pipe(res);
  };
  return {
    name: 'phalanx-models',
    configureServer: (server) => void server.middlewares.use(handler),
    configurePreviewServer: (server) => void server.middlewares.use(handler),
  };
}

export default defineConfig(playgroundConfig());
