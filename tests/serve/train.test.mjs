// POST /api/train (the old demo's protocol) on a server of its own, since training changes
// the weights every later request sees: the event sequence and keys, a falling loss, later
// generation using the trained weights, generation waiting for (or refused during) a run,
// and the switches (--no-train, --api-key).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, parseSse, readSse, postJson, metrics } from './harness.mjs';

const servers = [];
async function server(args = []) {
  const started = await startServer(args);
  servers.push(started);
  return started;
}
after(async () => { for (const started of servers) assert.equal(await started.stop(), 0); });

const sortedKeys = (object) => Object.keys(object).sort();
const text = 'The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog.';

async function greedy(url, prompt) {
  const body = await (await postJson(`${url}/generate`, { prompt, max_tokens: 12, temperature: 0 })).json();
  return body.generated_text;
}

test('POST /api/train streams init, one step per step with a falling loss, then done; generation then uses the new weights', async () => {
  const { url } = await server();
  const before = await greedy(url, 'The quick brown');

  const response = await postJson(`${url}/api/train`, { text, steps: 6, learningRate: 0.003 });
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type'), /^text\/event-stream/);
  const events = parseSse(await response.text());
  assert.deepEqual(events.map(({ event }) => event), ['init', 'step', 'step', 'step', 'step', 'step', 'step', 'done']);
  const init = events[0].data;
  assert.deepEqual(sortedKeys(init), ['learningRate', 'steps', 'text', 'tokens']);
  assert.equal(init.text, text);
  assert.equal(init.steps, 6);
  assert.equal(init.learningRate, 0.003);
  assert.ok(init.tokens > 10);
  const steps = events.slice(1, 7).map(({ data }) => data);
  steps.forEach((step, index) => {
    assert.deepEqual(sortedKeys(step), ['elapsedMs', 'loss', 'step']);
    assert.equal(step.step, index + 1);
    assert.ok(Number.isFinite(step.loss) && step.loss > 0);
  });
  assert.ok(steps[5].loss < steps[0].loss * 0.8, `loss ${steps[0].loss} -> ${steps[5].loss}`);
  const done = events[7].data;
  assert.equal(done.totalSteps, 6);
  assert.ok(done.elapsedMs > 0);

  const after = await greedy(url, 'The quick brown');
  assert.notEqual(after, before, 'the trained weights change what the model says');
  const values = await metrics(url);
  assert.equal(values.loom_training_runs_total, 1);
  assert.equal(values.loom_training_steps_total, 6);

  // A second run continues from the trained weights: its first loss is below the first run's.
  const again = parseSse(await (await postJson(`${url}/api/train`, { text, steps: 1 })).text());
  assert.ok(again[1].data.loss < steps[0].loss);
});

test('bad /api/train requests get 400 with a message naming the field', async () => {
  const { url } = await server();
  for (const [body, pattern] of [
    [{ steps: 2 }, /'text' is required/],
    [{ text: 'x y z', steps: 0 }, /'steps' must be between 1 and 1000/],
    [{ text: 'x y z', steps: 'many' }, /'steps' must be an integer/],
    [{ text: 'x y z', learningRate: -1 }, /'learningRate' must be between/],
    [{ text: 'x' }, /training needs at least 2/],
  ]) {
    const response = await postJson(`${url}/api/train`, body);
    assert.equal(response.status, 400, JSON.stringify(body));
    assert.match((await response.json()).error, pattern);
  }
});

test('generation waits for a training run, or gets 503 past --train-wait; a second run is refused', async () => {
  const { url } = await server(['--train-wait', '0']);
  const controller = new AbortController();
  const training = await postJson(`${url}/api/train`, { text, steps: 1000, learningRate: 0.0001 }, {}, controller.signal);
  let steps = 0;
  const reading = readSse(training, ({ event }) => { if (event === 'step') steps += 1; return steps < 1000; }).catch(() => []);
  while (steps < 2) await new Promise((resolve) => setTimeout(resolve, 20));

  const refused = await postJson(`${url}/generate`, { prompt: 'Hello', max_tokens: 2 });
  assert.equal(refused.status, 503);
  assert.ok(Number(refused.headers.get('retry-after')) > 0);
  assert.match((await refused.json()).error, /the model is training/);
  const second = await postJson(`${url}/api/train`, { text, steps: 1 });
  assert.equal(second.status, 503);
  assert.match((await second.json()).error, /already in progress/);

  controller.abort();  // the client leaves: the run stops between steps
  await reading;
  let answer;
  for (let attempt = 0; attempt < 100; attempt += 1) {
    answer = await postJson(`${url}/generate`, { prompt: 'Hello', max_tokens: 2 });
    if (answer.status !== 503) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(answer.status, 200, 'generation resumes within 10 s of the training client leaving');
  assert.ok((await metrics(url)).loom_training_steps_total < 1000);
});

test('a generation request sent during a run waits for it and then completes', async () => {
  const { url } = await server();
  const training = postJson(`${url}/api/train`, { text, steps: 8 }).then((response) => response.text());
  await new Promise((resolve) => setTimeout(resolve, 50));
  const answer = await postJson(`${url}/generate`, { prompt: 'Hello', max_tokens: 2 });
  assert.equal(answer.status, 200);
  const events = parseSse(await training);
  assert.equal(events.at(-1).event, 'done');
});

test('--no-train refuses with 403; --api-key guards /api/train', async () => {
  const off = await server(['--no-train']);
  const refused = await postJson(`${off.url}/api/train`, { text, steps: 1 });
  assert.equal(refused.status, 403);
  assert.match((await refused.json()).error, /training is disabled on this server \(--no-train\)/);

  const guarded = await server(['--api-key', 'sesame']);
  assert.equal((await postJson(`${guarded.url}/api/train`, { text, steps: 1 })).status, 401);
  const allowed = await postJson(`${guarded.url}/api/train`, { text, steps: 1 }, { authorization: 'Bearer sesame' });
  assert.equal(allowed.status, 200);
  assert.equal(parseSse(await allowed.text()).at(-1).event, 'done');
});
