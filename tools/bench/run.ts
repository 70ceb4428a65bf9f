/**
 * The benchmark runner (issue #10): `npx phalanx bench` / `npm run bench` / `node run.mjs` on the GPU machine.
 *
 *   run [component | component/case]... [--backend auto|cpu|webgpu|all] [--quick] [--case NAME]... [--reps N]
 *       [--json FILE] [--md FILE] [--out DIR] [--isolate [--retries N] [--timeout S]] [--pytorch [--python BIN]
 *       [--pytorch-dir DIR]] [--from FILE] [--no-cache] [--no-peaks] [--list] [--CASE-OPTION VALUE]...
 *
 * Rows go to stdout as JSON lines while the cases run; the markdown report goes to stderr at the end (and to
 * --md / --out). `--isolate` runs every case in its own child process with retries (dawn.node crashes
 * intermittently on the GPU machine); `--pytorch` runs the PyTorch counterparts of the selected components
 * (tools/reference) and adds the WebGPU / PyTorch ratio table. `--from FILE` reports an earlier results.json
 * (e.g. one fetched from the GPU machine) against the cache without running anything. Options a case reads
 * (`--tile`, `--gemv`, `--rows`, `--copy`, `--contexts`, `--prefill`, `--rounds`, `--override`) pass through.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '@phalanx/core';
import { plotResults } from './charts.mjs';
import { ALL_CASES, PYTORCH } from './cases.js';
import { type BackendName, type BenchCase, type Row, deviceName, inSet, openBackend, runCase, runsOn } from './harness.js';
import { type Results, type TorchRow, applyCache, applyPeaks, gitInfo, markdown, writeOut } from './report.js';

const FLAGS = new Set(['--quick', '--isolate', '--pytorch', '--no-cache', '--no-peaks', '--list', '--child', '--help', '-h']);
const LISTS = new Set(['--case']);

interface Args {
  selectors: string[];
  flags: Set<string>;
  values: Map<string, string[]>;
}

function parse(argv: string[]): Args {
  const out: Args = { selectors: [], flags: new Set(), values: new Map() };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (FLAGS.has(a)) out.flags.add(a);
    else if (a.startsWith('--')) {
      const [k, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${k} needs a value`);
      out.values.set(k, [...(LISTS.has(k) ? (out.values.get(k) ?? []) : []), v]);
    } else out.selectors.push(a);
  }
  return out;
}

const log = (line: string) => process.stderr.write(`${line}\n`);

/** The repository root: where tools/bench lives (bundled: the current directory, or BENCH_ROOT). */
function repoRoot(): string {
  if (process.env.BENCH_ROOT) return process.env.BENCH_ROOT;
  let d = process.cwd();
  for (;;) {
    if (existsSync(join(d, 'tools', 'bench', 'harness.ts'))) return d;
    const up = dirname(d);
    if (up === d) return process.cwd();
    d = up;
  }
}

/** The cases the selectors, --case and --quick pick. */
function select(args: Args): BenchCase[] {
  const quick = args.flags.has('--quick');
  const named = args.values.get('--case') ?? [];
  const byName = (c: BenchCase, s: string) => s === c.name || s === `${c.component}/${c.name}`;
  const components = args.selectors.filter((s) => !s.includes('/'));
  const explicit = [...named, ...args.selectors.filter((s) => s.includes('/'))];
  const known = new Set(ALL_CASES.map((c) => c.component));
  for (const c of components) if (!known.has(c)) throw new Error(`unknown component '${c}' (known: ${[...known].join(', ')})`);
  for (const s of explicit) if (!ALL_CASES.some((c) => byName(c, s))) throw new Error(`unknown case '${s}' (see --list)`);
  return ALL_CASES.filter((c) => {
    if (explicit.length) return explicit.some((s) => byName(c, s)) && (components.length === 0 || components.includes(c.component) || explicit.some((s) => s.includes('/')));
    if (components.length && !components.includes(c.component)) return false;
    return inSet(c, quick ? 'quick' : 'full');
  });
}

function backendsOf(args: Args): BackendName[] | 'auto' {
  const b = args.values.get('--backend')?.[0] ?? 'auto';
  if (b === 'all') return ['webgpu', 'cpu'];
  if (b === 'cpu' || b === 'webgpu') return [b];
  if (b === 'auto') return 'auto';
  throw new Error(`--backend must be auto, cpu, webgpu or all, got '${b}'`);
}

/** Pass-through options: every --key value the runner itself does not read. */
const OWN = new Set(['--backend', '--case', '--reps', '--json', '--md', '--out', '--retries', '--timeout', '--python', '--pytorch-dir', '--from']);
function passThrough(args: Args): string[] {
  return [...args.values].filter(([k]) => !OWN.has(k)).flatMap(([k, vs]) => vs.flatMap((v) => [k, v]));
}

function contextFor(backend: Backend, name: BackendName, c: BenchCase, args: Args) {
  const quick = args.flags.has('--quick');
  const [full, q] = c.reps ?? [30, 5];
  return {
    backend,
    gpu: name === 'webgpu' ? (backend as import('@phalanx/webgpu').WebGPUBackend) : undefined,
    backendName: name,
    quick,
    reps: Number(args.values.get('--reps')?.[0]) || (quick ? q : full),
    option: (k: string) => args.values.get(`--${k}`)?.[0],
    log,
    device: deviceName(backend),
  };
}

/** Runs the cases in this process, peaks first; a case that throws becomes an error row. */
async function runHere(cases: BenchCase[], backends: BackendName[] | 'auto', args: Args, onRow: (r: Row) => void): Promise<void> {
  let names: BackendName[];
  const opened = new Map<BackendName, Backend>();
  if (backends === 'auto') {
    try {
      opened.set('webgpu', await openBackend('webgpu'));
      names = ['webgpu'];
    } catch (e) {
      log(`no WebGPU adapter (${(e as Error).message.split('\n')[0]}); running on the CPU backend`);
      names = ['cpu'];
    }
  } else names = backends;
  for (const name of names) {
    const backend = opened.get(name) ?? (await openBackend(name));
    if (!args.flags.has('--child')) log(`backend ${name}: ${deviceName(backend)}`);
    for (const c of cases.filter((c) => runsOn(c, name))) {
      const t0 = performance.now();
      try {
        await runCase(c, contextFor(backend, name, c, args), onRow);
      } catch (e) {
        const err = e as Error;
        onRow({ component: c.component, name: c.name, backend: name, device: deviceName(backend), date: new Date().toISOString().slice(0, 10), error: `${err.name}: ${err.message}` });
        if (process.env.BENCH_VERBOSE) log(err.stack ?? String(err));
      }
      if (!args.flags.has('--child')) log(`  ${c.component}/${c.name} on ${name}: ${((performance.now() - t0) / 1e3).toFixed(1)} s`);
    }
    if (name === 'webgpu') backend.dispose();
  }
}

interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  rows: Row[];
  timedOut: boolean;
}

/**
 * Runs a child process to its end (or kills it after `timeoutS`), passing every JSON object line of its stdout
 * to `onObject` as it comes; other lines (logs) are skipped.
 */
function jsonLines(command: string, argv: string[], options: { cwd?: string; timeoutS: number }, onObject: (o: Record<string, unknown>) => void): Promise<{ code: number | null; signal: NodeJS.Signals | null; timedOut: boolean; error?: Error }> {
  return new Promise((done) => {
    const p = spawn(command, argv, { cwd: options.cwd, stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    p.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line.startsWith('{')) continue;
        try {
          onObject(JSON.parse(line) as Record<string, unknown>);
        } catch {
          // not a row
        }
      }
    });
    let timedOut = false;
    let error: Error | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      p.kill('SIGKILL');
    }, options.timeoutS * 1000);
    p.on('error', (e) => (error = e));
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      done({ code, signal, timedOut, error });
    });
  });
}

/** One child process running one case; JSON lines of its stdout are its rows. */
async function child(script: string, argv: string[], timeoutS: number): Promise<ChildResult> {
  const rows: Row[] = [];
  const end = await jsonLines(process.execPath, [script, ...argv], { timeoutS }, (o) => {
    const r = o as unknown as Row;
    if (r.component && r.name) rows.push(r);
  });
  return { code: end.code, signal: end.signal, rows, timedOut: end.timedOut };
}

/** Every case in its own process, up to `retries` tries each; peaks first. */
async function runIsolated(cases: BenchCase[], backends: BackendName[] | 'auto', args: Args, results: Results, onRow: (r: Row) => void): Promise<void> {
  const script = process.argv[1]!;
  const retries = Number(args.values.get('--retries')?.[0]) || 3;
  const timeoutS = Number(args.values.get('--timeout')?.[0]) || 600;
  const names: BackendName[] = backends === 'auto' ? ['webgpu'] : backends;
  const common = [...(args.flags.has('--quick') ? ['--quick'] : []), ...(args.values.has('--reps') ? ['--reps', args.values.get('--reps')![0]!] : []), ...passThrough(args)];
  for (const name of names) {
    for (const c of cases.filter((c) => runsOn(c, name))) {
      const id = `${c.component}/${c.name}`;
      let best: ChildResult | undefined;
      let tries = 0;
      const t0 = performance.now();
      for (tries = 1; tries <= retries; tries++) {
        const r = await child(script, ['--child', '--backend', name, '--case', id, ...common], timeoutS);
        if (r.code === 0) {
          best = r;
          break;
        }
        const exit = r.timedOut ? `killed after the ${timeoutS} s timeout` : (r.signal ?? `code ${r.code}`);
        log(`case ${id} on ${name}: try ${tries} failed (${exit})`);
        results.failures.push({ case: id, backend: name, tries, exit: String(exit) });
        if (!best || r.rows.length > best.rows.length) best = r;
      }
      const ok = best?.code === 0;
      for (const r of best?.rows ?? []) onRow({ ...r, tries: Math.min(tries, retries) });
      const last = results.failures.at(-1)?.exit;
      if (!ok) onRow({ component: c.component, name: c.name, backend: name, device: best?.rows[0]?.device ?? '', date: new Date().toISOString().slice(0, 10), error: `failed ${retries} tries (last: ${last}); rows kept from the try that got furthest`, tries: retries });
      log(`  ${id} on ${name}: ${((performance.now() - t0) / 1e3).toFixed(1)} s${ok ? '' : ' (failed)'}`);
    }
  }
}

/** The PyTorch counterparts of the selected components; each JSON line with `impl` is a row. */
async function runPytorch(cases: BenchCase[], args: Args, results: Results, root: string): Promise<void> {
  const python = args.values.get('--python')?.[0] ?? process.env.PYTHON ?? 'python3';
  // absolute: the scripts run with their folder as the working directory
  const dir = resolve(args.values.get('--pytorch-dir')?.[0] ?? join(root, 'tools', 'reference'));
  const quick = args.flags.has('--quick');
  const timeoutS = Number(args.values.get('--timeout')?.[0]) || 600;
  const outDir = args.values.get('--out')?.[0];
  for (const component of [...new Set(cases.map((c) => c.component))]) {
    const spec = PYTORCH[component];
    if (!spec) continue;
    const t0 = performance.now();
    log(`pytorch: ${spec.script} (${component})`);
    const extra = component === 'decode' ? ['--contexts', '--prefill', '--override'].flatMap((k) => (args.values.has(k) ? [k, args.values.get(k)![0]!] : [])) : [];
    const rows: TorchRow[] = [];
    const end = await jsonLines(python, [join(dir, spec.script), ...(spec.args?.(quick) ?? []), ...extra], { cwd: dir, timeoutS }, (o) => {
      const r = { ...(o as unknown as TorchRow), component };
      if (!r.impl || !r.name) return;
      rows.push(r);
      process.stdout.write(`${JSON.stringify(r)}\n`);
      if (outDir) appendFileSync(join(outDir, 'rows.jsonl'), `${JSON.stringify(r)}\n`);
    });
    if (end.error) rows.push({ impl: 'pytorch', component, name: spec.script, error: end.error.message });
    else if (end.code !== 0) rows.push({ impl: 'pytorch', component, name: spec.script, error: `exit ${end.code}${spec.cudaOnly ? ' (this script needs CUDA)' : ''}` });
    results.pytorch.push(...rows);
    log(`  ${spec.script}: ${rows.length} rows in ${((performance.now() - t0) / 1e3).toFixed(1)} s`);
  }
}

const USAGE = `usage: phalanx bench [component | component/case]... [options]

  --backend auto|cpu|webgpu|all   default auto (WebGPU when an adapter exists, else the CPU backend)
  --quick                         the small sizes (the quick set)
  --case NAME                     only this case (repeatable; NAME or component/NAME)
  --reps N                        timed calls per case (default per case)
  --json FILE  --md FILE          write the results (JSON document) / the markdown report
  --out DIR                       results.json, results.jsonl, results.md and SVG plots in DIR
  --isolate                       each case in its own process, retried (--retries 3, --timeout 600 s)
  --pytorch                       also run the PyTorch counterparts (--python BIN, --pytorch-dir DIR)
  --from FILE                     report an earlier results.json (no run)
  --no-cache                      leave .bench/<branch>.json alone (no speedup column)
  --list                          list the cases
  case options: --tile BMxBNxBKxTMxTN --gemv RxLxU --copy N (ops), --rows 4|8 (varlen-attention),
                --contexts 64,1024 --prefill 512,2048 --rounds N --override '{"vocab_size":8192}' (decode)`;

export async function main(argv: string[]): Promise<number> {
  const args = parse(argv);
  if (args.flags.has('--help') || args.flags.has('-h')) {
    log(USAGE);
    return 0;
  }
  const root = repoRoot();
  const quick = args.flags.has('--quick');
  if (args.flags.has('--list')) {
    for (const c of ALL_CASES) process.stdout.write(`${c.component}/${c.name}\t${(c.sets ?? ['full']).join(',')}\t${(c.backends ?? ['cpu', 'webgpu']).join(',')}\t${JSON.stringify(c.shape ?? {})}\n`);
    return 0;
  }
  const backends = backendsOf(args);
  const emitLine = (r: object) => process.stdout.write(`${JSON.stringify(r)}\n`);

  if (args.flags.has('--child')) {
    await runHere(select(args), backends, args, emitLine);
    return 0;
  }

  const { branch, commit } = gitInfo(root);
  let results: Results;
  const from = args.values.get('--from')?.[0];
  if (from) {
    results = JSON.parse(readFileSync(from, 'utf8')) as Results;
    results.meta = { ...results.meta, branch: results.meta.branch === 'unknown' ? branch : results.meta.branch, commit: results.meta.commit === 'unknown' ? commit : results.meta.commit };
  } else {
    const picked = select(args);
    const peaks = args.flags.has('--no-peaks') ? [] : ALL_CASES.filter((c) => c.component === 'device' && !picked.includes(c) && inSet(c, quick ? 'quick' : 'full'));
    const cases = [...peaks, ...picked];
    results = {
      meta: { date: new Date().toISOString(), branch, commit, quick, command: `phalanx bench ${argv.join(' ')}`, node: process.version },
      peaks: {},
      rows: [],
      pytorch: [],
      failures: [],
    };
    // with --out, every row is also appended to DIR/rows.jsonl as it comes (a run cut short keeps its rows)
    const out = args.values.get('--out')?.[0];
    if (out) {
      mkdirSync(out, { recursive: true });
      writeFileSync(join(out, 'rows.jsonl'), '');
    }
    const onRow = (r: Row) => {
      results.rows.push(r);
      emitLine(r);
      if (out) appendFileSync(join(out, 'rows.jsonl'), `${JSON.stringify(r)}\n`);
    };
    log(`${picked.length} cases${peaks.length ? ' + device peaks' : ''}${quick ? ' (quick)' : ''}`);
    if (args.flags.has('--isolate')) await runIsolated(cases, backends, args, results, onRow);
    else await runHere(cases, backends, args, onRow);
    if (args.flags.has('--pytorch')) await runPytorch(picked, args, results, root);
  }
  applyPeaks(results);
  if (!args.flags.has('--no-cache') && results.meta.branch !== 'unknown') {
    const { file, mainRows } = applyCache(root, results);
    log(`cache: ${file}${mainRows ? '' : ' (no main results yet: run on main to get the speedup column)'}`);
  }
  const md = markdown(results);
  const json = args.values.get('--json')?.[0];
  if (json) writeFileSync(json, `${JSON.stringify(results, null, 1)}\n`);
  const mdFile = args.values.get('--md')?.[0];
  if (mdFile) writeFileSync(mdFile, md);
  const out = args.values.get('--out')?.[0];
  if (out) {
    const files = [...writeOut(out, results), ...plotResults(results, out)];
    log(`wrote ${files.join(', ')}`);
  }
  log(`\n${md}`);
  return results.rows.some((r) => r.error) ? 1 : 0;
}

// run when executed (the bundle, or `node run.mjs`), not when imported
const self = fileURLToPath(import.meta.url);
if (process.argv[1] && resolve(process.argv[1]) === self) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      log(`bench: ${(e as Error).message}`);
      process.exit(2);
    },
  );
}
