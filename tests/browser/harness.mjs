// Harness of the browser tests: the real sentinel binary, a pymodbus device and Debian's
// Chromium, all on loopback. The JavaScript twin of tests/src/lib.rs.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '../..');
export const ARTIFACTS = path.join(ROOT, 'tests', 'artifacts');
export const CHROMIUM = process.env.SENTINEL_TEST_CHROMIUM || '/usr/bin/chromium';

export const sleep = ms => new Promise(r => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

export async function waitFor(what, timeoutMs, f) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** A pymodbus device (tests/devices/pymodbus_device.py); null when the Python environment is missing. */
export async function startDevice() {
  const python = process.env.SENTINEL_TEST_PYTHON;
  const script = process.env.SENTINEL_TEST_PYMODBUS_DEVICE;
  if (!python || !script) return null;
  const port = await freePort();
  const child = spawn(python, [script, '--port', String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('pymodbus device did not become ready')), 20000);
    lines.on('line', line => { if (line.startsWith('READY')) { clearTimeout(timer); resolve(); } });
    child.once('exit', code => reject(new Error(`pymodbus device exited with ${code}`)));
  });
  return { port, stop: () => child.kill('SIGKILL') };
}

/** Modbus TCP "write single register" (function 6) to unit 1: the device mirrors it into its input registers. */
export function writeRegister(port, address, value) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const frame = Buffer.alloc(12);
    frame.writeUInt16BE(1, 0); // transaction
    frame.writeUInt16BE(0, 2); // protocol
    frame.writeUInt16BE(6, 4); // length of what follows
    frame.writeUInt8(1, 6); // unit
    frame.writeUInt8(6, 7); // function
    frame.writeUInt16BE(address, 8);
    frame.writeUInt16BE(value, 10);
    sock.setTimeout(3000, () => { sock.destroy(); reject(new Error('modbus write timed out')); });
    sock.once('error', reject);
    sock.once('connect', () => sock.write(frame));
    sock.once('data', d => { sock.end(); d[7] === 6 ? resolve() : reject(new Error(`modbus exception ${d[8]}`)); });
  });
}

/** The real binary with `config` ({data_dir} replaced); extra environment in `env`. */
export async function startSentinel(config, env = {}) {
  const bin = path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target'), 'debug', 'sentinel');
  if (!existsSync(bin)) throw new Error(`${bin} is missing: cargo build -p sentinel-gateway first`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sentinel-browser-'));
  const configPath = path.join(dir, 'sentinel.toml');
  writeFileSync(configPath, config.replaceAll('{data_dir}', path.join(dir, 'data')));
  const ready = path.join(dir, 'ready');
  const log = path.join(dir, 'sentinel.log');
  const { openSync } = await import('node:fs');
  const child = spawn(bin, ['run', '-c', configPath, '--ready-file', ready], {
    env: { ...process.env, SENTINEL__HTTP__LISTEN: '127.0.0.1:0', SENTINEL_LOG: 'info', ...env },
    stdio: ['ignore', 'ignore', openSync(log, 'a')],
  });
  const addr = await waitFor('sentinel to listen', 30000, async () => {
    try { return readFileSync(ready, 'utf8').trim() || null; } catch { return null; }
  });
  return {
    url: p => `http://${addr}${p}`,
    log: () => { try { return readFileSync(log, 'utf8'); } catch { return ''; } },
    /** Send a signal (SIGSTOP freezes the process with its connections open; SIGKILL). */
    signal: sig => child.kill(sig),
    async stop() {
      child.kill('SIGTERM');
      await Promise.race([new Promise(r => child.once('exit', r)), sleep(10000)]);
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Debian's Chromium, headless, with a fresh profile; nothing reaches out to the network. */
export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  const profile = mkdtempSync(path.join(os.tmpdir(), 'sentinel-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 800 },
    locale: 'en-US',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return {
    context,
    async close() { await context.close(); rmSync(profile, { recursive: true, force: true }); },
  };
}

export function screenshotPath(name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  return path.join(ARTIFACTS, `${name}.png`);
}

/** The Mosquitto binary: SENTINEL_TEST_MOSQUITTO_BIN, else Debian's; null when there is none. */
export function mosquittoBin() {
  const candidates = [process.env.SENTINEL_TEST_MOSQUITTO_BIN, '/usr/sbin/mosquitto', '/usr/bin/mosquitto'];
  return candidates.find(p => p && existsSync(p)) ?? null;
}

/** A private Mosquitto on a free loopback port, anonymous, without persistence. */
export async function startMosquitto() {
  const bin = mosquittoBin();
  if (!bin) throw new Error('no mosquitto binary: set SENTINEL_TEST_MOSQUITTO_BIN (tests/run.sh does)');
  const { openSync } = await import('node:fs');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sentinel-mosquitto-'));
  const port = await freePort();
  const user = os.userInfo().username;
  writeFileSync(path.join(dir, 'mosquitto.conf'),
    `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stdout\nuser ${user}\n`);
  const log = path.join(dir, 'mosquitto.log');
  const child = spawn(bin, ['-c', path.join(dir, 'mosquitto.conf')], { stdio: ['ignore', openSync(log, 'a'), openSync(log, 'a')] });
  await waitFor('mosquitto to listen', 10000, () => new Promise(resolve => {
    const sock = net.connect(port, '127.0.0.1');
    sock.once('connect', () => { sock.destroy(); resolve(true); });
    sock.once('error', () => resolve(false));
  }));
  return {
    port,
    log: () => { try { return readFileSync(log, 'utf8'); } catch { return ''; } },
    async stop() {
      child.kill('SIGTERM');
      await Promise.race([new Promise(r => child.once('exit', r)), sleep(5000)]);
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The real binary as a regional hub (`sentinel hub`) with `config`; its HTTP address from the ready file. */
export async function startHub(config, env = {}) {
  const bin = path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target'), 'debug', 'sentinel');
  if (!existsSync(bin)) throw new Error(`${bin} is missing: cargo build -p sentinel-gateway first`);
  const { openSync } = await import('node:fs');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sentinel-hub-'));
  const configPath = path.join(dir, 'hub.toml');
  writeFileSync(configPath, config);
  const ready = path.join(dir, 'ready');
  const log = path.join(dir, 'hub.log');
  const child = spawn(bin, ['hub', '-c', configPath, '--ready-file', ready], {
    env: { ...process.env, SENTINEL_LOG: 'info', ...env },
    stdio: ['ignore', 'ignore', openSync(log, 'a')],
  });
  const addr = await waitFor('the hub to listen', 30000, async () => {
    try { return readFileSync(ready, 'utf8').trim() || null; } catch { return null; }
  });
  return {
    url: p => `http://${addr}${p}`,
    log: () => { try { return readFileSync(log, 'utf8'); } catch { return ''; } },
    async stop() {
      child.kill('SIGTERM');
      await Promise.race([new Promise(r => child.once('exit', r)), sleep(10000)]);
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
