/**
 * @phalanx/monoid-scan: Spartacus's causal monoid state compression: gated linear attention with vector decay, chunked prefill and O(1) decode.
 *
 * Not implemented yet: its own issue fills this package.
 */
export {};
