/** The schema registry (common/schema-registry.ts): what the check lets through and what it refuses. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { eventSchemaV1, eventSchemaV2 } from '../../common/contract';
import { RAW_EVENT_COLUMNS } from '../../common/lake';
import { asJson, checkRegistry, compatibility, declaredEventSchemas, SCHEMAS_DIR } from '../../common/schema-registry';

const v1 = asJson(eventSchemaV1);
/** A copy of v1 with `edit` applied to its JSON. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a test edits arbitrary schema paths
function edited(edit: (s: any) => void) {
  const s = structuredClone(v1) as any;
  edit(s);
  return s;
}

describe('compatibility', () => {
  it.each([
    ['a new optional top-level field', (s: any) => (s.properties.channel = { type: 'string', maxLength: 32 })],
    ['a new optional nested field', (s: any) => (s.properties.properties.properties.genre = { type: 'string' })],
    ['a new event type', (s: any) => s.properties.event_type.enum.push('ad_impression')],
    ['a looser limit', (s: any) => (s.properties.event_id.maxLength = 256)],
  ])('%s is an ADDITION', (_what, edit) => {
    expect(compatibility(v1, edited(edit)).kind).toBe('addition');
  });

  it.each([
    ['a new required field', (s: any) => s.required.push('session_id'), 'session_id is now required'],
    ['a removed field', (s: any) => delete s.properties.sent_at, 'sent_at removed'],
    ['a tighter limit', (s: any) => (s.properties.user_id.maxLength = 64), 'user_id: maxLength 128 → 64'],
    ['a lost event type', (s: any) => s.properties.event_type.enum.pop(), 'event_type: enum lost values'],
    ['a changed type', (s: any) => (s.properties.timestamp.type = 'string'), 'timestamp: type integer no longer allowed'],
    ['a nullable field made non-null', (s: any) => (s.properties.session_id.type = 'string'), 'session_id: type null no longer allowed'],
    ['an unknown keyword added', (s: any) => (s.properties.properties.properties.page.pattern = '^/'), 'properties.page: pattern changed'],
  ])('%s is breaking', (_what, edit, change) => {
    const c = compatibility(v1, edited(edit));
    expect(c.kind).toBe('breaking');
    expect(c.changes.join('\n')).toContain(change);
  });

  it('finds version 2 breaking for version 1 readers (why it is a new schema_version)', () => {
    const c = compatibility(v1, asJson(eventSchemaV2));
    expect(c.kind).toBe('breaking');
    expect(c.changes).toEqual(expect.arrayContaining(['schema_version: const 1 → 2', 'event: app_id is now required', 'properties: device_type removed']));
  });
});

describe('checkRegistry', () => {
  it("passes on the repository's registry", () => {
    const r = checkRegistry();
    expect(r.problems).toEqual([]);
    expect(r.ok).toBe(true);
  });

  /** A copy of the registry to break. */
  function copy(): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'schemas-'));
    fs.cpSync(SCHEMAS_DIR, dir, { recursive: true });
    return dir;
  }

  it('refuses an edit of a published version and says whether it breaks readers', () => {
    const dir = copy();
    const declared = declaredEventSchemas();
    const tighter = declared.map((d) => (d.version === 1 ? { ...d, schema: edited((s) => (s.properties.user_id.maxLength = 64)) } : d));
    const r = checkRegistry({ dir, declared: tighter });
    expect(r.ok).toBe(false);
    expect(r.problems.join('\n')).toMatch(/schema_version 1 differs from its published file event\/1-0-0\.json .*breaks readers.*user_id: maxLength 128 → 64/);
    const added = declared.map((d) => (d.version === 1 ? { ...d, schema: edited((s) => (s.properties.channel = { type: 'string' })) } : d));
    expect(checkRegistry({ dir, declared: added }).problems.join('\n')).toMatch(/is an ADDITION .*channel: added.*1-0-1/);
    // Published as the next ADDITION, it passes.
    fs.writeFileSync(path.join(dir, 'event', '1-0-1.json'), JSON.stringify(added[0].schema));
    expect(checkRegistry({ dir, declared: added.map((d) => (d.version === 1 ? { ...d, schemaVer: '1-0-1' } : d)) }).problems).toEqual([]);
  });

  it('refuses an ADDITION file that breaks the previous file of its MODEL', () => {
    const dir = copy();
    const broken = edited((s) => s.required.push('session_id'));
    fs.writeFileSync(path.join(dir, 'event', '1-0-1.json'), JSON.stringify(broken));
    const declared = declaredEventSchemas().map((d) => (d.version === 1 ? { ...d, schemaVer: '1-0-1', schema: broken } : d));
    expect(checkRegistry({ dir, declared }).problems.join('\n')).toContain('1-0-1 breaks 1-0-0 within MODEL 1: event: session_id is now required');
  });

  it('refuses a dropped or retyped raw lake column and an unpublished new one', () => {
    const { device_ts: _dropped, ...rest } = RAW_EVENT_COLUMNS;
    expect(checkRegistry({ rawColumns: rest }).problems).toEqual(['raw lake column device_ts was dropped: objects already written have it; columns are only added']);
    expect(checkRegistry({ rawColumns: { ...RAW_EVENT_COLUMNS, ts: 'VARCHAR' } }).problems).toEqual(['raw lake column ts changed type BIGINT → VARCHAR: add a new column instead']);
    expect(checkRegistry({ rawColumns: { ...RAW_EVENT_COLUMNS, channel: 'VARCHAR' } }).problems).toEqual(['raw lake columns channel are not published: run `npm run schemas -- publish`']);
  });

  it('refuses a published MODEL the collector no longer accepts', () => {
    const declared = declaredEventSchemas().filter((d) => d.version === 1);
    expect(checkRegistry({ declared }).problems).toEqual(['2-0-0 is published but schema_version 2 is no longer accepted: events of it would be dead-lettered']);
  });
});
