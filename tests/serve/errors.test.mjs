// Bad input and hard conditions: each error has its status and body shape; full queues,
// timeouts, departing clients and signals end requests cleanly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startServer, postJson, readSse, parseSse, metrics, binary, modelFolder } from './harness.mjs';

async function withServer(args, body) {
  const server = await startServer(args);
  try {
    await body(server);
  } finally {
    assert.equal(await server.stop(), 0);
  }
}

async function expectError(response, status, pattern, shape = 'openai') {
  assert.equal(response.status, status);
  assert.match(response.headers.get('content-type'), /application\/json/);
  const body = await response.json();
  if (shape === 'openai') {
    assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
    assert.match(body.error.message, pattern);
    return body.error;
  }
  assert.equal(typeof body.error, 'string');
  assert.match(body.error, pattern);
  return body;
}

// Waits until `check()` holds, polling; fails after `ms`.
async function eventually(check, ms, what) {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) assert.fail(`not within ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const chat = (url, body, headers) => postJson(`${url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'Hi' }], ...body }, headers);
const longStream = (url, signal) => fetch(`${url}/v1/completions`, {
  method: 'POST', signal, headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 8000, stream: true, temperature: 0 }),
});

test('malformed JSON, wrong types, wrong values, unknown model and endpoint: 400/404/405 with a message', async () => {
  await withServer(['--ctx-size', '64'], async ({ url }) => {
    const raw = (target, body) => fetch(`${url}${target}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    await expectError(await raw('/v1/chat/completions', '{"messages": [}'), 400, /not valid JSON.*parse error/);
    await expectError(await raw('/v1/chat/completions', ''), 400, /body is empty/);
    await expectError(await raw('/v1/chat/completions', '[1, 2]'), 400, /must be a JSON object, got array/);
    await expectError(await raw('/generate', '{"input_ids": [1,'), 400, /not valid JSON/, 'legacy');
    assert.equal((await expectError(await chat(url, { max_tokens: 'ten' }), 400, /'max_tokens' must be an integer/)).param, 'max_tokens');
    assert.equal((await expectError(await chat(url, { stream: 'yes' }), 400, /'stream' must be true or false/)).param, 'stream');
    await expectError(await chat(url, { top_p: 1.5 }), 400, /'top_p' must be between 0 and 1/);
    await expectError(await chat(url, { stop: [1] }), 400, /'stop' must hold strings/);
    await expectError(await chat(url, { messages: [{ content: 'no role' }] }), 400, /string 'role'/);
    await expectError(await chat(url, { messages: [{ role: 'user', content: [{ type: 'image_url' }] }] }), 400, /only text content parts/);
    await expectError(await chat(url, { model: 'no-such-model' }), 400, /does not exist/);
    await expectError(await postJson(`${url}/generate`, { input_ids: [1, 99999999] }), 400, /not a token id/, 'legacy');
    await expectError(await postJson(`${url}/generate`, { input_ids: [1], prompt: 'both' }), 400, /either 'input_ids'/, 'legacy');
    await expectError(await fetch(`${url}/v1/nothing`), 404, /no such endpoint/);
    await expectError(await fetch(`${url}/v1/chat/completions`), 405, /GET is not allowed/);

    // Longer than the context (64 positions, prompt and reply together).
    const long = 'word '.repeat(200);
    const error = await expectError(await postJson(`${url}/v1/completions`, { prompt: long }), 400, /the context holds 64/);
    assert.equal(error.code, 'context_length_exceeded');
    await expectError(await postJson(`${url}/generate_stream`, { prompt: long }), 400, /context holds 64/, 'legacy');
    // A reply that would run past the context stops there: finish_reason "length".
    const answer = await (await postJson(`${url}/v1/completions`, { prompt: 'word '.repeat(50), max_tokens: 100 })).json();
    assert.equal(answer.choices[0].finish_reason, 'length');
    assert.equal(answer.usage.total_tokens, 64);
  });
});

test('request body over --body-limit: 413; oversized headers: 431', async () => {
  await withServer(['--body-limit', '2000'], async ({ url }) => {
    const big = { messages: [{ role: 'user', content: 'x'.repeat(5000) }] };
    await expectError(await postJson(`${url}/v1/chat/completions`, big), 413, /exceeds the limit of 2000 bytes/);
    const headers = await fetch(`${url}/health`, { headers: { 'X-Padding': 'y'.repeat(70_000) } });
    assert.equal(headers.status, 431);
    assert.equal((await fetch(`${url}/health`)).status, 200, 'still serving');
  });
});

test('full queue: 503 with Retry-After; the queued request still completes', async () => {
  await withServer(['--parallel', '1', '--queue', '1'], async ({ url }) => {
    const stop = new AbortController();
    const running = await longStream(url, stop.signal);
    await running.body.getReader().read();  // its first chunk: it holds the only slot
    const queued = postJson(`${url}/generate`, { input_ids: [1, 2], max_new_tokens: 2 });
    await eventually(async () => (await metrics(url)).loom_queue_depth === 1, 5000, 'the second request queued');
    const refused = await postJson(`${url}/v1/completions`, { prompt: 'Hi', max_tokens: 2 });
    const error = await expectError(refused, 503, /slots are busy/);
    assert.equal(error.type, 'overloaded_error');
    assert.equal(refused.headers.get('retry-after'), '1');
    stop.abort();
    const done = await (await queued).json();
    assert.equal(done.new_ids.length, 2);
  });
});

test('a client that disconnects mid-stream frees its slot at once', async () => {
  await withServer(['--parallel', '1'], async ({ url }) => {
    const before = await metrics(url);
    const stop = new AbortController();
    const response = await longStream(url, stop.signal);
    const reader = response.body.getReader();
    for (let chunk = 0; chunk < 3; ++chunk) await reader.read();
    assert.equal((await metrics(url)).loom_slots_busy, 1);
    stop.abort();
    const start = Date.now();
    await eventually(async () => (await metrics(url)).loom_slots_busy === 0, 2000, 'slot freed');
    const after = await metrics(url);
    assert.equal(after.loom_requests_cancelled_total, before.loom_requests_cancelled_total + 1);
    // Far fewer tokens than the 4000 asked: generation stopped when the client left.
    assert.ok(after.loom_tokens_generated_total - before.loom_tokens_generated_total < 1000);
    console.log(`slot freed ${Date.now() - start} ms after the disconnect`);
    const next = await (await postJson(`${url}/generate`, { input_ids: [5], max_new_tokens: 3 })).json();
    assert.equal(next.new_ids.length, 3);
  });
});

test('--timeout: a request that runs too long ends with an error event', async () => {
  await withServer(['--timeout', '1'], async ({ url }) => {
    const response = await postJson(`${url}/v1/completions`, { prompt: 'Once', max_tokens: 100000, stream: true });
    const events = parseSse(await response.text());
    assert.match(events.at(-2).data.error.message, /timed out after 1000 ms/);
    assert.equal(events.at(-1).data, '[DONE]');
    const legacy = await postJson(`${url}/generate`, { input_ids: [1], max_new_tokens: 8000 });
    await expectError(legacy, 500, /timed out/, 'legacy');
  });
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  test(`${signal} ends open streams with an error event and exits 0`, async () => {
    const server = await startServer();
    const responses = await Promise.all([0, 1, 2].map(() => longStream(server.url)));
    const reading = responses.map((response) => readSse(response));
    await eventually(async () => (await metrics(server.url)).loom_slots_busy === 3, 5000, 'three streams running');
    const exit = server.stop(signal);
    for (const events of await Promise.all(reading)) {
      assert.match(events.at(-2).data.error.message, /shutting down/);
      assert.equal(events.at(-1).data, '[DONE]');
    }
    assert.equal(await exit, 0);
    assert.match(server.output(), new RegExp(`${signal}: finishing open streams[\\s\\S]*stopped`));
  });
}

test('--help lists the flags; bad flags and an unusable port are clear errors', async () => {
  const help = spawnSync(binary, ['--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0);
  for (const flag of ['--model', '--host', '--port', '--threads', '--parallel', '--ctx-size', '--api-key', '--cors-origin', '--mmap', '--cache-type']) {
    assert.match(help.stdout, new RegExp(flag));
  }
  const unknown = spawnSync(binary, ['--bogus', '1'], { encoding: 'utf8' });
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /unknown option '--bogus'/);
  const cacheType = spawnSync(binary, ['--cache-type', 'q8_0'], { encoding: 'utf8' });
  assert.equal(cacheType.status, 2);
  assert.match(cacheType.stderr, /--cache-type must be f32 or f16, got 'q8_0'/);
  const port = spawnSync(binary, ['--port', '99999'], { encoding: 'utf8' });
  assert.equal(port.status, 2);
  assert.match(port.stderr, /--port: expected a whole number/);
  const missing = spawnSync(binary, ['--model', `${modelFolder}-nowhere`], { encoding: 'utf8' });
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /nowhere/);
  const server = await startServer();
  try {
    const taken = spawnSync(binary, ['--model', modelFolder, '--port', new URL(server.url).port], { encoding: 'utf8' });
    assert.equal(taken.status, 1);
    assert.match(taken.stderr, /cannot listen on 127\.0\.0\.1:\d+: Address already in use/);
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('--mmap maps the weights instead of reading them and serves the same greedy text', async () => {
  const complete = async (args) => {
    let text;
    await withServer(args, async (server) => {
      const response = await postJson(`${server.url}/v1/completions`, { prompt: 'Once upon a time', max_tokens: 12, temperature: 0 });
      assert.equal(response.status, 200);
      text = (await response.json()).choices[0].text;
    });
    return text;
  };
  const read = await complete([]);
  assert.ok(read.length > 0);
  assert.equal(await complete(['--mmap']), read);
  // An f16 KV cache serves as well, and the same text on every run.
  const f16 = await complete(['--cache-type', 'f16']);
  assert.ok(f16.length > 0);
  assert.equal(await complete(['--cache-type', 'f16', '--mmap']), f16);
});
