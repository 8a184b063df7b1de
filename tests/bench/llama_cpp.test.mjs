// benchmarks/bench_llama_cpp.mjs: the GGUF it writes, read back by Hugging Face's own GGUF
// parser (@huggingface/gguf), byte for byte against the checkpoint; its errors; and the
// llama-bench command lines it runs, through a stand-in llama-bench that echoes them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(new URL('../js/package.json', import.meta.url));
const { gguf, GGMLQuantizationType } = await import(require.resolve('@huggingface/gguf'));

const script = fileURLToPath(new URL('../../benchmarks/bench_llama_cpp.mjs', import.meta.url));
const makeModel = process.env.LOOM_MAKE_MODEL;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'loom-llama-cpp-test-'));

function run(args) {
  const result = spawnSync(process.execPath, [script, ...args], { encoding: 'utf8' });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

function makeCheckpoint(name, preset, dtype) {
  const out = path.join(work, name);
  const made = spawnSync(makeModel, ['--preset', preset, '--dtype', dtype, '--out', out], { encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
  return out;
}

// name -> {dtype, shape, bytes} of a safetensors file, read by hand (the format is a JSON header).
function readSafetensors(file) {
  const data = fs.readFileSync(file);
  const headerBytes = Number(data.readBigUInt64LE(0));
  const header = JSON.parse(data.subarray(8, 8 + headerBytes).toString('utf8'));
  const tensors = new Map();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [begin, end] = entry.data_offsets;
    tensors.set(name, { dtype: entry.dtype, shape: entry.shape, bytes: data.subarray(8 + headerBytes + begin, 8 + headerBytes + end) });
  }
  return tensors;
}

async function readGguf(file) {
  const parsed = await gguf(file, { allowLocalFile: true });
  const data = fs.readFileSync(file);
  const tensors = new Map();
  for (const info of parsed.tensorInfos) {
    const elements = info.shape.reduce((a, b) => a * Number(b), 1);
    const size = { [GGMLQuantizationType.F32]: 4, [GGMLQuantizationType.F16]: 2, [GGMLQuantizationType.BF16]: 2 }[info.dtype];
    const start = Number(parsed.tensorDataOffset + info.offset);
    tensors.set(info.name, { dtype: info.dtype, shape: info.shape.map(Number), bytes: data.subarray(start, start + elements * size) });
  }
  return { metadata: parsed.metadata, tensors };
}

const llamaName = (name) => name
  .replace('model.embed_tokens.weight', 'token_embd.weight')
  .replace('model.norm.weight', 'output_norm.weight')
  .replace('lm_head.weight', 'output.weight')
  .replace(/^model\.layers\.(\d+)\./, 'blk.$1.')
  .replace('input_layernorm', 'attn_norm').replace('post_attention_layernorm', 'ffn_norm')
  .replace('self_attn.q_proj', 'attn_q').replace('self_attn.k_proj', 'attn_k').replace('self_attn.v_proj', 'attn_v')
  .replace('self_attn.o_proj', 'attn_output')
  .replace('mlp.gate_proj', 'ffn_gate').replace('mlp.up_proj', 'ffn_up').replace('mlp.down_proj', 'ffn_down');

function bf16ToF32Bytes(bytes) {
  const out = Buffer.alloc(bytes.length * 2);
  for (let i = 0; i < bytes.length / 2; ++i) out.writeUInt32LE((bytes.readUInt16LE(2 * i) << 16) >>> 0, 4 * i);
  return out;
}

// Row r of a row-major tensor with `columns` elements of `size` bytes per row.
const row = (tensor, r, columns, size) => tensor.bytes.subarray(r * columns * size, (r + 1) * columns * size);

let llamaFolder, qwenFolder;
after(() => fs.rmSync(work, { recursive: true, force: true }));
before(() => {
  assert.ok(makeModel && fs.existsSync(makeModel), `LOOM_MAKE_MODEL is not set or missing: ${makeModel}`);
  llamaFolder = makeCheckpoint('llama-bf16', 'tiny-llama', 'bf16');
  qwenFolder = makeCheckpoint('qwen2-f32', 'tiny-qwen2', 'f32');
});

test('a LLaMA bf16 checkpoint becomes a GGUF with the same weights, q and k rows in rotary pairs', async () => {
  const result = run(['--model', llamaFolder, '--gguf-only']);
  assert.equal(result.code, 0, result.stderr);
  const file = JSON.parse(result.stdout).gguf;
  assert.equal(file, path.join(llamaFolder, 'model-llama-cpp.gguf'));
  const config = JSON.parse(fs.readFileSync(path.join(llamaFolder, 'config.json'), 'utf8'));
  const { metadata, tensors } = await readGguf(file);
  assert.equal(metadata['general.architecture'], 'llama');
  assert.equal(metadata['llama.block_count'], config.num_hidden_layers);
  assert.equal(metadata['llama.embedding_length'], config.hidden_size);
  assert.equal(metadata['llama.feed_forward_length'], config.intermediate_size);
  assert.equal(metadata['llama.attention.head_count'], config.num_attention_heads);
  assert.equal(metadata['llama.attention.head_count_kv'], config.num_key_value_heads);
  assert.equal(metadata['llama.rope.freq_base'], Math.fround(config.rope_theta));
  assert.equal(metadata['llama.attention.layer_norm_rms_epsilon'], Math.fround(config.rms_norm_eps));
  assert.equal(metadata['tokenizer.ggml.tokens'].length, config.vocab_size);
  assert.equal(new Set(metadata['tokenizer.ggml.tokens']).size, config.vocab_size, 'tokens are distinct');

  const stored = readSafetensors(path.join(llamaFolder, 'model.safetensors'));
  assert.equal(tensors.size, stored.size);
  const headDim = config.hidden_size / config.num_attention_heads;
  for (const [name, tensor] of stored) {
    const converted = tensors.get(llamaName(name));
    assert.ok(converted, `${name} is in the GGUF`);
    assert.deepEqual(converted.shape, [...tensor.shape].reverse(), `${name}: GGUF lists dimensions innermost first`);
    if (tensor.shape.length === 1) {
      assert.equal(converted.dtype, GGMLQuantizationType.F32, `${name} in f32`);
      assert.ok(converted.bytes.equals(bf16ToF32Bytes(tensor.bytes)), `${name}: the same values`);
    } else if (/(q|k)_proj/.test(name)) {
      assert.equal(converted.dtype, GGMLQuantizationType.BF16);
      // HF row (head h, half p, index j) lands at row h * headDim + 2j + p.
      for (let r = 0; r < tensor.shape[0]; ++r) {
        const h = Math.floor(r / headDim), within = r % headDim, p = Math.floor(within / (headDim / 2)), j = within % (headDim / 2);
        const columns = tensor.shape[1];
        assert.ok(row(converted, h * headDim + 2 * j + p, columns, 2).equals(row(tensor, r, columns, 2)), `${name}: row ${r}`);
      }
    } else {
      assert.equal(converted.dtype, GGMLQuantizationType.BF16);
      assert.ok(converted.bytes.equals(tensor.bytes), `${name}: the same bytes`);
    }
  }
});

test('a Qwen2 f32 checkpoint keeps its rows in order and its biases in f32', async () => {
  const result = run(['--model', qwenFolder, '--gguf-only']);
  assert.equal(result.code, 0, result.stderr);
  const { metadata, tensors } = await readGguf(JSON.parse(result.stdout).gguf);
  assert.equal(metadata['general.architecture'], 'qwen2');
  const stored = readSafetensors(path.join(qwenFolder, 'model.safetensors'));
  assert.ok([...stored.keys()].some((name) => name.endsWith('q_proj.bias')), 'the preset has q/k/v biases');
  for (const [name, tensor] of stored) {
    const converted = tensors.get(llamaName(name));
    assert.ok(converted, `${name} is in the GGUF`);
    assert.equal(converted.dtype, GGMLQuantizationType.F32);
    assert.ok(converted.bytes.equals(tensor.bytes), `${name}: the same bytes (qwen2 rotates halves, as HF does)`);
  }
});

test('the GGUF is rewritten only when the checkpoint is newer', () => {
  const file = JSON.parse(run(['--model', llamaFolder, '--gguf-only']).stdout).gguf;
  const before = fs.statSync(file).mtimeMs;
  assert.equal(run(['--model', llamaFolder, '--gguf-only']).code, 0);
  assert.equal(fs.statSync(file).mtimeMs, before);
  const later = new Date(Date.now() + 5000);
  fs.utimesSync(path.join(llamaFolder, 'config.json'), later, later);
  assert.equal(run(['--model', llamaFolder, '--gguf-only']).code, 0);
  assert.ok(fs.statSync(file).mtimeMs > before);
});

test('bad checkpoints and arguments get one line naming the problem, exit 2', () => {
  const truncated = fs.mkdtempSync(path.join(work, 'truncated-'));
  fs.copyFileSync(path.join(llamaFolder, 'config.json'), path.join(truncated, 'config.json'));
  const weights = fs.readFileSync(path.join(llamaFolder, 'model.safetensors'));
  fs.writeFileSync(path.join(truncated, 'model.safetensors'), weights.subarray(0, weights.length - 100));
  let result = run(['--model', truncated, '--gguf-only']);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /^bench_llama_cpp: error: .*model\.safetensors: tensor \S+ has data_offsets .* do not fit its shape or the file\n$/);
  assert.ok(!fs.existsSync(path.join(truncated, 'model-llama-cpp.gguf')), 'no GGUF is left behind');

  fs.writeFileSync(path.join(truncated, 'model.safetensors'), Buffer.from([0xff, 0xff, 0, 0, 0, 0, 0, 0, 0x7b]));
  result = run(['--model', truncated, '--gguf-only']);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /model\.safetensors: header of \d+ bytes runs past the end of the file \(9 bytes\)/);

  const gemma = fs.mkdtempSync(path.join(work, 'gemma-'));
  fs.writeFileSync(path.join(gemma, 'config.json'), JSON.stringify({ model_type: 'gemma' }));
  fs.writeFileSync(path.join(gemma, 'model.safetensors'), weights);
  result = run(['--model', gemma, '--gguf-only']);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /config\.json: model_type 'gemma' \(llama\.cpp's run takes llama or qwen2\)/);

  fs.writeFileSync(path.join(gemma, 'config.json'), '{"model_type": "llama",');
  result = run(['--model', gemma, '--gguf-only']);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /config\.json: not JSON/);

  result = run(['--model', path.join(work, 'missing'), '--gguf-only']);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /missing[/\\]config\.json: not found/);

  for (const [args, message] of [
    [['--model', llamaFolder], /--llama-bench is required/],
    [['--model', llamaFolder, '--llama-bench', 'x', '--threads', '0'], /--threads must be a positive integer, got '0'/],
    [['--model'], /--model needs a value/],
    [['--model', llamaFolder, '--fast'], /unknown argument '--fast'/],
  ]) {
    result = run(args);
    assert.equal(result.code, 2, args.join(' '));
    assert.match(result.stderr, message);
  }
});

test('a llama-bench that cannot be started is exit 3', () => {
  const result = run(['--model', llamaFolder, '--llama-bench', path.join(work, 'no-llama-bench')]);
  assert.equal(result.code, 3);
  assert.match(result.stderr, /cannot run llama-bench '.*no-llama-bench': ENOENT/);
});

test('prefill and decode come from llama-bench runs of the same workload', () => {
  // A stand-in llama-bench: its results encode the arguments it was given, one per
  // flash-attention setting; off is faster for prefill (-n 0), on for decode.
  const fake = path.join(work, 'fake-llama-bench');
  fs.writeFileSync(fake, `#!${process.execPath}
const args = process.argv.slice(2);
const value = (flag) => Number(args[args.indexOf(flag) + 1] ?? -1);
if (args.at(-2) !== '-o' || args.at(-1) !== 'json' || args[args.indexOf('-fa') + 1] !== '0,1') process.exit(9);
const encoded = value('-p') * 1e6 + value('-n') * 1e3 + (args.includes('-d') ? value('-d') : 0) + value('-t') / 10 + value('-r') / 100;
const faster = value('-n') === 0 ? 0 : 1;
process.stdout.write(JSON.stringify([0, 1].map((fa) => ({ build_number: 7, build_commit: 'abc', backends: 'CPU', cpu_info: 'a CPU',
  flash_attn: fa === 1, avg_ts: fa === faster ? encoded : encoded / 2 }))));
`);
  fs.chmodSync(fake, 0o755);
  const result = run(['--model', llamaFolder, '--llama-bench', fake, '--prompt-tokens', '64', '--new-tokens', '32',
                      '--threads', '2', '--repetitions', '3']);
  assert.equal(result.code, 0, result.stderr);
  const figures = JSON.parse(result.stdout);
  assert.equal(figures.prefill_tokens_per_second, 64e6 + 0 + 0 + 0.2 + 0.03);    // -p 64 -n 0 -t 2 -r 3
  assert.equal(figures.decode_tokens_per_second, 0 + 32e3 + 64 + 0.2 + 0.03);    // -p 0 -n 32 -d 64
  assert.deepEqual(figures.flash_attention, { prefill: false, decode: true });   // the faster of each
  assert.equal(figures.llama_cpp, 'llama.cpp build 7 (abc), CPU');
  assert.equal(figures.cpu, 'a CPU');

  fs.writeFileSync(fake, `#!${process.execPath}\nprocess.stdout.write('[]');\n`);
  const empty = run(['--model', llamaFolder, '--llama-bench', fake]);
  assert.equal(empty.code, 1);
  assert.match(empty.stderr, /llama-bench .* printed no results with a speed \(avg_ts\)/);

  fs.writeFileSync(fake, `#!${process.execPath}\nprocess.stderr.write('model failed to load\\n'); process.exit(1);\n`);
  const failed = run(['--model', llamaFolder, '--llama-bench', fake]);
  assert.equal(failed.code, 1);
  assert.match(failed.stderr, /llama-bench .* failed \(exit 1\): model failed to load/);
});
