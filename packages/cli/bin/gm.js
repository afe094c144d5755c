#!/usr/bin/env node
// The gm command line. Everything lives in dist/ (compiled from src/); see docs/cli.md.
import("../dist/main.js").then((m) => m.main(process.argv)).catch((e) => {
  process.stderr.write(`gm: error: ${e && e.message ? e.message : e}\n`);
  process.exit(1);
});
