/**
 * Errors a batch job raises. Temporal activities map NonRetryableBatchError to a
 * non-retryable ApplicationFailure: retrying bad input or a broken object only
 * burns the retry budget.
 */
import type { QualityCheck } from '../../common/lake';

/** Bad input: a malformed or future period, missing hours, a failed data-quality gate. */
export class NonRetryableBatchError extends Error {
  override name = 'NonRetryableBatchError';
  readonly nonRetryable = true;
}

/** A lake object DuckDB cannot read. Carries the key so the operator knows what to repair or remove. */
export class CorruptObjectError extends NonRetryableBatchError {
  override name = 'CorruptObjectError';
  constructor(
    readonly key: string,
    readonly reason: string,
  ) {
    super(`corrupt Parquet object ${key}: ${reason}`);
  }
}

/** The hours a daily run needs that have no published hourly run. */
export class MissingHoursError extends NonRetryableBatchError {
  override name = 'MissingHoursError';
  constructor(
    readonly day: string,
    readonly hours: string[],
  ) {
    super(`day ${day} cannot run: ${hours.length} hour(s) not published: ${hours.join(', ')}`);
  }
}

/**
 * Earlier days have published hours but no published daily run. Day D's cohorts
 * read every earlier day's user activity (first_seen), so computing D first
 * would count those days' users as new: days must publish in order.
 */
export class MissingPreviousDaysError extends NonRetryableBatchError {
  override name = 'MissingPreviousDaysError';
  constructor(
    readonly day: string,
    readonly days: string[],
  ) {
    super(`day ${day} cannot run before ${days.length} earlier day(s) with data are published: ${days.join(', ')} (run them first, in order: npm run backfill -- --kind daily)`);
  }
}

/** Data-quality checks failed: nothing was published. */
export class QualityCheckError extends NonRetryableBatchError {
  override name = 'QualityCheckError';
  constructor(
    readonly period: string,
    readonly checks: QualityCheck[],
  ) {
    super(
      `data-quality checks failed for ${period}, nothing published: ${checks
        .filter((c) => !c.ok)
        .map((c) => `${c.name} (${c.detail})`)
        .join('; ')}`,
    );
  }
}

/**
 * The period's raw input is (partly) gone: raw retention removed its day, or
 * objects a published run read are missing. Recomputing from what is left would
 * overwrite exact views with a subset, so the run refuses; the published views stay.
 */
export class RawInputGoneError extends NonRetryableBatchError {
  override name = 'RawInputGoneError';
  constructor(
    readonly period: string,
    readonly why: string,
  ) {
    super(`${period} cannot be recomputed: ${why}; its published views are kept (they were computed from the complete input)`);
  }
}

/** The run was cancelled through its AbortSignal (Temporal cancellation). */
export class BatchCancelledError extends Error {
  override name = 'BatchCancelledError';
}

/**
 * Error type names a Temporal retry policy should not retry
 * (`retry: { nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES }`): Temporal
 * names a thrown error's type after its `name`, and subclasses have their own.
 */
export const NON_RETRYABLE_ERROR_TYPES = ['NonRetryableBatchError', 'CorruptObjectError', 'MissingHoursError', 'QualityCheckError', 'RawInputGoneError'] as const;
