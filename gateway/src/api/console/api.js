// Talking to the gateway: JSON requests with the bearer token, and the live-event stream.
// The token lives in sessionStorage: it is gone when the tab closes.

const TOKEN_KEY = 'sentinel.token';

export function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }
export function setToken(v) { v ? sessionStorage.setItem(TOKEN_KEY, v) : sessionStorage.removeItem(TOKEN_KEY); }

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function headers(extra) {
  const h = { ...extra };
  const tok = token();
  if (tok) h.Authorization = `Bearer ${tok}`;
  return h;
}

export async function request(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { 'content-type': 'application/json' }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(path, init);
  if (!res.ok) {
    let msg = res.statusText;
    try { msg = (await res.json()).error || msg; } catch { /* not JSON */ }
    throw new ApiError(res.status, msg);
  }
  const type = res.headers.get('content-type') || '';
  return type.includes('json') ? res.json() : res.blob();
}

export const get = path => request('GET', path);
export const post = (path, body) => request('POST', path, body ?? {});

/**
 * The live-event stream. EventSource cannot send an Authorization header, so the stream is
 * read with fetch and parsed here. Reconnects after a pause; `onState` hears
 * 'open' | 'connecting' | 'closed'; `onReconnect` runs after every reconnection (the page
 * refetches what it may have missed).
 */
export function subscribe(handlers, onState, onReconnect) {
  let stopped = false;
  let controller = null;
  let first = true;
  async function run() {
    while (!stopped) {
      onState('connecting');
      controller = new AbortController();
      try {
        const res = await fetch('/api/v1/events', { headers: headers({ Accept: 'text/event-stream' }), signal: controller.signal });
        if (!res.ok) throw new ApiError(res.status, res.statusText);
        onState('open');
        if (!first) onReconnect();
        first = false;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            dispatch(buffer.slice(0, end), handlers);
            buffer = buffer.slice(end + 2);
          }
        }
      } catch (e) {
        if (stopped) return;
        if (e.status === 401) { onState('closed'); handlers.unauthorized?.(); return; }
      }
      onState('closed');
      await new Promise(r => setTimeout(r, 2000));
    }
  }
  run();
  return () => { stopped = true; controller?.abort(); };
}

function dispatch(block, handlers) {
  let event = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length) return;
  const handler = handlers[event];
  if (!handler) return;
  try { handler(JSON.parse(data.join('\n'))); } catch (e) { console.error('bad event', event, e); }
}
