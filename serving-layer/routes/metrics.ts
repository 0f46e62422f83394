/**
 * GET /v1/metrics/<metric>: one route per metric, each declaring its query and
 * reply schema and which metric definition it wants. The batch/speed boundary
 * is applied by `merge` alone.
 */
import type { FastifyPluginAsync } from 'fastify';
import { s3Client } from '../../common/clients';
import { FUNNEL_MAX_STEPS, FUNNEL_MAX_WINDOW_MS, parseFunnelSteps, type FunnelStep } from '../../common/config';
import { ALL, EVENT_TYPES } from '../../common/contract';
import { MergeError, merge, type MetricDef, type WatermarkView } from '../merge';
import {
  activeUsersMetric,
  bingeMetric,
  churnRiskMetric,
  clicksToPlayMetric,
  dailySessionsMetric,
  declaredFunnel,
  FUNNEL_ADHOC_MAX_DAYS,
  FUNNEL_DIMENSIONS,
  FUNNEL_NOT_COMPUTED_REASON,
  FUNNEL_SPEED_REASON,
  funnelComputedDays,
  funnelMetric,
  funnelStepText,
  lakeFunnelEvents,
  type FunnelDimension,
  type FunnelParams,
  eventsMetric,
  lifecycleMetric,
  obtLevelError,
  obtMetric,
  playbackMetric,
  retentionByModeMetric,
  topContentMetric,
  topPathsMetric,
  type BingeValue,
  type ChurnRiskParams,
  type ChurnRiskValue,
  type ClicksToPlayValue,
  type EventDimension,
  type EventsParams,
  type LifecyclePeriod,
  type LifecycleValue,
  type ObtDimension,
  type ObtParams,
  type ObtValue,
  type PlaybackValue,
  type RetentionModeValue,
  type RetentionParams,
  type SessionsValue,
  type Sources,
  type TopContentValue,
  type TopPathsValue,
  type UsersParams,
  weekBuckets,
  weekStartOf,
} from '../metrics';
import { BatchCache, withBatchCache } from '../read-cache';
import * as S from '../schemas';
import { rangeOf, type RangeQs } from '../time-range';
import { GUARDED, type ServingContext } from './context';

const DAY_MS = 86_400_000;

/** The daily watermark with the days outside `computed` missing, so merge labels them `none`. */
function funnelWatermark(w: WatermarkView, computed: ReadonlySet<number>): WatermarkView {
  const { stateOf } = w.daily;
  return { ...w, daily: { ...w.daily, periodMs: DAY_MS, stateOf: (d) => (computed.has(d) ? (stateOf?.(d) ?? 'exact') : 'missing') } };
}

const csv = <T extends string>(s: string | undefined): T[] => (s ? ([...new Set(s.split(','))] as T[]) : []);

export const metricRoutes: FastifyPluginAsync<ServingContext> = async (app, ctx) => {
  const { cfg, redis, store, now, status, metrics } = ctx;
  const src: Sources = { cfg, batch: store, redis };
  const cache = new BatchCache();
  const metricNames: string[] = [];

  /** One metric route: the schema, and how the query string becomes the metric's parameters. */
  function metricRoute<Q extends RangeQs, P, V>(opts: {
    name: string;
    summary: string;
    querystring: object;
    value: object;
    def: MetricDef<P, V>;
    params: (qs: Q) => { params: P; groupBy: string[] };
    /** Weekly replies: the range starts at its week's Monday and each week folds into one bucket (weekBuckets). */
    weekly?: (qs: Q) => boolean;
  }): void {
    metricNames.push(opts.name);
    const def = withBatchCache(opts.def, store, cache, cfg.serving.speedCacheMs);
    app.get(
      `/v1/metrics/${opts.name}`,
      {
        config: { access: 'read' },
        schema: {
          tags: ['metrics'],
          summary: opts.summary,
          querystring: opts.querystring,
          response: { 200: S.mergedResponse(opts.value, opts.summary), 400: S.errorSchema, ...GUARDED },
        },
      },
      async (req) => {
        const t = now();
        const qs = req.query as Q;
        const range = rangeOf(qs, t);
        const weekly = opts.weekly?.(qs) === true;
        // Floored after this check, so an empty range stays a 400 even when it starts after its Monday.
        if (weekly && !(range.to > range.from)) throw new MergeError('to', `to (${range.to}) must be after from (${range.from})`);
        const from = weekly ? weekStartOf(range.from) : range.from;
        const { params, groupBy } = opts.params(qs);
        const [merged, freshness] = await Promise.all([
          merge(def, { from, to: range.to, granularity: qs.granularity, params, groupBy }, { watermark: store.watermark(), now: t, maxBuckets: cfg.serving.maxBuckets }),
          status.freshness(),
        ]);
        const result = weekly ? weekBuckets(merged) : merged;
        for (const s of ['batch', 'speed', 'none', 'recomputing'] as const) {
          const n = result.coverage[s] ?? 0;
          if (n > 0) metrics.bucketsServed.inc({ metric: opts.name, source: s }, n * result.series.length);
        }
        return { ...result, watermark: status.watermark(), freshness };
      },
    );
  }

  type EventsQs = RangeQs & { group_by?: string; event_type?: string; device_type?: string; country?: string; app_version?: string };
  metricRoute<EventsQs, EventsParams, number>({
    name: 'events',
    summary: 'Events per bucket, optionally grouped by and filtered on event_type, device_type, country, app_version',
    querystring: S.eventsQuery,
    value: S.valueSchemas.count,
    def: eventsMetric(src),
    params: (qs) => {
      const groupBy = csv<EventDimension>(qs.group_by);
      const filters: Partial<Record<EventDimension, string>> = {};
      for (const d of ['event_type', 'device_type', 'country', 'app_version'] as const) if (qs[d] !== undefined) filters[d] = qs[d];
      return { params: { groupBy, filters }, groupBy };
    },
  });
  metricRoute<RangeQs & { device_type?: string; country?: string }, UsersParams, number>({
    name: 'active_users',
    summary: 'Distinct users per bucket (HAU/DAU); speed values are HyperLogLog estimates with their error; by country per day only (batch)',
    querystring: S.activeUsersQuery,
    value: S.valueSchemas.count,
    def: activeUsersMetric(src),
    params: (qs) => {
      const country = qs.country ?? ALL;
      // Only the daily one big table counts users per country; hourly_users and the HyperLogLogs do not.
      if (country !== ALL && qs.granularity !== 'day') throw new MergeError('country', 'country needs granularity=day: only the daily one big table counts users per country');
      return { params: { deviceType: qs.device_type ?? ALL, country }, groupBy: [] };
    },
  });
  metricRoute<RangeQs, Record<string, never>, PlaybackValue>({
    name: 'playback',
    summary: 'Plays, pauses, completes, rebuffers, pause rate and completion rate (null when plays = 0)',
    querystring: S.playbackQuery,
    value: S.valueSchemas.playback,
    def: playbackMetric(src),
    params: () => ({ params: {}, groupBy: [] }),
  });
  metricRoute<RangeQs & { limit: number }, { limit: number }, TopContentValue>({
    name: 'top_content',
    summary: 'content_id ranked by plays per bucket',
    querystring: S.topContentQuery,
    value: S.valueSchemas.topContent,
    def: topContentMetric(src),
    params: (qs) => ({ params: { limit: qs.limit }, groupBy: [] }),
  });
  metricRoute<RangeQs & { device_type?: string; group_by?: string }, { deviceType: string; groupByDevice: boolean }, SessionsValue>({
    name: 'daily_sessions',
    summary: 'Daily session metrics (batch only): sessions, durations, bounce rate, events per session',
    querystring: S.dailySessionsQuery,
    value: S.valueSchemas.sessions,
    def: dailySessionsMetric(src),
    params: (qs) => ({ params: { deviceType: qs.device_type ?? ALL, groupByDevice: qs.group_by === 'device_type' }, groupBy: qs.group_by ? ['device_type'] : [] }),
  });
  type PeriodQs = RangeQs & { period: LifecyclePeriod };
  metricRoute<PeriodQs & { mode: RetentionParams['mode'] }, RetentionParams, RetentionModeValue>({
    name: 'retention',
    summary: 'Retention and churn per cohort day or ISO week, first_seen, recurring or unbounded (batch only), as of the latest day before the watermark',
    querystring: S.retentionQuery,
    value: S.valueSchemas.retention,
    def: retentionByModeMetric(src),
    params: (qs) => ({ params: { mode: qs.mode, period: qs.period }, groupBy: [] }),
    weekly: (qs) => qs.period === 'week',
  });
  metricRoute<PeriodQs, { period: LifecyclePeriod }, LifecycleValue>({
    name: 'lifecycle',
    summary: 'New, returning, resurrecting and dormant users per day or ISO week (batch only)',
    querystring: S.lifecycleQuery,
    value: S.valueSchemas.lifecycle,
    def: lifecycleMetric(src),
    params: (qs) => ({ params: { period: qs.period }, groupBy: [] }),
    weekly: (qs) => qs.period === 'week',
  });
  metricRoute<RangeQs & ChurnRiskParams, ChurnRiskParams, ChurnRiskValue>({
    name: 'churn_risk',
    summary: 'Users at risk of churning per day: active on >= 3 of the 14 days D-20 .. D-7, on none of D-6 .. D (batch only; paged)',
    querystring: S.churnRiskQuery,
    value: S.valueSchemas.churnRisk,
    def: churnRiskMetric(src),
    params: (qs) => ({ params: { limit: qs.limit, offset: qs.offset }, groupBy: [] }),
  });
  metricRoute<RangeQs, Record<string, never>, ClicksToPlayValue>({
    name: 'clicks_to_play',
    summary: 'Daily histogram of clicks before the first play (batch only)',
    querystring: S.dailyQuery,
    value: S.valueSchemas.clicksToPlay,
    def: clicksToPlayMetric(src),
    params: () => ({ params: {}, groupBy: [] }),
  });
  metricRoute<RangeQs & { limit: number }, { limit: number }, TopPathsValue>({
    name: 'top_paths',
    summary: 'The most frequent paths to the first play per day (batch only)',
    querystring: S.topPathsQuery,
    value: S.valueSchemas.topPaths,
    def: topPathsMetric(src),
    params: (qs) => ({ params: { limit: qs.limit }, groupBy: [] }),
  });
  metricRoute<RangeQs & { limit: number }, { limit: number }, BingeValue>({
    name: 'binge_users',
    summary: 'Users binging per day: ≥3 completes within 4 hours',
    querystring: S.bingeQuery,
    value: S.valueSchemas.binge,
    def: bingeMetric(src),
    params: (qs) => ({ params: { limit: qs.limit }, groupBy: [] }),
  });
  type ObtQs = RangeQs & { group_by?: string; device_type?: string; app_version?: string; country?: string };
  metricRoute<ObtQs, ObtParams, ObtValue>({
    name: 'obt',
    summary: 'The one big table: daily totals by device_type, app_version, country with ALL roll-ups (batch only)',
    querystring: S.obtQuery,
    value: S.valueSchemas.obt,
    def: obtMetric(src),
    params: (qs) => {
      const groupBy = csv<ObtDimension>(qs.group_by);
      const filters: Partial<Record<ObtDimension, string>> = {};
      for (const d of ['device_type', 'app_version', 'country'] as const) if (qs[d] !== undefined) filters[d] = qs[d];
      const p = { groupBy, filters };
      const problem = obtLevelError(p);
      if (problem) throw new MergeError(groupBy.length > 0 ? 'group_by' : (Object.keys(filters)[0] ?? 'group_by'), problem);
      return { params: p, groupBy };
    },
  });

  // funnel: its own route, as its steps decide the value's shape and whether a declared funnel answers.
  type FunnelQs = RangeQs & { steps: string; window: number; device_type?: string; country?: string; group_by?: string };
  const funnelEvents = lakeFunnelEvents(cfg, s3Client(cfg));
  metricNames.push('funnel');
  app.get(
    '/v1/metrics/funnel',
    {
      config: { access: 'read' },
      schema: {
        tags: ['metrics'],
        summary: `Funnel conversion per day: users entering step 1, reaching each later step in order within the window, median time between steps (batch only; an undeclared funnel over at most ${FUNNEL_ADHOC_MAX_DAYS} days)`,
        querystring: S.funnelQuery,
        response: { 200: S.funnelResponse, 400: S.errorSchema, ...GUARDED },
      },
    },
    async (req) => {
      const t = now();
      const qs = req.query as FunnelQs;
      const range = rangeOf(qs, t);
      let steps: FunnelStep[];
      try {
        steps = parseFunnelSteps(qs.steps.split(','));
      } catch (err) {
        throw new MergeError('steps', (err as Error).message);
      }
      const declared = declaredFunnel(cfg.funnels, steps, qs.window);
      if (declared === null && range.to - range.from > FUNNEL_ADHOC_MAX_DAYS * 86_400_000) {
        throw new MergeError('from', `an ad-hoc funnel (not declared in FUNNELS) reads every event of its range: at most ${FUNNEL_ADHOC_MAX_DAYS} days, not ${Math.ceil((range.to - range.from) / 86_400_000)}`);
      }
      const groupBy = csv<FunnelDimension>(qs.group_by);
      const filters: FunnelParams['filters'] = {};
      for (const d of FUNNEL_DIMENSIONS) if (qs[d] !== undefined) filters[d] = qs[d];
      const params: FunnelParams = { steps, windowMs: qs.window, declared, filters, groupBy };
      const watermark = store.watermark();
      let notComputed: string[] | undefined;
      let view = watermark;
      if (declared !== null) {
        // A published day without this definition's funnel_days row is not covered: never an exact 0.
        const first = Math.floor(range.from / DAY_MS) * DAY_MS;
        const computed = await funnelComputedDays(src, declared, steps, qs.window, first, range.to);
        const published = (d: number) => {
          const w = watermark.daily;
          return w.start !== null && w.end !== null && d >= w.start && d < w.end && (w.stateOf?.(d) ?? 'exact') !== 'missing';
        };
        notComputed = [];
        for (let d = first; d < range.to; d += DAY_MS) if (published(d) && !computed.has(d)) notComputed.push(new Date(d).toISOString().slice(0, 10));
        view = funnelWatermark(watermark, computed);
      }
      const [result, freshness] = await Promise.all([
        merge(funnelMetric(src, funnelEvents, steps.length), { ...range, granularity: qs.granularity, params, groupBy }, { watermark: view, now: t, maxBuckets: cfg.serving.maxBuckets }),
        status.freshness(),
      ]);
      for (const s of ['batch', 'speed', 'none', 'recomputing'] as const) {
        const n = result.coverage[s] ?? 0;
        if (n > 0) metrics.bucketsServed.inc({ metric: 'funnel', source: s }, n * result.series.length);
      }
      return {
        ...result,
        watermark: status.watermark(),
        freshness,
        funnel: {
          name: declared,
          steps,
          window_ms: qs.window,
          ...(notComputed === undefined ? {} : { not_computed: { days: notComputed, reason: notComputed.length > 0 ? FUNNEL_NOT_COMPUTED_REASON : null } }),
        },
        speed: { source: 'none', reason: FUNNEL_SPEED_REASON },
      };
    },
  );

  app.get(
    '/v1/metrics/funnels',
    {
      config: { access: 'read' },
      schema: {
        tags: ['metrics'],
        summary: 'The declared funnels (FUNNELS), and what an ad-hoc funnel may use: event types, step count, window',
        response: { 200: S.funnelsResponse, ...GUARDED },
      },
    },
    async () => ({
      funnels: cfg.funnels.map((f) => ({ name: f.name, steps: f.steps.map(funnelStepText), window_ms: f.window_ms })),
      event_types: EVENT_TYPES,
      max_steps: FUNNEL_MAX_STEPS,
      max_window_ms: FUNNEL_MAX_WINDOW_MS,
      adhoc_max_days: FUNNEL_ADHOC_MAX_DAYS,
    }),
  );

  app.get<{ Params: { metric: string } }>(
    '/v1/metrics/:metric',
    { config: { access: 'read' }, schema: { hide: true, params: { type: 'object', properties: { metric: { type: 'string' } } }, response: { 404: S.errorSchema, ...GUARDED } } },
    async (req, reply) => reply.code(404).send({ error: 'unknown_metric', metric: req.params.metric, message: `no metric named ${req.params.metric}`, known: metricNames }),
  );
};
