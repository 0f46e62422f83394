-- aggregated/funnel_days (METRICS.md "Funnels"): the declared funnels the day's run computed and
-- the definition it used (steps as the API spells them, window_ms), one row per funnel even when
-- nobody entered it. A day of a declared funnel is exact only where this row matches the funnel's
-- current definition: a day published before the funnel was declared, or when it had other steps
-- or another window, has no matching row and is not computed, not 0.
SELECT
  getvariable('day') AS day,
  funnel,
  string_agg(event_type || coalesce(':' || property || '=' || value, ''), ',' ORDER BY step) AS steps,
  any_value(window_ms) AS window_ms
FROM funnel_steps
GROUP BY funnel
ORDER BY funnel
