/**
 * @phalanx/models: Model presets (spartacus, nanohammer, parcae, llama): loading, tokenizer, chat template, generation and scoring.
 *
 * Not implemented yet: its own issue fills this package.
 */
export {};
