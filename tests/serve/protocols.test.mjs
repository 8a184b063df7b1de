// The old Loom wire protocols, event by event and key by key (see docs/serve.md), and the
// operational endpoints beside them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createRequire } from 'node:module';
import { startServer, parseSse, postJson, metrics, modelFolder } from './harness.mjs';

const require = createRequire(new URL('../js/package.json', import.meta.url));
const tokenizers = await import(require.resolve('@huggingface/tokenizers'));
const Tokenizer = tokenizers.Tokenizer ?? tokenizers.default.Tokenizer;

let server;
before(async () => { server = await startServer(); });
after(async () => assert.equal(await server.stop(), 0));

const sortedKeys = (object) => Object.keys(object).sort();

// The status line of a GET sent byte for byte (fetch would normalise '..' and '.' away).
function rawStatus(url, target) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => socket.write(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
    let reply = '';
    socket.on('data', (data) => { reply += data; });
    socket.on('end', () => resolve(Number(reply.split(' ')[1])));
    socket.on('error', reject);
  });
}

test('backend POST /generate, ids in, SSE: {token, done:false} per token, then {done:true}', async () => {
  const response = await postJson(`${server.url}/generate`, { input_ids: [0, 504, 3458], max_new_tokens: 6, temperature: 0, stream: true });
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type'), /^text\/event-stream/);
  assert.equal(response.headers.get('access-control-allow-origin'), '*');
  const events = parseSse(await response.text());
  assert.equal(events.length, 7);
  for (const { event, data } of events.slice(0, 6)) {
    assert.equal(event, 'message');
    assert.deepEqual(sortedKeys(data), ['done', 'token']);
    assert.equal(data.done, false);
    assert.ok(Number.isInteger(data.token));
  }
  const last = events[6].data;
  assert.equal(last.done, true);
  assert.equal(last.finish_reason, 'length');
  assert.ok(last.timings.prompt_per_second > 0 && last.timings.time_to_first_token_ms > 0);

  // Not streamed: output_ids = prompt + new ids (Hugging Face generate()'s convention), new_ids = the new ones.
  const whole = await (await postJson(`${server.url}/generate`, { input_ids: [0, 504, 3458], max_new_tokens: 6, temperature: 0 })).json();
  const streamedIds = events.slice(0, 6).map(({ data }) => data.token);
  assert.deepEqual(whole.new_ids, streamedIds);
  assert.deepEqual(whole.output_ids, [0, 504, 3458, ...streamedIds]);
});

test('token id 0 is sent like any other id', async () => {
  // The old server lost id 0 in its JSON. Feed 0 back as the prompt's answer: the detokenize
  // and generate paths must both carry it.
  const answer = await (await postJson(`${server.url}/detokenize`, { tokens: [0] })).json();
  assert.equal(typeof answer.content, 'string');
  const whole = await (await postJson(`${server.url}/generate`, { input_ids: [0], max_new_tokens: 1 })).json();
  assert.equal(whole.output_ids[0], 0);
});

test('backend GET /health reports the model facts', async () => {
  const health = await (await fetch(`${server.url}/health`)).json();
  assert.equal(health.status, 'ok');
  assert.equal(health.hidden_size, 576);
  assert.equal(health.vocab_size, 49152);
  assert.equal(health.num_layers, 2);
});

test('web front end POST /generate_stream: {token: text, token_id} per token, then {done: true}', async () => {
  const response = await postJson(`${server.url}/generate_stream`, { prompt: 'Once upon a time', max_tokens: 5 });
  const events = parseSse(await response.text());
  const tokens = events.filter(({ data }) => !data.done);
  assert.equal(tokens.length, 5);
  for (const { data } of tokens) {
    assert.deepEqual(sortedKeys(data), ['token', 'token_id']);
    assert.equal(typeof data.token, 'string');
  }
  const last = events.at(-1).data;
  assert.equal(last.done, true);
  assert.equal(last.num_tokens, 5);
  assert.ok(last.tokens_per_second > 0 && last.elapsed_seconds > 0);

  // POST /generate with a prompt: the same text in one answer.
  const whole = await (await postJson(`${server.url}/generate`, { prompt: 'Once upon a time', max_tokens: 5 })).json();
  assert.deepEqual(sortedKeys(whole).filter((key) => key !== 'finish_reason' && key !== 'timings'), ['generated_text', 'num_tokens']);
  assert.equal(whole.num_tokens, 5);
  assert.equal(whole.generated_text, tokens.map(({ data }) => data.token).join(''));
});

test('web front end errors are {"error": "..."}', async () => {
  const response = await postJson(`${server.url}/generate_stream`, { prompt: 42 });
  assert.equal(response.status, 400);
  const body = await response.json();
  assert.equal(typeof body.error, 'string');
  assert.match(body.error, /'prompt' must be a string/);
});

test('verification demo: /api/status and /api/generate with init/token/done events', async () => {
  const status = await (await fetch(`${server.url}/api/status`)).json();
  assert.deepEqual({ ready: status.ready, hiddenSize: status.hiddenSize, vocabSize: status.vocabSize, layers: status.layers },
                   { ready: true, hiddenSize: 576, vocabSize: 49152, layers: 2 });
  const response = await fetch(`${server.url}/api/generate?prompt=${encodeURIComponent('Once upon a time')}&max_tokens=4`);
  const events = parseSse(await response.text());
  assert.deepEqual(events.map(({ event }) => event), ['init', 'token', 'token', 'token', 'token', 'done']);
  const init = events[0].data;
  assert.equal(init.prompt, 'Once upon a time');
  assert.equal(init.maxTokens, 4);
  assert.ok(Array.isArray(init.inputTokens) && init.inputTokens.length > 0);
  events.slice(1, 5).forEach(({ data }, step) => {
    assert.deepEqual(sortedKeys(data), ['done', 'step', 'tokenId', 'tokenText']);
    assert.equal(data.step, step);
  });
  const done = events[5].data;
  assert.equal(done.totalTokens, 4);
  assert.ok(done.elapsedMs > 0 && done.tokensPerSec > 0);
  const missing = await fetch(`${server.url}/api/generate?max_tokens=4`);
  assert.equal(missing.status, 400);
  assert.match((await missing.json()).error, /'prompt' is required/);
  const badNumber = await fetch(`${server.url}/api/generate?prompt=x&max_tokens=many`);
  assert.equal(badNumber.status, 400);
});

test('/ redirects to the UI, /web/ serves it, CORS preflight', async () => {
  const root = await fetch(`${server.url}/`, { redirect: 'manual' });
  assert.equal(root.status, 302);
  assert.equal(root.headers.get('location'), '/web/');
  const page = await fetch(`${server.url}/web/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type'), /text\/html/);
  assert.match(await page.text(), /<html/i);
  const script = await fetch(`${server.url}/web/app.js`);
  assert.match(script.headers.get('content-type'), /javascript/);
  assert.equal((await fetch(`${server.url}/web/nothing.js`)).status, 404);
  const preflight = await fetch(`${server.url}/v1/chat/completions`, { method: 'OPTIONS', headers: { Origin: 'http://example.com', 'Access-Control-Request-Method': 'POST' } });
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get('access-control-allow-origin'), '*');
  assert.match(preflight.headers.get('access-control-allow-headers'), /Authorization/);
});

test('/models/ serves the model folder\'s own files, and nothing outside it', async () => {
  const listing = await (await fetch(`${server.url}/models/`)).json();
  assert.deepEqual(listing.files, fs.readdirSync(modelFolder).sort());
  const config = await fetch(`${server.url}/models/config.json`);
  assert.equal(config.status, 200);
  assert.equal(await config.text(), fs.readFileSync(path.join(modelFolder, 'config.json'), 'utf8'));
  const weights = Buffer.from(await (await fetch(`${server.url}/models/model.safetensors`)).arrayBuffer());
  assert.ok(weights.equals(fs.readFileSync(path.join(modelFolder, 'model.safetensors'))));
  const outside = path.basename(modelFolder);
  for (const target of [`/models/../${outside}/config.json`, '/models/../../../../etc/passwd', `/models/%2e%2e/${outside}/config.json`,
                        `/models/..%2f${outside}%2fconfig.json`, '/models/%2fetc%2fpasswd', '/models/./config.json',
                        '/models//etc/passwd', '/models/nothing.bin']) {
    assert.equal(await rawStatus(server.url, target), 404, target);
  }
});

test('/tokenize and /detokenize agree with @huggingface/tokenizers', async () => {
  const tokenizerJson = JSON.parse(fs.readFileSync(path.join(modelFolder, 'tokenizer.json'), 'utf8'));
  const tokenizerConfig = JSON.parse(fs.readFileSync(path.join(modelFolder, 'tokenizer_config.json'), 'utf8'));
  const reference = new Tokenizer(tokenizerJson, tokenizerConfig);
  for (const text of ['Once upon a time', 'héllo wörld  🙂\n\tx', '<|im_start|>user']) {
    const ours = await (await postJson(`${server.url}/tokenize`, { content: text })).json();
    assert.deepEqual(ours.tokens, reference.encode(text, { add_special_tokens: false }).ids, text);
    const back = await (await postJson(`${server.url}/detokenize`, { tokens: ours.tokens })).json();
    assert.equal(back.content, reference.decode(ours.tokens), text);
  }
  const pieces = await (await postJson(`${server.url}/tokenize`, { content: 'Hi there', with_pieces: true })).json();
  assert.deepEqual(pieces.tokens.map(({ piece }) => piece).join(''), 'Hi there');
});

test('/metrics is Prometheus text with requests, tokens, queue depth, throughput and slots', async () => {
  await postJson(`${server.url}/generate`, { input_ids: [1, 2, 3], max_new_tokens: 3 });
  const response = await fetch(`${server.url}/metrics`);
  assert.match(response.headers.get('content-type'), /^text\/plain/);
  const values = await metrics(server.url);
  for (const name of ['loom_prompt_tokens_total', 'loom_tokens_generated_total', 'loom_queue_depth', 'loom_slots_busy',
                      'loom_slots_total', 'loom_prompt_tokens_per_second', 'loom_decode_tokens_per_second']) {
    assert.ok(name in values, name);
  }
  assert.ok(values['loom_http_requests_total{route="/generate",status="200"}'] >= 1);
  assert.ok(values.loom_tokens_generated_total >= 3);
  assert.ok(values.loom_decode_tokens_per_second > 0);
  assert.equal(values.loom_slots_busy, 0);
  assert.equal(values.loom_slots_total, 4);
});

test('/props describes the model and the defaults', async () => {
  const props = await (await fetch(`${server.url}/props`)).json();
  assert.equal(props.model, 'model');
  assert.equal(props.has_chat_template, true);
  assert.equal(props.total_slots, 4);
  assert.ok(props.n_ctx > 0);
  assert.match(props.chat_template, /im_start/);
});
