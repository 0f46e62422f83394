/**
 * METRICS.md again, in plain SQL, straight from the NDJSON the simulator wrote:
 * which lines are valid events (§1, schema_version 1 and 2), their derived dimensions, de-duplication
 * by event_id in send order (§2), sessions, and every batch view the platform
 * publishes. Independent of batch-layer/sql on purpose: the tests compare what
 * the platform computed (published tables, API answers) with these.
 *
 * `defineExpected` creates the tables `lines`, `exp_events` and `exp_sessions`;
 * `expectedSql` holds one statement per published table, over those tables.
 */
import { EVENT_TYPES, MAX_FUTURE_SKEW_MS, MIN_TIMESTAMP_MS } from '../../common/contract';
import { sqlList, sqlString, type Duck } from '../../batch-layer/jobs/duck';

/**
 * Loads the NDJSON into `duck` as `exp_events` (valid, derived, de-duplicated) and
 * `exp_sessions`. `clock` stands for the collector's clock in the
 * "not more than 5 minutes in the future" rule.
 */
export async function defineExpected(duck: Duck, ndjson: string, clock: number): Promise<void> {
  const str = (p: string) => `coalesce(json_type(j, '${p}'), 'VARCHAR') = 'VARCHAR'`;
  const num = (p: string) => `coalesce(json_type(j, '${p}'), 'DOUBLE') IN ('DOUBLE', 'BIGINT', 'UBIGINT')`;
  const V2 = `json_extract_string(j, '$.schema_version') = '2'`;
  const nonEmpty = (p: string) => `CASE WHEN json_type(j, '${p}') = 'VARCHAR' AND json_extract_string(j, '${p}') <> '' THEN json_extract_string(j, '${p}') END`;
  await duck.run(`
    CREATE TABLE lines AS
    SELECT line, ordinality AS line_no
    FROM read_csv(${sqlString(ndjson)}, columns = {'line': 'VARCHAR'}, header = false, delim = '\x01', quote = '', escape = '', auto_detect = false)
    WITH ORDINALITY`);
  await duck.run(`
    CREATE TABLE exp_events AS
    WITH parsed AS (
      -- DuckDB's JSON reader tolerates a trailing comma; JSON (and the collector) do not.
      SELECT line_no, CAST(line AS JSON) AS j FROM lines
      WHERE json_valid(line) AND NOT regexp_matches(line, ',\\s*[}\\]]')
    ),
    valid AS (
      SELECT * FROM parsed
      WHERE json_type(j) = 'OBJECT'
        AND (json_type(j, '$.schema_version') IS NULL OR (json_type(j, '$.schema_version') IN ('BIGINT', 'UBIGINT') AND json_extract_string(j, '$.schema_version') IN ('1', '2')))
        AND json_type(j, '$.event_id') = 'VARCHAR' AND length(json_extract_string(j, '$.event_id')) BETWEEN 1 AND 128
        AND json_type(j, '$.event_type') = 'VARCHAR' AND json_extract_string(j, '$.event_type') IN (${EVENT_TYPES.map(sqlString).join(', ')})
        AND json_type(j, '$.user_id') = 'VARCHAR' AND length(json_extract_string(j, '$.user_id')) BETWEEN 1 AND 128
        AND json_type(j, '$.timestamp') IN ('BIGINT', 'UBIGINT')
        AND coalesce(json_type(j, '$.session_id'), 'NULL') IN ('VARCHAR', 'NULL') AND coalesce(length(json_extract_string(j, '$.session_id')), 0) <= 128
        AND coalesce(json_type(j, '$.properties'), 'NULL') IN ('OBJECT', 'NULL')
        AND coalesce(json_type(j, '$.context'), 'NULL') IN ('OBJECT', 'NULL')
        AND ${['content_id', 'video_quality', 'page', 'target'].map((k) => str(`$.properties.${k}`)).join(' AND ')}
        -- Version 1 has a flat device_type; version 2 a device object {type, os, model} and a required app_id.
        AND CASE WHEN ${V2} THEN json_type(j, '$.app_id') = 'VARCHAR' AND length(json_extract_string(j, '$.app_id')) BETWEEN 1 AND 64
                   AND coalesce(json_type(j, '$.properties.device'), 'NULL') IN ('OBJECT', 'NULL')
                   AND ${['type', 'os', 'model'].map((k) => str(`$.properties.device.${k}`)).join(' AND ')}
                 ELSE ${str('$.properties.device_type')} END
        AND ${num('$.properties.playback_position')} AND ${num('$.properties.duration_ms')}
        AND ${['location', 'user_agent', 'ip_address', 'app_version'].map((k) => str(`$.context.${k}`)).join(' AND ')}
        AND CAST(json_extract_string(j, '$.timestamp') AS BIGINT) BETWEEN ${MIN_TIMESTAMP_MS} AND ${clock + MAX_FUTURE_SKEW_MS}
    ),
    derived AS (
      SELECT
        line_no,
        json_extract_string(j, '$.event_id') AS event_id,
        json_extract_string(j, '$.event_type') AS event_type,
        json_extract_string(j, '$.user_id') AS user_id,
        CAST(json_extract_string(j, '$.timestamp') AS BIGINT) AS ts,
        coalesce(CASE WHEN ${V2} THEN ${nonEmpty('$.properties.device.type')} ELSE ${nonEmpty('$.properties.device_type')} END, 'unknown') AS device_type,
        CASE WHEN regexp_full_match(split_part(json_extract_string(j, '$.context.location'), '-', 1), '[A-Za-z]{2}')
             THEN upper(split_part(json_extract_string(j, '$.context.location'), '-', 1)) ELSE 'unknown' END AS country,
        coalesce(${nonEmpty('$.context.app_version')}, 'unknown') AS app_version,
        ${nonEmpty('$.properties.content_id')} AS content_id
      FROM valid
    )
    SELECT d.* EXCLUDE (line_no), CAST(to_timestamp(ts / 1000) AS DATE) AS day, strftime(to_timestamp(ts // 3600000 * 3600), '%Y-%m-%dT%H') AS hour
    FROM derived d
    JOIN (SELECT event_id, min(line_no) AS first_line FROM derived GROUP BY event_id) f ON d.event_id = f.event_id AND d.line_no = f.first_line`);
  // Sessions, written from the definition: a session starts where no event of the same user and
  // day lies within the 30 minutes before it.
  await duck.run(`
    CREATE TABLE exp_sessions AS
    WITH starts AS (
      SELECT e.*, (
        SELECT count(*) FROM exp_events p
        WHERE p.user_id = e.user_id AND p.day = e.day AND (p.ts < e.ts OR (p.ts = e.ts AND p.event_id < e.event_id)) AND p.ts >= e.ts - 1800000
      ) = 0 AS is_start
      FROM exp_events e
    ),
    tagged AS (
      SELECT *, count(*) FILTER (WHERE is_start) OVER (PARTITION BY user_id, day ORDER BY ts, event_id) AS session_idx FROM starts
    ),
    seq AS (
      SELECT *, row_number() OVER (PARTITION BY user_id, day, session_idx ORDER BY ts, event_id) AS k FROM tagged
    ),
    firsts AS (
      SELECT user_id, day, session_idx, min(k) FILTER (WHERE event_type = 'video_play') AS play_k FROM seq GROUP BY ALL
    )
    SELECT
      s.user_id, s.day, s.session_idx,
      min(ts) AS start_ts, max(ts) AS end_ts, max(ts) - min(ts) AS duration_ms, count(*) AS events,
      max(device_type) FILTER (WHERE k = 1) AS device_type,
      max(app_version) FILTER (WHERE k = 1) AS app_version,
      max(country) FILTER (WHERE k = 1) AS country,
      f.play_k IS NOT NULL AS has_play,
      CASE WHEN f.play_k IS NOT NULL THEN count(*) FILTER (WHERE k < f.play_k AND event_type IN ('page_view', 'click', 'search')) END AS clicks_to_play,
      CASE WHEN f.play_k IS NULL THEN NULL
           WHEN f.play_k = 1 THEN '(direct)'
           ELSE array_to_string(list(event_type ORDER BY k) FILTER (WHERE k < f.play_k AND k >= f.play_k - 5), '>') END AS path
    FROM seq s JOIN firsts f USING (user_id, day, session_idx)
    GROUP BY s.user_id, s.day, s.session_idx, f.play_k`);
}

const playback = (key: string) => `SELECT hour AS hour_id, ${key} AS content_id,
     count(*) FILTER (WHERE event_type = 'video_play') AS plays, count(*) FILTER (WHERE event_type = 'video_pause') AS pauses,
     count(*) FILTER (WHERE event_type = 'video_complete') AS completes, count(*) FILTER (WHERE event_type = 'rebuffer') AS rebuffers,
     CASE WHEN count(*) FILTER (WHERE event_type = 'video_play') > 0 THEN count(*) FILTER (WHERE event_type = 'video_pause') / count(*) FILTER (WHERE event_type = 'video_play') END AS pause_rate,
     CASE WHEN count(*) FILTER (WHERE event_type = 'video_play') > 0 THEN count(*) FILTER (WHERE event_type = 'video_complete') / count(*) FILTER (WHERE event_type = 'video_play') END AS completion_rate
   FROM exp_events`;

/** The grouping sets of the one big table, as (device_type, app_version, country) expressions. */
const OBT_SETS: [string, string, string][] = [
  ['device_type', 'app_version', 'country'],
  ['device_type', "'ALL'", 'country'],
  ['device_type', "'ALL'", "'ALL'"],
  ["'ALL'", "'ALL'", 'country'],
  ["'ALL'", "'ALL'", "'ALL'"],
];

/**
 * One statement per published table, over `exp_events` / `exp_sessions`, with the
 * table's columns. Hourly tables take the hours they cover (an hour without any
 * event still publishes its zero row).
 */
export const expectedSql = {
  events: () => `SELECT event_id, event_type, user_id, ts, device_type, country, app_version, content_id FROM exp_events`,

  // Each event counts once in every combination of its own value or 'ALL' per dimension.
  hourlyEvents: (hours: readonly string[]) => `SELECT e.hour AS hour_id, CAST(epoch_ms(strptime(e.hour, '%Y-%m-%dT%H')) AS BIGINT) AS hour_start_ms,
          et.v AS event_type, dt.v AS device_type, c.v AS country, av.v AS app_version, count(*) AS events
   FROM exp_events e,
        LATERAL (VALUES (e.event_type), ('ALL')) et(v), LATERAL (VALUES (e.device_type), ('ALL')) dt(v),
        LATERAL (VALUES (e.country), ('ALL')) c(v), LATERAL (VALUES (e.app_version), ('ALL')) av(v)
   GROUP BY ALL
   UNION ALL
   -- hours without any event publish one all-ALL row of zero
   SELECT hh, CAST(epoch_ms(strptime(hh, '%Y-%m-%dT%H')) AS BIGINT), 'ALL', 'ALL', 'ALL', 'ALL', 0
   FROM (SELECT unnest(${sqlList(hours)}) AS hh) WHERE hh NOT IN (SELECT hour FROM exp_events)`,

  hourlyUsers: (hours: readonly string[]) => `SELECT hour AS hour_id, 'ALL' AS device_type, count(DISTINCT user_id) AS users FROM exp_events GROUP BY hour
   UNION ALL SELECT hour, device_type, count(DISTINCT user_id) FROM exp_events GROUP BY hour, device_type
   UNION ALL SELECT hh, 'ALL', 0 FROM (SELECT unnest(${sqlList(hours)}) AS hh) WHERE hh NOT IN (SELECT hour FROM exp_events)`,

  hourlyPlayback: (hours: readonly string[]) => `${playback("'ALL'")} GROUP BY hour UNION ALL ${playback('content_id')} GROUP BY hour, content_id
   UNION ALL SELECT hh, 'ALL', 0, 0, 0, 0, NULL, NULL FROM (SELECT unnest(${sqlList(hours)}) AS hh) WHERE hh NOT IN (SELECT hour FROM exp_events)`,

  sessions: () => 'SELECT * FROM exp_sessions',

  userDailyActivity: () => `SELECT e.user_id, e.day, count(*) AS events,
     (SELECT count(*) FROM exp_sessions s WHERE s.user_id = e.user_id AND s.day = e.day) AS sessions,
     count(*) FILTER (WHERE event_type = 'video_play') AS plays, count(*) FILTER (WHERE event_type = 'video_complete') AS completes,
     min(ts) AS first_event_ts, max(ts) AS last_event_ts,
     (SELECT min(day) FROM exp_events f WHERE f.user_id = e.user_id) AS first_seen_day
   FROM exp_events e GROUP BY e.user_id, e.day`,

  dailySessions: () => `SELECT day, device_type, count(*) AS sessions, avg(duration_ms) AS avg_duration_ms, quantile_cont(duration_ms, 0.5) AS median_duration_ms,
          sum(CASE WHEN events = 1 THEN 1 ELSE 0 END) / count(*) AS bounce_rate, avg(events) AS avg_events_per_session
   FROM (SELECT day, device_type, duration_ms, events FROM exp_sessions UNION ALL SELECT day, 'ALL', duration_ms, events FROM exp_sessions)
   GROUP BY day, device_type`,

  clicksToPlay: () => `SELECT day, count(*) FILTER (WHERE has_play) AS play_sessions, count(*) FILTER (WHERE NOT has_play) AS no_play_sessions,
          avg(clicks_to_play) AS avg_clicks_to_play,
          ${Array.from({ length: 10 }, (_, i) => `count(*) FILTER (WHERE clicks_to_play = ${i}) AS clicks_${i}`).join(', ')},
          count(*) FILTER (WHERE clicks_to_play >= 10) AS clicks_10_plus
   FROM exp_sessions GROUP BY day`,

  topPaths: () => `SELECT day, rank, path, sessions FROM (
     SELECT day, path, count(*) AS sessions, rank() OVER (PARTITION BY day ORDER BY count(*) DESC, path) AS rank
     FROM exp_sessions WHERE has_play GROUP BY day, path) WHERE rank <= 20`,

  bingeUsers: () => `SELECT c3.day, c3.user_id, min(c3.ts) AS first_binge_ts
   FROM exp_events c3
   WHERE c3.event_type = 'video_complete' AND (
     SELECT count(*) FROM exp_events c
     WHERE c.user_id = c3.user_id AND c.event_type = 'video_complete'
       AND (c.ts < c3.ts OR (c.ts = c3.ts AND c.event_id <= c3.event_id)) AND c.ts >= c3.ts - 14400000) >= 3
   GROUP BY c3.day, c3.user_id`,

  retentionCohorts: () => `WITH activity AS (SELECT DISTINCT user_id, day FROM exp_events),
   as_of_days AS (SELECT DISTINCT day AS a FROM exp_events),
   firsts AS (SELECT a, user_id, min(day) AS c, max(day) AS last_day FROM as_of_days JOIN activity ON day <= a GROUP BY a, user_id),
   flags AS (
     SELECT f.*, ${[1, 7, 14, 28].map((k) => `EXISTS (SELECT 1 FROM activity x WHERE x.user_id = f.user_id AND x.day = f.c + ${k}) AS r${k}`).join(', ')}
     FROM firsts f)
   SELECT a AS as_of_day, c AS cohort_day, count(*) AS cohort_size,
     ${[1, 7, 14, 28].map((k) => `CASE WHEN c + ${k} <= a THEN count(*) FILTER (WHERE r${k}) END AS retained_d${k}`).join(', ')},
     count(*) FILTER (WHERE last_day <= a - 14) AS churned
   FROM flags GROUP BY a, c`,

  dailyAggregatesWithDimensions: () =>
    OBT_SETS.map(
      ([d, a, c]) => `SELECT ev.*, coalesce(ss.total_sessions, 0) AS total_sessions FROM (
         SELECT day, ${d} AS device_type, ${a} AS app_version, ${c} AS country, count(*) AS total_events,
           count(*) FILTER (WHERE event_type = 'app_install') AS total_installs, count(*) FILTER (WHERE event_type = 'page_view') AS total_views,
           count(*) FILTER (WHERE event_type = 'video_play') AS total_plays, count(DISTINCT user_id) AS unique_users
         FROM exp_events GROUP BY ALL) ev
       LEFT JOIN (
         SELECT day, ${d} AS device_type, ${a} AS app_version, ${c} AS country, count(*) AS total_sessions
         FROM exp_sessions GROUP BY ALL) ss USING (day, device_type, app_version, country)`,
    ).join(' UNION ALL '),
};
