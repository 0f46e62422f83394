import { describe, expect, it } from 'vitest';
import { hllErrorBound } from '../../common/speed-keys';

describe('hllErrorBound (the measured 95 % interval of Redis HyperLogLog)', () => {
  it('is at least two users, however small the estimate', () => {
    for (const e of [0, 1, 10, 50, 142]) expect(hllErrorBound(e).ci95).toBe(2);
  });
  it('is 1.4 % below 20,000 and 1.9 % from 20,000, rounded up to whole users', () => {
    expect(hllErrorBound(1000).ci95).toBe(14);
    expect(hllErrorBound(19_999).ci95).toBe(280);
    expect(hllErrorBound(20_000).ci95).toBe(380);
    expect(hllErrorBound(1_000_000).ci95).toBe(19_000);
  });
  it('reports relative_std_error consistently with the interval (ci95 ≈ 1.96 × rse × estimate)', () => {
    const b = hllErrorBound(100_000);
    expect(1.96 * b.relativeStdError * 100_000).toBeCloseTo(b.ci95, 6);
  });
});
