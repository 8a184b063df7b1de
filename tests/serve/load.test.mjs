// Many users at once: continuous batching must not change anyone's tokens, departing
// clients must not leak slots or memory, and the server must keep answering.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, postJson, readSse, metrics, residentBytes } from './harness.mjs';

const ids = async (url, body) => (await (await postJson(`${url}/generate`, { max_new_tokens: 24, ...body })).json()).new_ids;

test("a request's tokens do not depend on what else is running", async () => {
  const server = await startServer(['--parallel', '8']);
  try {
    const requests = [
      { input_ids: [1, 504, 3458], temperature: 0 },
      { input_ids: [9, 8, 7, 6, 5, 4, 3, 2, 1], temperature: 0.9, seed: 11, top_p: 0.9 },
      { input_ids: [42], temperature: 1.2, seed: 3 },
      { input_ids: Array.from({ length: 300 }, (_, i) => (i * 7919) % 49152), temperature: 0.7, seed: 5, max_new_tokens: 40 },
    ];
    const alone = [];
    for (const request of requests) alone.push(await ids(server.url, request));
    // Together, staggered, with extra traffic of other lengths beside them: new prompts
    // are prefilled in the same steps as others decode.
    for (let round = 0; round < 2; ++round) {
      const noise = Array.from({ length: 6 }, (_, i) => ids(server.url, { input_ids: [100 + i, 200 + round], temperature: 1, seed: i, max_new_tokens: 10 + 7 * i }));
      const together = [];
      for (const request of requests) {
        together.push(ids(server.url, request));
        await new Promise((resolve) => setTimeout(resolve, round * 7));
      }
      assert.deepEqual(await Promise.all(together), alone, `round ${round}`);
      await Promise.all(noise);
    }
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('32 concurrent streams, a third leaving early: slots come back, memory does not grow', async () => {
  const server = await startServer(['--parallel', '8', '--queue', '64']);
  try {
    const round = async (seed) => {
      let random = seed;
      const next = () => (random = (random * 1103515245 + 12345) % 2147483648) / 2147483648;
      const clients = Array.from({ length: 32 }, async (_, i) => {
        const leave = i % 3 === 0;
        const abort = new AbortController();
        const stopAfter = 1 + Math.floor(next() * 20);
        const body = i % 2
          ? { messages: [{ role: 'user', content: `Tell me story number ${i}` }], max_tokens: 40, stream: true, temperature: 0.8, seed: i }
          : { prompt: `Request ${i}:`, max_tokens: 40, stream: true, temperature: 0.8, seed: i };
        const response = await postJson(`${server.url}/v1/${i % 2 ? 'chat/completions' : 'completions'}`, body, {}, abort.signal);
        assert.equal(response.status, 200);
        let chunks = 0;
        const events = await readSse(response, () => !(leave && ++chunks >= stopAfter));
        if (leave) return 'left';
        assert.equal(events.at(-1).data, '[DONE]');
        return 'done';
      });
      const outcomes = await Promise.all(clients);
      assert.equal(outcomes.filter((outcome) => outcome === 'left').length, 11);
      const idle = async () => {
        const values = await metrics(server.url);
        return values.loom_slots_busy === 0 && values.loom_queue_depth === 0;
      };
      const end = Date.now() + 5000;
      while (!(await idle())) {
        assert.ok(Date.now() < end, 'all slots idle within 5 s');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };
    await round(1);  // warm-up: buffers reach their working size
    const before = residentBytes(server.pid);
    for (let i = 2; i < 5; ++i) await round(i);
    const after = residentBytes(server.pid);
    console.log(`resident memory: ${(before / 2 ** 20).toFixed(1)} MiB after the warm-up round, ${(after / 2 ** 20).toFixed(1)} MiB after 3 more rounds`);
    assert.ok(after < before * 1.1 + 16 * 2 ** 20, `memory grew from ${before} to ${after} bytes`);
    const values = await metrics(server.url);
    assert.ok(values.loom_requests_cancelled_total >= 40, `cancelled: ${values.loom_requests_cancelled_total}`);
    // Later requests start in the caches of earlier ones, cancelled ones included.
    assert.ok(values.loom_kv_caches_reused_total > 0, `caches reused: ${values.loom_kv_caches_reused_total}`);
    const answer = await (await postJson(`${server.url}/v1/completions`, { prompt: 'After the storm', max_tokens: 5 })).json();
    assert.equal(answer.usage.completion_tokens, 5);
  } finally {
    assert.equal(await server.stop(), 0);
  }
});
