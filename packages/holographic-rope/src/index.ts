/**
 * @phalanx/holographic-rope: NanoHammer's holographic integral state: complex-rotation encode/decode and its prefix-sum monoid.
 *
 * Not implemented yet: its own issue fills this package.
 */
export {};
