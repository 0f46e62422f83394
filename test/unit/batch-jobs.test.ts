/** Period parsing and the data-quality gate of the batch jobs, without the lake. */
import { describe, expect, it } from 'vitest';
import { NonRetryableBatchError, QualityCheckError, hoursOfDay, parsePeriod } from '../../batch-layer/jobs';
import { Duck, emptyRawSelect } from '../../batch-layer/jobs/duck';

describe('parsePeriod', () => {
  const now = Date.parse('2025-06-01T12:30:00Z');
  it('accepts closed hours and days', () => {
    expect(parsePeriod('hourly', '2025-06-01T11', now)).toEqual({
      kind: 'hourly',
      id: '2025-06-01T11',
      startMs: Date.parse('2025-06-01T11:00:00Z'),
      endMs: Date.parse('2025-06-01T12:00:00Z'),
    });
    expect(parsePeriod('daily', '2025-05-31', now).endMs).toBe(Date.parse('2025-06-01T00:00:00Z'));
  });
  it('rejects malformed, impossible and unfinished periods as non-retryable', () => {
    for (const [kind, id] of [
      ['hourly', '2025-06-01T24'],
      ['hourly', '2025-06-01 11'],
      ['daily', '2025-02-30'],
      ['daily', '2025-6-1'],
      ['hourly', '2025-06-01T12'], // still running
      ['daily', '2025-06-01'],
    ] as const) {
      expect(() => parsePeriod(kind, id, now), `${kind} ${id}`).toThrow(NonRetryableBatchError);
    }
  });
  it('lists the 24 hours of a day', () => {
    expect(hoursOfDay('2025-06-01')).toHaveLength(24);
    expect(hoursOfDay('2025-06-01')[23]).toBe('2025-06-01T23');
  });
});

describe('hourly data-quality gate', () => {
  it('fails when a processed row misses a mandatory field, and QualityCheckError names the check', async () => {
    const duck = await Duck.open({ threads: 1 });
    try {
      await duck.setVariables({ hour: '2025-06-01T10', hour_start: 0, hour_end: 3_600_000 });
      await duck.run(`CREATE TABLE raw_events AS ${emptyRawSelect()}`);
      await duck.run(
        `INSERT INTO raw_events (event_id, event_type, user_id, ts, device_type, country, app_version, received_at, kafka_partition, kafka_offset)
         VALUES ('a', 'click', 'u', 10, NULL, 'US', '1', 10, 0, 0)`,
      );
      for (const t of ['events', 'hourly_events', 'hourly_users', 'hourly_playback']) await duck.materialize(t);
      const checks = (await duck.select('quality_hourly')) as { name: string; ok: boolean; detail: string }[];
      expect(checks.filter((c) => !c.ok).map((c) => c.name)).toEqual(['mandatory_fields_not_null']);
      expect(new QualityCheckError('2025-06-01T10', checks).message).toMatch(/mandatory_fields_not_null \(1 processed rows miss a mandatory field\)/);
    } finally {
      duck.close();
    }
  });
});
