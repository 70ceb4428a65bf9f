import type { Checkpoint } from '@phalanx/checkpoint/bytes';
import { CheckpointError } from '@phalanx/core';

/**
 * Where a checkpoint's files come from: a directory (Node) or a URL (fetch). Loading goes through this
 * interface only, so a checkpoint loads the same way from either.
 */
export interface CheckpointSource {
  /** The directory or URL holding the files: `Model.source`. */
  readonly location: string;
  /** A file's path or URL, as errors name it. */
  file(name: string): string;
  /** A file's text; undefined when it does not exist and is not `required` (a missing required file is a CheckpointError naming it). */
  readText(name: string, required: boolean): Promise<string | undefined>;
  /** The weights, every header validated. */
  openCheckpoint(): Promise<Checkpoint>;
}

/** `name` inside `location` (a directory or a URL ending in '/'), for error messages. */
export function fileIn(location: string, name: string): string {
  return /[/\\]$/.test(location) ? `${location}${name}` : `${location}/${name}`;
}

/** A file's parsed JSON; undefined when it is absent and not `required`. Unparsable JSON is a CheckpointError naming it. */
export async function readJson(source: CheckpointSource, name: string, required: boolean): Promise<unknown> {
  const text = await source.readText(name, required);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(source.file(name), `not valid JSON (${(e as Error).message})`, { cause: e });
  }
}
