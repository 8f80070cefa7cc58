// The regional risk map (`sentinel hub`) in real headless Chromium: two real gateways publish
// over a real Mosquitto to a real hub. Each site shows in its colour; an alarm at a gateway
// turns its dot and row within a few seconds; the sector and grade filters hide and show sites;
// the site page lists the active alarm and follows its acknowledgement; a gateway that stops
// (SIGSTOP: frozen, connection open, nothing sent) turns grey after the hub's 3 s timeout.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  launchBrowser, mosquittoBin, screenshotPath, startDevice, startHub, startMosquitto, startSentinel, waitFor, writeRegister,
} from './harness.mjs';

const gateway = (site, colour, devicePort, register, brokerPort) => `
[site]
id = "${site}"
name = "Plant ${site}"
risk_colour = "${colour}"

[store]
data_dir = "{data_dir}"
flush_interval_ms = 100

[engine]
tick_ms = 100

[[devices]]
name = "plc"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = ${devicePort}
poll_interval_ms = 200
timeout_ms = 300
comm_loss_after_secs = 10

[[points]]
tag = "GT-1"
device = "plc"
kind = "combustible_gas"
unit = "%LEL"
area = "dike"
span = [0.0, 100.0]
register = { table = "holding", address = ${register} }
limits = { deadband = 2.0, levels = [{ level = "H", setpoint = 25.0, priority = "high" }, { level = "HH", setpoint = 50.0, priority = "critical" }] }

[[risk_units]]
id = "dike"
name = "Tank dike"
colour = "${colour}"
areas = ["dike"]

[notify.mqtt]
broker = { host = "127.0.0.1", port = ${brokerPort}, reconnect_max_secs = 1 }
status_interval_secs = 1
puback_timeout_ms = 2000
max_backoff_secs = 1
`;

const hubConfig = brokerPort => `
offline_after_secs = 3

[hub]
id = "browser-region"
name = "Browser test region"

[broker]
host = "127.0.0.1"
port = ${brokerPort}
reconnect_max_secs = 1

[http]
listen = "127.0.0.1:0"

[[sites]]
id = "chem"
name = "Chemical works"
sector = "hazardous_chemicals"
major_hazard_grade = 2
latitude = 30.1
longitude = 114.1

[[sites]]
id = "foundry"
name = "Foundry <b>&</b>"
sector = "molten_metal"
latitude = 30.4
longitude = 114.5
`;

const skip = !process.env.SENTINEL_TEST_PYTHON || !process.env.SENTINEL_TEST_PYMODBUS_DEVICE;
if (skip && process.env.SENTINEL_REQUIRE_SERVICES === '1') {
  throw new Error('SENTINEL_TEST_PYTHON is not set but SENTINEL_REQUIRE_SERVICES=1: run through tests/run.sh');
}
// Where the console's test runs, this one runs too: a missing broker is a failure, not a skip.
if (!skip && !mosquittoBin()) {
  throw new Error('no mosquitto binary (SENTINEL_TEST_MOSQUITTO_BIN): run through tests/run.sh');
}

describe('regional risk map', { skip: skip && 'no pymodbus (run through tests/run.sh)', timeout: 90000 }, () => {
  let broker, device, chem, foundry, hub, browser, page;
  const row = id => page.locator(`#sites tr[data-site="${id}"]`);
  const dot = id => page.locator(`#map g.site[data-site="${id}"]`);
  const api = async p => (await fetch(hub.url(p))).json();

  before(async () => {
    broker = await startMosquitto();
    device = await startDevice();
    await writeRegister(device.port, 10, 5);
    await writeRegister(device.port, 11, 5);
    [chem, foundry] = await Promise.all([
      startSentinel(gateway('chem', 'yellow', device.port, 10, broker.port)),
      startSentinel(gateway('foundry', 'blue', device.port, 11, broker.port)),
    ]);
    hub = await startHub(hubConfig(broker.port));
    browser = await launchBrowser();
    page = await browser.context.newPage();
    page.on('pageerror', e => console.error('page error:', e.message));
  });

  after(async () => {
    await browser?.close();
    if (process.exitCode) {
      for (const [name, s] of [['hub', hub], ['chem', chem], ['foundry', foundry], ['mosquitto', broker]]) {
        if (s) console.error(`--- ${name}:\n${s.log().split('\n').slice(-80).join('\n')}`);
      }
    }
    chem?.signal('SIGCONT');
    await Promise.all([chem?.stop(), foundry?.stop()]);
    await hub?.stop();
    await broker?.stop();
    device?.stop();
  });

  test('the map shows every site in its colour', async () => {
    await page.goto(hub.url('/'));
    await row('chem').and(page.locator('[data-colour="yellow"]')).waitFor({ timeout: 15000 });
    await row('foundry').and(page.locator('[data-colour="blue"]')).waitFor({ timeout: 15000 });
    assert.equal(await dot('chem').getAttribute('data-colour'), 'yellow');
    assert.equal(await dot('foundry').getAttribute('data-colour'), 'blue');
    // Names are text, never markup.
    assert.equal(await row('foundry').locator('td').first().textContent(), 'Foundry <b>&</b>');
    assert.equal(await page.locator('#sites b').count(), 0);
    assert.match(await page.locator('#title').textContent(), /Browser test region/);
    await page.screenshot({ path: screenshotPath('hub-map-normal'), fullPage: true });
  });

  test('an alarm at a gateway turns its dot and row within a few seconds', async () => {
    const started = Date.now();
    await writeRegister(device.port, 11, 60); // HH, critical: red
    await row('foundry').and(page.locator('[data-colour="red"]')).waitFor({ timeout: 5000 });
    await dot('foundry').and(page.locator('[data-colour="red"]')).waitFor({ timeout: 1000 });
    const elapsed = Date.now() - started;
    assert.ok(elapsed < 5000, `took ${elapsed} ms`);
    assert.equal(await dot('chem').getAttribute('data-colour'), 'yellow');
    await page.screenshot({ path: screenshotPath('hub-map-red'), fullPage: true });
  });

  test('the sector and grade filters hide and show sites', async () => {
    const shown = async () => (await page.locator('#sites tr').evaluateAll(rows => rows.map(r => r.dataset.site))).sort();
    const dots = async () => (await page.locator('#map g.site').evaluateAll(gs => gs.map(g => g.dataset.site))).sort();
    await page.locator('#sector').selectOption('molten_metal');
    assert.deepEqual(await shown(), ['foundry']);
    assert.deepEqual(await dots(), ['foundry']);
    await page.locator('#sector').selectOption('');
    await page.locator('#grade').selectOption('2');
    assert.deepEqual(await shown(), ['chem']);
    assert.deepEqual(await dots(), ['chem']);
    // The next refreshes keep the filter.
    await page.waitForTimeout(1500);
    assert.deepEqual(await shown(), ['chem']);
    await page.locator('#grade').selectOption('none');
    assert.deepEqual(await shown(), ['foundry']);
    await page.locator('#sector').selectOption('hazardous_chemicals');
    assert.deepEqual(await shown(), []);
    await page.locator('#grade').selectOption('');
    assert.deepEqual(await shown(), ['chem']);
    await page.screenshot({ path: screenshotPath('hub-map-filtered'), fullPage: true });
    await page.locator('#sector').selectOption('');
    assert.deepEqual(await shown(), ['chem', 'foundry']);
  });

  test('the site page lists the active alarm and follows its acknowledgement', async () => {
    await dot('foundry').locator('circle').last().click();
    const panel = page.locator('#site-panel[data-site="foundry"]');
    await panel.waitFor({ state: 'visible', timeout: 5000 });
    assert.equal(await panel.getAttribute('data-colour'), 'red');
    assert.equal(await page.locator('#site-name').textContent(), 'Foundry <b>&</b>');
    await page.locator('#site-units .unit[data-unit="dike"][data-colour="red"]').waitFor({ timeout: 3000 });
    // GT-1 at 60 %LEL raised H (high) and HH (critical): the critical one comes first.
    const first = page.locator('#site-alarms tr[data-point="GT-1"]').first();
    await first.and(page.locator('[data-acked="false"]')).waitFor({ timeout: 5000 });
    assert.equal(await page.locator('#site-alarms tr').count(), 2);
    const id = await first.getAttribute('data-alarm-id');
    const alarm = page.locator(`#site-alarms tr[data-alarm-id="${id}"]`);
    assert.match(await alarm.textContent(), /critical/);
    assert.match(await alarm.textContent(), /waiting \d+ s/);
    assert.equal(await page.locator('#site-points').textContent(), '1 / 1');
    // Time-weighted since the hub started: near 100 % (a gateway's very first status may
    // count no point online yet).
    assert.ok(parseFloat(await page.locator('#site-quality').textContent()) > 50);
    await page.screenshot({ path: screenshotPath('hub-site-unacked'), fullPage: true });

    // An operator acknowledges at the site's own console: the regional page follows.
    const r = await fetch(foundry.url(`/api/v1/alarms/${id}/ack`), {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}',
    });
    assert.ok(r.ok, `ack answered ${r.status}: ${await r.text()}`);
    await alarm.and(page.locator('[data-acked="true"]')).waitFor({ timeout: 5000 });
    assert.match(await alarm.textContent(), /acknowledged/);
    assert.match(await alarm.textContent(), /确认用时 \d+/);
    await page.screenshot({ path: screenshotPath('hub-site-acked'), fullPage: true });

    // A table row opens its site too.
    await row('chem').click();
    await page.locator('#site-panel[data-site="chem"]').waitFor({ timeout: 3000 });
    assert.equal(await page.locator('#site-alarms tr').count(), 0);
  });

  test('a stopped gateway turns grey after the timeout, with "offline since"', async () => {
    const stopped = Date.now();
    chem.signal('SIGSTOP');
    await row('chem').and(page.locator('[data-colour="grey"]')).waitFor({ timeout: 10000 });
    const elapsed = Date.now() - stopped;
    // Silence, not a Last Will: the connection stayed open, so it is the hub's 3 s timeout.
    assert.ok(elapsed >= 2000, `grey after only ${elapsed} ms`);
    assert.equal(await dot('chem').getAttribute('data-colour'), 'grey');
    const panel = page.locator('#site-panel[data-site="chem"]');
    await panel.and(page.locator('[data-colour="grey"]')).waitFor({ timeout: 3000 });
    await page.locator('#site-offline-since').waitFor({ timeout: 3000 });
    assert.match(await page.locator('#site-offline').textContent(), /offline since/);
    assert.equal(await page.locator('#site-units .unit[data-colour="grey"]').count(), 1);
    assert.match(await page.locator('#site-points').textContent(), /^0 \/ 1 /);
    // Online most of the time so far: the 24 h quality counts the seconds offline, no more.
    const quality = await waitFor('the offline seconds in the 24 h quality', 5000, async () => {
      const q = parseFloat(await page.locator('#site-quality').textContent());
      return q < 100 && q;
    });
    assert.ok(quality > 50, `quality ${quality}`);
    const offline = await api('/api/v1/offline');
    assert.ok(offline.some(o => o.site === 'chem'), JSON.stringify(offline));
    // The other site is still live.
    assert.equal(await dot('foundry').getAttribute('data-colour'), 'red');
    await page.screenshot({ path: screenshotPath('hub-site-offline'), fullPage: true });
  });
});
