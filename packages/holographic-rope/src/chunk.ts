import type { Lane, LaneOutputs } from './reference.js';

/**
 * The chunked form (spec 2.5 (ii)). With c entering a chunk that starts at t0 and local offsets r < C:
 *   c_{t0+r} = e^{-i omega (r+1)} c_{t0-1} + sum_{j <= r} e^{-i omega (r-j)} z_{t0+j}
 * Every angle is at most C omega, and every row of a chunk depends only on the chunk's input and its
 * entering state (parallel inside the chunk, sequential across chunks).
 */
export function chunkLane({ T, z, state, omega }: Lane, chunkSize: number): LaneOutputs {
  // powers e^{-i omega k}, k = 0..chunkSize
  const pc = Float64Array.from({ length: chunkSize + 1 }, (_, k) => Math.cos(omega * k));
  const ps = Float64Array.from({ length: chunkSize + 1 }, (_, k) => -Math.sin(omega * k));
  const output = new Float64Array(2 * T);
  let [cr, ci] = state;
  for (let t0 = 0; t0 < T; t0 += chunkSize) {
    const L = Math.min(chunkSize, T - t0);
    for (let r = 0; r < L; r++) {
      let re = pc[r + 1]! * cr - ps[r + 1]! * ci;
      let im = pc[r + 1]! * ci + ps[r + 1]! * cr;
      for (let j = 0; j <= r; j++) {
        const [zr, zi] = [z[2 * (t0 + j)]!, z[2 * (t0 + j) + 1]!];
        re += pc[r - j]! * zr - ps[r - j]! * zi;
        im += pc[r - j]! * zi + ps[r - j]! * zr;
      }
      output[2 * (t0 + r)] = re;
      output[2 * (t0 + r) + 1] = im;
    }
    [cr, ci] = [output[2 * (t0 + L - 1)]!, output[2 * (t0 + L - 1) + 1]!];
  }
  return { output, state: [cr, ci] };
}
