#!/usr/bin/env node
import { relaunchServeWithV8Flags } from '../dist/cli/relaunch.js';

// `custos serve` runs with the V8 flags of src/cli/relaunch.ts (a child process when it was not
// started with them); every other command runs here.
const relaunched = relaunchServeWithV8Flags();
if (relaunched) await relaunched;
else await import('../dist/cli/custos.js');
