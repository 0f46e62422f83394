/* The funnel panel: the declared browse-to-play funnel's latest published day, users per step
 * with the conversion from the step before and the median time it took (METRICS.md "Funnels").
 * Uses the dashboard's helpers (window.dashboard); funnels are batch only, so its bars are exact. */
(() => {
  'use strict';
  const d = window.dashboard;
  if (!d?.ready) return; // no key yet: the dashboard asks for one first
  const STEPS = ['page_view', 'click', 'video_play', 'video_complete'];
  const secs = (ms) => (ms === null ? '–' : ms < 120e3 ? `${Math.round(ms / 1000)} s` : `${(ms / 60e3).toFixed(1)} min`);

  // The funnel endpoint splits by device and country; the picker's app_version does not apply.
  const SUPPORTED = ['device_type', 'country'];

  async function refreshFunnel() {
    // The view's whole days; the panel draws the latest one with users in it.
    const { days } = d.state();
    const { from: _f, to: _t, granularity: _g, ...filters } = d.params(SUPPORTED);
    d.scope('funnel', SUPPORTED);
    const r = await d.api(d.q('funnel', { granularity: 'day', from: days.from, to: days.to, steps: STEPS.join(','), ...filters }));
    const buckets = r.series[0].buckets.filter((b) => b.covered && b.value.entered > 0);
    const b = buckets[buckets.length - 1];
    document.getElementById('funnelWhen').textContent = b
      ? `${d.dayLabel(b.start)} · ${b.value.entered} users entered · ${d.pct(b.value.conversion)} reached ${STEPS[STEPS.length - 1]}`
      : 'not computed yet';
    d.chart('funnel', {
      type: 'bar',
      data: {
        labels: STEPS,
        datasets: [{ label: 'users', data: b ? b.value.steps.map((s) => s.users) : [], backgroundColor: b ? d.COLORS[b.source] : d.COLORS.none }],
      },
      options: {
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { afterLabel: (c) => (c.dataIndex === 0 ? '' : `${d.pct(b.value.steps[c.dataIndex].conversion)} of the step before, median ${secs(b.value.steps[c.dataIndex].median_ms)} after it`) } },
        },
      },
    });
  }

  const refresh = d.every(30000, refreshFunnel);
  d.addEventListener('rangechange', () => void refresh());
})();
