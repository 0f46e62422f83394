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

  // ─── the view: a time range and filters, kept in the query string so a link reopens it ───
  const MIN = 60e3;
  const PRESETS = { '15m': 15 * MIN, '1h': HOUR, '24h': DAY, '7d': 7 * DAY, '30d': 30 * DAY, '90d': 90 * DAY };
  const DEFAULT_PRESET = '7d';
  const FILTERS = ['device_type', 'country', 'app_version'];
  const ALL_OF = { device_type: 'all devices', country: 'all countries', app_version: 'all versions' };
  const ISO_DAY = /^\d{4}-\d{2}-\d{2}$/;
  const floorTo = (t, size) => Math.floor(t / size) * size;
  const ceilTo = (t, size) => Math.ceil(t / size) * size;

  /** ?range=<preset> or ?from=<day>&to=<day> (UTC days, both included), plus ?device_type= &country= &app_version=. */
  function viewFromUrl(search) {
    const p = new URLSearchParams(search);
    const filters = {};
    for (const f of FILTERS) if (p.get(f)) filters[f] = p.get(f);
    const [from, to] = [p.get('from'), p.get('to')];
    if (!p.has('range') && ISO_DAY.test(from ?? '') && ISO_DAY.test(to ?? '') && from <= to) return { preset: null, from, to, filters };
    return { preset: Object.hasOwn(PRESETS, p.get('range') ?? '') ? p.get('range') : DEFAULT_PRESET, from: null, to: null, filters };
  }
  function viewToSearch(v) {
    const p = new URLSearchParams(v.preset ? { range: v.preset } : { from: v.from, to: v.to });
    for (const f of FILTERS) if (v.filters[f]) p.set(f, v.filters[f]);
    return `?${p}`;
  }
  let view = viewFromUrl(location.search);

  /** Minutes up to 2 h, hours up to 8 days, days beyond: at most a few hundred buckets per chart. */
  const granularityOf = (span) => (span <= 2 * HOUR ? 'minute' : span <= 8 * DAY ? 'hour' : 'day');

  /**
   * The view at this instant. A preset is live: it ends now and slides on each refresh; an absolute
   * range is whole UTC days. `days` is the range widened to whole days, for the daily panels.
   */
  function state() {
    let from;
    let to;
    let granularity;
    if (view.preset) {
      granularity = granularityOf(PRESETS[view.preset]);
      const size = { minute: MIN, hour: HOUR, day: DAY }[granularity];
      to = floorTo(Date.now(), size) + size;
      from = to - PRESETS[view.preset];
    } else {
      from = Date.parse(view.from);
      to = Date.parse(view.to) + DAY;
      granularity = granularityOf(to - from);
    }
    return {
      preset: view.preset,
      live: view.preset !== null,
      from,
      to,
      granularity,
      days: { from: floorTo(from, DAY), to: ceilTo(to, DAY) },
      filters: { ...view.filters },
    };
  }

  /** The filters of the view that a panel's endpoint supports, as query parameters. */
  function filterParams(supported) {
    return Object.fromEntries(supported.filter((f) => view.filters[f]).map((f) => [f, view.filters[f]]));
  }

  /** Says on a panel which set filters it does not apply ("all countries"), instead of ignoring them silently. */
  function scope(panel, supported, why = '') {
    const section = (typeof panel === 'string' ? document.getElementById(panel) : panel).closest('section');
    let note = section.querySelector(':scope > .scope');
    if (!note) {
      note = Object.assign(document.createElement('p'), { className: 'scope' });
      section.querySelector('h2').after(note);
    }
    const ignored = FILTERS.filter((f) => view.filters[f] && !supported.includes(f));
    note.textContent = ignored.length ? `${ignored.map((f) => ALL_OF[f]).join(' · ')}${why ? ` (${why})` : ''}` : '';
    note.hidden = ignored.length === 0;
    note.dataset.ignored = ignored.join(',');
  }

  /**
   * The URL's hash holds each panel's state under keys of its own (retention, funnel…, user), so a
   * link reopens every panel: a panel reads and writes only its keys, never the whole hash.
   */
  const hash = {
    get: (k) => new URLSearchParams(location.hash.slice(1)).get(k),
    /** Sets each key to its value; null removes it. */
    set(values) {
      const h = new URLSearchParams(location.hash.slice(1));
      for (const [k, v] of Object.entries(values)) {
        if (v === null || v === undefined) h.delete(k);
        else h.set(k, v);
      }
      const s = h.toString();
      history.replaceState(history.state, '', `${location.pathname}${location.search}${s ? `#${s}` : ''}`);
    },
  };

  /**
   * What other panels (funnel.js, user-features.js…) build on, loaded after this file with `defer`:
   *   dashboard.state()    the view now: {preset, live, from, to, granularity, days: {from, to}, filters}
   *   dashboard.params(['device_type', …])  from/to/granularity plus the set filters among those named
   *   dashboard.scope(el, ['device_type', …], why?)  the "all devices" note of a panel's section
   *   dashboard.api(path)  GET with the read key (rejects while dashboard.ready is false: no key yet)
   *   dashboard.hash.get('user'), dashboard.hash.set({ user: 'u1' })  the panel's own keys of the URL's hash
   *   dashboard.addEventListener('rangechange', (e) => e.detail)  after every change of range or filters,
   *     detail = state(); presets also slide: poll state() on your own refresh.
   */
  const dashboard = Object.assign(new EventTarget(), {
    ready: false,
    state,
    params: (supported = []) => {
      const s = state();
      return { from: s.from, to: s.to, granularity: s.granularity, ...filterParams(supported) };
    },
    scope,
    hash,
    api: () => Promise.reject(new Error('no read key yet')),
  });
  window.dashboard = dashboard;

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
  dashboard.api = api;
  dashboard.ready = true;
  const q = (metric, o) => `/v1/metrics/${metric}?${new URLSearchParams(o)}`;
  const hh = (t) => new Date(t).toISOString().slice(11, 16);
  const dayLabel = (t) => new Date(t).toISOString().slice(5, 10);
  const hourLabel = (t) => `${dayLabel(t)} ${hh(t)}`;
  const LABELS = { minute: hh, hour: hourLabel, day: dayLabel };
  const pct = (x) => (x === null || x === undefined ? '–' : `${(x * 100).toFixed(1)} %`);
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
    // Always the last 2 min, whatever the range: say so when the range is not a live preset.
    const live = ['device_type', 'country'];
    document.getElementById('liveWindow').textContent = `live, last 2 min, every 2 s${view.preset ? '' : ' · not the chosen dates'}`;
    scope('eventsPerSecond', live, 'the live counts keep no app_version');
    const to = floorTo(Date.now(), 1000);
    const r = await api(q('events', { granularity: 'second', from: to - 120e3, to, group_by: 'event_type', ...filterParams(live) }));
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

  /** A preset as words, an absolute range as its days. */
  function rangeText(s) {
    if (s.preset) return `last ${document.querySelector(`[data-range="${s.preset}"]`).textContent}`;
    return s.from + DAY === s.to ? view.from : `${view.from} → ${view.to}`;
  }

  async function refreshTimeline() {
    const s = state();
    const range = { granularity: s.granularity, from: s.from, to: s.to };
    const fmt = LABELS[s.granularity];
    for (const el of document.querySelectorAll('[data-granularity]')) el.textContent = s.granularity;
    for (const el of document.querySelectorAll('[data-range]:not(button)')) el.textContent = rangeText(s);
    // Users per country come from the daily one big table only.
    const usersBy = s.granularity === 'day' ? ['device_type', 'country'] : ['device_type'];
    scope('eventsHourly', FILTERS);
    scope('activeUsers', usersBy, 'per country: ranges over 8 days');
    scope('playback', []);
    scope('playbackRates', []);
    const [events, users, playback] = await Promise.all([
      api(q('events', { ...range, ...filterParams(FILTERS) })),
      api(q('active_users', { ...range, ...filterParams(usersBy) })),
      api(q('playback', range)),
    ]);
    sourceBars('eventsHourly', events.series[0].buckets, (b) => b.value, fmt, 'events');
    sourceBars('activeUsers', users.series[0].buckets, (b) => b.value, fmt, 'active users', {
      tooltip: (b) => (b.error ? `± ${b.error.ci95.toFixed(1)} (95 %, HyperLogLog)` : b.exact ? 'exact' : ''),
    });
    const pb = playback.series[0].buckets;
    const labels = pb.map((b) => label(b, fmt));
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
  if (hash.get('retention')) modeSwitch.value = hash.get('retention');
  if (!modeSwitch.value) modeSwitch.value = 'first_seen/day';
  modeSwitch.addEventListener('change', () => {
    hash.set({ retention: modeSwitch.value });
    refreshRetention().catch((err) => {
      document.body.dataset.error = err.message;
    });
  });

  async function refreshRetention() {
    const [mode, period] = modeSwitch.value.split('/');
    const { days } = state();
    scope('retention', []);
    const retention = await api(q('retention', { granularity: 'day', ...days, mode, period }));
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

  /** The daily panels read whole days: the range widened to its days. */
  async function refreshDaily() {
    const range = { granularity: 'day', ...state().days };
    for (const id of ['topContent', 'clicksToPlay', 'topPaths', 'binge', 'lifecycle', 'churnRisk']) scope(id, []);
    scope('dailySessions', ['device_type']);
    const [top, sessions, clicks, paths, binge, lifecycle, churnRisk] = await Promise.all([
      api(q('top_content', { ...range, limit: 10 })),
      api(q('daily_sessions', { ...range, ...filterParams(['device_type']) })),
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
    const lifecycleOf = (f, sign = 1) => lb.map((b) => (b.covered ? sign * b.value[f] : null));
    chart('lifecycle', {
      type: 'bar',
      data: {
        labels: lb.map((b) => dayLabel(b.start)),
        datasets: [
          { label: 'new', data: lifecycleOf('new'), backgroundColor: '#16a34a' },
          { label: 'returning', data: lifecycleOf('returning'), backgroundColor: COLORS.batch },
          { label: 'resurrecting', data: lifecycleOf('resurrecting'), backgroundColor: '#9333ea' },
          { label: 'dormant', data: lifecycleOf('dormant', -1), backgroundColor: '#dc2626' },
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

  /** Runs fn every ms, never two at once; the returned function runs it now (or right after the running one). */
  function every(ms, fn) {
    let running = false;
    let again = false;
    const tick = async () => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        await fn();
        document.body.dataset.error = '';
      } catch (err) {
        document.body.dataset.error = err.message;
        document.getElementById('freshness').textContent = `API error: ${err.message}`;
      } finally {
        running = false;
        if (again) {
          again = false;
          void tick();
        }
      }
    };
    void tick();
    setInterval(tick, ms);
    return tick;
  }

  // ─── the view's controls ───
  const viewForm = document.getElementById('view');
  const fromInput = document.getElementById('rangeFrom');
  const toInput = document.getElementById('rangeTo');
  const selects = Object.fromEntries(FILTERS.map((f) => [f, viewForm.querySelector(`select[data-filter="${f}"]`)]));

  /** The controls say what the view is: the pressed preset, the dates it covers, the selected filters. */
  function showView() {
    const s = state();
    for (const b of viewForm.querySelectorAll('[data-range]')) b.setAttribute('aria-pressed', String(b.dataset.range === view.preset));
    fromInput.value = view.from ?? new Date(s.from).toISOString().slice(0, 10);
    toInput.value = view.to ?? new Date(s.to - 1).toISOString().slice(0, 10);
    for (const f of FILTERS) {
      const v = view.filters[f] ?? '';
      if (v && ![...selects[f].options].some((o) => o.value === v)) selects[f].add(new Option(v, v));
      selects[f].value = v;
    }
    document.getElementById('viewNote').textContent = view.preset
      ? `live: ${rangeText(s)}, per ${s.granularity}, sliding`
      : `${rangeText(s)} (UTC), per ${s.granularity}; the live chart stays on the last 2 min`;
  }

  function announce() {
    dashboard.dispatchEvent(new CustomEvent('rangechange', { detail: state() }));
  }

  function setView(next) {
    view = next;
    history.pushState(null, '', `${location.pathname}${viewToSearch(view)}${location.hash}`);
    showView();
    announce();
    void refreshLive();
    void refreshSlow();
  }

  viewForm.addEventListener('click', (e) => {
    const preset = e.target.closest('[data-range]')?.dataset.range;
    if (preset) setView({ ...view, preset, from: null, to: null });
  });
  viewForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const [from, to] = [fromInput.value, toInput.value];
    if (!ISO_DAY.test(from) || !ISO_DAY.test(to) || from > to) {
      document.getElementById('viewNote').textContent = 'from must be a day on or before to';
      return;
    }
    setView({ ...view, preset: null, from, to });
  });
  for (const f of FILTERS) {
    selects[f].addEventListener('change', () => {
      const filters = { ...view.filters };
      if (selects[f].value) filters[f] = selects[f].value;
      else delete filters[f];
      setView({ ...view, filters });
    });
  }
  // Back and forward walk through the views.
  window.addEventListener('popstate', () => {
    view = viewFromUrl(location.search);
    showView();
    announce();
    void refreshLive();
    void refreshSlow();
  });

  /** The values offered are those in the data: the one big table's finest level over the last 90 days and the range. */
  async function refreshFilterValues() {
    const s = state();
    const to = ceilTo(Math.max(s.to, Date.now()), DAY);
    const from = Math.max(Math.min(s.days.from, to - 90 * DAY), to - 4000 * DAY);
    const obt = await api(q('obt', { granularity: 'day', from, to, group_by: FILTERS.join(',') }));
    for (const f of FILTERS) {
      const values = new Set(obt.series.filter((x) => x.buckets.some((b) => b.covered && b.value.total_events > 0)).map((x) => x.key[f]));
      if (view.filters[f]) values.add(view.filters[f]);
      const known = [...selects[f].options].slice(1).map((o) => o.value);
      const sorted = [...values].sort();
      if (known.join('\n') === sorted.join('\n')) continue;
      selects[f].replaceChildren(selects[f].options[0], ...sorted.map((v) => new Option(v, v)));
      selects[f].value = view.filters[f] ?? '';
    }
  }

  showView();

  // Panels in their own files (funnel.js…) also draw with these.
  Object.assign(dashboard, { q, chart, every, COLORS, DAY, dayLabel, pct, floorTo });

  const refreshLive = every(LIVE_MS, async () => {
    await Promise.all([refreshStatus(), refreshAlerts(), refreshEventsPerSecond()]);
  });
  const refreshSlow = every(SLOW_MS, async () => {
    const shown = location.search;
    await Promise.all([refreshTimeline(), refreshDaily(), refreshFilterValues()]);
    document.body.dataset.loaded = 'true';
    // What the panels show now, for a test or a screenshot to wait on.
    if (location.search === shown) document.body.dataset.view = shown;
  });
})();
