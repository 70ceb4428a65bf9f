/**
 * @phalanx/state-cell: NanoHammer's multi-head Euler state-update cell.
 *
 * Not implemented yet: its own issue fills this package.
 */
export {};
