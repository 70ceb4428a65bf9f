/**
 * @phalanx/cli: the `phalanx` command: generate, chat, inspect, eval, quantize, demo. Errors are one line
 * (`phalanx: ErrorName: message`; the stack with --verbose); exit codes: 0 ok, 1 failed, 2 bad usage.
 */
import { readFile, copyFile, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { parseArgs } from 'node:util';
import { loadConfig, openCheckpoint } from '@phalanx/checkpoint';
import { add, compareClose, cpu, getBackend, randn, sum } from '@phalanx/core';
import { type ChatMessage, type GenerateOptions, type Model, loadModel } from '@phalanx/models';
import { POLICIES, artifactSize, quantizeModel, writeArtifact } from '@phalanx/quantizer';
import { WebGPUBackend } from '@phalanx/webgpu';
import { bench } from './bench.js';

export interface Io {
  /** A line of results (stdout). */
  log: (line: string) => void;
  /** Streamed text, no newline added (stdout). */
  write: (text: string) => void;
  /** Progress and timings (stderr). */
  info: (line: string) => void;
  /** Lines typed by the user, for `chat`; null at end of input. */
  readLine?: (prompt: string) => Promise<string | null>;
}

const USAGE = `usage: phalanx <command> [options]

commands:
  generate [options] "prompt"        stream a continuation (default model: the embedded tiny model)
  chat [options]                     talk with a model through its chat template (/reset, /exit)
  inspect DIR                        config, tensors, parameter count, bytes by dtype
  eval DIR --text FILE               bits per byte of a text (sliding windows)
  quantize DIR --out DIR             quantize by a policy (--policy golf, --method rtn) and report the brotli size
  demo                               run a kernel on the best backend and print the adapter
  bench [component...] [options]     benchmarks (in the repository; phalanx bench --help)

model options (generate, chat, eval):
  --model DIR|PRESET                 a checkpoint directory, or spartacus|nanohammer|parcae|llama (tiny models)
  --backend auto|cpu|webgpu          default auto
  --max-new-tokens N                 default 64
  --temperature T  --top-k K  --top-p P  --seed S  --stop STRING
  --window N  --stride N             eval windows (default 512 and window/2)
  --verbose                          stack traces on errors
`;

const OPTIONS = {
  model: { type: 'string' },
  backend: { type: 'string', default: 'auto' },
  'max-new-tokens': { type: 'string', default: '64' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  seed: { type: 'string' },
  stop: { type: 'string', multiple: true },
  text: { type: 'string' },
  window: { type: 'string' },
  stride: { type: 'string' },
  policy: { type: 'string', default: 'golf' },
  method: { type: 'string', default: 'rtn' },
  out: { type: 'string' },
  verbose: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

/** The default model: the tiny checkpoint with the best held-out bits per byte (docs/tiny-models.md). */
export const DEFAULT_MODEL = 'llama';

export async function main(argv: string[], io: Io | ((line: string) => void) = defaultIo()): Promise<number> {
  const out: Io = typeof io === 'function' ? { log: io, write: io, info: io } : io;
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    out.log(USAGE);
    return 0;
  }
  // bench takes the runner's own options (tools/bench/run.ts)
  if (command === 'bench') return bench(rest, out.info);
  let values: Values;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: rest, options: OPTIONS, allowPositionals: true }));
  } catch (e) {
    out.info(`phalanx: ${(e as Error).message}`);
    return 2;
  }
  const commands: Record<string, () => Promise<number>> = {
    demo: () => demo(values.backend, out),
    generate: () => generate(values, positionals, out),
    chat: () => chat(values, out),
    inspect: () => inspect(positionals, out),
    eval: () => evaluate(values, positionals, out),
    quantize: () => quantize(values, positionals, out),
  };
  const run = commands[command];
  if (!run) {
    out.info(`phalanx: unknown command '${command}'\n${USAGE}`);
    return 2;
  }
  try {
    return await run();
  } catch (e) {
    const err = e as Error;
    out.info(values.verbose ? (err.stack ?? String(err)) : `phalanx: ${err.name}: ${err.message}`);
    return e instanceof UsageError ? 2 : 1;
  }
}

/** A command line that cannot run as given (exit code 2). */
class UsageError extends Error {
  override name = 'UsageError';
}

function defaultIo(): Io {
  return {
    log: (l) => process.stdout.write(`${l}\n`),
    write: (t) => process.stdout.write(t),
    info: (l) => process.stderr.write(`${l}\n`),
  };
}

/** A number option, or undefined when absent; anything else is a usage error naming it. */
function num(values: Values, name: keyof Values & string, integer = false): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (typeof raw !== 'string' || raw.trim() === '' || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    throw new UsageError(`--${name} must be ${integer ? 'an integer' : 'a number'}, got ${JSON.stringify(raw)}`);
  }
  return v;
}

async function open(values: Values, out: Io): Promise<Model> {
  const backend = values.backend;
  if (!['auto', 'cpu', 'webgpu'].includes(backend)) throw new UsageError(`--backend must be auto, cpu or webgpu, got ${JSON.stringify(backend)}`);
  const source = values.model ?? DEFAULT_MODEL;
  let shown = -1;
  const model = await loadModel(source, {
    backend: backend as 'auto' | 'cpu' | 'webgpu',
    onProgress: ({ bytesDone, bytesTotal }) => {
      const pct = 10 * Math.floor((10 * bytesDone) / Math.max(bytesTotal, 1)); // a line per 10%: readable in logs too
      if (pct === shown) return;
      shown = pct;
      const bar = '#'.repeat(Math.floor(pct / 5)).padEnd(20, '.');
      out.info(`loading [${bar}] ${pct}% of ${(bytesTotal / 2 ** 20).toFixed(1)} MiB`);
    },
  });
  out.info(`model: ${model.preset} from ${model.source} on ${model.backend.name}`);
  return model;
}

function sampling(values: Values): Omit<GenerateOptions, 'prompt' | 'messages' | 'inputIds'> {
  return {
    maxNewTokens: num(values, 'max-new-tokens', true),
    temperature: num(values, 'temperature') ?? 0.8,
    topK: num(values, 'top-k', true) ?? 40,
    topP: num(values, 'top-p') ?? 0.95,
    seed: num(values, 'seed', true),
    stop: values.stop,
  };
}

async function generate(values: Values, positionals: string[], out: Io): Promise<number> {
  if (positionals.length !== 1) throw new UsageError('generate takes one prompt (quote it)');
  const model = await open(values, out);
  try {
    const generation = model.generate({ prompt: positionals[0], ...sampling(values) });
    out.write(positionals[0]!);
    for await (const { text } of generation) out.write(text);
    out.write('\n');
    const s = await generation.summary;
    out.info(`${s.tokenIds.length} tokens (${s.stopReason}); prefill ${s.promptTokens} tokens at ${s.prefillTokensPerSecond.toFixed(1)} tok/s, decode ${s.decodeTokensPerSecond.toFixed(1)} tok/s`);
    return 0;
  } finally {
    model.dispose();
  }
}

async function chat(values: Values, out: Io): Promise<number> {
  const model = await open(values, out);
  const rl = out.readLine ? undefined : createInterface({ input: process.stdin, output: process.stdout });
  const readLine = out.readLine ?? ((p: string) => rl!.question(p).catch(() => null));
  const messages: ChatMessage[] = [];
  try {
    out.info('chat: type a message; /reset forgets the conversation, /exit (or end of input) leaves');
    while (true) {
      const line = await readLine('> ');
      if (line === null || line.trim() === '/exit') return 0;
      if (line.trim() === '/reset') {
        messages.length = 0;
        out.info('(conversation reset)');
        continue;
      }
      if (line.trim() === '') continue;
      messages.push({ role: 'user', content: line });
      const generation = model.generate({ messages, ...sampling(values) });
      let reply = '';
      for await (const { text } of generation) {
        reply += text;
        out.write(text);
      }
      out.write('\n');
      messages.push({ role: 'assistant', content: reply.trim() });
      const s = await generation.summary;
      out.info(`(${s.tokenIds.length} tokens, ${s.decodeTokensPerSecond.toFixed(1)} tok/s)`);
    }
  } finally {
    rl?.close();
    model.dispose();
  }
}

async function inspect(positionals: string[], out: Io): Promise<number> {
  if (positionals.length !== 1) throw new UsageError('inspect takes one checkpoint directory');
  const dir = positionals[0]!;
  const config = await loadConfig(join(dir, 'config.json'));
  const ckpt = await openCheckpoint(dir);
  try {
    const { extra: _, warnings, ...fields } = config;
    out.log(`preset: ${config.preset}`);
    for (const [k, v] of Object.entries(fields)) if (k !== 'preset' && v !== undefined) out.log(`  ${k}: ${JSON.stringify(v)}`);
    for (const w of warnings) out.log(`  warning: ${w}`);
    out.log('tensors:');
    const byDtype = new Map<string, number>();
    let params = 0;
    for (const [name, info] of ckpt.tensors) {
      params += info.shape.reduce((a, b) => a * b, 1);
      byDtype.set(info.storedDType, (byDtype.get(info.storedDType) ?? 0) + info.end - info.begin);
      out.log(`  ${name.padEnd(56)} ${info.storedDType.padEnd(5)} [${info.shape.join(', ')}]`);
    }
    out.log(`parameters: ${params.toLocaleString('en-US')}`);
    for (const [dtype, bytes] of byDtype) out.log(`  ${dtype}: ${bytes.toLocaleString('en-US')} bytes`);
    return 0;
  } finally {
    await ckpt.close();
  }
}

async function evaluate(values: Values, positionals: string[], out: Io): Promise<number> {
  if (positionals.length > 1) throw new UsageError('eval takes one checkpoint directory (or --model)');
  if (!values.text) throw new UsageError('eval needs --text FILE');
  const text = await readFile(values.text, 'utf8');
  const model = await open({ ...values, model: positionals[0] ?? values.model }, out);
  try {
    const t0 = performance.now();
    const r = await model.score(text, { window: num(values, 'window', true), stride: num(values, 'stride', true) });
    const s = (performance.now() - t0) / 1000;
    out.log(`tokens: ${r.tokens}  bytes: ${r.bytes}  loss: ${r.loss.toFixed(4)} nats/token  bits per token: ${r.bitsPerToken.toFixed(4)}  bits per byte: ${r.bitsPerByte.toFixed(4)}`);
    out.info(`scored in ${s.toFixed(1)} s (${(r.tokens / s).toFixed(0)} tok/s)`);
    return 0;
  } finally {
    model.dispose();
  }
}

async function quantize(values: Values, positionals: string[], out: Io): Promise<number> {
  if (positionals.length !== 1) throw new UsageError('quantize takes one checkpoint directory');
  if (!values.out) throw new UsageError('quantize needs --out DIR');
  const named = POLICIES[values.policy];
  if (!named) throw new UsageError(`--policy must be one of ${Object.keys(POLICIES).join(', ')}, got ${JSON.stringify(values.policy)}`);
  // GPTQ needs each layer's input activations (a calibration pass through the model), which the CLI does not run yet
  if (values.method !== 'rtn') throw new UsageError(`--method ${JSON.stringify(values.method)}: only rtn is available here (GPTQ needs calibration Hessians: use @phalanx/quantizer's accumulateHessian)`);
  const policy = { ...named, method: 'rtn' as const };
  const dir = positionals[0]!;
  const ckpt = await openCheckpoint(dir);
  let weights;
  try {
    weights = await ckpt.readAll();
  } finally {
    await ckpt.close();
  }
  const model = await quantizeModel(weights, policy);
  await mkdir(values.out, { recursive: true });
  await writeArtifact(join(values.out, 'model.quant.safetensors'), model);
  for (const f of await readdir(dir)) if (f.endsWith('.json') || f.endsWith('.jinja')) await copyFile(join(dir, f), join(values.out, f));
  const size = await artifactSize(model, { compressor: 'brotli' });
  out.log(`quantized ${Object.keys(model.quantized).length} tensors, ${Object.keys(model.passthrough).length} passed through (policy ${values.policy}, rtn)`);
  out.log(`artifact: ${JSON.stringify(size)}`);
  return 0;
}

async function demo(backendName: string, out: Io): Promise<number> {
  const log = out.log;
  const backend = await getBackend(backendName);
  if (backend instanceof WebGPUBackend) {
    const { vendor, architecture, description, isSoftware } = backend.info;
    log(`backend: webgpu (${[vendor, architecture, description].filter(Boolean).join(', ')}${isSoftware ? ', software' : ''})`);
    log(`features: ${backend.info.features.join(', ')}`);
    log(`maxStorageBufferBindingSize: ${backend.info.limits.maxStorageBufferBindingSize}`);
  } else {
    log(`backend: ${backend.name}`);
  }
  const shape = [256, 1024];
  const a = randn(shape, { seed: 1, backend });
  const b = randn(shape, { seed: 2, backend });
  const t0 = performance.now();
  const c = await add(a, b);
  const rows = await sum(c, { axis: 1 });
  const got = await rows.data();
  const ms = performance.now() - t0;
  const ref = await (await sum(await add(randn(shape, { seed: 1 }), randn(shape, { seed: 2 })), { axis: 1 })).data();
  const check = compareClose(ref, got, { rtol: 1e-5, name: 'row sums' });
  log(`add + sum over ${shape.join('x')} on ${backend.name}: ${ms.toFixed(1)} ms (first run, includes kernel compilation)`);
  log(`vs cpu: ${check.message} -> ${check.ok ? 'ok' : 'MISMATCH'}`);
  for (const t of [a, b, c, rows]) t.dispose();
  if (backend !== cpu) backend.dispose();
  return check.ok ? 0 : 1;
}
