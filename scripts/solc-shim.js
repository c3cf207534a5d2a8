#!/usr/bin/env node
// A solc-compatible front for the npm solc-js compiler, so py-solc-x can drive it offline.
// Answers `--version` in native solc's format and `--standard-json` (input on stdin) through
// solc-js's compile() with an import callback that resolves node_modules. It never calls
// process.exit() after writing: Node would cut piped output at 64 KiB.
"use strict";
const fs = require("fs");
const path = require("path");

const root = path.resolve(__dirname, "..");
const solc = require(path.join(root, "node_modules", "solc"));

function findImport(importPath) {
  const candidates = [
    path.join(root, "node_modules", importPath),
    path.join(root, importPath),
  ];
  for (const candidate of candidates) {
    if (fs.existsSync(candidate)) {
      return { contents: fs.readFileSync(candidate, "utf8") };
    }
  }
  return { error: `File not found: ${importPath}` };
}

const args = process.argv.slice(2);
if (args.includes("--version")) {
  const version = solc.version().replace(".Emscripten.clang", "");
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${version}\n`);
} else if (args.includes("--standard-json")) {
  const input = fs.readFileSync(0, "utf8");
  process.stdout.write(solc.compile(input, { import: findImport }));
} else {
  process.stderr.write("usage: solc-shim.js --version | --standard-json < input.json\n");
  process.exitCode = 2;
}
