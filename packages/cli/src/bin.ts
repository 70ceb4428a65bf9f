#!/usr/bin/env node
import { main } from './index.js';

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`phalanx: ${err.name}: ${err.message}`);
    process.exit(1);
  },
);
