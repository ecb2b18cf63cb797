#!/usr/bin/env node
import '../dist/cli/custos.js';
