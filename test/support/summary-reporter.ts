/**
 * Prints the plain closing line `N passed, N failed, N skipped` that CI reads, and, for each
 * failed file, where its services' logs are (see log-setup.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Reporter, TestModule } from 'vitest/node';
import { testLogPath } from './test-logs';

const TAIL_LINES = 40;

export default class SummaryReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<unknown>): void {
    const counts = { passed: 0, failed: 0, skipped: 0 };
    for (const mod of modules) {
      if (mod.state() === 'failed' && [...mod.children.allTests()].length === 0) counts.failed += 1; // a file that failed to load
      for (const test of mod.children.allTests()) {
        const state = test.result().state;
        if (state === 'passed') counts.passed += 1;
        else if (state === 'failed') counts.failed += 1;
        else counts.skipped += 1;
      }
    }
    counts.failed += unhandledErrors.length;
    for (const mod of modules) {
      if (mod.state() !== 'failed') continue;
      const log = testLogPath(mod.moduleId);
      if (!fs.existsSync(log) || fs.statSync(log).size === 0) continue;
      // The last lines inline, for a CI run whose files nobody can open afterwards.
      const tail = fs.readFileSync(log, 'utf8').trimEnd().split('\n').slice(-TAIL_LINES);
      process.stdout.write(`\nlogs of ${path.relative(process.cwd(), mod.moduleId)}: ${path.relative(process.cwd(), log)} (last ${tail.length} lines)\n${tail.join('\n')}\n`);
    }
    process.stdout.write(`\n${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped\n`);
  }
}
