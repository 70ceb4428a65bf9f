/**
 * Every error Phalanx throws on purpose is a PhalanxError. Subclasses say what went wrong; messages name
 * the tensor, field, file, op or backend at fault.
 */
export class PhalanxError extends Error {
  override name = 'PhalanxError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A tensor has the wrong shape, or shapes don't fit together. */
export class ShapeError extends PhalanxError {
  override name = 'ShapeError';
}

/** A dtype is unknown, unsupported by an op, or a value doesn't fit its dtype. */
export class DTypeError extends PhalanxError {
  override name = 'DTypeError';
}

/** A caller passed an argument that isn't valid (out-of-range ids, a disposed tensor, bad options). */
export class InputError extends PhalanxError {
  override name = 'InputError';
}

/** A computation met NaN or infinity where it needs finite numbers: non-finite weights, or activations that overflowed. */
export class NumericsError extends PhalanxError {
  override name = 'NumericsError';
}

/** No kernel is registered for an (op, backend) pair, or every registered kernel declined the input. */
export class MissingKernelError extends PhalanxError {
  override name = 'MissingKernelError';
  constructor(
    readonly op: string,
    readonly backend: string,
    detail?: string,
  ) {
    super(`no kernel for op '${op}' on backend '${backend}'${detail ? `: ${detail}` : ''}`);
  }
}

/** A backend or device failed: no adapter, device lost, out of memory, a validation error, a limit exceeded. */
export class DeviceError extends PhalanxError {
  override name = 'DeviceError';
}

/** The GPU device was lost (driver reset, destroy()); tensors on it are gone. Create a new backend to go on. */
export class DeviceLostError extends DeviceError {
  override name = 'DeviceLostError';
}

/** A checkpoint file is malformed or doesn't match the model. */
export class CheckpointError extends PhalanxError {
  override name = 'CheckpointError';
  constructor(
    readonly file: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${file}: ${message}`, options);
  }
}

/** A config file or option is missing a field, has an unknown one, or is inconsistent. */
export class ConfigError extends PhalanxError {
  override name = 'ConfigError';
  constructor(
    readonly file: string,
    readonly field: string,
    message: string,
  ) {
    super(`${file}: ${field}: ${message}`);
  }
}
