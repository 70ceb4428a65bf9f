import { InputError } from '@phalanx/core';
import { type RopePairing, ropeFrequencies } from '@phalanx/ops';

/**
 * How a real vector is read as complex numbers, and how fast each one turns (spec 2.4). The last dim is cut
 * into blocks of `width`; inside a block, pair k (k < width/2) is one complex number turning at
 * omega_k = base^(-2k / width).
 */
export interface RotationOptions {
  /**
   * 'interleaved': z_k = x[2k] + i x[2k+1] (torch.view_as_complex, the spec's likelier reading). 'half':
   * z_k = x[k] + i x[k + width/2] (Llama's rotate_half). Default 'interleaved'.
   */
  pairing?: RopePairing;
  /** Dims per rotation block (even, divides the last dim): d_r of spec 2.4. Default: the whole last dim. */
  width?: number;
  /** Base of the frequencies. Default 10000. */
  base?: number;
  /**
   * How angles position * omega are formed. 'exact': in float64 (right to ~1e-16 rad at any position).
   * 'f32': as PyTorch's `pos_fp32 * inv_freq_fp32`, both factors and the product rounded to f32, for parity
   * with a framework implementation; at positions near 131072 that is off by up to ~1e-2 rad. Default 'exact'.
   */
  angles?: 'exact' | 'f32';
}

/** Options with their defaults filled in and checked against a last dim of `dim`. */
export interface Rotation {
  pairing: RopePairing;
  width: number;
  angles: 'exact' | 'f32';
  /** omega_k for k < width/2, float64. */
  invFreq: Float64Array;
}

export function resolveRotation(op: string, dim: number, options: RotationOptions): Rotation {
  const { pairing = 'interleaved', width = dim, base = 10000, angles = 'exact' } = options;
  if (pairing !== 'interleaved' && pairing !== 'half') throw new InputError(`${op}: pairing must be 'interleaved' or 'half', got ${JSON.stringify(pairing)}`);
  if (angles !== 'exact' && angles !== 'f32') throw new InputError(`${op}: angles must be 'exact' or 'f32', got ${JSON.stringify(angles)}`);
  if (!Number.isInteger(width) || width <= 0 || width % 2 !== 0 || dim % width !== 0) {
    throw new InputError(`${op}: width must be a positive even integer dividing the last dim ${dim}, got ${width}`);
  }
  if (!(base > 0) || !Number.isFinite(base)) throw new InputError(`${op}: base must be positive and finite, got ${base}`);
  return { pairing, width, angles, invFreq: ropeFrequencies({ dim: width, theta: base }) };
}

/** The angle position * omega, formed as `angles` says. */
export function angle(position: number, omega: number, angles: 'exact' | 'f32'): number {
  return angles === 'f32' ? Math.fround(Math.fround(position) * Math.fround(omega)) : position * omega;
}

/**
 * cos and sin of sign * angle(position, omega_k) in float64, [positions.length, width/2] row-major: the table
 * of `rotate` (sign +1), `unrotate` (-1), and the powers e^{-i omega k} of the recurrent and chunked forms.
 */
export function rotationTable(positions: ArrayLike<number>, { invFreq, angles }: Rotation, sign: 1 | -1): { cos: Float64Array; sin: Float64Array } {
  const half = invFreq.length;
  const cos = new Float64Array(positions.length * half);
  const sin = new Float64Array(positions.length * half);
  for (let p = 0; p < positions.length; p++) {
    for (let k = 0; k < half; k++) {
      const a = angle(positions[p]!, invFreq[k]!, angles);
      cos[p * half + k] = Math.cos(a);
      sin[p * half + k] = sign * Math.sin(a);
    }
  }
  return { cos, sin };
}

/** Offsets of the real and imaginary parts of complex number `pair` (0 <= pair < dim/2) within a row. */
export function pairOffsets(pair: number, { pairing, width }: Rotation): [re: number, im: number] {
  const half = width / 2;
  const block = Math.floor(pair / half) * width;
  const k = pair % half;
  return pairing === 'half' ? [block + k, block + k + half] : [block + 2 * k, block + 2 * k + 1];
}
