/* The user lookup panel: one user's real-time features (GET /v1/users/{user_id}/features, METRICS.md
 * "User features"). Its own file and its own section, added to the dashboard's grid at load, so the shared
 * dashboard files only load it. Live values carry the speed layer's colour; days active say which layer
 * counted which days. */
(() => {
  'use strict';
  const key = localStorage.getItem('clickstream.key');
  const main = document.querySelector('main');
  if (!key || !main) return; // dashboard.js asks for the key first

  const section = document.createElement('section');
  section.className = 'wide';
  section.id = 'userFeaturesPanel';
  section.innerHTML = `<h2>User lookup <small>real-time features, speed layer (days and first seen with the batch layer)</small></h2>
    <form id="userLookup" data-testid="user-lookup"><input id="userId" data-testid="user-lookup-input" placeholder="user_id" size="28" maxlength="128" autocomplete="off" required pattern="[A-Za-z0-9_.:@+=\\-]{1,128}"> <button>look up</button></form>
    <p id="userFeaturesStatus" class="muted" data-testid="user-features-status"></p>
    <table id="userFeatures" data-testid="user-features" style="font-size:.8rem;border-collapse:collapse;width:100%"></table>`;
  main.appendChild(section);

  const form = section.querySelector('#userLookup');
  const input = section.querySelector('#userId');
  const status = section.querySelector('#userFeaturesStatus');
  const table = section.querySelector('#userFeatures');
  const time = (t) => (t === null || t === undefined ? '–' : new Date(t).toISOString().replace('T', ' ').slice(0, 19));
  const minutes = (ms) => `${(ms / 60000).toFixed(1)} min`;
  const live = (v) => `<span style="color:#b45309">≈ ${v}</span>`;

  function render(f) {
    const s = f.current_session;
    const d = f.days_active_28d;
    const rows = [
      ['events 5 min / 1 h / 24 h', live(`${f.events['5m']} / ${f.events['1h']} / ${f.events['24h']}`), 'events'],
      ['plays 5 min / 1 h / 24 h', live(`${f.plays['5m']} / ${f.plays['1h']} / ${f.plays['24h']}`), 'plays'],
      ['watch time, 24 h', live(minutes(f.watch_time_ms_24h)), 'watch'],
      ['playing since', f.playing_since === null ? 'not playing' : live(time(f.playing_since)), 'playing'],
      ['current session', s ? live(`since ${time(s.start)}, ${s.events} events, ${s.device_type}`) : 'none open', 'session'],
      ['last content', f.last_content ? `${f.last_content.content_id} at ${time(f.last_content.ts)}` : '–', 'content'],
      ['binge', `${f.binge.binging_today ? 'binging today' : 'not binging'}, ${f.binge.completes_4h} completes in 4 h`, 'binge'],
      ['days active, 28 d', `${d.value} <small>(${d.batch_days} exact from the batch layer${d.batch_until ? ` before ${d.batch_until}` : ''}, ${d.speed_days} live)</small>`, 'days'],
      ['first seen', f.first_seen ? `${f.first_seen.day} <small>(${f.first_seen.source})</small>` : '–', 'first-seen'],
    ];
    table.innerHTML = rows.map(([name, value, id]) => `<tr data-feature="${id}"><th style="text-align:left;font-weight:normal;color:#6b7280;padding:.15rem .4rem">${name}</th><td>${value}</td></tr>`).join('');
    status.textContent = `${f.user_id}, as of ${time(f.as_of)}`;
  }

  async function lookup(userId) {
    status.textContent = 'loading…';
    table.innerHTML = '';
    const res = await fetch(`/v1/users/${encodeURIComponent(userId)}/features`, { headers: { 'x-api-key': key } });
    if (res.status === 404) {
      status.textContent = `no such user: ${userId}`;
      return;
    }
    if (!res.ok) {
      status.textContent = `lookup failed: HTTP ${res.status}`;
      return;
    }
    render(await res.json());
    // Kept in the URL's hash beside the other panels' state, so a lookup can be shared.
    window.dashboard.hash.set({ user: userId });
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    lookup(input.value.trim()).catch((err) => (status.textContent = `lookup failed: ${err.message}`));
  });
  const shared = window.dashboard.hash.get('user');
  if (shared) {
    input.value = shared;
    lookup(input.value).catch((err) => (status.textContent = `lookup failed: ${err.message}`));
  }
})();
