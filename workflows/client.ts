/** Client-side helpers shared by the worker and the CLIs. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import type { Config } from '../common/config';
import { workflowUiUrl } from './ids';

export async function connectClient(cfg: Config): Promise<Client> {
  const connection = await Connection.connect({ address: cfg.temporal.address });
  return new Client({ connection, namespace: cfg.temporal.namespace });
}

/** The Temporal Web UI page of a workflow. */
export function workflowLink(cfg: Config, workflowId: string, runId?: string): string {
  return workflowUiUrl(cfg.temporal.uiUrl, cfg.temporal.namespace, workflowId, runId);
}

/** True when `main` is the script node was asked to run (not an import from a test). */
export function isMain(metaUrl: string): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  const strip = (p: string) => path.resolve(p).replace(/\.ts$/, '');
  return strip(fileURLToPath(metaUrl)) === strip(entry);
}

/** Run a CLI's `main(argv) → exit code` when this module is the script node was asked to run. */
export function runCliIfMain(metaUrl: string, main: (argv: string[]) => Promise<number>): void {
  if (!isMain(metaUrl)) return;
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(`error: ${(err as Error).message}`);
      process.exit(1);
    },
  );
}

/** Parse a CLI's argv; commander's own exits (--help, a usage error) become the exit code instead of ending the process. */
export async function parseCli(program: { parseAsync(argv: string[], opts: { from: 'user' }): Promise<unknown> }, argv: string[]): Promise<number | undefined> {
  try {
    await program.parseAsync(argv, { from: 'user' });
    return undefined;
  } catch (err) {
    const exitCode = (err as { exitCode?: number }).exitCode;
    if (exitCode !== undefined) return exitCode;
    throw err;
  }
}
