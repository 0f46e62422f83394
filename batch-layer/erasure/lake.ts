/**
 * Erasure of users from the lake (GDPR art. 17 / CCPA deletion), in steps a Temporal
 * workflow runs as idempotent activities:
 *   findErased        scans every object of raw/events, raw/dlq, processed and aggregated
 *                     with DuckDB and records which hold the users (the plan, no ids in it);
 *   rewriteRaw        rewrites those raw and dead-letter objects in place without them: raw
 *                     has no manifest, a reader lists keys, and one PUT replaces an object
 *                     whole (the key stays: hourly manifests and the raw guard name it);
 *   rewritePublished  rewrites each current batch output holding them under a key of its
 *                     own and swaps the period's manifest to it with If-Match (the publish
 *                     protocol's commit point), returning the objects it superseded;
 *   removeSuperseded  once the grace has passed, deletes those and the unnamed outputs
 *                     (superseded or unfinished runs) that hold the users, as the GC would.
 * Which tables hold user ids is read from each object's columns (`user_id`; the dead
 * letters' `raw` text), so a new per-user table is covered without a list to keep.
 */
import { createHmac } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { LAKE_TABLES, lakePaths, type PeriodKind, type RawRetentionRecord, type RunManifest } from '../../common/lake';
import { deleteObjects, getJson, getJsonWithEtag, listObjects, putJson, putJsonIf, uploadFile, withScratchDir, type LakeObject } from '../../common/lake-io';
import { checkpoint, keepAlive, type JobContext } from '../jobs/context';
import { Duck, sqlString } from '../jobs/duck';
import { NonRetryableBatchError } from '../jobs/errors';
import { periodFolderOf } from '../jobs/gc';
import { listPublished } from '../jobs/watermark';
import { stage } from '../jobs/stage';

/** The zones erasure scans, in the order it rewrites them. */
export const ERASURE_ZONES = ['raw/events/', 'raw/dlq/', 'processed/', 'aggregated/'] as const;

/** `_manifests/erasure/<requestId>.json`: the current round's plan (object keys only, never an id). */
export function erasurePlanKey(requestId: string): string {
  return `_manifests/erasure/${requestId}.json`;
}

export const erasureAuditPrefix = '_manifests/audit/erasure/';

/** One object per finished erasure, never overwritten: the time first so a listing reads as a log. */
export function erasureAuditKey(at: Date, requestId: string): string {
  return `${erasureAuditPrefix}${at.toISOString()}-${requestId}.json`;
}

/** The keyed hash that stands for a user id wherever erasure writes something down. */
export function userHash(key: string, userId: string): string {
  return createHmac('sha256', key).update(userId).digest('hex');
}

/** `er-<16 hex>`: derived from the set of users, so the same request twice is one workflow. */
export function erasureRequestId(key: string, users: readonly string[]): string {
  const set = [...new Set(users)].sort();
  return `er-${createHmac('sha256', key).update(set.join('\n')).digest('hex').slice(0, 16)}`;
}

export function checkUsers(users: readonly string[]): string[] {
  const set = [...new Set(users)];
  if (set.length === 0) throw new NonRetryableBatchError('no user to erase');
  for (const u of set) if (typeof u !== 'string' || u.length < 1 || u.length > 128) throw new NonRetryableBatchError('a user id is 1 to 128 characters (the contract)');
  return set.sort();
}

export interface PublishedHit {
  kind: PeriodKind;
  period: string;
  table: string;
  key: string;
}

export interface ErasurePlan {
  requestId: string;
  round: number;
  foundAt: string;
  objectsScanned: number;
  raw: string[];
  dlq: string[];
  /** Outputs a current manifest names. */
  published: PublishedHit[];
  /** Outputs no manifest names (superseded, or a run that died before its manifest). */
  unnamed: { key: string; lastModified: number }[];
  /** Tables whose objects have a user_id column (found, not declared). */
  userTables: string[];
  /** Published periods to recompute so aggregates leave the users out (raw still there). */
  hours: string[];
  days: string[];
}

export function planIsEmpty(p: Pick<ErasurePlan, 'raw' | 'dlq' | 'published' | 'unnamed'>): boolean {
  return p.raw.length + p.dlq.length + p.published.length + p.unnamed.length === 0;
}

/** What a staged object holds the users in: the user_id column, the dead letter's raw text, or nothing. */
type Holder = 'user_id' | 'raw' | null;

/** A DuckDB with the users as a table (`erased_users`), for every check and rewrite of a step. */
async function openErasureDuck(ctx: JobContext, dir: string, users: readonly string[]): Promise<Duck> {
  const duck = await Duck.open({ threads: ctx.cfg.batch.duckdbThreads, tempDir: path.join(dir, 'duck'), signal: ctx.signal });
  await duck.run(`CREATE TEMP TABLE erased_users AS SELECT unnest([${users.map(sqlString).join(', ')}]::VARCHAR[]) AS id`);
  return duck;
}

function readOf(file: string): string {
  return `read_parquet(${sqlString(file)}, hive_partitioning = false)`;
}

async function holderOf(duck: Duck, file: string): Promise<Holder> {
  const cols = new Set((await duck.rows(`DESCRIBE SELECT * FROM ${readOf(file)}`)).map((r) => String(r.column_name)));
  if (cols.has('user_id')) return 'user_id';
  if (cols.has('raw')) return 'raw';
  return null;
}

/**
 * The rows of the users. A dead letter holds the event as received: its user is readable when
 * the id appears as a JSON string in it, or ends a line cut short (the quotes keep `u1` from
 * matching `u10`).
 */
export function erasedRows(holder: Exclude<Holder, null>): string {
  return holder === 'user_id'
    ? `user_id IN (SELECT id FROM erased_users)`
    : `EXISTS (SELECT 1 FROM erased_users u WHERE contains(raw, '"' || u.id || '"') OR ends_with(raw, '"' || u.id))`;
}

async function countErased(duck: Duck, file: string, holder: Exclude<Holder, null>): Promise<number> {
  return duck.scalar(`SELECT count(*) FROM ${readOf(file)} WHERE ${erasedRows(holder)}`);
}

/** Writes `file` without the users' rows to `out`, same columns and row order; returns the rows removed (0: nothing written). */
async function rewriteWithout(duck: Duck, file: string, out: string): Promise<number> {
  const holder = await holderOf(duck, file);
  if (!holder) return 0;
  const removed = await countErased(duck, file, holder);
  if (removed === 0) return 0;
  await fsp.mkdir(path.dirname(out), { recursive: true });
  await duck.run(`COPY (SELECT * FROM ${readOf(file)} WHERE NOT (${erasedRows(holder)})) TO ${sqlString(out)} (FORMAT parquet, COMPRESSION zstd)`);
  return removed;
}

/** Stages `objects` a chunk at a time and calls `fn` per staged file, removing it afterwards (a lake never fits the scratch disk). */
async function eachStaged(ctx: JobContext, objects: readonly LakeObject[], dir: string, step: string, fn: (o: LakeObject, file: string) => Promise<void>): Promise<void> {
  const chunk = Math.max(8, ctx.cfg.batch.ioConcurrency * 4);
  for (let i = 0; i < objects.length; i += chunk) {
    const part = objects.slice(i, i + chunk);
    const staged = await stage(ctx, part, path.join(dir, 'in'), step);
    for (let j = 0; j < part.length; j++) {
      await fn(part[j], staged[j].file);
      await fsp.rm(staged[j].file, { force: true });
    }
    checkpoint(ctx, { step, scanned: Math.min(i + chunk, objects.length), total: objects.length });
  }
}

/** Every current manifest's outputs: object key -> where it is published. */
async function publishedOutputs(ctx: JobContext): Promise<Map<string, PublishedHit>> {
  const out = new Map<string, PublishedHit>();
  for (const kind of ['hourly', 'daily'] as const) {
    for (const period of await listPublished(ctx, kind)) {
      const m = await getJson<RunManifest>(ctx.s3, ctx.bucket, lakePaths.manifest(kind, period));
      for (const [table, key] of Object.entries(m?.outputs ?? {})) out.set(key, { kind, period, table, key });
    }
  }
  return out;
}

/**
 * Scans the lake for the users and writes the plan. `round` > 0 is the re-scan after a
 * round's rewrites: it finds what a batch run racing the erasure published meanwhile.
 */
export async function findErased(ctx: JobContext, requestId: string, users: readonly string[], round: number): Promise<ErasurePlan> {
  const ids = checkUsers(users);
  const stopBeating = keepAlive(ctx, 'findErased');
  try {
    const named = await publishedOutputs(ctx);
    const objects: LakeObject[] = [];
    for (const zone of ERASURE_ZONES) objects.push(...(await listObjects(ctx.s3, ctx.bucket, zone)).filter((o) => o.key.endsWith('.parquet')));
    const plan: ErasurePlan = { requestId, round, foundAt: new Date().toISOString(), objectsScanned: objects.length, raw: [], dlq: [], published: [], unnamed: [], userTables: [], hours: [], days: [] };
    const userTables = new Set<string>();
    const hours = new Set<string>();
    const days = new Set<string>();
    await withScratchDir(ctx.cfg, async (dir) => {
      const duck = await openErasureDuck(ctx, dir, ids);
      try {
        await eachStaged(ctx, objects, dir, 'find', async (o, file) => {
          const holder = await holderOf(duck, file);
          const folder = periodFolderOf(o.key);
          if (holder === 'user_id' && folder) userTables.add(o.key.split('/')[1]);
          if (!holder || (await countErased(duck, file, holder)) === 0) return;
          if (o.key.startsWith(lakePaths.rawEventsPrefix)) {
            plan.raw.push(o.key);
            const m = /dt=(\d{4}-\d{2}-\d{2})\/hour=(\d{2})\//.exec(o.key);
            if (m) hours.add(`${m[1]}T${m[2]}`);
          } else if (o.key.startsWith(lakePaths.rawDlqPrefix)) {
            plan.dlq.push(o.key);
          } else if (named.has(o.key)) {
            const hit = named.get(o.key)!;
            plan.published.push(hit);
            if (hit.kind === 'daily') days.add(hit.period);
          } else {
            plan.unnamed.push({ key: o.key, lastModified: o.lastModified.getTime() });
          }
        });
      } finally {
        duck.close();
      }
    });
    // Recompute what raw can still recompute: published hours the users were in, and every published
    // day from the first one touched (later days' cohorts and first_seen read the earlier days' activity).
    const publishedHours = new Set(await listPublished(ctx, 'hourly'));
    const publishedDays = await listPublished(ctx, 'daily');
    for (const h of hours) days.add(h.slice(0, 10));
    const rawGone = async (day: string) => (await getJson<RawRetentionRecord>(ctx.s3, ctx.bucket, lakePaths.rawRetention(day))) !== null;
    plan.hours = [];
    for (const h of [...hours].sort()) if (publishedHours.has(h) && !(await rawGone(h.slice(0, 10)))) plan.hours.push(h);
    const first = [...days].sort()[0];
    plan.days = [];
    if (first !== undefined) for (const d of publishedDays) if (d >= first && !(await rawGone(d))) plan.days.push(d);
    plan.userTables = [...userTables].sort();
    await putJson(ctx.s3, ctx.bucket, erasurePlanKey(requestId), plan);
    ctx.log.info(
      { requestId, round, scanned: objects.length, raw: plan.raw.length, dlq: plan.dlq.length, published: plan.published.length, unnamed: plan.unnamed.length, hours: plan.hours.length, days: plan.days.length },
      'erasure plan',
    );
    return plan;
  } finally {
    stopBeating();
  }
}

async function readPlan(ctx: JobContext, requestId: string): Promise<ErasurePlan> {
  const plan = await getJson<ErasurePlan>(ctx.s3, ctx.bucket, erasurePlanKey(requestId));
  if (!plan) throw new NonRetryableBatchError(`no erasure plan for ${requestId}`);
  return plan;
}

/**
 * Raw events and dead letters without the users, each under its own key. Idempotent: a retry
 * finds nothing left to remove in the objects already rewritten and skips them.
 */
export async function rewriteRaw(ctx: JobContext, requestId: string, users: readonly string[]): Promise<{ objects: number; rows: number }> {
  const ids = checkUsers(users);
  const plan = await readPlan(ctx, requestId);
  const keys = [...plan.raw, ...plan.dlq];
  let objects = 0;
  let rows = 0;
  const stopBeating = keepAlive(ctx, 'rewriteRaw');
  try {
    await withScratchDir(ctx.cfg, async (dir) => {
      const duck = await openErasureDuck(ctx, dir, ids);
      try {
        const present = await presentObjects(ctx, keys);
        await eachStaged(ctx, present, dir, 'rewriteRaw', async (o, file) => {
          const out = path.join(dir, 'out', `${objects}-${path.basename(o.key)}`);
          const removed = await rewriteWithout(duck, file, out);
          if (removed === 0) return;
          await uploadFile(ctx.s3, ctx.bucket, o.key, out);
          await fsp.rm(out, { force: true });
          objects += 1;
          rows += removed;
        });
      } finally {
        duck.close();
      }
    });
  } finally {
    stopBeating();
  }
  ctx.log.info({ requestId, objects, rows }, 'raw and dead-letter objects rewritten without the erased users');
  return { objects, rows };
}

/** The listed objects among `keys` (compaction or retention may have removed some since the plan). */
async function presentObjects(ctx: JobContext, keys: readonly string[]): Promise<LakeObject[]> {
  const wanted = new Set(keys);
  const prefixes = new Set(keys.map((k) => k.slice(0, k.lastIndexOf('/') + 1)));
  const out: LakeObject[] = [];
  for (const p of prefixes) for (const o of await listObjects(ctx.s3, ctx.bucket, p)) if (wanted.has(o.key)) out.push(o);
  return out;
}

/** A manifest erasure rewrote: which request did, for the record. */
type ErasedManifest = RunManifest & { erasedBy?: string[] };

/**
 * Each current batch output holding the users is rewritten under a key of its own, then the
 * period's manifest names the new objects (If-Match on the version read: a run that published
 * meanwhile wins, and the period is read again). Returns the keys it superseded: they stay for
 * the grace a reader of the previous manifest has, then removeSuperseded deletes them.
 */
export async function rewritePublished(ctx: JobContext, requestId: string, users: readonly string[]): Promise<{ manifests: number; objects: number; rows: number; superseded: string[] }> {
  const ids = checkUsers(users);
  const plan = await readPlan(ctx, requestId);
  const periods = new Map<string, { kind: PeriodKind; period: string }>();
  for (const h of plan.published) periods.set(`${h.kind} ${h.period}`, { kind: h.kind, period: h.period });
  const result = { manifests: 0, objects: 0, rows: 0, superseded: [] as string[] };
  const zoneOf = new Map(LAKE_TABLES.map((t) => [t.table, t.zone]));
  const stopBeating = keepAlive(ctx, 'rewritePublished');
  try {
    await withScratchDir(ctx.cfg, async (dir) => {
      const duck = await openErasureDuck(ctx, dir, ids);
      try {
        for (const { kind, period } of periods.values()) {
          const manifestKey = lakePaths.manifest(kind, period);
          for (let attempt = 0; ; attempt++) {
            if (attempt >= 5) throw new Error(`the manifest ${manifestKey} kept changing under 5 attempts`);
            const got = await getJsonWithEtag<ErasedManifest>(ctx.s3, ctx.bucket, manifestKey);
            if (!got) break;
            const m = got.value;
            const outputs = { ...m.outputs };
            const rowCounts = { ...m.rowCounts };
            const replaced: string[] = [];
            let rows = 0;
            const entries = Object.entries(m.outputs);
            const staged = await stage(ctx, (await presentObjects(ctx, entries.map(([, k]) => k))), path.join(dir, 'in', String(result.manifests), String(attempt)), 'rewritePublished');
            const fileOf = new Map(staged.map((s) => [s.key, s.file]));
            for (const [table, key] of entries) {
              const file = fileOf.get(key);
              if (!file) continue;
              const out = path.join(dir, 'out', `${table}.parquet`);
              const removed = await rewriteWithout(duck, file, out);
              if (removed === 0) continue;
              const zone = zoneOf.get(table);
              if (!zone) throw new NonRetryableBatchError(`table ${table} of ${manifestKey} is not in the lake catalog`);
              // A key of its own, as a run's: the previous one stays whole for whoever read the previous manifest.
              const newKey = lakePaths.table(zone, table, period, `${m.runId}.${requestId}-r${plan.round}-a${attempt}`);
              await uploadFile(ctx.s3, ctx.bucket, newKey, out);
              await fsp.rm(out, { force: true });
              outputs[table] = newKey;
              if (rowCounts[table] !== undefined) rowCounts[table] -= removed;
              replaced.push(key);
              rows += removed;
            }
            for (const s of staged) await fsp.rm(s.file, { force: true });
            if (replaced.length === 0) break;
            const next: ErasedManifest = { ...m, outputs, rowCounts, erasedBy: [...(m.erasedBy ?? []), requestId] };
            if ((await putJsonIf(ctx.s3, ctx.bucket, manifestKey, next, { ifMatch: got.etag })) === null) continue;
            result.manifests += 1;
            result.objects += replaced.length;
            result.rows += rows;
            result.superseded.push(...replaced);
            checkpoint(ctx, { step: 'rewritePublished', manifests: result.manifests, total: periods.size });
            break;
          }
        }
      } finally {
        duck.close();
      }
    });
  } finally {
    stopBeating();
  }
  ctx.log.info({ requestId, manifests: result.manifests, objects: result.objects, rows: result.rows }, 'published outputs rewritten without the erased users');
  return result;
}

/**
 * Deletes the outputs the rewrite superseded and the unnamed outputs that hold the users.
 * Called once the grace has passed since the swap (the workflow sleeps it); an unnamed object
 * younger than the grace may be a run on its way to its manifest and waits for the re-scan.
 */
export async function removeSuperseded(ctx: JobContext, requestId: string, superseded: readonly string[], now: number): Promise<{ deleted: number; waiting: number }> {
  const plan = await readPlan(ctx, requestId);
  const graceMs = ctx.cfg.batch.supersededGraceMs;
  const unnamed = plan.unnamed.filter((u) => now - u.lastModified >= graceMs).map((u) => u.key);
  const keys = [...new Set([...superseded, ...unnamed])];
  if (keys.length > 0) await deleteObjects(ctx.s3, ctx.bucket, keys);
  ctx.log.info({ requestId, deleted: keys.length }, 'superseded objects holding erased users removed');
  return { deleted: keys.length, waiting: plan.unnamed.length - unnamed.length };
}

export interface ErasureAudit {
  requestId: string;
  workflowId: string;
  requestedAt: string;
  completedAt: string;
  users: number;
  /** HMAC-SHA256 (ERASURE_AUDIT_KEY) of each id: who holds the key can confirm a given user was erased; nobody can read one back. */
  userHashes: string[];
  rounds: number;
  objectsScanned: number;
  objectsRewritten: { raw: number; dlq: number; published: number };
  objectsRemoved: number;
  rowsRemoved: number;
  periodsRecomputed: { hourly: string[]; daily: string[] };
  redisRemoved: number;
  userTables: string[];
  /** HyperLogLog keys cannot forget a member: they expire by retention (docs/operations.md, "Erasure"). */
  hllExpireBy: string;
}

/** The audit record, beside the pin audit; the plan object is removed, its round is over. */
export async function writeErasureAudit(ctx: JobContext, audit: Omit<ErasureAudit, 'userHashes' | 'completedAt'>, users: readonly string[]): Promise<{ key: string; record: ErasureAudit }> {
  const ids = checkUsers(users);
  const at = new Date();
  const record: ErasureAudit = { ...audit, completedAt: at.toISOString(), userHashes: ids.map((u) => userHash(ctx.cfg.erasure.auditKey, u)).sort() };
  const key = erasureAuditKey(at, audit.requestId);
  const existing = (await listObjects(ctx.s3, ctx.bucket, erasureAuditPrefix)).find((o) => o.key.endsWith(`-${audit.requestId}.json`) && o.lastModified.getTime() >= Date.parse(audit.requestedAt));
  // A retry after the write keeps the one record.
  if (!existing) await putJson(ctx.s3, ctx.bucket, key, record);
  await deleteObjects(ctx.s3, ctx.bucket, [erasurePlanKey(audit.requestId)]);
  const { userHashes: _h, ...line } = record;
  ctx.log.warn({ audit: 'erasure', ...line, key: existing?.key ?? key }, 'users erased');
  return { key: existing?.key ?? key, record };
}
