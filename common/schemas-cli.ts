/**
 * `npm run schemas -- list|check|publish|validate`: the event schema registry in `schemas/`
 * (common/schema-registry.ts). `check` runs in the test suite and refuses a change that would
 * break a reader; `publish` writes a new version's file and the raw lake's new columns.
 */
import fs from 'node:fs';
import readline from 'node:readline';
import { Command } from 'commander';
import { SCHEMA_VERSIONS, validateEvent } from './contract';
import { checkRegistry, publishRegistry, publishedEventSchemas, SCHEMAS_DIR } from './schema-registry';

const program = new Command('schemas')
  .description(`The event schema registry (${SCHEMAS_DIR}): published versions (SchemaVer MODEL-REVISION-ADDITION), the compatibility check, publishing.`)
  .showHelpAfterError();

program
  .command('list')
  .description('the published event schemas and which schema_version the collector accepts')
  .action(() => {
    const check = checkRegistry();
    for (const p of publishedEventSchemas()) {
      const model = Number(p.schemaVer.split('-')[0]);
      const accepted = SCHEMA_VERSIONS[model]?.schemaVer === p.schemaVer ? `accepted as schema_version ${model}` : 'superseded';
      process.stdout.write(`${check.notes.find((n) => n.startsWith(p.schemaVer)) ?? p.schemaVer}  — ${accepted}\n`);
    }
    process.stdout.write(`${check.notes.filter((n) => n.startsWith('raw lake')).join('\n')}\n`);
    if (!check.ok) process.stdout.write(`\n${check.problems.length} problem(s): run \`npm run schemas -- check\`\n`);
  });

program
  .command('check')
  .description('refuse a change to a published schema, a breaking change without a new schema_version, and a dropped or retyped lake column')
  .action(() => {
    const { ok, problems } = checkRegistry();
    if (ok) {
      process.stdout.write(`schemas: ok (${publishedEventSchemas().length} published event schemas)\n`);
      return;
    }
    for (const p of problems) process.stderr.write(`schemas: ${p}\n`);
    process.exitCode = 1;
  });

program
  .command('publish')
  .description("write the schema files of new versions and the raw lake's new columns into schemas/ (never rewrites a published one)")
  .action(() => {
    const written = publishRegistry();
    process.stdout.write(written.length === 0 ? 'schemas: nothing new to publish\n' : `schemas: wrote ${written.join(', ')}\n`);
  });

program
  .command('validate')
  .argument('<file>', 'NDJSON, one event per line ("-" for stdin)')
  .description('validate events against the contract as the collector would (no lateness horizon), one line per rejected event')
  .action(async (file: string) => {
    const input = file === '-' ? process.stdin : fs.createReadStream(file);
    const counts = new Map<string, number>();
    let n = 0;
    for await (const line of readline.createInterface({ input, crlfDelay: Infinity })) {
      if (line.trim() === '') continue;
      n += 1;
      let parsed: unknown;
      let result: { ok: true } | { ok: false; reason: string; detail: string };
      try {
        parsed = JSON.parse(line);
        result = validateEvent(parsed, Date.now(), { latenessHorizonMs: Infinity });
      } catch (err) {
        result = { ok: false, reason: 'malformed_json', detail: (err as Error).message };
      }
      const key = result.ok ? `accepted (schema_version ${(parsed as { schema_version?: number }).schema_version ?? 1})` : result.reason;
      counts.set(key, (counts.get(key) ?? 0) + 1);
      if (!result.ok) process.stdout.write(`line ${n}: ${result.reason}: ${result.detail}\n`);
    }
    for (const [k, v] of [...counts].sort()) process.stdout.write(`${v}\t${k}\n`);
    if ([...counts.keys()].some((k) => !k.startsWith('accepted'))) process.exitCode = 1;
  });

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`schemas: ${(err as Error).message}\n`);
  process.exit(1);
});
