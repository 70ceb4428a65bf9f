/**
 * @phalanx/varlen-attention: Packed-document flash attention: causal, sliding windows, GQA, softcap, KV-cache decode.
 *
 * Not implemented yet: its own issue fills this package.
 */
export {};
