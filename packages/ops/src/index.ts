/**
 * @phalanx/ops: Shared layers on every backend: linear/matmul, norms, softmax, embedding, activations, RoPE, softcap, cross-entropy, sampling.
 *
 * Not implemented yet: its own issue fills this package.
 */
export {};
