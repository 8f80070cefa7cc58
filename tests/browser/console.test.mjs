// The web console in real headless Chromium against the real binary and a pymodbus device:
// the map loads; a device crossing a limit turns its unit's colour and shows the alarm within
// 2 s without a reload; an operator acknowledges on the page; a viewer cannot.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { launchBrowser, screenshotPath, startDevice, startSentinel, waitFor, writeRegister } from './harness.mjs';

const OPERATOR = 'operator-token-for-browser-tests';
const VIEWER = 'viewer-token-for-browser-tests';

const config = port => `
[site]
id = "browser"
name = "Browser test site"

[store]
data_dir = "{data_dir}"
flush_interval_ms = 100

[engine]
tick_ms = 100

[[devices]]
name = "plc1"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = ${port}
poll_interval_ms = 100
timeout_ms = 500
comm_loss_after_secs = 5

[[points]]
tag = "LT-1"
name = "Tank level"
device = "plc1"
kind = "level"
unit = "%"
area = "tank-farm"
span = [0.0, 100.0]
register = { table = "holding", address = 10 }
limits = { deadband = 5.0, levels = [{ level = "H", setpoint = 50.0, priority = "high" }] }

[[points]]
tag = "TT-2"
name = "Boiler temperature"
device = "plc1"
kind = "temperature"
unit = "°C"
area = "boiler-house"
span = [0.0, 200.0]
register = { table = "holding", address = 11 }

[[risk_units]]
id = "tank"
name = "Tank farm"
colour = "blue"
points = ["LT-1"]
x_pct = 30.0
y_pct = 40.0

[[risk_units]]
id = "boiler"
name = "Boiler house"
colour = "blue"
points = ["TT-2"]
x_pct = 70.0
y_pct = 60.0
`;

const skip = !process.env.SENTINEL_TEST_PYTHON || !process.env.SENTINEL_TEST_PYMODBUS_DEVICE;
if (skip && process.env.SENTINEL_REQUIRE_SERVICES === '1') {
  throw new Error('SENTINEL_TEST_PYTHON is not set but SENTINEL_REQUIRE_SERVICES=1: run through tests/run.sh');
}

describe('web console', { skip: skip && 'no pymodbus (run through tests/run.sh)', timeout: 90000 }, () => {
  let device, sentinel, browser, operator, viewer;

  before(async () => {
    device = await startDevice();
    await writeRegister(device.port, 10, 20);
    await writeRegister(device.port, 11, 80);
    sentinel = await startSentinel(config(device.port), {
      SENTINEL_API_TOKENS: `ops:operator:${OPERATOR};wall:viewer:${VIEWER}`,
    });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    if (sentinel && process.exitCode) console.error(sentinel.log());
    await sentinel?.stop();
    device?.stop();
  });

  async function signIn(token) {
    const page = await browser.context.newPage();
    page.on('pageerror', e => console.error('page error:', e.message));
    await page.goto(sentinel.url('/'));
    await page.locator('#token').fill(token);
    await page.locator('#login-form button[type=submit]').click();
    await page.locator('#map g.unit[data-unit="tank"]').waitFor();
    return page;
  }

  test('the map loads and asks for a token', async () => {
    const page = await browser.context.newPage();
    await page.goto(sentinel.url('/'));
    await page.locator('#login').waitFor({ state: 'visible' });
    await page.close();

    operator = await signIn(OPERATOR);
    assert.equal(await operator.locator('#map g.unit').count(), 2);
    await waitFor('LT-1 to read 20', 10000, async () =>
      (await (await fetch(sentinel.url('/api/v1/points'), { headers: { Authorization: `Bearer ${OPERATOR}` } })).json())
        .find(p => p.tag === 'LT-1')?.value === 20);
    assert.equal(await operator.locator('#map g.unit[data-unit="tank"]').getAttribute('data-colour'), 'blue');
    assert.equal(await operator.locator('#live').getAttribute('data-state'), 'open');
    await operator.screenshot({ path: screenshotPath('console-map-normal'), fullPage: true });
  });

  test('a limit crossed turns the unit and shows the alarm within 2 s, without a reload', async () => {
    await operator.evaluate(() => { window.__notReloaded = true; });
    const started = Date.now();
    await writeRegister(device.port, 10, 75);
    await operator.locator('#map g.unit[data-unit="tank"][data-colour="yellow"]').waitFor({ timeout: 2000 });
    await operator.locator('#alarms tr[data-point="LT-1"][data-state="active_unacked"]').waitFor({ timeout: 2000 });
    const elapsed = Date.now() - started;
    assert.ok(elapsed <= 2000, `took ${elapsed} ms`);
    assert.equal(await operator.evaluate(() => window.__notReloaded), true);
    assert.equal(await operator.locator('#map g.unit[data-unit="boiler"]').getAttribute('data-colour'), 'blue');
    await operator.screenshot({ path: screenshotPath('console-map-alarm'), fullPage: true });
  });

  test('a viewer sees the alarm but cannot acknowledge it', async () => {
    viewer = await signIn(VIEWER);
    const row = viewer.locator('#alarms tr[data-point="LT-1"]');
    await row.waitFor();
    assert.equal(await row.locator('button.ack').count(), 0);
    assert.equal(await viewer.locator('body').getAttribute('data-role'), 'viewer');
    const id = await row.getAttribute('data-alarm-id');
    const status = await viewer.evaluate(async id => {
      const r = await fetch(`/api/v1/alarms/${id}/ack`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${sessionStorage.getItem('sentinel.token')}`, 'content-type': 'application/json' },
        body: '{}',
      });
      return r.status;
    }, id);
    assert.equal(status, 403);
    await viewer.screenshot({ path: screenshotPath('console-viewer'), fullPage: true });
  });

  test('an operator acknowledges and comments on the page; every page sees the new state', async () => {
    // The viewer's tab opened last; a background tab gets no animation frames to click in.
    await operator.bringToFront();
    const row = operator.locator('#alarms tr[data-point="LT-1"]');
    await row.locator('button.ack').click();
    await operator.locator('#alarms tr[data-point="LT-1"][data-state="active_acked"]').waitFor({ timeout: 10000 });
    await viewer.locator('#alarms tr[data-point="LT-1"][data-state="active_acked"]').waitFor({ timeout: 10000 });
    // A comment through the page's prompt lands in the journal.
    operator.once('dialog', d => d.accept('Level gauge checked on site'));
    await operator.locator('#alarms tr[data-point="LT-1"] button.comment').click();
    const id = await operator.locator('#alarms tr[data-point="LT-1"]').getAttribute('data-alarm-id');
    await waitFor('the comment in the journal', 5000, async () => {
      const r = await fetch(sentinel.url(`/api/v1/alarms/${id}/comments`), { headers: { Authorization: `Bearer ${VIEWER}` } });
      const list = await r.json();
      return list.some(c => c.comment === 'Level gauge checked on site' && c.by === 'ops');
    });
    await operator.screenshot({ path: screenshotPath('console-acknowledged'), fullPage: true });
  });

  test('tickets board: an operator reports a hazard; a viewer sees it but has no form', async () => {
    await operator.evaluate(() => { location.hash = '#/tickets'; });
    await operator.locator('#ticket-new').waitFor({ state: 'visible' });
    await operator.locator('#ticket-title').fill('Level gauge glass cracked at T-101');
    await operator.locator('#ticket-new button[type=submit]').click();
    await operator.locator('.column[data-state="found"] .ticket', { hasText: 'Level gauge glass cracked' }).waitFor({ timeout: 5000 });
    await operator.screenshot({ path: screenshotPath('console-tickets'), fullPage: true });
    await viewer.bringToFront();
    await viewer.evaluate(() => { location.hash = '#/tickets'; });
    await viewer.locator('.column[data-state="found"] .ticket', { hasText: 'Level gauge glass cracked' }).waitFor({ timeout: 5000 });
    assert.equal(await viewer.locator('#ticket-new').isVisible(), false);
    assert.equal(await viewer.locator('.ticket button').count(), 0);
    await operator.bringToFront();
  });

  test('the point page draws a trend; the language switches to Chinese', async () => {
    await operator.goto(sentinel.url('/#/point/LT-1'));
    await operator.locator('#view-point').waitFor({ state: 'visible' });
    await waitFor('the trend to have data', 5000, () => operator.evaluate(() => {
      const c = document.getElementById('trend');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 4) if (d[i] === 25 && d[i + 1] === 118 && d[i + 2] === 210) return true;
      return false;
    }));
    await operator.locator('#lang').click();
    assert.equal(await operator.locator('header nav a[href="#/map"]').textContent(), '风险地图');
    await operator.screenshot({ path: screenshotPath('console-trend-zh'), fullPage: true });
    await operator.locator('#lang').click();
  });

  test('10,000 points: only the rows in view are drawn, and scrolling reaches the last', async () => {
    const page = await browser.context.newPage();
    const points = Array.from({ length: 10000 }, (_, i) => ({
      tag: `P-${String(i).padStart(5, '0')}`, name: `Point ${i}`, device: 'plc1', kind: 'temperature', unit: '°C',
      area: `area-${i % 50}`, span: null, value: i / 10, time: new Date().toISOString(), quality: 'good',
      quality_since: null, open_alarms: 0, alarm_state: 'normal',
    }));
    const body = JSON.stringify(points);
    // The server's own list is two points; the console is what is measured here.
    await page.route('**/api/v1/points', route => route.fulfill({ status: 200, contentType: 'application/json', body }));
    await page.goto(sentinel.url('/'));
    await page.locator('#token').fill(OPERATOR);
    await page.locator('#login-form button[type=submit]').click();
    await page.locator('#map g.unit').first().waitFor();
    const started = Date.now();
    await page.evaluate(() => { location.hash = '#/points'; });
    await page.locator('#points-rows .vrow[data-tag="P-00000"]').waitFor({ timeout: 5000 });
    const shown = Date.now() - started;
    assert.ok(shown < 1500, `the list took ${shown} ms`);
    const rows = await page.locator('#points-rows .vrow').count();
    assert.ok(rows > 10 && rows < 100, `${rows} rows in the DOM`);
    assert.equal(await page.locator('#points-count').textContent(), '(10000)');
    await page.locator('#points-scroll').evaluate(el => { el.scrollTop = el.scrollHeight; });
    await page.locator('#points-rows .vrow[data-tag="P-09999"]').waitFor({ timeout: 2000 });
    await page.locator('#points-filter').fill('P-0424');
    await page.locator('#points-rows .vrow[data-tag="P-04240"]').waitFor({ timeout: 2000 });
    assert.equal(await page.locator('#points-count').textContent(), '(10)');
    await page.screenshot({ path: screenshotPath('console-points-10000'), fullPage: true });
    await page.close();
  });
});
