/**
 * The command line every benchmark script shares until the full harness exists:
 * `node <bench>.mjs [--quick] [--case NAME]... [--reps N]`. Opens a WebGPU backend with exact timestamps,
 * runs the selected cases and prints one JSON line per case (device and date included).
 */
import { type WebGPUBackend, createWebGPUBackend } from '@phalanx/webgpu';

export interface BenchCase {
  name: string;
}

export async function benchMain<C extends BenchCase>(options: {
  full: C[];
  quick: C[];
  run: (backend: WebGPUBackend, c: C, reps: number) => Promise<object>;
  /** Timed calls per case: [full, quick]. */
  reps?: [number, number];
}): Promise<void> {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const only = args.flatMap((a, i) => (args[i - 1] === '--case' ? [a] : []));
  const [fullReps, quickReps] = options.reps ?? [30, 5];
  const reps = Number(args.includes('--reps') ? args[args.indexOf('--reps') + 1] : undefined) || (quick ? quickReps : fullReps);
  // Dawn quantizes timestamps (to ~33 us on NVIDIA) unless told not to; short submits keep dawn.node stable there.
  const g = await createWebGPUBackend({ maxPassesPerSubmit: 8, dawnFlags: ['enable-dawn-features=allow_unsafe_apis', 'disable-dawn-features=timestamp_quantization'] });
  const device = `${g.info.vendor} ${g.info.architecture} ${g.info.description}`.trim();
  console.error(`device: ${device}`);
  for (const c of (quick ? options.quick : options.full).filter((c) => only.length === 0 || only.includes(c.name))) {
    console.log(JSON.stringify({ device, date: new Date().toISOString().slice(0, 10), ...c, ...(await options.run(g, c, reps)) }));
  }
  g.dispose();
}
