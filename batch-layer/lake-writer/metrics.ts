/** The lake writer's Prometheus metrics (docs/lake.md lists them). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export function lakeWriterMetrics(registry: Registry) {
  return {
    records: new Counter({ name: 'lake_writer_records_total', help: 'Records consumed, by stream', labelNames: ['stream'], registers: [registry] }),
    objects: new Counter({ name: 'lake_writer_objects_total', help: 'Objects uploaded, by stream', labelNames: ['stream'], registers: [registry] }),
    objectBytes: new Counter({ name: 'lake_writer_object_bytes_total', help: 'Parquet bytes uploaded', registers: [registry] }),
    objectRows: new Histogram({
      name: 'lake_writer_object_rows',
      help: 'Rows per uploaded object',
      buckets: [10, 100, 1000, 10_000, 100_000, 1_000_000],
      registers: [registry],
    }),
    uploadSeconds: new Histogram({
      name: 'lake_writer_upload_seconds',
      help: 'Time to encode and upload one object',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    uploadFailures: new Counter({ name: 'lake_writer_upload_failures_total', help: 'Failed encode/upload attempts (retried)', registers: [registry] }),
    late: new Counter({ name: 'lake_writer_late_records_total', help: 'Records written into an hour that was already over', registers: [registry] }),
    dirtyMarkers: new Counter({ name: 'lake_writer_dirty_markers_total', help: 'Dirty markers written', labelNames: ['kind'], registers: [registry] }),
    unreadable: new Counter({
      name: 'lake_writer_unreadable_records_total',
      help: 'Records on events.raw that broke the contract (archived under raw/dlq/)',
      registers: [registry],
    }),
    buffered: new Gauge({ name: 'lake_writer_buffered_records', help: 'Records in open files', registers: [registry] }),
    bufferedBytes: new Gauge({ name: 'lake_writer_buffered_bytes', help: 'Bytes held in open and uploading files', registers: [registry] }),
    committed: new Gauge({
      name: 'lake_writer_committed_offset',
      help: 'Committed offset (exclusive) per topic partition',
      labelNames: ['topic', 'partition'],
      registers: [registry],
    }),
    catchupRolls: new Counter({
      name: 'lake_writer_catchup_rolls_total',
      help: 'Files rolled because a partition far behind had moved past them (catch-up)',
      registers: [registry],
    }),
    redelivered: new Counter({
      name: 'lake_writer_rebalance_dropped_records_total',
      help: 'Buffered records dropped on a group rebalance (they are redelivered)',
      registers: [registry],
    }),
  };
}

export type LakeWriterMetrics = ReturnType<typeof lakeWriterMetrics>;
