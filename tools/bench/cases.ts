/**
 * Every registered benchmark case: the device peaks first, then each package's cases, then the decode study.
 * A package adds its cases by exporting `cases` (see harness.ts `defineCases`) from packages/<pkg>/bench/*.ts
 * and listing the module here.
 */
import { cases as attention } from '../../packages/varlen-attention/bench/attention.js';
import { cases as holographic } from '../../packages/holographic-rope/bench/integral.js';
import { cases as scan } from '../../packages/monoid-scan/bench/scan.js';
import { cases as ops } from '../../packages/ops/bench/matmul.js';
import { cases as sampling } from '../../packages/ops/bench/sampling.js';
import { cases as quantizer } from '../../packages/quantizer/bench/quantized-linear.js';
import { cases as cell } from '../../packages/state-cell/bench/cell.js';
import { cases as decode } from './decode-study.js';
import { cases as device } from './device.js';
import type { BenchCase } from './harness.js';

export const ALL_CASES: BenchCase[] = [...device, ...ops, ...sampling, ...scan, ...attention, ...holographic, ...cell, ...quantizer, ...decode];

/**
 * The PyTorch counterpart of each component (tools/reference/, run on the same GPU in the same call). Each
 * prints one JSON line per case with `impl` and the TypeScript case's `name`.
 */
export const PYTORCH: Record<string, { script: string; args?: (quick: boolean) => string[]; cudaOnly?: boolean }> = {
  ops: { script: 'bench_ops.py', cudaOnly: true },
  'monoid-scan': { script: 'monoid_scan.py', cudaOnly: true },
  'varlen-attention': { script: 'bench_attention.py', cudaOnly: true },
  decode: { script: 'decode_study.py', args: (quick) => (quick ? ['--quick'] : []) },
};
