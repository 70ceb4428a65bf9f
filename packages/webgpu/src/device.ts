import { DeviceError } from '@phalanx/core';

/** How to get an adapter, for the error raised when there is none. */
export const NO_ADAPTER_HELP =
  'In a browser, use one with WebGPU enabled (Chromium: --enable-unsafe-webgpu). In Node, install the `webgpu` package and a Vulkan driver: ' +
  'on Debian bookworm without a GPU, Mesa lavapipe from bookworm-backports (apt-get install -t bookworm-backports mesa-vulkan-drivers); ' +
  'on an NVIDIA machine, the NVIDIA Vulkan ICD (set VK_DRIVER_FILES to its nvidia_icd.json if no adapter appears).';

let nodeGpu: Promise<GPU> | undefined;

/** navigator.gpu in a browser; the `webgpu` package (Dawn) in Node, loaded only when first asked for. */
export async function requestGPU(dawnFlags: string[] = []): Promise<GPU> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return nav.gpu;
  const isNode = typeof process !== 'undefined' && !!process.versions?.node;
  if (!isNode) throw new DeviceError(`this environment has no WebGPU (navigator.gpu is missing). ${NO_ADAPTER_HELP}`);
  nodeGpu ??= loadDawn(dawnFlags);
  return nodeGpu;
}

async function loadDawn(flags: string[]): Promise<GPU> {
  const moduleName = 'webgpu'; // a variable, so browser bundlers leave this optional Node-only import alone
  let mod: { create(flags: string[]): GPU; globals: Record<string, unknown> };
  try {
    mod = await import(/* @vite-ignore */ moduleName);
  } catch (cause) {
    nodeGpu = undefined;
    throw new DeviceError(`the optional dependency 'webgpu' (Dawn for Node) could not be loaded: ${(cause as Error).message}. ${NO_ADAPTER_HELP}`, { cause });
  }
  // Dawn's enums (GPUBufferUsage, GPUMapMode, ...) become globals, as in a browser; existing ones are kept.
  for (const [k, v] of Object.entries(mod.globals)) if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  process.env.XDG_RUNTIME_DIR ??= '/tmp'; // silences a Mesa warning when unset
  return mod.create(flags);
}

/** The limits Phalanx asks the device for: the adapter's real values, not WebGPU's defaults. */
const WANTED_LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxUniformBufferBindingSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxBindingsPerBindGroup',
] as const;

/** Optional features used when the adapter has them. */
const WANTED_FEATURES = ['timestamp-query', 'subgroups', 'shader-f16'] as const;

export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A CPU implementation (lavapipe, SwiftShader): correct but slow. */
  isSoftware: boolean;
  features: string[];
  limits: Record<string, number>;
}

/** Whether a WebGPU adapter can be had here (never throws). */
export async function hasAdapter(): Promise<boolean> {
  try {
    return (await (await requestGPU()).requestAdapter()) !== null;
  } catch {
    return false;
  }
}

export interface DeviceRequest {
  powerPreference?: GPUPowerPreference;
  dawnFlags?: string[];
}

export async function openDevice(request: DeviceRequest): Promise<{ adapter: GPUAdapter; device: GPUDevice; info: AdapterDescription }> {
  const gpu = await requestGPU(request.dawnFlags);
  const adapter = await gpu.requestAdapter({ powerPreference: request.powerPreference ?? 'high-performance' });
  if (!adapter) throw new DeviceError(`no WebGPU adapter found. ${NO_ADAPTER_HELP}`);
  const a = adapter.info;
  const text = `${a.vendor} ${a.architecture} ${a.device} ${a.description}`;
  if (/\bnull\b/i.test(text)) throw new DeviceError(`refusing Dawn's null backend (${text.trim()}): it computes nothing. ${NO_ADAPTER_HELP}`);
  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter.features.has(f)) as GPUFeatureName[];
  const requiredLimits: Record<string, number> = {};
  for (const k of WANTED_LIMITS) requiredLimits[k] = adapter.limits[k];
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits, label: 'phalanx' });
  const limits: Record<string, number> = {};
  for (const k of WANTED_LIMITS) limits[k] = device.limits[k];
  const info: AdapterDescription = {
    vendor: a.vendor,
    architecture: a.architecture,
    device: a.device,
    description: a.description,
    isSoftware: a.architecture === 'software' || /llvmpipe|lavapipe|swiftshader/i.test(text) || (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter === true,
    features: [...device.features].sort(),
    limits,
  };
  return { adapter, device, info };
}
