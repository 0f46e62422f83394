/**
 * JSON Schemas of the query API: each validates a request, serialises a reply
 * and becomes part of /openapi.json (one schema, three uses).
 */
import { FUNNEL_DEFAULT_WINDOW_MS, FUNNEL_MAX_STEPS, FUNNEL_MAX_WINDOW_MS, FUNNEL_PROPERTIES } from '../common/config';
import { EVENT_TYPES } from '../common/contract';
import { CLICK_BINS, EVENT_DIMENSIONS, FUNNEL_DIMENSIONS, OBT_DIMENSIONS, RETENTION_MODES, RETENTION_PERIODS, RETENTION_WEEKS } from './metrics';

/** Epoch milliseconds, or an ISO-8601 date / date-time (UTC unless it carries an offset). */
export const TIME_PATTERN = '^(\\d{1,15}|\\d{4}-\\d{2}-\\d{2}(T\\d{2}:\\d{2}(:\\d{2}(\\.\\d{1,3})?)?(Z|[+-]\\d{2}:\\d{2})?)?)$';

const time = (what: string) => ({ type: 'string', pattern: TIME_PATTERN, description: `${what}: epoch ms or ISO-8601 (UTC)` }) as const;
const dimValue = (what: string) => ({ type: 'string', minLength: 1, maxLength: 128, description: `only ${what} equal to this (ALL = the roll-up)` }) as const;
const listOf = (values: readonly string[]) => `^(${values.join('|')})(,(${values.join('|')}))*$`;

export function rangeQuery(granularities: readonly string[], extra: Record<string, unknown> = {}) {
  return {
    type: 'object',
    additionalProperties: false,
    properties: {
      from: time('start of the range (inclusive; floored to the granularity)'),
      to: time('end of the range (exclusive)'),
      granularity: { type: 'string', enum: granularities, default: granularities.includes('hour') ? 'hour' : granularities[0] },
      ...extra,
    },
  } as const;
}

export const eventsQuery = rangeQuery(['second', 'minute', 'hour', 'day'], {
  group_by: { type: 'string', pattern: listOf(EVENT_DIMENSIONS), description: `comma-separated: ${EVENT_DIMENSIONS.join(', ')}` },
  event_type: { type: 'string', enum: [...EVENT_TYPES, 'ALL'] },
  device_type: dimValue('device_type'),
  country: dimValue('country'),
  app_version: dimValue('app_version'),
});
export const activeUsersQuery = rangeQuery(['minute', 'hour', 'day'], {
  device_type: dimValue('device_type'),
  country: { ...dimValue('country'), description: 'only country equal to this (ALL = the roll-up); granularity=day only, from batch' },
});
export const playbackQuery = rangeQuery(['minute', 'hour', 'day']);
export const topContentQuery = rangeQuery(['hour', 'day'], { limit: { type: 'integer', minimum: 1, maximum: 100, default: 10 } });
export const dailyQuery = rangeQuery(['day']);
export const dailySessionsQuery = rangeQuery(['day'], {
  device_type: dimValue('device_type'),
  group_by: { type: 'string', enum: ['device_type'] },
});
export const topPathsQuery = rangeQuery(['day'], { limit: { type: 'integer', minimum: 1, maximum: 20, default: 20 } });
export const bingeQuery = rangeQuery(['day'], { limit: { type: 'integer', minimum: 0, maximum: 1000, default: 100 } });
const period = {
  type: 'string',
  enum: [...RETENTION_PERIODS],
  default: 'day',
  description: 'day: one bucket per day; week: one bucket per ISO week, at its Monday (from is floored to it)',
} as const;
export const retentionQuery = rangeQuery(['day'], {
  mode: {
    type: 'string',
    enum: [...RETENTION_MODES],
    default: 'first_seen',
    description: 'first_seen: users first seen in the cohort period, active in period C+K; recurring: users active in C, active in C+K; unbounded: first seen in C, active in C+K or later',
  },
  period,
});
export const lifecycleQuery = rangeQuery(['day'], { period });
export const churnRiskQuery = rangeQuery(['day'], {
  limit: { type: 'integer', minimum: 0, maximum: 1000, default: 100, description: 'users listed per day' },
  offset: { type: 'integer', minimum: 0, maximum: 10_000_000, default: 0, description: 'users of each day skipped before the list (by user_id ascending)' },
});
export const obtQuery = rangeQuery(['day'], {
  group_by: { type: 'string', pattern: listOf(OBT_DIMENSIONS), description: `comma-separated: ${OBT_DIMENSIONS.join(', ')}` },
  device_type: dimValue('device_type'),
  app_version: dimValue('app_version'),
  country: dimValue('country'),
});

const nullableNumber = { type: ['number', 'null'] } as const;
const count = { type: 'integer' } as const;

export const valueSchemas = {
  count: { type: ['integer', 'null'] },
  playback: {
    type: ['object', 'null'],
    properties: { plays: count, pauses: count, completes: count, rebuffers: count, pause_rate: nullableNumber, completion_rate: nullableNumber },
  },
  topContent: {
    type: ['object', 'null'],
    properties: { items: { type: 'array', items: { type: 'object', properties: { content_id: { type: 'string' }, plays: count } } } },
  },
  sessions: {
    type: ['object', 'null'],
    properties: {
      sessions: count,
      avg_duration_ms: nullableNumber,
      median_duration_ms: nullableNumber,
      bounce_rate: nullableNumber,
      avg_events_per_session: nullableNumber,
    },
  },
  retention: {
    type: ['object', 'null'],
    properties: {
      as_of_day: { type: ['string', 'null'] },
      cohort_size: count,
      retained_d1: { type: ['integer', 'null'] },
      retained_d7: { type: ['integer', 'null'] },
      retained_d14: { type: ['integer', 'null'] },
      retained_d28: { type: ['integer', 'null'] },
      churned: count,
      ...Object.fromEntries(RETENTION_WEEKS.map((k) => [`retained_w${k}`, { type: ['integer', 'null'], description: 'period=week only' }])),
    },
  },
  lifecycle: {
    type: ['object', 'null'],
    properties: {
      as_of_day: { type: ['string', 'null'], description: 'the day the figures are as of (a week: its latest published day)' },
      new: count,
      returning: count,
      resurrecting: count,
      dormant: count,
      active: { ...count, description: 'new + returning + resurrecting' },
    },
  },
  churnRisk: {
    type: ['object', 'null'],
    properties: {
      count,
      users: {
        type: 'array',
        items: {
          type: 'object',
          properties: { user_id: { type: 'string' }, active_days: count, last_active_day: { type: 'string' }, reason: { type: 'string' } },
        },
      },
    },
  },
  clicksToPlay: {
    type: ['object', 'null'],
    properties: {
      play_sessions: count,
      no_play_sessions: count,
      avg_clicks_to_play: nullableNumber,
      histogram: { type: 'array', items: { type: 'object', properties: { clicks: { type: 'string', enum: [...CLICK_BINS] }, sessions: count } } },
    },
  },
  topPaths: {
    type: ['object', 'null'],
    properties: { paths: { type: 'array', items: { type: 'object', properties: { rank: count, path: { type: 'string' }, sessions: count } } } },
  },
  binge: { type: ['object', 'null'], properties: { count, users: { type: 'array', items: { type: 'string' } } } },
  obt: {
    type: ['object', 'null'],
    properties: { total_events: count, total_installs: count, total_views: count, total_plays: count, total_sessions: count, unique_users: count },
  },
} as const;

const nullableInt = { type: ['integer', 'null'] } as const;

export const watermarkSchema = {
  type: 'object',
  description: 'The batch watermark W (epoch ms, exclusive ends): buckets ending at or before W are exact (batch).',
  properties: {
    hourly_start: nullableInt,
    hourly_end: nullableInt,
    daily_start: nullableInt,
    daily_end: nullableInt,
    pinned_end: nullableInt,
    lake_hourly_end: nullableInt,
    lake_daily_end: nullableInt,
    lake_updated_at: { type: ['string', 'null'] },
    synced_at: nullableInt,
    sync_error: { type: ['string', 'null'] },
  },
} as const;

export const freshnessSchema = {
  type: 'object',
  description: 'How fresh the speed layer is: now − received_at of its newest applied batch, and when it was applied.',
  properties: {
    speed_lag_ms: nullableInt,
    speed_applied_at: nullableInt,
    speed_age_ms: nullableInt,
    speed_retention_ms: count,
    batch_lag_ms: nullableInt,
  },
} as const;

export function mergedResponse(value: object, description: string) {
  return {
    type: 'object',
    description,
    properties: {
      metric: { type: 'string' },
      granularity: { type: 'string' },
      from: count,
      to: count,
      boundary: { ...nullableInt, description: 'W applied to this query: buckets ending at or before it came from the batch layer' },
      exact: { type: 'boolean', description: 'every bucket is exact (batch)' },
      complete: { type: 'boolean', description: 'every bucket is covered by a layer' },
      coverage: {
        type: 'object',
        properties: { batch: count, speed: count, none: count, recomputing: { ...count, description: 'present when > 0: buckets of periods being recomputed after late data' } },
      },
      watermark: watermarkSchema,
      freshness: freshnessSchema,
      series: {
        type: 'array',
        items: {
          type: 'object',
          properties: {
            key: { type: 'object', additionalProperties: { type: 'string' }, description: 'the group-by values of this series' },
            buckets: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  start: count,
                  source: {
                    type: 'string',
                    enum: ['batch', 'recomputing', 'speed', 'none'],
                    description:
                      'batch: exact; recomputing: late data arrived for this published period, value is the last published one (not exact) until its re-run; speed: approximate; none: not covered',
                  },
                  exact: { type: 'boolean' },
                  covered: { type: 'boolean', description: 'false: neither layer holds this bucket; value is null (unknown, not zero)' },
                  value,
                  reason: { type: 'string', enum: ['speed_unavailable'], description: 'why a bucket is none: speed_unavailable when Redis did not answer (a failover); retry shortly' },
                  error: {
                    type: 'object',
                    description: 'error bound of an estimate: value ± ci95 is its 95 % interval, measured for Redis HyperLogLog (at least ±2; ±1.4 % below 20,000, ±1.9 % above; bench/hll-error.ts)',
                    properties: { method: { type: 'string' }, relative_std_error: { type: 'number' }, ci95: { type: 'number' } },
                  },
                },
              },
            },
          },
        },
      },
    },
  } as const;
}

export const errorSchema = {
  type: 'object',
  properties: {
    error: { type: 'string' },
    message: { type: 'string' },
    parameter: { type: 'string' },
    metric: { type: 'string' },
    known: { type: 'array', items: { type: 'string' } },
    /** On 5xx: quote it to the operator; the server log has the cause under it. */
    request_id: { type: 'string' },
  },
} as const;

export const alertsResponse = {
  type: 'object',
  properties: {
    alerts: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          rule: { type: 'string' },
          layer: { type: 'string', enum: ['speed', 'serving'] },
          since: count,
          value: { type: 'number' },
          threshold: { type: 'number' },
          message: { type: 'string' },
        },
      },
    },
  },
} as const;

/** One funnel step: `event_type` or `event_type:property=value` (docs/metrics.md, "Funnels"). */
const FUNNEL_STEP = `(${EVENT_TYPES.join('|')})(:(${FUNNEL_PROPERTIES.join('|')})=[^,:=\\s]{1,128})?`;
export const funnelQuery = {
  ...rangeQuery(['day'], {
    steps: {
      type: 'string',
      pattern: `^${FUNNEL_STEP}(,${FUNNEL_STEP}){1,${FUNNEL_MAX_STEPS - 1}}$`,
      description: `2 to ${FUNNEL_MAX_STEPS} comma-separated steps in order, each an event type, optionally with one filter ${FUNNEL_PROPERTIES.map((p) => `:${p}=<value>`).join(' or ')}`,
    },
    window: {
      type: 'integer',
      minimum: 1,
      maximum: FUNNEL_MAX_WINDOW_MS,
      default: FUNNEL_DEFAULT_WINDOW_MS,
      description: 'conversion window in ms from the step-1 event (at most 24 h)',
    },
    device_type: { type: 'string', minLength: 1, maxLength: 128, description: 'only users whose counted attempt started on this device_type' },
    country: { type: 'string', minLength: 1, maxLength: 128, description: 'only users whose counted attempt started in this country' },
    group_by: { type: 'string', pattern: listOf(FUNNEL_DIMENSIONS), description: `comma-separated: ${FUNNEL_DIMENSIONS.join(', ')}` },
  }),
  required: ['steps'],
} as const;

const funnelValue = {
  type: ['object', 'null'],
  properties: {
    entered: { ...count, description: 'users entering step 1' },
    steps: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          users: { ...count, description: 'users whose best attempt reached this step' },
          conversion: { ...nullableNumber, description: "users / the previous step's users (null for step 1)" },
          median_ms: { ...nullableNumber, description: 'median ms from the previous step (null for step 1)' },
        },
      },
    },
    conversion: { ...nullableNumber, description: 'last step users / entered' },
  },
} as const;

const merged = mergedResponse(funnelValue, 'Funnel conversion per day');
export const funnelResponse = {
  ...merged,
  properties: {
    ...merged.properties,
    funnel: {
      type: 'object',
      properties: {
        name: { type: ['string', 'null'], description: 'the declared funnel (FUNNELS) answering from its precomputed table, or null (computed over processed/events)' },
        steps: {
          type: 'array',
          items: { type: 'object', properties: { event_type: { type: 'string' }, property: { type: ['string', 'null'] }, value: { type: ['string', 'null'] } } },
        },
        window_ms: count,
        not_computed: {
          type: 'object',
          description: 'a declared funnel only: the published days of the range its daily run did not compute with these steps and window (their buckets are `none`, not 0)',
          properties: { days: { type: 'array', items: { type: 'string' } }, reason: { type: ['string', 'null'] } },
        },
      },
    },
    speed: {
      type: 'object',
      description: 'why buckets after the batch watermark are `none`',
      properties: { source: { type: 'string', enum: ['none'] }, reason: { type: 'string' } },
    },
  },
} as const;

export const funnelsResponse = {
  type: 'object',
  description: 'The funnels the batch layer computes daily (FUNNELS), and the limits of an ad-hoc funnel',
  required: ['funnels', 'event_types', 'max_steps', 'max_window_ms', 'adhoc_max_days'],
  properties: {
    funnels: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'steps', 'window_ms'],
        properties: {
          name: { type: 'string' },
          steps: { type: 'array', items: { type: 'string' }, description: 'as the `steps` parameter spells them: `event_type` or `event_type:property=value`' },
          window_ms: count,
        },
      },
    },
    event_types: { type: 'array', items: { type: 'string' }, description: "the contract's event types, which a step may name" },
    max_steps: count,
    max_window_ms: count,
    adhoc_max_days: { ...count, description: 'the longest range of a funnel not declared in FUNNELS' },
  },
} as const;

/** A user id the features route looks up: the contract's length, a charset without separators, quotes or spaces. */
export const USER_ID_PATTERN = '^[A-Za-z0-9_.:@+=-]{1,128}$';
export const userFeaturesParams = {
  type: 'object',
  additionalProperties: false,
  required: ['user_id'],
  properties: { user_id: { type: 'string', minLength: 1, maxLength: 128, pattern: USER_ID_PATTERN, description: 'the event user_id (1..128 of A-Z a-z 0-9 _ . : @ + = -)' } },
} as const;
const perWindow = (what: string) =>
  ({ type: 'object', description: what, required: ['5m', '1h', '24h'], properties: { '5m': count, '1h': count, '24h': count } }) as const;
const nullableMs = { type: ['integer', 'null'], minimum: 0 } as const;
export const userFeaturesResponse = {
  type: 'object',
  description: 'One user\'s real-time features (METRICS.md "User features"): speed layer state, days and first seen with the batch layer\'s exact days',
  required: ['user_id', 'as_of', 'sources', 'windows', 'events', 'plays', 'watch_time_ms_24h', 'playing_since', 'current_session', 'last_content', 'binge', 'days_active_28d', 'first_seen'],
  properties: {
    user_id: { type: 'string' },
    as_of: count,
    sources: { type: 'object', properties: { speed: { type: 'boolean' }, batch: { type: 'boolean' } } },
    windows: perWindow('start (epoch ms) of each window: the current minute and the 4 / 59 before it; the current hour and the 23 before it'),
    events: perWindow('events of the user since the window start'),
    plays: perWindow('video_play events of the user since the window start'),
    watch_time_ms_24h: { ...count, description: 'closed play intervals (play/resume to the next pause, stop, complete, play or resume; each capped at 4 h) ending in the 24 h window' },
    playing_since: { ...nullableMs, description: 'ts of the play or resume still open, or null' },
    current_session: {
      type: ['object', 'null'],
      description: 'the session of the latest event if it is still open (within 30 min of now, same UTC day), else null',
      properties: { start: count, last_event: count, events: count, duration_ms: count, device_type: { type: 'string' } },
    },
    last_content: { type: ['object', 'null'], properties: { content_id: { type: 'string' }, ts: count } },
    binge: { type: 'object', properties: { binging_today: { type: 'boolean' }, completes_4h: count } },
    days_active_28d: {
      type: 'object',
      description: 'distinct UTC days with an event among today and the 27 before: published batch days before batch_until, speed layer days from it',
      properties: { value: count, from_day: { type: 'string' }, batch_days: count, speed_days: count, batch_until: { type: ['string', 'null'] } },
    },
    first_seen: {
      type: ['object', 'null'],
      properties: { ts: nullableMs, day: { type: 'string' }, source: { type: 'string', enum: ['batch', 'speed'] } },
    },
  },
} as const;
