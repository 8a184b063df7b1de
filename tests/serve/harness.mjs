// Starts loom_serve for a test: a free port, the test model (tests/serve/make_test_model.cmake),
// and helpers to read Server-Sent Events. ctest sets LOOM_SERVE_BINARY and LOOM_SERVE_MODEL.
import { spawn } from 'node:child_process';
import fs from 'node:fs';

export const binary = process.env.LOOM_SERVE_BINARY;
export const modelFolder = process.env.LOOM_SERVE_MODEL;

// Resolves once the server prints its URL. `stop(signal)` sends the signal and resolves with
// the exit code (a server that does not exit within 20 s is killed and the promise rejects).
export async function startServer(extraArgs = [], { model = modelFolder } = {}) {
  if (!binary || !fs.existsSync(binary)) throw new Error(`LOOM_SERVE_BINARY is not set or missing: ${binary}`);
  const args = [...(model ? ['--model', model] : []), '--port', '0', '--threads', '1', ...extraArgs];
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '', stderr = '';
  child.stdout.on('data', (data) => { stdout += data; });
  child.stderr.on('data', (data) => { stderr += data; });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`loom_serve did not start in 30 s:\n${stdout}${stderr}`)), 30_000);
    timer.unref();
    const check = () => {
      const match = stdout.match(/listening on (http:\/\/[^\s]+)/);
      if (match) { clearTimeout(timer); resolve(match[1]); }
    };
    child.stdout.on('data', check);
    exited.then(({ code }) => { clearTimeout(timer); reject(new Error(`loom_serve exited (${code}) before listening:\n${stdout}${stderr}`)); });
  });
  let stopped = null;
  return {
    url,
    pid: child.pid,
    output: () => stdout + stderr,
    stop(signal = 'SIGTERM') {
      if (stopped) return stopped;
      child.kill(signal);
      let timer;
      stopped = Promise.race([
        exited,
        new Promise((_, reject) => {
          timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`loom_serve ignored ${signal} for 20 s`)); }, 20_000);
        }),
      ]).then(({ code, signal: killedBy }) => (code === null ? `signal ${killedBy}` : code))
        .finally(() => clearTimeout(timer));
      return stopped;
    },
  };
}

// Parses a text/event-stream body into [{event, data}] (data JSON-parsed unless it is [DONE]).
export function parseSse(text) {
  const events = [];
  for (const block of text.split('\n\n')) {
    if (!block.trim()) continue;
    let event = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('event: ')) event = line.slice(7);
      else if (line.startsWith('data: ')) data.push(line.slice(6));
    }
    const joined = data.join('\n');
    events.push({ event, data: joined === '[DONE]' ? joined : JSON.parse(joined) });
  }
  return events;
}

// Reads an SSE response event by event; `onEvent` may return false to stop reading.
export async function readSse(response, onEvent = () => true) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const events = [];
  let buffer = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const [event] = parseSse(buffer.slice(0, end + 2));
      buffer = buffer.slice(end + 2);
      if (!event) continue;
      events.push(event);
      if (onEvent(event) === false) { await reader.cancel(); return events; }
    }
  }
  return events;
}

export async function postJson(url, body, headers = {}, signal = undefined) {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), signal });
}

// Prometheus text -> { 'name{labels}': value }.
export async function metrics(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const values = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    values[line.slice(0, space)] = Number(line.slice(space + 1));
  }
  return values;
}

// Resident memory of a process in bytes (Linux).
export function residentBytes(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(status.match(/VmRSS:\s+(\d+) kB/)[1]) * 1024;
}
