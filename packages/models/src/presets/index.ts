import type { ModelConfig, Preset } from '@phalanx/checkpoint';
import type { PresetDefinition } from '../network.js';
import { llama } from './llama.js';
import { nanohammer } from './nanohammer.js';
import { parcae } from './parcae.js';
import { spartacus } from './spartacus.js';

/** Every preset by name; `loadModel` picks one from config.json's model_type. */
export const PRESETS: Partial<{ [P in Preset]: PresetDefinition<Extract<ModelConfig, { preset: P }>> }> = {
  llama,
  nanohammer,
  parcae,
  spartacus,
};
