/**
 * The dashboard in headless Chromium against a running serving layer on the
 * real stack: batch views published by the real jobs, speed views applied by
 * the real speed layer (including events of the last minute, so the live chart
 * has something to draw). Every chart must render real data, the page must log
 * no console errors, and the screenshot goes to test-results/dashboard.png (docs/dashboard.png is a copy of one).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisClient } from '../../common/clients';
import { REPO_ROOT, type Config } from '../../common/config';
import { BUCKET_MS, bucketStart, dayOf, type EventRecord } from '../../common/contract';
import { logger } from '../../common/log';
import { hoursOfDay, jobContext, runDaily } from '../../batch-layer/jobs';
import { startSpeedLayer, type SpeedLayer } from '../../speed-layer/service';
import { startServing, type Serving } from '../../serving-layer/service';
import { dropIsolated, isolatedConfig } from '../support/isolated';
import { lambdaFixture } from './serving-support';
import { produce, toMessages, waitAllApplied } from './speed-support';

const DAY = BUCKET_MS.day;
const NOW = Date.now();
const D = bucketStart(NOW, 'day') - 2 * DAY;

/** The default browse to play first (the panel opens on the first declared funnel), and a second to pick. */
const FUNNELS = [
  { name: 'browse_to_play', steps: ['page_view', 'click', 'video_play', 'video_complete'], window_ms: 3_600_000 },
  { name: 'play_to_complete', steps: ['video_play', 'video_complete'], window_ms: 3_600_000 },
];

let cfg: Config;
let tmp: string;
let redis: Redis;
let speed: SpeedLayer;
let serving: Serving;
let browser: Browser;
/** Distinct users with an event on D: all of them new on D, the first day of the lake. */
let usersOnD = 0;

/** Events of the last 90 seconds, so the events/s chart is live. */
function recentEvents(n: number): EventRecord[] {
  const types = ['page_view', 'click', 'video_play', 'search'] as const;
  return Array.from({ length: n }, (_, i) => {
    const ts = NOW - 90_000 + Math.floor((i * 85_000) / n);
    return {
      event_id: `live-${i}`,
      event_type: types[i % types.length],
      user_id: `live_user_${i % 7}`,
      session_id: `live_sess_${i % 7}`,
      ts,
      schema_version: 1,
      device_type: i % 2 ? 'smart_tv' : 'mobile',
      country: 'US',
      app_version: '8.41.0',
      content_id: types[i % types.length] === 'video_play' ? `movie_${i % 3}` : null,
      received_at: ts,
      properties: null,
      context: null,
      extra: null,
    };
  });
}

beforeAll(async () => {
  cfg = await isolatedConfig('dashboard', { SPEED_PORT: '0', BATCH_SHARDS: '1', FUNNELS: JSON.stringify(FUNNELS) });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dashboard-it-'));
  const ctx = jobContext(cfg, logger('dashboard-test'));
  const fixture = lambdaFixture(cfg, ctx, tmp, { seed: 11, users: 30, startMs: D, endMs: D + DAY + 3 * 3_600_000, now: NOW });
  usersOnD = new Set(fixture.distinct.filter((r) => dayOf(r.ts) === dayOf(D)).map((r) => r.user_id)).size;
  redis = redisClient(cfg);
  speed = await startSpeedLayer(cfg, { alerts: false });
  await produce(cfg, toMessages([...fixture.all, ...recentEvents(400)]));
  await waitAllApplied(redis, cfg, 120_000);
  for (const hour of hoursOfDay(dayOf(D))) await fixture.publishHour(hour);
  await runDaily(ctx, dayOf(D), { shards: 1 });
  serving = await startServing(cfg, { port: 0, host: '127.0.0.1' });
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}, 600_000);

afterAll(async () => {
  await browser?.close();
  await serving?.stop();
  await speed?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (cfg) await dropIsolated(cfg, redis);
  redis?.disconnect();
});

describe('dashboard in headless Chromium', () => {
  it('renders every chart with real data, shows what is exact and what is live, logs no errors', async () => {
    const page = await browser.newPage({ viewport: { width: 1440, height: 1500 } });
    const problems = watchProblems(page);

    // A first visit asks for the key in a form; the key is never put in the URL.
    await page.goto(`${serving.url}/`);
    await page.fill('#key', 'dev-read-key');
    await page.click('#keyform button');
    await page.waitForURL((u) => !u.search.includes('key'));
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 30_000 });
    expect(page.url()).not.toContain('dev-read-key');
    // The live chart refreshes every 2 s: wait for a second refresh to prove it keeps going.
    const firstFreshness = await page.textContent('#freshness');
    await page.waitForTimeout(2500);

    await page.waitForSelector('#funnel[data-rendered="true"]', { timeout: 30_000 });
    const points = await page.$$eval('[data-chart]', (els) => Object.fromEntries(els.map((e) => [e.id, Number((e as HTMLElement).dataset.points ?? -1)])));
    for (const [id, n] of Object.entries(points)) expect({ id, hasData: n > 0 }).toEqual({ id, hasData: true });
    expect(Object.keys(points).sort()).toEqual(
      ['activeUsers', 'binge', 'churnRisk', 'clicksToPlay', 'dailySessions', 'eventsHourly', 'eventsPerSecond', 'funnel', 'lifecycle', 'playback', 'playbackRates', 'retention', 'topContent', 'topPaths'].sort(),
    );
    // The funnel panel draws D's browse-to-play steps as the API answers them.
    const funnelApi = await (await fetch(`${serving.url}/v1/metrics/funnel?granularity=day&from=${D}&to=${D + DAY}&steps=page_view,click,video_play,video_complete`, { headers: { 'x-api-key': 'dev-read-key' } })).json();
    const funnelChart = await page.evaluate(() => (window as unknown as { Chart: { getChart(id: string): { data: { datasets: Array<{ data: number[] }> } } } }).Chart.getChart('funnel').data.datasets[0].data);
    expect(funnelChart).toEqual(funnelApi.series[0].buckets[0].value.steps.map((x: { users: number }) => x.users));
    expect(funnelChart[0]).toBeGreaterThan(0);
    // Lifecycle: D is the only published day and the lake's first, so its users are all new.
    const lifecycle = await page.evaluate(() => {
      const c = (window as unknown as { Chart: { getChart(id: string): { data: { datasets: Array<{ label: string; data: (number | null)[] }> } } } }).Chart.getChart('lifecycle');
      return Object.fromEntries(c.data.datasets.map((d) => [d.label, d.data.filter((v) => v !== null).reduce((a, b) => a! + b!, 0)]));
    });
    expect(lifecycle).toEqual({ new: usersOnD, returning: 0, resurrecting: 0, dormant: 0 });
    expect(usersOnD).toBeGreaterThan(0);
    expect(await page.textContent('#churnRiskWhen')).toMatch(/: 0$/);
    // The retention switch: recurring weekly cohorts replace the daily first-seen ones, and the URL keeps the choice.
    expect(await page.getAttribute('#retention', 'data-mode')).toBe('first_seen/day');
    await page.selectOption('#retentionMode', 'recurring/week');
    await page.waitForSelector('#retention[data-mode="recurring/week"]');
    expect(Number(await page.getAttribute('#retention', 'data-points'))).toBeGreaterThan(0);
    expect(await page.textContent('#retention')).toContain('W8');
    expect(new URL(page.url()).hash).toBe('#retention=recurring%2Fweek');

    // Exact vs live: the header names the watermark, and the hourly chart colours batch and speed buckets differently.
    const watermark = await page.textContent('#watermark');
    expect(watermark).toContain(new Date(D + DAY).toISOString().replace('T', ' ').slice(0, 16));
    expect(firstFreshness).toMatch(/Live.*lag \d+ ms/);
    const colours = await page.evaluate(() => {
      const c = (window as unknown as { Chart: { getChart(id: string): { data: { datasets: Array<{ backgroundColor: string[] }> } } } }).Chart.getChart('eventsHourly');
      return [...new Set(c.data.datasets[0].backgroundColor)];
    });
    expect(colours).toEqual(expect.arrayContaining(['#2563eb', '#f59e0b']));
    expect(await page.textContent('#alerts')).toMatch(/none firing|\(speed\)|\(serving\)/);

    // The user lookup: a user of the last minutes, the panel shows the features the API answers.
    const features = (await (await fetch(`${serving.url}/v1/users/live_user_3/features`, { headers: { 'x-api-key': 'dev-read-key' } })).json()) as { events: Record<string, number>; first_seen: { day: string } };
    await page.fill('[data-testid="user-lookup-input"]', 'live_user_3');
    await page.click('#userLookup button');
    await page.waitForSelector('[data-testid="user-features"] tr[data-feature="events"]');
    expect(await page.textContent('tr[data-feature="events"] td')).toBe(`≈ ${features.events['5m']} / ${features.events['1h']} / ${features.events['24h']}`);
    expect(features.events['5m']).toBeGreaterThan(0);
    expect(await page.textContent('tr[data-feature="first-seen"] td')).toContain(features.first_seen.day);
    expect(new URLSearchParams(new URL(page.url()).hash.slice(1)).get('user')).toBe('live_user_3');

    fs.mkdirSync(path.join(REPO_ROOT, 'docs'), { recursive: true });
    await page.screenshot({ path: path.join(REPO_ROOT, 'test-results', 'dashboard.png'), fullPage: true });
    expect(problems).toEqual([]);
    await page.close();
  });

  it('follows the time-range picker and the filters, keeps the view in the URL, and says which panels a filter skips', async () => {
    const page = await browser.newPage({ viewport: { width: 1440, height: 1500 } });
    const problems = watchProblems(page);
    await page.addInitScript(() => localStorage.setItem('clickstream.key', 'dev-read-key'));
    const api = async (q: string) => (await (await fetch(`${serving.url}${q}`, { headers: { 'x-api-key': 'dev-read-key' } })).json()) as any;
    const chartData = (id: string) =>
      page.evaluate((id) => {
        const c = (window as unknown as { Chart: { getChart(id: string): { data: { labels: string[]; datasets: Array<{ data: (number | null)[] }> } } } }).Chart.getChart(id);
        return { labels: c.data.labels, values: c.data.datasets[0].data };
      }, id);
    const shown = (search: string) => page.waitForSelector(`body[data-view="${search}"]`, { timeout: 30_000 });
    const note = (id: string) => page.$eval(`#${id}`, (el) => el.closest('section')!.querySelector('.scope')?.textContent ?? '');

    await page.goto(`${serving.url}/`);
    await shown('');
    expect(await page.getAttribute('[data-range="7d"]', 'aria-pressed')).toBe('true');

    // A preset: the last 24 h, per hour; other panels (funnel.js…) hear of it through window.dashboard.
    await page.evaluate(() => {
      const w = window as unknown as { dashboard: EventTarget; heard: unknown[] };
      w.heard = [];
      w.dashboard.addEventListener('rangechange', (e) => w.heard.push((e as CustomEvent).detail));
    });
    await page.click('[data-range="24h"]');
    await shown('?range=24h');
    expect((await chartData('eventsHourly')).labels).toHaveLength(24);
    const heard = await page.evaluate(() => (window as unknown as { heard: Array<{ preset: string; granularity: string; from: number; to: number }> }).heard);
    expect(heard).toHaveLength(1);
    expect(heard[0]).toMatchObject({ preset: '24h', live: true, granularity: 'hour', filters: {} });
    expect(heard[0].to - heard[0].from).toBe(DAY);

    // An absolute range: day D alone, per hour, each bar the API's exact count.
    const day = dayOf(D);
    await page.fill('#rangeFrom', day);
    await page.fill('#rangeTo', day);
    await page.click('#rangeApply');
    const absolute = `?from=${day}&to=${day}`;
    await shown(absolute);
    expect(new URL(page.url()).search).toBe(absolute);
    const all = await api(`/v1/metrics/events?granularity=hour&from=${D}&to=${D + DAY}`);
    expect(all.series[0].buckets.every((b: { source: string }) => b.source === 'batch')).toBe(true);
    expect((await chartData('eventsHourly')).values).toEqual(all.series[0].buckets.map((b: { value: number }) => b.value));
    expect(await page.textContent('#liveWindow')).toContain('not the chosen dates');

    // A filter: the values offered come from the data; the filtered bars are the API's answer for the same filter.
    const devices = await page.$$eval('select[data-filter="device_type"] option', (os) => os.map((o) => (o as HTMLOptionElement).value).filter(Boolean));
    const obt = await api(`/v1/metrics/obt?granularity=day&from=${D}&to=${D + DAY}&group_by=device_type`);
    expect(devices).toEqual(obt.series.map((x: { key: { device_type: string } }) => x.key.device_type).sort());
    // The busiest (device, country) of day D, so both filters leave something to draw.
    const pairs = await api(`/v1/metrics/obt?granularity=day&from=${D}&to=${D + DAY}&group_by=device_type,country`);
    const busiest = pairs.series.reduce((a: any, b: any) => (b.buckets[0].value.total_events > a.buckets[0].value.total_events ? b : a));
    const { device_type: device, country } = busiest.key as { device_type: string; country: string };
    await page.selectOption('select[data-filter="device_type"]', device);
    const filtered = `${absolute}&device_type=${device}`;
    await shown(filtered);
    const byDevice = await api(`/v1/metrics/events?granularity=hour&from=${D}&to=${D + DAY}&device_type=${device}`);
    const deviceValues = byDevice.series[0].buckets.map((b: { value: number }) => b.value);
    expect((await chartData('eventsHourly')).values).toEqual(deviceValues);
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    expect(sum(deviceValues)).toBeGreaterThan(0);
    expect(sum(deviceValues)).toBeLessThan(sum(all.series[0].buckets.map((b: { value: number }) => b.value)));
    const users = await api(`/v1/metrics/active_users?granularity=hour&from=${D}&to=${D + DAY}&device_type=${device}`);
    expect((await chartData('activeUsers')).values).toEqual(users.series[0].buckets.map((b: { value: number }) => b.value));
    // Panels whose endpoint has no device_type say so instead of showing the unfiltered numbers as filtered.
    expect(await note('playback')).toBe('all devices');
    expect(await note('lifecycle')).toBe('all devices');
    expect(await note('eventsHourly')).toBe('');
    expect(await note('dailySessions')).toBe('');

    // A country too: the events follow it; hourly active users cannot (the one big table is daily).
    await page.selectOption('select[data-filter="country"]', country);
    const both = `${filtered}&country=${country}`;
    await shown(both);
    const byBoth = await api(`/v1/metrics/events?granularity=hour&from=${D}&to=${D + DAY}&device_type=${device}&country=${country}`);
    const bothValues = (await chartData('eventsHourly')).values;
    expect(bothValues).toEqual(byBoth.series[0].buckets.map((b: { value: number }) => b.value));
    expect(sum(bothValues as number[])).toBe(busiest.buckets[0].value.total_events);
    expect(await note('activeUsers')).toMatch(/^all countries/);
    await page.screenshot({ path: path.join(REPO_ROOT, 'test-results', 'dashboard-filtered.png'), fullPage: true });

    // The link reopens the same view: range, filters and the bars.
    await page.reload();
    await shown(both);
    expect(await page.inputValue('#rangeFrom')).toBe(day);
    expect(await page.inputValue('#rangeTo')).toBe(day);
    expect(await page.inputValue('select[data-filter="device_type"]')).toBe(device);
    expect(await page.inputValue('select[data-filter="country"]')).toBe(country);
    expect((await chartData('eventsHourly')).values).toEqual(bothValues);
    expect(await page.evaluate(() => (window as unknown as { dashboard: { state(): unknown } }).dashboard.state())).toMatchObject({
      preset: null,
      from: D,
      to: D + DAY,
      granularity: 'hour',
      filters: { device_type: device, country },
    });

    // A long preset goes daily, where active users do follow the country (from the one big table).
    await page.click('[data-range="30d"]');
    await shown(`?range=30d&device_type=${device}&country=${country}`);
    expect((await chartData('eventsHourly')).labels).toHaveLength(30);
    expect(await note('activeUsers')).toBe('');
    const dailyUsers = await api(`/v1/metrics/active_users?granularity=day&from=${D}&to=${D + DAY}&device_type=${device}&country=${country}`);
    const labels = (await chartData('activeUsers')).labels;
    expect((await chartData('activeUsers')).values[labels.indexOf(day.slice(5))]).toBe(dailyUsers.series[0].buckets[0].value);
    await page.screenshot({ path: path.join(REPO_ROOT, 'test-results', 'dashboard-30d.png'), fullPage: true });

    expect(problems).toEqual([]);
    await page.close();
  });

  it('the funnel panel: picks a declared funnel, runs an ad-hoc one, keeps the choice in the URL, shows the API refusal', async () => {
    const { page, problems, api, funnelChart } = await funnelPage();
    const drawn = (funnel: string, state = 'ok') => page.waitForSelector(`#funnel[data-funnel="${funnel}"][data-state="${state}"]`, { timeout: 30_000 });
    const hash = async () => Object.fromEntries(new URLSearchParams(new URL(page.url()).hash.slice(1)));
    const stepValues = () => page.$$eval('#funnelSteps select', (els) => els.map((e) => (e as HTMLSelectElement).value));
    const day = dayOf(D);
    const onD = (steps: string, window = 3_600_000) => api(`/v1/metrics/funnel?granularity=day&from=${D}&to=${D + DAY}&steps=${steps}&window=${window}`);

    await page.goto(`${serving.url}/?from=${day}&to=${day}`);
    await drawn('browse_to_play');
    expect(await page.$$eval('#funnelPick option', (os) => os.map((o) => (o as HTMLOptionElement).value))).toEqual(['browse_to_play', 'play_to_complete', '']);
    expect(await page.isHidden('#funnelAdhoc')).toBe(true);

    // A declared funnel from the list: its steps, as the API answers them for D.
    await page.selectOption('#funnelPick', 'play_to_complete');
    await drawn('play_to_complete');
    const declared = await onD('video_play,video_complete');
    expect(declared.funnel.name).toBe('play_to_complete');
    expect(await funnelChart()).toEqual({ labels: ['video_play', 'video_complete'], values: declared.series[0].buckets[0].value.steps.map((x: { users: number }) => x.users) });
    expect((await funnelChart()).values[0]).toBeGreaterThan(0);
    expect(await hash()).toEqual({ funnel: 'play_to_complete' });

    // An ad-hoc funnel: three steps of the contract's event types, 10 minutes.
    await page.selectOption('#funnelPick', { label: 'ad-hoc…' });
    await page.waitForSelector('#funnelAdhoc:not([hidden])');
    expect(await stepValues()).toEqual(['video_play', 'video_complete']);
    await page.click('#funnelAddStep');
    const steps = page.locator('#funnelSteps select');
    await steps.nth(0).selectOption('page_view');
    await steps.nth(1).selectOption('click');
    await steps.nth(2).selectOption('video_play');
    await page.fill('#funnelWindow', '10');
    await page.click('#funnelRun');
    const adhocKey = 'page_view,click,video_play@600000';
    await drawn(adhocKey);
    const adhoc = await onD('page_view,click,video_play', 600_000);
    expect(adhoc.funnel.name).toBeNull();
    const adhocChart = { labels: ['page_view', 'click', 'video_play'], values: adhoc.series[0].buckets[0].value.steps.map((x: { users: number }) => x.users) };
    expect(await funnelChart()).toEqual(adhocChart);
    expect(adhocChart.values[0]).toBeGreaterThan(0);
    expect(await hash()).toEqual({ funnel_steps: 'page_view,click,video_play', funnel_window: '600000' });

    // The link reopens it: the editor, the window and the bars.
    await page.reload();
    await drawn(adhocKey);
    expect(await page.inputValue('#funnelPick')).toBe('');
    expect(await stepValues()).toEqual(['page_view', 'click', 'video_play']);
    expect(await page.inputValue('#funnelWindow')).toBe('10');
    expect(await funnelChart()).toEqual(adhocChart);

    // Over 90 days the API refuses an ad-hoc funnel (at most 31): the panel says why, the URL keeps the funnel.
    await page.click('[data-range="90d"]');
    await drawn(adhocKey, 'error');
    expect(await page.isVisible('#funnelError')).toBe(true);
    expect(await page.textContent('#funnelError')).toContain('at most 31 days');
    expect(await hash()).toEqual({ funnel_steps: 'page_view,click,video_play', funnel_window: '600000' });
    await page.screenshot({ path: path.join(REPO_ROOT, 'test-results', 'dashboard-funnel.png'), fullPage: true });
    // Back to a declared funnel: any range, the error goes.
    await page.selectOption('#funnelPick', 'browse_to_play');
    await drawn('browse_to_play');
    expect(await page.isHidden('#funnelError')).toBe(true);

    // The refusal's response (and Chromium's console line about it) are the only problems.
    const refusal = (p: string) => /^HTTP 400: .*\/v1\/metrics\/funnel\?/.test(p) || /^console: Failed to load resource: .*status of 400.*\/v1\/metrics\/funnel\?/.test(p);
    expect(problems.filter((p) => p.startsWith('HTTP 400')).length).toBeGreaterThan(0);
    expect(problems.filter((p) => !refusal(p))).toEqual([]);
    await page.close();
  });
});

describe('the dashboard URL hash', () => {
  it("keeps each panel's state under its own keys: an ad-hoc funnel with step filters, a looked-up user and a retention mode survive one another and a reload", async () => {
    const { page, problems, api, funnelChart } = await funnelPage();
    const drawn = (funnel: string) => page.waitForSelector(`#funnel[data-funnel="${funnel}"][data-state="ok"]`, { timeout: 30_000 });
    const hash = async () => Object.fromEntries(new URLSearchParams(new URL(page.url()).hash.slice(1)));
    const editor = () =>
      page.$$eval('#funnelSteps .funnel-step', (els) =>
        els.map((e) => [e.querySelector('select')!.value, ...Array.from(e.querySelectorAll('input')).map((i) => `${i.dataset.property}=${i.value}`)].join(' ')),
      );
    const step = (i: number) => page.locator('#funnelSteps .funnel-step').nth(i);
    const day = dayOf(D);
    await page.goto(`${serving.url}/?from=${day}&to=${day}`);
    await drawn('browse_to_play');

    // The ad-hoc editor starts from the funnel shown; a step may filter on page or content_id.
    await page.selectOption('#funnelPick', { label: 'ad-hoc…' });
    await page.waitForSelector('#funnelAdhoc:not([hidden])');
    const shown = { funnel_steps: 'page_view,click,video_play,video_complete', funnel_window: '3600000' };
    await drawn(`${shown.funnel_steps}@${shown.funnel_window}`);
    expect(await editor()).toEqual(['page_view page= content_id=', 'click page= content_id=', 'video_play page= content_id=', 'video_complete page= content_id=']);
    await page.click('#funnelDropStep');
    await step(0).locator('[data-property="page"]').fill('browse');
    await step(2).locator('[data-property="content_id"]').fill('movie_7');

    // What the API would refuse or misread never leaves the panel: the panel says which step and why, the funnel shown stays.
    await step(1).locator('[data-property="page"]').fill('my list');
    await page.click('#funnelRun');
    await page.waitForSelector('#funnelError:not([hidden])');
    expect(await page.textContent('#funnelError')).toBe('step 2: a page value has at most 128 characters and no space, comma, colon or "=", not "my list"');
    await step(1).locator('[data-property="page"]').fill('home,video_play');
    await page.click('#funnelRun');
    expect(await page.textContent('#funnelError')).toContain('step 2: a page value');
    await step(1).locator('[data-property="page"]').fill('home');
    await step(1).locator('[data-property="content_id"]').fill('movie_1');
    await page.click('#funnelRun');
    expect(await page.textContent('#funnelError')).toBe('step 2: a step filters on one of page or content_id, not both');
    await page.locator('#funnelPanel').screenshot({ path: path.join(REPO_ROOT, 'test-results', 'dashboard-funnel-input.png') });
    expect(await hash()).toEqual(shown);
    expect(await page.getAttribute('#funnel', 'data-funnel')).toBe(`${shown.funnel_steps}@${shown.funnel_window}`);

    // Valid filters reach the API exactly as its `steps` spells them: the bars are its answer.
    await step(1).locator('[data-property="page"]').fill('');
    await step(1).locator('[data-property="content_id"]').fill('');
    await page.click('#funnelRun');
    const steps = 'page_view:page=browse,click,video_play:content_id=movie_7';
    const adhocKey = `${steps}@3600000`;
    await drawn(adhocKey);
    expect(await page.isHidden('#funnelError')).toBe(true);
    const adhoc = await api(`/v1/metrics/funnel?granularity=day&from=${D}&to=${D + DAY}&steps=${encodeURIComponent(steps)}&window=3600000`);
    expect(adhoc.funnel.steps).toEqual([
      { event_type: 'page_view', property: 'page', value: 'browse' },
      { event_type: 'click', property: null, value: null },
      { event_type: 'video_play', property: 'content_id', value: 'movie_7' },
    ]);
    const adhocChart = { labels: steps.split(','), values: adhoc.series[0].buckets[0].value.steps.map((x: { users: number }) => x.users) };
    expect(await funnelChart()).toEqual(adhocChart);
    expect(adhocChart.values[0]).toBeGreaterThan(0);
    // Fewer users than without the filter: the filter was applied.
    const unfiltered = await api(`/v1/metrics/funnel?granularity=day&from=${D}&to=${D + DAY}&steps=page_view,click,video_play&window=3600000`);
    expect(adhocChart.values[0]).toBeLessThan(unfiltered.series[0].buckets[0].value.steps[0].users);

    // Then a user lookup and a retention mode: each panel adds its keys, none erases another's.
    await page.fill('[data-testid="user-lookup-input"]', 'live_user_3');
    await page.click('#userLookup button');
    await page.waitForSelector('[data-testid="user-features"] tr[data-feature="events"]');
    await page.selectOption('#retentionMode', 'recurring/week');
    await page.waitForSelector('#retention[data-mode="recurring/week"]');
    const all = { funnel_steps: steps, funnel_window: '3600000', user: 'live_user_3', retention: 'recurring/week' };
    expect(await hash()).toEqual(all);

    // The link reopens all three.
    await page.reload();
    await drawn(adhocKey);
    await page.waitForSelector('#retention[data-mode="recurring/week"]');
    await page.waitForSelector('[data-testid="user-features"] tr[data-feature="events"]');
    expect(await page.inputValue('#retentionMode')).toBe('recurring/week');
    expect(await page.textContent('[data-testid="user-features-status"]')).toMatch(/^live_user_3, as of /);
    expect(await page.inputValue('#funnelPick')).toBe('');
    expect(await editor()).toEqual(['page_view page=browse content_id=', 'click page= content_id=', 'video_play page= content_id=movie_7']);
    expect(await funnelChart()).toEqual(adhocChart);
    expect(await hash()).toEqual(all);
    await page.screenshot({ path: path.join(REPO_ROOT, 'test-results', 'dashboard-hash.png'), fullPage: true });

    // A declared funnel replaces the ad-hoc keys, and only them.
    await page.selectOption('#funnelPick', 'play_to_complete');
    await drawn('play_to_complete');
    expect(await hash()).toEqual({ funnel: 'play_to_complete', user: 'live_user_3', retention: 'recurring/week' });
    expect(problems).toEqual([]);
    await page.close();
  });
});

/** Console errors (with where they come from), uncaught exceptions, failed requests and HTTP errors of a page. */
/** A page with the read key set, the API as the test reads it, and the funnel chart's bars as drawn. */
async function funnelPage() {
  const page = await browser.newPage({ viewport: { width: 1440, height: 1500 } });
  const problems = watchProblems(page);
  await page.addInitScript(() => localStorage.setItem('clickstream.key', 'dev-read-key'));
  const api = async (q: string) => (await (await fetch(`${serving.url}${q}`, { headers: { 'x-api-key': 'dev-read-key' } })).json()) as any;
  const funnelChart = () =>
    page.evaluate(() => {
      const c = (window as unknown as { Chart: { getChart(id: string): { data: { labels: string[]; datasets: Array<{ data: number[] }> } } } }).Chart.getChart('funnel');
      return { labels: c.data.labels, values: c.data.datasets[0].data };
    });
  return { page, problems, api, funnelChart };
}

function watchProblems(page: Page): string[] {
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()} (${m.location().url})`);
  });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  // net::ERR_ABORTED is the browser cancelling a request: a reload or goto unloading the page that sent it
  // (its live polls included, even those sent after the navigation began). The dashboard cancels nothing
  // itself, and a server failing shows as an HTTP status or another error, which still count.
  page.on('requestfailed', (r) => {
    if (r.failure()?.errorText === 'net::ERR_ABORTED') return;
    problems.push(`requestfailed: ${r.url()} (${r.failure()?.errorText})`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  return problems;
}
