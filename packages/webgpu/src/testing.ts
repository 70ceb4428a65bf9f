/**
 * Backends for tests, shared by every package's suite: the CPU backend, and the WebGPU backend when an
 * adapter exists. Under CI=true a missing adapter is an error (the GPU tests must run there, on lavapipe);
 * elsewhere the GPU tests are left out with one loud line saying why.
 */
import { type Backend, cpu } from '@phalanx/core';
import type { WebGPUBackend } from './backend.js';
import { createWebGPUBackend } from './index.js'; // through the index, so the kernels are registered
import { NO_ADAPTER_HELP } from './device.js';

export interface TestBackends {
  /** cpu first, then webgpu when there is one. */
  backends: Backend[];
  gpu: WebGPUBackend | undefined;
  /** Why there is no GPU backend, when there is none. */
  gpuSkipReason: string | undefined;
}

let shared: Promise<TestBackends> | undefined;

export function testBackends(): Promise<TestBackends> {
  shared ??= open();
  return shared;
}

async function open(): Promise<TestBackends> {
  try {
    const gpu = await createWebGPUBackend();
    return { backends: [cpu, gpu], gpu, gpuSkipReason: undefined };
  } catch (e) {
    const reason = (e as Error).message;
    if (process.env.CI === 'true') throw new Error(`CI=true but the WebGPU backend could not start, so the GPU tests cannot run: ${reason}`);
    console.warn(`\n!!! WebGPU TESTS SKIPPED: ${reason}\n!!! ${NO_ADAPTER_HELP}\n`);
    return { backends: [cpu], gpu: undefined, gpuSkipReason: reason };
  }
}

/** Destroys the test GPU device so the worker can exit. */
export async function disposeTestBackends(): Promise<void> {
  const s = shared;
  shared = undefined;
  (await s?.catch(() => undefined))?.gpu?.dispose();
}
