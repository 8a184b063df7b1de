// Browser tests of loom_serve's web UI (apps/loom_serve/web), driven by playwright-core and the
// system chromium against a real loom_serve started by ./harness.mjs.
//
//   node --test tests/serve/ui.test.mjs
//
// Screenshots (ui-chat.png, ui-phone.png, and ui-fail-*.png on failure) are written to
// $LOOM_TEST_ARTIFACTS (default: the OS temp folder). The model has random weights, so the tests
// check that text arrives, never what it says.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { launchChromium, skipReason } from '../js/chromium.mjs';
import { startServer } from './harness.mjs';

const ARTIFACTS = process.env.LOOM_TEST_ARTIFACTS || os.tmpdir();
const TEST_TIMEOUT = 120_000;   // per test
const WAIT = 90_000;            // for one generation to finish
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 375, height: 667 };

let server = null;
let browser = null;
let props = null;

before(async () => {
  if (skipReason) return;
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  server = await startServer();
  browser = await launchChromium();
  const res = await fetch(server.url + '/props');
  assert.equal(res.status, 200, 'GET /props');
  props = await res.json();
}, { timeout: TEST_TIMEOUT });

after(async () => {
  try { if (browser) await browser.close(); } finally { if (server) await server.stop(); }
}, { timeout: 30_000 });

// Runs fn(page) in a fresh browser context (own localStorage); fails on uncaught page errors and
// leaves a screenshot behind when the test fails.
async function withPage(t, name, viewport, fn) {
  if (skipReason) { t.skip(skipReason); return; }
  assert.ok(browser && server, 'browser and server were started by the before hook');
  const context = await browser.newContext({
    viewport,
    ...(viewport.width < 500 ? { isMobile: true, hasTouch: true, deviceScaleFactor: 2 } : {}),
  });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') t.diagnostic(`console: ${m.text()}`); });
  try {
    await fn(page);
    assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
  } catch (e) {
    await page.screenshot({ path: path.join(ARTIFACTS, `ui-fail-${name}.png`), fullPage: true }).catch(() => {});
    throw e;
  } finally {
    await context.close();
  }
}

async function openUi(page, { ready = 'ok' } = {}) {
  const res = await page.goto(server.url + '/');
  assert.ok(res && res.ok(), `GET / answered ${res && res.status()}`);
  assert.match(page.url(), /\/web\/$/, 'the server redirects / to /web/');
  await page.waitForSelector(ready ? `body[data-ready="${ready}"]` : 'body[data-ready]:not([data-ready=""])', { timeout: 30_000 });
}

// Sets a sampling control, opening the settings panel first if it is collapsed.
async function setField(page, id, value) {
  await page.evaluate(() => { document.getElementById('settings').open = true; });
  await page.fill('#' + id, String(value));
}

async function errorText(page) {
  return page.evaluate(() => {
    const e = document.getElementById('error');
    return e.hidden ? null : e.textContent;
  });
}

// Waits until the request in flight is over and the server's timings are shown.
async function waitForFinishedGeneration(page) {
  await page.waitForFunction(() => {
    const err = document.getElementById('error');
    if (!err.hidden) return true;
    return !document.getElementById('send').disabled && document.getElementById('stats').textContent.includes('tok/s');
  }, null, { timeout: WAIT });
  assert.equal(await errorText(page), null, 'no error is shown');
}

const assistantText = (page) => page.evaluate(() => {
  const all = document.querySelectorAll('#output .msg.assistant .content');
  return all.length ? all[all.length - 1].textContent : '';
});

async function noHorizontalScroll(page, width) {
  const w = await page.evaluate(() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth));
  assert.ok(w <= width, `page is ${w}px wide in a ${width}px viewport (horizontal scroll)`);
}

test('chat: a prompt streams an assistant reply and the server timings', { timeout: TEST_TIMEOUT }, async (t) => {
  await withPage(t, 'chat', DESKTOP, async (page) => {
    await openUi(page);
    assert.equal(await page.textContent('#model-name'), props.model, 'the header shows the model id');
    assert.equal(await page.getAttribute('#tab-chat', 'aria-selected'), 'true', 'chat is the default view');
    assert.equal(await page.isVisible('#error'), false);
    await setField(page, 'seed', 1234);
    await setField(page, 'max-tokens', 64);
    await page.fill('#prompt', 'Hello! Tell me about looms.');
    await page.click('#send');
    await waitForFinishedGeneration(page);

    assert.equal(await page.locator('#output .msg.user').count(), 1);
    assert.equal(await page.textContent('#output .msg.user .content'), 'Hello! Tell me about looms.');
    const reply = await assistantText(page);
    assert.ok(reply.length > 0, 'the assistant reply has text');
    const stats = await page.textContent('#stats');
    assert.match(stats, /tok\/s/);
    assert.match(stats, /finish: (stop|length)/);
    assert.equal(await page.inputValue('#prompt'), '', 'the input is cleared after sending');
    assert.equal(await page.isEnabled('#send'), true);
    assert.equal(await page.isEnabled('#stop'), false);
    await page.screenshot({ path: path.join(ARTIFACTS, 'ui-chat.png') });

    // A second turn keeps the history and sends it along.
    await page.fill('#prompt', 'And then?');
    await page.keyboard.press('Enter');   // Enter sends (focus is still in #prompt)
    await waitForFinishedGeneration(page);
    assert.equal(await page.locator('#output .msg.user').count(), 2);
    assert.equal(await page.locator('#output .msg.assistant').count(), 2);

    await page.click('#new-chat');
    assert.equal(await page.locator('#output .msg').count(), 0, 'New chat clears the conversation');
  });
});

test('completion: generated text is appended after the prompt', { timeout: TEST_TIMEOUT }, async (t) => {
  await withPage(t, 'completion', DESKTOP, async (page) => {
    await openUi(page);
    await page.click('#tab-completion');
    assert.equal(await page.getAttribute('#tab-completion', 'aria-selected'), 'true');
    assert.equal(await page.getAttribute('#tab-chat', 'aria-selected'), 'false');
    const prompt = 'Once upon a time, in a small village,';
    await setField(page, 'max-tokens', 32);
    await page.fill('#prompt', prompt);
    await page.click('#send');
    await waitForFinishedGeneration(page);

    assert.equal(await page.textContent('#output .completion .prompt-text'), prompt);
    const gen = await page.textContent('#output .completion .gen');
    assert.ok(gen.length > 0, 'generated text follows the prompt');
    const full = await page.evaluate(() => document.querySelector('#output .completion').textContent);
    assert.ok(full.startsWith(prompt + gen), 'the output reads prompt + generation');
    const distinct = await page.evaluate(() => {
      const a = getComputedStyle(document.querySelector('#output .prompt-text'));
      const b = getComputedStyle(document.querySelector('#output .gen'));
      return a.color !== b.color || a.backgroundColor !== b.backgroundColor;
    });
    assert.ok(distinct, 'the generated text is styled differently from the prompt');
    assert.equal(await page.inputValue('#prompt'), prompt, 'the prompt stays editable for another run');

    // Back to chat: the conversation view is separate.
    await page.click('#tab-chat');
    assert.equal(await page.locator('#output .completion').count(), 0);
  });
});

test('stop: aborts the request in flight and keeps the partial text', { timeout: TEST_TIMEOUT }, async (t) => {
  await withPage(t, 'stop', DESKTOP, async (page) => {
    await openUi(page);
    // As many tokens as the context allows (8192 for the test model): the tiny model decodes
    // hundreds of tokens a second, and a browser starved by a parallel test can take seconds to
    // show the first one, so a budget of a few thousand could finish before the click.
    const nCtx = Number.isFinite(props.n_ctx) ? props.n_ctx : 2048;
    const big = Math.max(64, nCtx - 128);
    await setField(page, 'max-tokens', big);
    // A fixed seed: this random model ends a reply with its end-of-turn token every few
    // thousand tokens (seed 2 after 3876), once after 19 in a random-seed run; with seed 1
    // it samples all 8064 tokens of this prompt without one.
    await setField(page, 'seed', 1);
    await page.fill('#prompt', 'Write a very long story.');
    await page.click('#send');
    assert.equal(await page.isEnabled('#stop'), true, 'Stop is enabled while generating');
    assert.equal(await page.isEnabled('#send'), false, 'Send is disabled while generating');
    // A few thousand tokens in (some seconds of streaming): a page that redrew the reply at
    // every token fell further behind the stream the longer the reply grew, and showed this
    // much text only once the reply had ended.
    await page.waitForFunction(() => {
      const c = document.querySelectorAll('#output .msg.assistant .content');
      return c.length && c[c.length - 1].textContent.length >= 10000;
    }, null, { timeout: WAIT });
    const before = await assistantText(page);
    await page.click('#stop');
    await page.waitForFunction(() => !document.getElementById('send').disabled, null, { timeout: 10_000 });

    assert.equal(await page.isEnabled('#stop'), false, 'Stop is disabled again');
    const after = await assistantText(page);
    assert.ok(after.length >= before.length && after.startsWith(before), 'the partial reply is kept');
    const stats = await page.textContent('#stats');
    assert.match(stats, /stopped/, `stats say the generation was stopped (if they show a finish reason instead, ` +
      `the server produced all ${big} tokens before the click): ${stats}`);
    assert.equal(await errorText(page), null, 'stopping is not an error');

    // The server is still usable after a client abort.
    await setField(page, 'max-tokens', 16);
    await page.fill('#prompt', 'Short one now.');
    await page.click('#send');
    await waitForFinishedGeneration(page);
    assert.equal(await page.locator('#output .msg.assistant').count(), 2);
  });
});

test('error: a 400 from the server shows its error.message', { timeout: TEST_TIMEOUT }, async (t) => {
  await withPage(t, 'error', DESKTOP, async (page) => {
    // What the server says about this request, asked directly.
    const direct = await fetch(server.url + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: props.model, messages: [{ role: 'user', content: 'hi' }], max_tokens: -5, stream: true }),
    });
    assert.equal(direct.status, 400, 'max_tokens=-5 is rejected with 400');
    const expected = (await direct.json()).error.message;
    assert.ok(expected, 'the 400 carries error.message');

    await openUi(page);
    await setField(page, 'max-tokens', -5);
    await page.fill('#prompt', 'This request is invalid.');
    await page.click('#send');
    await page.waitForSelector('#error:not([hidden])', { timeout: WAIT });
    const shown = await errorText(page);
    assert.ok(shown.includes(expected), `#error "${shown}" contains the server message "${expected}"`);
    assert.ok(shown.includes('400'), '#error names the HTTP status');
    await page.waitForFunction(() => !document.getElementById('send').disabled, null, { timeout: 10_000 });
    assert.equal(await page.locator('#output .msg').count(), 0, 'the failed turn is taken out of the conversation');
    assert.equal(await page.inputValue('#prompt'), 'This request is invalid.', 'the text is given back for a retry');

    // Fixing the value and sending again clears the error.
    await setField(page, 'max-tokens', 8);
    await page.click('#send');
    await waitForFinishedGeneration(page);
    assert.equal(await page.isVisible('#error'), false);
  });
});

test('client only: API key is stored and sent; in-stream error events are shown', { timeout: TEST_TIMEOUT }, async (t) => {
  await withPage(t, 'client', DESKTOP, async (page) => {
    await openUi(page);
    await setField(page, 'api-key', 'sk-loom-test');
    await page.reload();
    await page.waitForSelector('body[data-ready]:not([data-ready=""])', { timeout: 30_000 });
    assert.equal(await page.inputValue('#api-key'), 'sk-loom-test', 'the API key survives a reload (localStorage)');

    // The API is faked here (the real server is not involved), so the key and the stream are ours.
    let seen = null;
    await page.route('**/v1/chat/completions', async (route) => {
      seen = { headers: route.request().headers(), body: route.request().postDataJSON() };
      await route.fulfill({
        status: 200,
        headers: { 'Content-Type': 'text/event-stream' },
        body: 'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\r\n\r\n' +
          ': a comment line\n\n' +
          'data: {"choices":[{"index":0,"delta":{"content":"partial "},"finish_reason":null}]}\n\n' +
          'data: {"choices":[{"index":0,"delta":{"content":"reply"},"finish_reason":null}]}\n\n' +
          'data: {"error":{"message":"injected stream failure","type":"server_error","code":500}}\n\n',
      });
    });
    await setField(page, 'stop-strings', 'END, \\n\\n ,a\\,b');
    await setField(page, 'system', 'Be brief.');
    await page.fill('#prompt', 'hi');
    await page.click('#send');
    await page.waitForSelector('#error:not([hidden])', { timeout: 10_000 });
    assert.equal(seen.headers.authorization, 'Bearer sk-loom-test');
    assert.equal(seen.body.stream, true);
    assert.deepEqual(seen.body.stream_options, { include_usage: true });
    assert.equal(seen.body.model, props.model);
    assert.deepEqual(seen.body.stop, ['END', '\n\n', 'a,b']);
    assert.deepEqual(seen.body.messages, [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }]);
    const serverMax = props.default_generation_settings?.max_tokens;
    assert.equal(seen.body.max_tokens, Number.isInteger(serverMax) && serverMax > 0 ? serverMax : 256);
    assert.equal('seed' in seen.body, false, 'a blank seed is not sent');
    assert.match(await errorText(page), /injected stream failure/);
    assert.equal(await assistantText(page), 'partial reply', 'text received before the error is kept');
  });
});

test('phone viewport: no horizontal scroll, chat works', { timeout: TEST_TIMEOUT }, async (t) => {
  await withPage(t, 'phone', PHONE, async (page) => {
    await openUi(page);
    await noHorizontalScroll(page, PHONE.width);
    assert.equal(await page.evaluate(() => document.getElementById('settings').open), false, 'settings start collapsed');
    await page.click('#settings > summary');
    await noHorizontalScroll(page, PHONE.width);
    await setField(page, 'max-tokens', 48);
    await page.click('#settings > summary');
    assert.equal(await page.evaluate(() => document.getElementById('settings').open), false);
    for (const id of ['#prompt', '#send', '#stop', '#tab-chat', '#tab-completion']) {
      assert.ok(await page.isVisible(id), `${id} is visible`);
    }

    await page.fill('#prompt', 'Hi from a phone');
    await page.click('#send');
    await waitForFinishedGeneration(page);
    assert.ok((await assistantText(page)).length > 0, 'the assistant reply has text');
    await noHorizontalScroll(page, PHONE.width);
    const gap = await page.evaluate(() => { const o = document.getElementById('output'); return o.scrollHeight - o.scrollTop - o.clientHeight; });
    assert.ok(gap <= 2, `the output follows the stream to its end (${gap}px above the bottom)`);
    const box = await page.locator('#send').boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= PHONE.width && box.y + box.height <= PHONE.height,
      'Send is on screen');
    await page.screenshot({ path: path.join(ARTIFACTS, 'ui-phone.png') });
  });
});
