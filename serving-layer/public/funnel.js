/* The funnel panel: one funnel's latest day in the view with users in it, users per step with the
 * conversion from the step before and the median time it took (METRICS.md "Funnels"). The funnel is
 * a declared one (GET /v1/metrics/funnels) or an ad-hoc one of the contract's event types, each step
 * optionally filtered on page or content_id; the choice is kept in the URL's hash (funnel=<name>, or
 * funnel_steps=a,b:page=home,c&funnel_window=<ms>, the steps as the API spells them), so a link
 * reopens it. Uses the dashboard's helpers (window.dashboard); funnels are batch only, so its bars
 * are exact. The API's refusals (an ad-hoc range over its limit…) are shown in the panel. */
(() => {
  'use strict';
  const d = window.dashboard;
  if (!d?.ready) return; // no key yet: the dashboard asks for one first
  const key = localStorage.getItem('clickstream.key');
  const MIN = 60e3;
  const secs = (ms) => (ms === null ? '–' : ms < 120e3 ? `${Math.round(ms / 1000)} s` : `${(ms / 60e3).toFixed(1)} min`);

  // The funnel endpoint splits by device and country; the picker's app_version does not apply.
  const SUPPORTED = ['device_type', 'country'];
  // A step's optional filter (METRICS.md "Funnels"): one of these properties equal to a value.
  const PROPERTIES = ['page', 'content_id'];
  // A value may not hold the characters that separate steps and filters in the API's `steps`: checked
  // here, because a comma would silently make another step and the API's refusal names a regex.
  const BAD_VALUE = /[,:=\s]/;
  const MAX_VALUE = 128;

  const pick = document.getElementById('funnelPick');
  const form = document.getElementById('funnelAdhoc');
  const stepsBox = document.getElementById('funnelSteps');
  const windowInput = document.getElementById('funnelWindow');
  const errorBox = document.getElementById('funnelError');
  const when = document.getElementById('funnelWhen');
  const canvas = document.getElementById('funnel');

  /** GET /v1/metrics/funnels: the declared funnels and the ad-hoc limits, read once. */
  let catalog = null;

  /** The choice: {name} (declared) or {steps, window_ms} (ad-hoc), from the hash; null: the first declared. */
  function choiceFromHash() {
    if (d.hash.get('funnel')) return { name: d.hash.get('funnel') };
    const steps = d.hash.get('funnel_steps');
    const windowMs = Number(d.hash.get('funnel_window'));
    if (steps && Number.isInteger(windowMs) && windowMs > 0) return { steps: steps.split(','), window_ms: windowMs };
    return null;
  }
  /** The funnel's keys of the hash only: the other panels' (retention, user) stay. */
  function choiceToHash(c) {
    d.hash.set(c.name ? { funnel: c.name, funnel_steps: null, funnel_window: null } : { funnel: null, funnel_steps: c.steps.join(','), funnel_window: String(c.window_ms) });
  }
  let choice = choiceFromHash();

  /** The API's own message for a refusal (400: the reason), not just the status. */
  async function get(path) {
    const res = await fetch(path, { headers: { 'x-api-key': key } });
    const body = await res.json().catch(() => null);
    if (!res.ok) throw new Error(body?.message ?? `HTTP ${res.status}`);
    return body;
  }

  /** One step of the editor: its event type, and an input per filter property (both empty: no filter). */
  function stepEditor(text) {
    const [, type, property, value] = /^([^:]*)(?::([^=]*)=(.*))?$/.exec(text);
    const box = document.createElement('span');
    box.className = 'funnel-step';
    const s = document.createElement('select');
    s.setAttribute('aria-label', 'funnel step');
    s.dataset.testid = 'funnel-step';
    s.append(...catalog.event_types.map((t) => new Option(t, t)));
    s.value = catalog.event_types.includes(type) ? type : catalog.event_types[0];
    box.append(s);
    for (const p of PROPERTIES) {
      const input = Object.assign(document.createElement('input'), { placeholder: p, size: 9, maxLength: MAX_VALUE, value: p === property ? value : '' });
      input.setAttribute('aria-label', `funnel step ${p}`);
      input.dataset.property = p;
      input.dataset.testid = `funnel-step-${p}`;
      box.append(input);
    }
    return box;
  }
  /** The ad-hoc editor holding these steps (as the API spells them) and window. */
  function fillEditor(steps, windowMs) {
    stepsBox.replaceChildren(...steps.map(stepEditor));
    windowInput.value = String(Math.max(1, Math.round(windowMs / MIN)));
  }
  /** The editor's steps as the API's `steps` spells them, or throws what is wrong with which step. */
  function editorSteps() {
    return [...stepsBox.querySelectorAll('.funnel-step')].map((box, i) => {
      const type = box.querySelector('select').value;
      const filters = [...box.querySelectorAll('input')].map((e) => [e.dataset.property, e.value.trim()]).filter(([, v]) => v !== '');
      if (filters.length === 0) return type;
      if (filters.length > 1) throw new Error(`step ${i + 1}: a step filters on one of ${PROPERTIES.join(' or ')}, not both`);
      const [[property, value]] = filters;
      if (BAD_VALUE.test(value) || value.length > MAX_VALUE) {
        throw new Error(`step ${i + 1}: a ${property} value has at most ${MAX_VALUE} characters and no space, comma, colon or "=", not "${value}"`);
      }
      return `${type}:${property}=${value}`;
    });
  }
  function fillPicker() {
    pick.replaceChildren(...catalog.funnels.map((f) => new Option(f.name.replaceAll('_', ' '), f.name)), new Option('ad-hoc…', ''));
    windowInput.max = String(catalog.max_window_ms / MIN);
  }

  /** The chosen funnel's steps and window; an unknown declared name falls back to the first declared funnel. */
  function resolve() {
    if (choice?.steps) return { name: null, steps: choice.steps, window_ms: choice.window_ms };
    const f = catalog.funnels.find((x) => x.name === choice?.name) ?? catalog.funnels[0];
    if (f) return f;
    return { name: null, steps: ['page_view', 'click'], window_ms: 60 * MIN };
  }

  /** What is wrong with the editor's last submission (shown until the next one), else null. */
  let editorError = null;
  function showError(message) {
    errorBox.textContent = message ?? '';
    errorBox.hidden = message === null;
  }

  /** Refills the editor only when the choice changes, so a refresh never undoes an edit in progress. */
  let edited = null;
  function showChoice(f, shown) {
    pick.value = f.name ?? '';
    form.hidden = f.name !== null;
    if (f.name === null && edited !== shown) fillEditor(f.steps, f.window_ms);
    edited = shown;
  }

  function draw(steps, b) {
    d.chart('funnel', {
      type: 'bar',
      data: {
        labels: steps,
        datasets: [{ label: 'users', data: b ? b.value.steps.map((s) => s.users) : [], backgroundColor: b ? d.COLORS[b.source] : d.COLORS.none }],
      },
      options: {
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { afterLabel: (c) => (c.dataIndex === 0 || !b ? '' : `${d.pct(b.value.steps[c.dataIndex].conversion)} of the step before, median ${secs(b.value.steps[c.dataIndex].median_ms)} after it`) } },
        },
      },
    });
  }

  async function refreshFunnel() {
    if (!catalog) {
      catalog = await d.api('/v1/metrics/funnels');
      fillPicker();
    }
    const f = resolve();
    const shown = f.name ?? `${f.steps.join(',')}@${f.window_ms}`;
    showChoice(f, shown);
    // The view's whole days; the panel draws the latest one with users in it.
    const { days } = d.state();
    const { from: _f, to: _t, granularity: _g, ...filters } = d.params(SUPPORTED);
    d.scope('funnel', SUPPORTED);
    let r;
    try {
      r = await get(d.q('funnel', { granularity: 'day', from: days.from, to: days.to, steps: f.steps.join(','), window: f.window_ms, ...filters }));
    } catch (err) {
      showError(err.message);
      when.textContent = '';
      draw(f.steps, null);
      canvas.dataset.funnel = shown;
      canvas.dataset.state = 'error';
      return;
    }
    showError(editorError);
    const buckets = r.series[0].buckets.filter((b) => b.covered && b.value.entered > 0);
    const b = buckets[buckets.length - 1];
    // Days a declared funnel was not computed for are `none`, not 0: say so rather than draw nothing silently.
    const missing = r.funnel.not_computed?.days.length ?? 0;
    const gap = missing > 0 ? ` · not computed for ${missing} published day${missing > 1 ? 's' : ''} (backfill them)` : '';
    when.textContent = b
      ? `${d.dayLabel(b.start)} · ${b.value.entered} users entered · ${d.pct(b.value.conversion)} reached ${f.steps[f.steps.length - 1]}${gap}`
      : `no entrants in the range${gap}`;
    when.title = missing > 0 ? `${r.funnel.not_computed.reason}: ${r.funnel.not_computed.days.join(', ')}` : '';
    draw(f.steps, b);
    canvas.dataset.funnel = shown;
    canvas.dataset.state = 'ok';
  }

  const refresh = d.every(30000, refreshFunnel);
  d.addEventListener('rangechange', () => void refresh());

  pick.addEventListener('change', () => {
    if (pick.value) choice = { name: pick.value };
    else {
      // Ad-hoc starts from the funnel shown, to edit.
      const f = resolve();
      choice = { steps: [...f.steps], window_ms: f.window_ms };
    }
    editorError = null;
    choiceToHash(choice);
    void refresh();
  });
  document.getElementById('funnelAddStep').addEventListener('click', () => {
    if (stepsBox.children.length < catalog.max_steps) stepsBox.append(stepEditor(catalog.event_types[0]));
  });
  document.getElementById('funnelDropStep').addEventListener('click', () => {
    if (stepsBox.children.length > 2) stepsBox.lastElementChild.remove();
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    let steps;
    try {
      steps = editorSteps();
    } catch (err) {
      // The funnel shown stays (and so does its link); the panel says what to fix.
      editorError = err.message;
      showError(editorError);
      return;
    }
    editorError = null;
    choice = { steps, window_ms: Math.round(Number(windowInput.value) * MIN) };
    choiceToHash(choice);
    void refresh();
  });
})();
