// loom_generate built for browsers (apps/CMakeLists.txt: web/loom_generate.js), run by the
// system chromium in a cross-origin isolated page (its threads need SharedArrayBuffer),
// against the native loom_generate: the same ids and every step's logits, byte for byte.
//
//   LOOM_GENERATE_WEB=build/apps/web/loom_generate.js LOOM_GENERATE_BINARY=build/apps/loom_generate \
//   LOOM_MAKE_MODEL_BINARY=build/apps/loom_make_model node --test tests/wasm/browser.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { launchChromium, skipReason } from '../js/chromium.mjs';

const webProgram = process.env.LOOM_GENERATE_WEB;
const nativeProgram = process.env.LOOM_GENERATE_BINARY;
const makeModel = process.env.LOOM_MAKE_MODEL_BINARY;

let scratch = null;
let modelFolder = null;
let server = null;
let url = null;
let browser = null;

// The page, the program's files, and the model's files under /model/, with the headers that
// make the page cross-origin isolated.
function serve() {
  const programFolder = path.dirname(webProgram);
  const page = '<!doctype html><meta charset="utf-8"><title>loom_generate</title><script src="loom_generate.js"></script>';
  return http.createServer((request, response) => {
    const headers = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };
    const name = decodeURIComponent(new URL(request.url, 'http://x').pathname);
    if (name === '/') {
      response.writeHead(200, { ...headers, 'Content-Type': 'text/html' });
      response.end(page);
      return;
    }
    const file = name.startsWith('/model/') ? path.join(modelFolder, path.basename(name)) : path.join(programFolder, path.basename(name));
    if (!fs.existsSync(file)) {
      response.writeHead(404, headers);
      response.end();
      return;
    }
    const type = file.endsWith('.wasm') ? 'application/wasm' : file.endsWith('.js') ? 'text/javascript' : 'application/octet-stream';
    response.writeHead(200, { ...headers, 'Content-Type': type });
    response.end(fs.readFileSync(file));
  });
}

before(async () => {
  if (skipReason) return;
  for (const [name, file] of [['LOOM_GENERATE_WEB', webProgram], ['LOOM_GENERATE_BINARY', nativeProgram], ['LOOM_MAKE_MODEL_BINARY', makeModel]]) {
    assert.ok(file && fs.existsSync(file), `${name} is not set or missing: ${file}`);
  }
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'loom-browser-'));
  modelFolder = path.join(scratch, 'model');
  const made = spawnSync(makeModel, ['--preset', 'tiny-qwen2', '--dtype', 'bf16', '--std', '0.25', '--out', modelFolder], { encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
  server = serve();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${server.address().port}/`;
  browser = await launchChromium();
}, { timeout: 120_000 });

after(async () => {
  try {
    if (browser) await browser.close();
  } finally {
    if (server) server.close();
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }
});

function runNative(args) {
  const logits = path.join(scratch, 'native.f32');
  const run = spawnSync(nativeProgram, [...args, '--format', 'json', '--dump-logits', logits], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  return { report: JSON.parse(run.stdout), logits: fs.readFileSync(logits) };
}

// Runs the program in a fresh page: the model's files (if any) are fetched into the in-memory
// filesystem under /model first, and the logits file is read back from it.
async function runInBrowser(args, modelFiles) {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  try {
    const response = await page.goto(url);
    assert.ok(response && response.ok(), `GET / answered ${response && response.status()}`);
    const result = await page.evaluate(async ({ args, modelFiles }) => {
      const files = [];
      for (const name of modelFiles) files.push([name, new Uint8Array(await (await fetch(`model/${name}`)).arrayBuffer())]);
      const out = [], err = [];
      let exited;
      const exit = new Promise((resolve) => { exited = resolve; });
      const program = await createLoomGenerate({
        arguments: [...args, '--format', 'json', '--dump-logits', '/logits.f32'],
        print: (text) => out.push(text),
        printErr: (text) => err.push(text),
        preRun: [(module) => {
          if (files.length) module.FS.mkdir('/model');
          for (const [name, bytes] of files) module.FS.writeFile(`/model/${name}`, bytes);
        }],
        onExit: (code) => exited(code),
      });
      const code = await exit;
      const logits = code === 0 ? Array.from(program.FS.readFile('/logits.f32')) : [];
      return { code, out: out.join('\n'), err: err.join('\n'), isolated: self.crossOriginIsolated, logits };
    }, { args, modelFiles });
    assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
    assert.ok(result.isolated, 'the page is cross-origin isolated (threads need SharedArrayBuffer)');
    assert.equal(result.code, 0, result.err);
    return { report: JSON.parse(result.out), logits: Buffer.from(result.logits) };
  } finally {
    await page.close();
  }
}

function assertSameRun(browserRun, nativeRun) {
  for (const field of ['prompt_ids', 'ids', 'finish_reason']) {
    assert.deepEqual(browserRun.report[field], nativeRun.report[field], field);
  }
  assert.ok(nativeRun.logits.length > 0);
  assert.ok(browserRun.logits.equals(nativeRun.logits), 'the logits differ from the native program\'s');
}

test('the built-in model: the browser build gives the native logits on 1 and 3 threads', { timeout: 120_000 }, async (t) => {
  if (skipReason) { t.skip(skipReason); return; }
  const workload = ['--ids', '1,2,3', '--max-tokens', '32'];
  const native = runNative([...workload, '--threads', '2']);
  for (const threads of ['1', '3']) assertSameRun(await runInBrowser([...workload, '--threads', threads], []), native);
});

test('a bf16 checkpoint fetched into the page, sampled: the native tokens and logits', { timeout: 120_000 }, async (t) => {
  if (skipReason) { t.skip(skipReason); return; }
  const sampling = ['--ids', '9,8,7,6,5', '--max-tokens', '24', '--temperature', '0.9', '--top-k', '40', '--top-p', '0.95', '--seed', '5'];
  const native = runNative(['--model', modelFolder, ...sampling, '--threads', '2']);
  assert.ok(native.report.ids.length >= 8, 'enough steps to compare');
  const browserRun = await runInBrowser(['--model', '/model', ...sampling, '--threads', '2'], fs.readdirSync(modelFolder));
  assertSameRun(browserRun, native);
});
