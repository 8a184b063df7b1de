// The official `openai` npm client, unmodified, against loom_serve's /v1 API.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startServer } from './harness.mjs';

const require = createRequire(new URL('../js/package.json', import.meta.url));
const { default: OpenAI } = await import(require.resolve('openai'));

let server, client, model;
before(async () => {
  server = await startServer(['--parallel', '4']);
  client = new OpenAI({ apiKey: 'unused', baseURL: `${server.url}/v1`, maxRetries: 0 });
  model = (await client.models.list()).data[0].id;
});
after(async () => assert.equal(await server.stop(), 0));

const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Why is the sky blue?' }];

test('models.list names the served model', async () => {
  const list = await client.models.list();
  assert.equal(list.data.length, 1);
  assert.equal(list.data[0].object, 'model');
  assert.equal(list.data[0].id, 'model');  // the folder's name
});

test('chat completion streams: role first, stable id/created/model, finish_reason, usage, [DONE]', async () => {
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.length >= 3);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  for (const chunk of chunks) {
    assert.equal(chunk.id, chunks[0].id);
    assert.equal(chunk.created, chunks[0].created);
    assert.equal(chunk.model, model);
    assert.equal(chunk.object, 'chat.completion.chunk');
  }
  assert.match(chunks[0].id, /^chatcmpl-/);
  const finishing = chunks.filter((chunk) => chunk.choices[0]?.finish_reason);
  assert.equal(finishing.length, 1);
  assert.equal(finishing[0].choices[0].finish_reason, 'length');  // 12 tokens of a random model: no end-of-turn
  assert.ok(finishing[0].timings.predicted_per_second > 0, 'server-side timings in the last chunk');
  assert.ok(finishing[0].timings.time_to_first_token_ms > 0);
  const usage = chunks.at(-1);
  assert.deepEqual(usage.choices, []);
  assert.equal(usage.usage.completion_tokens, 12);
  assert.ok(usage.usage.prompt_tokens > 5);
  assert.equal(usage.usage.total_tokens, usage.usage.prompt_tokens + 12);
  const text = chunks.map((chunk) => chunk.choices[0]?.delta?.content ?? '').join('');
  assert.ok(text.length > 0);

  // The same request without streaming gives the same text (greedy).
  const whole = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0 });
  assert.equal(whole.object, 'chat.completion');
  assert.equal(whole.choices[0].message.role, 'assistant');
  assert.equal(whole.choices[0].message.content, text);
  assert.equal(whole.choices[0].finish_reason, 'length');
  const counts = ({ prompt_tokens, completion_tokens, total_tokens }) => ({ prompt_tokens, completion_tokens, total_tokens });
  assert.deepEqual(counts(whole.usage), counts(usage.usage));
  // The same prompt again: all of it but the last token comes from the kept KV cache, and
  // the text is the same.
  assert.equal(whole.usage.prompt_tokens_details.cached_tokens, whole.usage.prompt_tokens - 1);
  assert.equal(whole.timings.cache_n, whole.usage.prompt_tokens - 1);
  assert.equal(whole.timings.prompt_n, 1);
});

test('the .stream() helper and finalChatCompletion()', async () => {
  const runner = client.chat.completions.stream({ model, messages, max_tokens: 8, temperature: 0 });
  let streamed = '';
  runner.on('content', (delta) => { streamed += delta; });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.content, streamed);
  assert.equal(final.choices[0].finish_reason, 'length');
  assert.ok(streamed.length > 0);
});

test('completions stream and not, prompt as text or token ids', async () => {
  const stream = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 10, temperature: 0, stream: true });
  let text = '', finish = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'text_completion');
    text += chunk.choices[0]?.text ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(finish, 'length');
  const whole = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 10, temperature: 0 });
  assert.equal(whole.choices[0].text, text);
  assert.equal(whole.usage.completion_tokens, 10);
  const tokenized = await (await fetch(`${server.url}/tokenize`, { method: 'POST', body: JSON.stringify({ content: 'Once upon a time' }) })).json();
  const byIds = await client.completions.create({ model, prompt: tokenized.tokens, max_tokens: 10, temperature: 0 });
  assert.equal(byIds.choices[0].text, text);
  const defaultLength = await client.completions.create({ model, prompt: 'Hello', temperature: 0 });
  assert.equal(defaultLength.usage.completion_tokens, 16, "OpenAI's default max_tokens for completions");
});

test('seed: the same seed gives the same sample, another seed (almost surely) not', async () => {
  const ask = (seed) => client.completions.create({ model, prompt: 'The', max_tokens: 16, temperature: 1, top_p: 0.95, seed });
  const [a, b, c] = await Promise.all([ask(7), ask(7), ask(8)]);
  assert.equal(a.choices[0].text, b.choices[0].text);
  assert.notEqual(a.choices[0].text, c.choices[0].text);
});

test('stop strings end the text before the stop string', async () => {
  const free = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0 });
  const text = free.choices[0].text;
  // Stop at a piece of the greedy text: the answer is the text before it.
  const stop = text.slice(6, 9);
  assert.ok(stop.length === 3, `need some text, got ${JSON.stringify(text)}`);
  const stopped = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0, stop: [stop] });
  assert.equal(stopped.choices[0].text, text.slice(0, text.indexOf(stop)));
  assert.equal(stopped.choices[0].finish_reason, 'stop');
});

test('logprobs and top_logprobs on chat', async () => {
  const answer = await client.chat.completions.create({ model, messages, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3 });
  const content = answer.choices[0].logprobs.content;
  assert.equal(content.length, 4);
  for (const entry of content) {
    assert.ok(entry.logprob <= 0);
    assert.equal(entry.top_logprobs.length, 3);
    // Greedy: the chosen token is the most likely one.
    assert.equal(entry.top_logprobs[0].token, entry.token);
    assert.equal(entry.top_logprobs[0].logprob, entry.logprob);
    assert.ok(entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob);
    assert.deepEqual(entry.bytes, [...Buffer.from(entry.token)]);
  }
  assert.equal(content.map((entry) => entry.token).join(''), answer.choices[0].message.content);
  const stream = await client.chat.completions.create({ model, messages, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3, stream: true });
  const streamed = [];
  for await (const chunk of stream) streamed.push(...(chunk.choices[0]?.logprobs?.content ?? []));
  assert.deepEqual(streamed, content);
});

test('presence and frequency penalties change a greedy answer', async () => {
  const plain = await client.completions.create({ model, prompt: 'the the the', max_tokens: 24, temperature: 0 });
  const penalized = await client.completions.create({ model, prompt: 'the the the', max_tokens: 24, temperature: 0, frequency_penalty: 2, presence_penalty: 2 });
  assert.notEqual(penalized.choices[0].text, plain.choices[0].text);
});

test('errors arrive as the client\'s typed errors with status, param and message', async () => {
  await assert.rejects(client.chat.completions.create({ model, messages, temperature: 5 }), (error) => {
    assert.equal(error.status, 400);
    assert.equal(error.param, 'temperature');
    assert.match(error.message, /temperature/);
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages }), (error) => {
    assert.equal(error.status, 400);
    assert.equal(error.code, 'model_not_found');
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model, messages, n: 2 }), (error) => error.status === 400 && error.param === 'n');
  await assert.rejects(client.chat.completions.create({ model, messages: [] }), (error) => error.status === 400 && error.param === 'messages');
});

test('--api-key: missing or wrong key is 401, Bearer and X-Api-Key pass', async () => {
  const guarded = await startServer(['--api-key', 'sesame']);
  try {
    const wrong = new OpenAI({ apiKey: 'nope', baseURL: `${guarded.url}/v1`, maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (error) => error.status === 401 && error.code === 'invalid_api_key');
    const missing = await fetch(`${guarded.url}/v1/models`);
    assert.equal(missing.status, 401);
    assert.match((await missing.json()).error.message, /API key is required/);
    const right = new OpenAI({ apiKey: 'sesame', baseURL: `${guarded.url}/v1`, maxRetries: 0 });
    const answer = await right.completions.create({ model: 'model', prompt: 'Hi', max_tokens: 2 });
    assert.equal(answer.usage.completion_tokens, 2);
    assert.equal((await fetch(`${guarded.url}/v1/models`, { headers: { 'X-Api-Key': 'sesame' } })).status, 200);
    assert.equal((await fetch(`${guarded.url}/generate`, { method: 'POST', body: '{"input_ids":[1],"max_new_tokens":1}' })).status, 401);
    assert.equal((await fetch(`${guarded.url}/health`)).status, 200, '/health stays open for probes');
  } finally {
    assert.equal(await guarded.stop(), 0);
  }
});
