/* The dashboard: plain browser JS over the query API and Chart.js (served from node_modules, no build step).
 * Every bucket is coloured by the layer that answered it, so exact and live numbers never look alike. */
(() => {
  'use strict';
  // recomputing: a published batch value whose period got late data; shown, but not as exact.
  const COLORS = { batch: '#2563eb', speed: '#f59e0b', none: '#d1d5db', recomputing: '#93c5fd' };
  const TYPE_COLORS = ['#2563eb', '#16a34a', '#dc2626', '#9333ea', '#f59e0b', '#0891b2', '#db2777', '#65a30d', '#ea580c', '#4f46e5', '#0d9488', '#a16207'];
  const HOUR = 3600e3;
  const DAY = 24 * HOUR;
  const LIVE_MS = 2000;
  const SLOW_MS = 30000;

  // The key lives in this browser's storage, never in a URL (URLs end up in history, proxies' logs and Referer headers).
  const params = new URLSearchParams(location.search);
  if (params.has('key')) {
    params.delete('key');
    history.replaceState(null, '', `${location.pathname}${params.size ? `?${params}` : ''}${location.hash}`);
  }
  let key = localStorage.getItem('clickstream.key');
  const form = document.getElementById('keyform');
  if (!key) {
    form.hidden = false;
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      localStorage.setItem('clickstream.key', document.getElementById('key').value.trim());
      location.reload();
    });
    return;
  }

  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.plugins.legend.labels.boxWidth = 10;

  async function api(path) {
    const res = await fetch(path, { headers: { 'x-api-key': key } });
    if (res.status === 401) {
      // A revoked or mistyped key: forget it and ask again.
      localStorage.removeItem('clickstream.key');
      location.reload();
    }
    if (!res.ok) throw new Error(`${path.split('?')[0]}: HTTP ${res.status}`);
    return res.json();
  }
  const q = (metric, o) => `/v1/metrics/${metric}?${new URLSearchParams(o)}`;
  const hh = (t) => new Date(t).toISOString().slice(11, 16);
  const dayLabel = (t) => new Date(t).toISOString().slice(5, 10);
  const hourLabel = (t) => `${dayLabel(t)} ${hh(t)}`;
  const pct = (x) => (x === null || x === undefined ? '–' : `${(x * 100).toFixed(1)} %`);
  const floorTo = (t, size) => Math.floor(t / size) * size;
  /** Live buckets get a "≈" so the approximate ones are visible even in a multi-series chart. */
  const label = (b, fmt) => (b.source === 'speed' ? `≈${fmt(b.start)}` : fmt(b.start));

  const charts = {};
  function chart(id, config) {
    const el = document.getElementById(id);
    if (charts[id]) {
      charts[id].data = config.data;
      charts[id].update('none');
    } else charts[id] = new Chart(el, config);
    el.dataset.points = String(config.data.datasets.reduce((n, d) => n + d.data.filter((v) => v !== null && v !== undefined).length, 0));
    el.dataset.rendered = 'true';
  }
  function rendered(id, points) {
    const el = document.getElementById(id);
    el.dataset.points = String(points);
    el.dataset.rendered = 'true';
  }

  function sourceBars(id, buckets, valueOf, fmt, title, extra = {}) {
    chart(id, {
      type: 'bar',
      data: {
        labels: buckets.map((b) => label(b, fmt)),
        datasets: [{ label: title, data: buckets.map((b) => (b.covered ? valueOf(b) : null)), backgroundColor: buckets.map((b) => COLORS[b.source]) }],
      },
      options: { plugins: { legend: { display: false }, tooltip: extra.tooltip ? { callbacks: { afterLabel: (c) => extra.tooltip(buckets[c.dataIndex]) } } : {} }, scales: { x: { ticks: { maxTicksLimit: 12 } } } },
    });
  }

  // ─── header: what is exact, how live ───
  async function refreshStatus() {
    const f = await api('/v1/freshness');
    const w = f.watermark;
    const at = (t) => (t === null ? 'nothing yet' : new Date(t).toISOString().replace('T', ' ').slice(0, 16) + ' UTC');
    document.getElementById('watermark').innerHTML =
      `Exact (batch) up to <b>${at(w.hourly_end)}</b> hourly, <b>${at(w.daily_end)}</b> daily` +
      (w.pinned_end !== null ? ` · <b>pinned</b> at ${at(w.pinned_end)}` : '') +
      (w.sync_error ? ` · <span class="live">sync error: ${w.sync_error}</span>` : '');
    const s = f.freshness;
    document.getElementById('freshness').innerHTML =
      s.speed_applied_at === null
        ? '<span class="live">Live: speed layer has applied nothing yet</span>'
        : `<span class="live">Live</span> (speed): lag ${s.speed_lag_ms} ms, last batch ${Math.round(s.speed_age_ms / 1000)} s ago`;
    document.getElementById('live').textContent = `${f.live.active_users_5m} users active in the last 5 min, ${f.live.open_sessions_30m} open sessions`;
  }

  async function refreshAlerts() {
    const { alerts } = await api('/v1/alerts');
    const ul = document.getElementById('alerts');
    ul.replaceChildren(
      ...(alerts.length === 0
        ? [Object.assign(document.createElement('li'), { textContent: 'none firing' })]
        : alerts.map((a) => Object.assign(document.createElement('li'), { className: 'firing', textContent: `${a.rule} (${a.layer}): ${a.message}` }))),
    );
    rendered('alerts', alerts.length);
  }

  async function refreshEventsPerSecond() {
    const to = floorTo(Date.now(), 1000);
    const r = await api(q('events', { granularity: 'second', from: to - 120e3, to, group_by: 'event_type' }));
    chart('eventsPerSecond', {
      type: 'line',
      data: {
        labels: (r.series[0]?.buckets ?? []).map((b) => new Date(b.start).toISOString().slice(14, 19)),
        datasets: r.series.map((s, i) => ({
          label: s.key.event_type,
          data: s.buckets.map((b) => (b.covered ? b.value : null)),
          borderColor: TYPE_COLORS[i % TYPE_COLORS.length],
          backgroundColor: TYPE_COLORS[i % TYPE_COLORS.length],
          pointRadius: 0,
          borderWidth: 1.5,
          stack: 'events',
          fill: true,
        })),
      },
      options: { scales: { y: { stacked: true, title: { display: true, text: 'events/s' } }, x: { ticks: { maxTicksLimit: 12 } } }, plugins: { legend: { position: 'right' } } },
    });
  }

  async function refreshHourly() {
    const to = floorTo(Date.now(), HOUR) + HOUR;
    const range = { granularity: 'hour', from: to - 72 * HOUR, to };
    const [events, users, playback] = await Promise.all([api(q('events', range)), api(q('active_users', range)), api(q('playback', range))]);
    sourceBars('eventsHourly', events.series[0].buckets, (b) => b.value, hourLabel, 'events');
    sourceBars('activeUsers', users.series[0].buckets, (b) => b.value, hourLabel, 'active users', {
      tooltip: (b) => (b.error ? `± ${b.error.ci95.toFixed(1)} (95 %, HyperLogLog)` : b.exact ? 'exact' : ''),
    });
    const pb = playback.series[0].buckets;
    const labels = pb.map((b) => label(b, hourLabel));
    const val = (f) => pb.map((b) => (b.covered ? b.value[f] : null));
    chart('playback', {
      type: 'bar',
      data: {
        labels,
        datasets: [
          { label: 'plays', data: val('plays'), backgroundColor: pb.map((b) => COLORS[b.source]) },
          { label: 'pauses', data: val('pauses'), backgroundColor: '#9ca3af' },
          { label: 'completes', data: val('completes'), backgroundColor: '#16a34a' },
          { label: 'rebuffers', data: val('rebuffers'), backgroundColor: '#dc2626' },
        ],
      },
      options: { scales: { x: { ticks: { maxTicksLimit: 12 } } } },
    });
    chart('playbackRates', {
      type: 'line',
      data: {
        labels,
        datasets: [
          { label: 'pause rate', data: val('pause_rate'), borderColor: '#9333ea', pointRadius: 2, spanGaps: false },
          { label: 'completion rate', data: val('completion_rate'), borderColor: '#16a34a', pointRadius: 2, spanGaps: false },
        ],
      },
      options: { scales: { y: { min: 0, ticks: { callback: (v) => pct(v) } }, x: { ticks: { maxTicksLimit: 12 } } } },
    });
  }

  /** The newest bucket with something in it (daily views lag by a day). */
  const latest = (buckets, has) => [...buckets].reverse().find((b) => b.covered && has(b.value));

  /** The retention heat map, in the mode and period the switch names (kept in the URL's hash, so a view can be shared). */
  const modeSwitch = document.getElementById('retentionMode');
  if (/^#retention=/.test(location.hash)) modeSwitch.value = decodeURIComponent(location.hash.slice('#retention='.length));
  if (!modeSwitch.value) modeSwitch.value = 'first_seen/day';
  modeSwitch.addEventListener('change', () => {
    history.replaceState(null, '', `${location.pathname}${location.search}#retention=${encodeURIComponent(modeSwitch.value)}`);
    refreshRetention().catch((err) => {
      document.body.dataset.error = err.message;
    });
  });

  async function refreshRetention() {
    const [mode, period] = modeSwitch.value.split('/');
    const to = floorTo(Date.now(), DAY) + DAY;
    const retention = await api(q('retention', { granularity: 'day', from: to - (period === 'week' ? 10 * 7 : 35) * DAY, to, mode, period }));
    const cohorts = retention.series[0].buckets.filter((b) => b.covered && b.value.cohort_size > 0);
    document.getElementById('retentionAsOf').textContent = cohorts[0] ? `as of ${cohorts[0].value.as_of_day}` : 'no cohorts yet';
    const cell = (n, size) => {
      if (n === null || n === undefined) return '<td class="muted">–</td>';
      const r = size > 0 ? n / size : 0;
      return `<td style="background: rgba(37,99,235,${(0.1 + 0.9 * r).toFixed(2)}); color: ${r > 0.5 ? '#fff' : '#111'}">${pct(r)}</td>`;
    };
    const ks = period === 'week' ? [1, 2, 3, 4, 5, 6, 7, 8].map((k) => [`W${k}`, `retained_w${k}`]) : [1, 7, 14, 28].map((k) => [`D${k}`, `retained_d${k}`]);
    const el = document.getElementById('retention');
    el.innerHTML =
      `<table><tr><th>cohort</th><th>users</th>${ks.map(([h]) => `<th>${h}</th>`).join('')}<th>churned</th></tr>` +
      cohorts
        .map((b) => {
          const v = b.value;
          return `<tr><td>${dayLabel(b.start)}</td><td>${v.cohort_size}</td>${ks.map(([, f]) => cell(v[f], v.cohort_size)).join('')}${cell(v.churned, v.cohort_size)}</tr>`;
        })
        .join('') +
      '</table>';
    el.dataset.mode = modeSwitch.value;
    rendered('retention', cohorts.length);
  }

  async function refreshDaily() {
    const to = floorTo(Date.now(), DAY) + DAY;
    const range = { granularity: 'day', from: to - 14 * DAY, to };
    const [top, sessions, clicks, paths, binge, lifecycle, churnRisk] = await Promise.all([
      api(q('top_content', { granularity: 'day', from: to - 3 * DAY, to, limit: 10 })),
      api(q('daily_sessions', range)),
      api(q('clicks_to_play', range)),
      api(q('top_paths', { ...range, limit: 10 })),
      api(q('binge_users', { ...range, limit: 20 })),
      api(q('lifecycle', range)),
      api(q('churn_risk', { ...range, limit: 5 })),
      refreshRetention(),
    ]);

    const t = latest(top.series[0].buckets, (v) => v.items.length > 0);
    document.getElementById('topContentWhen').textContent = t ? `${dayLabel(t.start)} · ${t.source === 'batch' ? 'exact' : 'live'}` : 'no plays yet';
    chart('topContent', {
      type: 'bar',
      data: {
        labels: t ? t.value.items.map((i) => i.content_id) : [],
        datasets: [{ label: 'plays', data: t ? t.value.items.map((i) => i.plays) : [], backgroundColor: t ? COLORS[t.source] : COLORS.none }],
      },
      options: { indexAxis: 'y', plugins: { legend: { display: false } } },
    });

    sourceBars('dailySessions', sessions.series[0].buckets, (b) => b.value.sessions, dayLabel, 'sessions', {
      tooltip: (b) => (b.covered ? `bounce ${pct(b.value.bounce_rate)}, median ${Math.round((b.value.median_duration_ms ?? 0) / 1000)} s` : 'not covered yet'),
    });

    // Lifecycle: batch only, so a day after the daily watermark is an empty (not covered) column.
    const lb = lifecycle.series[0].buckets;
    const state = (f, sign = 1) => lb.map((b) => (b.covered ? sign * b.value[f] : null));
    chart('lifecycle', {
      type: 'bar',
      data: {
        labels: lb.map((b) => dayLabel(b.start)),
        datasets: [
          { label: 'new', data: state('new'), backgroundColor: '#16a34a' },
          { label: 'returning', data: state('returning'), backgroundColor: COLORS.batch },
          { label: 'resurrecting', data: state('resurrecting'), backgroundColor: '#9333ea' },
          { label: 'dormant', data: state('dormant', -1), backgroundColor: '#dc2626' },
        ],
      },
      options: { scales: { x: { stacked: true, ticks: { maxTicksLimit: 14 } }, y: { stacked: true } }, plugins: { legend: { position: 'right' } } },
    });

    const cr = latest(churnRisk.series[0].buckets, () => true);
    document.getElementById('churnRiskWhen').textContent = cr ? `${dayLabel(cr.start)}: ${cr.value.count}` : 'not computed yet';
    sourceBars('churnRisk', churnRisk.series[0].buckets, (b) => b.value.count, dayLabel, 'users at risk', {
      tooltip: (b) => (b.covered ? b.value.users.map((u) => `${u.user_id}: ${u.reason}`).join('\n') : 'not covered yet'),
    });

    const c = latest(clicks.series[0].buckets, (v) => v.play_sessions + v.no_play_sessions > 0);
    document.getElementById('clicksWhen').textContent = c ? `${dayLabel(c.start)} · avg ${c.value.avg_clicks_to_play?.toFixed(2) ?? '–'} · ${c.value.no_play_sessions} no-play sessions` : 'no sessions yet';
    chart('clicksToPlay', {
      type: 'bar',
      data: {
        labels: c ? c.value.histogram.map((h) => h.clicks) : [],
        datasets: [{ label: 'sessions', data: c ? c.value.histogram.map((h) => h.sessions) : [], backgroundColor: COLORS.batch }],
      },
      options: { plugins: { legend: { display: false } }, scales: { x: { title: { display: true, text: 'clicks before the first play' } } } },
    });

    const p = latest(paths.series[0].buckets, (v) => v.paths.length > 0);
    const ol = document.getElementById('topPaths');
    ol.replaceChildren(
      ...(p ? p.value.paths : []).map((x) => {
        const li = document.createElement('li');
        li.textContent = x.path;
        const n = document.createElement('span');
        n.textContent = String(x.sessions);
        li.append(n);
        return li;
      }),
    );
    rendered('topPaths', p ? p.value.paths.length : 0);

    sourceBars('binge', binge.series[0].buckets, (b) => b.value.count, dayLabel, 'binging users', { tooltip: (b) => (b.covered ? b.value.users.slice(0, 5).join(', ') : '') });
  }

  function every(ms, fn) {
    let running = false;
    const tick = async () => {
      if (running) return;
      running = true;
      try {
        await fn();
        document.body.dataset.error = '';
      } catch (err) {
        document.body.dataset.error = err.message;
        document.getElementById('freshness').textContent = `API error: ${err.message}`;
      } finally {
        running = false;
      }
    };
    void tick();
    setInterval(tick, ms);
  }

  // Panels in their own files (funnel.js) use these helpers.
  window.dashboard = { api, q, chart, every, COLORS, DAY, dayLabel, pct, floorTo };

  every(LIVE_MS, async () => {
    await Promise.all([refreshStatus(), refreshAlerts(), refreshEventsPerSecond()]);
  });
  every(SLOW_MS, async () => {
    await Promise.all([refreshHourly(), refreshDaily()]);
    document.body.dataset.loaded = 'true';
  });
})();
