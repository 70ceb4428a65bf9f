#!/usr/bin/env node
// The `phalanx` command. A plain file in the repository, so npm links it at install time; it runs the built CLI
// (`npm ci` builds every package through the root `prepare` script).
import { main } from '../dist/index.js';

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(`phalanx: ${err.name}: ${err.message}`);
    process.exit(1);
  },
);
