// Loom web UI: chat and raw completion against the OpenAI-compatible API of loom_serve.
// Plain ES2020, no dependencies, no build step.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  const els = {
    modelName: $('model-name'),
    modelCtx: $('model-ctx'),
    modelSlots: $('model-slots'),
    tabChat: $('tab-chat'),
    tabCompletion: $('tab-completion'),
    tabNote: $('tab-note'),
    settings: $('settings'),
    settingsForm: $('settings-form'),
    maxTokens: $('max-tokens'),
    temperature: $('temperature'),
    topP: $('top-p'),
    seed: $('seed'),
    presence: $('presence-penalty'),
    frequency: $('frequency-penalty'),
    stopStrings: $('stop-strings'),
    system: $('system'),
    apiKey: $('api-key'),
    resetSettings: $('reset-settings'),
    error: $('error'),
    output: $('output'),
    stats: $('stats'),
    composer: $('composer'),
    prompt: $('prompt'),
    promptLabel: $('prompt-label'),
    send: $('send'),
    stop: $('stop'),
    newChat: $('new-chat'),
  };

  const API_KEY_STORAGE = 'loom.apiKey';
  const BUILTIN_DEFAULTS = {
    max_tokens: 256, temperature: 0.7, top_p: 1, seed: '',
    presence_penalty: 0, frequency_penalty: 0, stop: '',
  };

  const state = {
    mode: 'chat',            // 'chat' | 'completion'
    hasChatTemplate: true,
    model: null,             // id reported by /props
    propsLoaded: false,
    defaults: Object.assign({}, BUILTIN_DEFAULTS),
    chat: [],                // [{role, content, note}]
    completion: null,        // {prompt, text, note}
    stats: { chat: null, completion: null },
    controller: null,        // AbortController of the in-flight request
    run: null,               // promise of the in-flight request
    tick: null,              // interval that refreshes live stats
    touched: false,          // the user edited a sampling setting (keep it over /props defaults)
    stick: true,             // keep the output scrolled to the bottom (until the user scrolls up)
  };

  // ---------------------------------------------------------------- helpers

  function storageGet(key) {
    try { return window.localStorage.getItem(key); } catch (_) { return null; }
  }
  function storageSet(key, value) {
    try {
      if (value) window.localStorage.setItem(key, value);
      else window.localStorage.removeItem(key);
    } catch (_) { /* storage unavailable: keep the key for this page only */ }
  }

  function authHeaders() {
    const key = els.apiKey.value.trim();
    return key ? { Authorization: 'Bearer ' + key } : {};
  }

  function fmt(n, digits) {
    if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
    return n.toFixed(digits);
  }

  // The number in an input, or undefined when it is blank. Out-of-range values are sent as
  // they are: the server validates them and its message is shown.
  function readNumber(input) {
    const raw = String(input.value).trim();
    if (raw === '') return undefined;
    const n = Number(raw);
    return Number.isFinite(n) ? n : undefined;
  }

  // "###, \n\n, a\,b" -> ["###", "\n\n", "a,b"]: split on unescaped commas, trim each part
  // (escaped whitespace survives the trim), then resolve the escapes \n \t \r \, \\.
  function stopList() {
    const parts = [];
    let cur = '';
    const text = els.stopStrings.value;
    for (let i = 0; i < text.length; i++) {
      if (text[i] === '\\' && i + 1 < text.length) { cur += text[i] + text[i + 1]; i++; }
      else if (text[i] === ',') { parts.push(cur); cur = ''; }
      else cur += text[i];
    }
    parts.push(cur);
    const escapes = { n: '\n', t: '\t', r: '\r', ',': ',', '\\': '\\' };
    return parts
      .map((p) => p.trim().replace(/\\(.)/g, (m, c) => (c in escapes ? escapes[c] : m)))
      .filter((p) => p.length > 0);
  }

  function buildParams() {
    const p = {};
    const maxTokens = readNumber(els.maxTokens);
    if (maxTokens !== undefined) p.max_tokens = maxTokens;
    const temperature = readNumber(els.temperature);
    if (temperature !== undefined) p.temperature = temperature;
    const topP = readNumber(els.topP);
    if (topP !== undefined) p.top_p = topP;
    const seed = readNumber(els.seed);
    if (seed !== undefined) p.seed = seed;
    const presence = readNumber(els.presence);
    if (presence !== undefined) p.presence_penalty = presence;
    const frequency = readNumber(els.frequency);
    if (frequency !== undefined) p.frequency_penalty = frequency;
    const stop = stopList();
    if (stop.length) p.stop = stop;
    return p;
  }

  // ---------------------------------------------------------------- errors

  function showError(message) {
    els.error.textContent = '';
    const text = document.createElement('span');
    text.className = 'error-text';
    text.textContent = message;
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'error-close';
    close.textContent = 'Dismiss';
    close.addEventListener('click', clearError);
    els.error.append(text, close);
    els.error.hidden = false;
  }
  function clearError() {
    els.error.hidden = true;
    els.error.textContent = '';
  }

  class ApiError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  async function errorFromResponse(res) {
    let detail = '';
    let body = '';
    try { body = await res.text(); } catch (_) { /* ignore */ }
    try {
      const j = JSON.parse(body);
      if (j && j.error) detail = typeof j.error === 'string' ? j.error : (j.error.message || JSON.stringify(j.error));
      else if (j && j.message) detail = j.message;
    } catch (_) {
      detail = body.trim().slice(0, 500);
    }
    const status = 'HTTP ' + res.status + (res.statusText ? ' ' + res.statusText : '');
    return new ApiError(detail ? status + ': ' + detail : status, res.status);
  }

  // ---------------------------------------------------------------- SSE

  // Yields the data payload of each server-sent event. Handles events split across reads,
  // several events per read, CRLF line endings, comments and multi-line data fields.
  async function* sseData(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    const boundary = /\r\n\r\n|\n\n|\r\r/;
    const parse = (block) => {
      const data = [];
      for (const line of block.split(/\r\n|\r|\n/)) {
        if (line.startsWith('data:')) {
          data.push(line.slice(line[5] === ' ' ? 6 : 5));
        }
      }
      return data.length ? data.join('\n') : null;
    };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let m;
        while ((m = boundary.exec(buf)) !== null) {
          const block = buf.slice(0, m.index);
          buf = buf.slice(m.index + m[0].length);
          const data = parse(block);
          if (data !== null) yield data;
        }
      }
      buf += decoder.decode();
      const data = parse(buf);
      if (data !== null) yield data;
    } finally {
      try { reader.releaseLock(); } catch (_) { /* ignore */ }
    }
  }

  // ---------------------------------------------------------------- stats

  function newStats() {
    return {
      status: 'streaming', t0: performance.now(), tFirst: null, tEnd: null,
      chunks: 0, timings: null, usage: null, finish: null,
    };
  }

  function renderStats() {
    const s = state.stats[state.mode];
    els.stats.textContent = '';
    if (!s) { els.stats.textContent = 'Ready.'; return; }
    const parts = [];
    const add = (label, value) => {
      const span = document.createElement('span');
      if (value !== undefined) {
        const strong = document.createElement('strong');
        strong.textContent = value;
        span.append(strong, ' ' + label);
      } else {
        span.textContent = label;
      }
      parts.push(span);
    };
    const end = s.tEnd !== null ? s.tEnd : performance.now();
    const elapsed = (end - s.t0) / 1000;
    const tokens = (s.usage && Number.isFinite(s.usage.completion_tokens)) ? s.usage.completion_tokens
      : (s.timings && Number.isFinite(s.timings.predicted_n)) ? s.timings.predicted_n
        : s.chunks;
    if (s.status === 'streaming') add(s.chunks ? 'Generating…' : 'Waiting for the first token…');
    add(tokens === 1 ? 'token' : 'tokens', String(tokens));
    add('s', fmt(elapsed, 2));
    add('tokens/s (client)', elapsed > 0 ? fmt(tokens / elapsed, 1) : '–');
    const t = s.timings;
    if (t) {
      const prefill = Number.isFinite(t.prompt_per_second) ? fmt(t.prompt_per_second, 1) : '–';
      const cached = Number.isFinite(t.cache_n) && t.cache_n > 0 ? ', ' + t.cache_n + ' cached' : '';
      add('tok/s prefill' + (Number.isFinite(t.prompt_n) ? ' (' + t.prompt_n + ' prompt tokens' + cached + ')' : ''), prefill);
      add('tok/s decode', Number.isFinite(t.predicted_per_second) ? fmt(t.predicted_per_second, 1) : '–');
      if (Number.isFinite(t.time_to_first_token_ms)) add('ms to first token', fmt(t.time_to_first_token_ms, 0));
    }
    if (s.status === 'stopped') add('stopped');
    else if (s.status === 'error') add('failed');
    if (s.finish) add('finish: ' + s.finish);
    parts.forEach((p, i) => {
      if (i) {
        const sep = document.createElement('span');
        sep.className = 'sep';
        sep.setAttribute('aria-hidden', 'true');
        sep.textContent = ' · ';
        els.stats.append(sep);
      }
      els.stats.append(p);
    });
  }

  // ---------------------------------------------------------------- rendering

  function nearBottom() {
    const o = els.output;
    return o.scrollHeight - o.scrollTop - o.clientHeight < 48;
  }
  function scrollToBottom() {
    els.output.scrollTop = els.output.scrollHeight;
    state.stick = true;
  }

  function renderChatMessage(msg) {
    const wrap = document.createElement('div');
    wrap.className = 'msg ' + msg.role;
    const role = document.createElement('div');
    role.className = 'role';
    role.textContent = msg.role === 'user' ? 'You' : msg.role === 'assistant' ? 'Assistant' : msg.role;
    const content = document.createElement('div');
    content.className = 'content';
    const text = document.createTextNode(msg.content);
    content.append(text);
    wrap.append(role, content);
    const note = document.createElement('div');
    note.className = 'note';
    note.textContent = msg.note || '';
    note.hidden = !msg.note;
    wrap.append(note);
    msg.view = { wrap, text, note };
    return wrap;
  }

  function renderOutput() {
    const o = els.output;
    o.textContent = '';
    if (state.mode === 'chat') {
      o.className = 'output chat-mode';
      o.setAttribute('aria-label', 'Conversation');
      if (!state.chat.length) {
        const p = document.createElement('p');
        p.className = 'empty-hint';
        p.textContent = 'Start a conversation: type a message below.';
        o.append(p);
      }
      for (const msg of state.chat) o.append(renderChatMessage(msg));
    } else {
      o.className = 'output completion-mode';
      o.setAttribute('aria-label', 'Completion output');
      const c = state.completion;
      if (!c) {
        const p = document.createElement('p');
        p.className = 'empty-hint';
        p.textContent = 'Raw completion: the model continues your text. Generated text is highlighted.';
        o.append(p);
      } else {
        const pre = document.createElement('pre');
        pre.className = 'completion';
        const promptSpan = document.createElement('span');
        promptSpan.className = 'prompt-text';
        promptSpan.textContent = c.prompt;
        const gen = document.createElement('span');
        gen.className = 'gen';
        const text = document.createTextNode(c.text);
        gen.append(text);
        const note = document.createElement('span');
        note.className = 'note';
        note.textContent = c.note || '';
        note.hidden = !c.note;
        pre.append(promptSpan, gen, note);
        o.append(pre);
        c.view = { wrap: pre, text, note };
      }
    }
    scrollToBottom();
  }

  function setNote(target, note) {
    target.note = note;
    if (target.view) {
      target.view.note.textContent = note;
      target.view.note.hidden = !note;
    }
  }

  function setStreamingClass(target, on) {
    if (target && target.view) target.view.wrap.classList.toggle('streaming', on);
  }

  // ---------------------------------------------------------------- modes

  function setMode(mode) {
    if (mode === 'chat' && !state.hasChatTemplate) mode = 'completion';
    state.mode = mode;
    const chat = mode === 'chat';
    els.tabChat.setAttribute('aria-selected', String(chat));
    els.tabCompletion.setAttribute('aria-selected', String(!chat));
    els.tabChat.tabIndex = chat ? 0 : -1;
    els.tabCompletion.tabIndex = chat ? -1 : 0;
    els.prompt.placeholder = chat
      ? 'Type a message. Enter to send, Shift+Enter for a new line.'
      : 'Text for the model to continue. Enter to send, Shift+Enter for a new line.';
    els.promptLabel.textContent = chat ? 'Message' : 'Prompt';
    els.newChat.textContent = chat ? 'New chat' : 'Clear';
    els.system.disabled = !chat;
    renderOutput();
    renderStats();
  }

  function updateBusyUi() {
    const busy = state.run !== null;
    els.send.disabled = busy;
    els.stop.disabled = !busy;
    els.tabChat.disabled = busy || !state.hasChatTemplate;
    els.tabCompletion.disabled = busy;
    document.body.classList.toggle('busy', busy);
    els.output.setAttribute('aria-busy', String(busy));
  }

  // ---------------------------------------------------------------- requests

  function onSend() {
    if (state.run) return;
    const text = els.prompt.value;
    if (!text.trim()) { els.prompt.focus(); return; }
    clearError();
    if (state.mode === 'chat') sendChat(text);
    else sendCompletion(text);
  }

  function sendChat(text) {
    const history = state.chat.map(({ role, content }) => ({ role, content }));
    const messages = [];
    const system = els.system.value.trim();
    if (system) messages.push({ role: 'system', content: system });
    messages.push(...history, { role: 'user', content: text });

    const userMsg = { role: 'user', content: text, note: '' };
    const reply = { role: 'assistant', content: '', note: '' };
    if (!state.chat.length) els.output.textContent = '';
    state.chat.push(userMsg, reply);
    els.output.append(renderChatMessage(userMsg), renderChatMessage(reply));
    scrollToBottom();
    els.prompt.value = '';

    const body = Object.assign({ messages }, buildParams());
    stream('/v1/chat/completions', body, 'chat', reply, 'content', (choice) => choice.delta && choice.delta.content, (outcome) => {
      if (!reply.content && outcome !== 'done') {
        // Nothing came back: take the turn out again so the history stays alternating,
        // and give the text back for a retry.
        state.chat = state.chat.filter((m) => m !== userMsg && m !== reply);
        if (!els.prompt.value) els.prompt.value = text;
        if (state.mode === 'chat') renderOutput();
      }
    });
  }

  function sendCompletion(text) {
    const target = { prompt: text, text: '', note: '' };
    state.completion = target;
    renderOutput();
    const body = Object.assign({ prompt: text }, buildParams());
    stream('/v1/completions', body, 'completion', target, 'text', (choice) => choice.text, () => {});
  }

  function stream(url, body, mode, target, key, pick, onEnd) {
    const controller = new AbortController();
    state.controller = controller;
    const stats = newStats();
    state.stats[mode] = stats;
    body.stream = true;
    body.stream_options = { include_usage: true };
    if (state.model) body.model = state.model;
    setStreamingClass(target, true);

    let sawDone = false;
    // The page shows what arrived once per frame: drawing every token (each scroll to the
    // bottom lays the whole reply out again) costs more the longer the reply, and at a few
    // hundred tokens a second a long reply fell behind the stream and held the page up.
    // The view's text is always a start of target[key], also when it was drawn anew.
    let frame = 0;
    const draw = () => {
      frame = 0;
      const node = target.view && target.view.text;
      if (node && node.length < target[key].length) node.appendData(target[key].slice(node.length));
      if (state.mode === mode) {
        if (state.stick) scrollToBottom();
        renderStats();
      }
    };
    const drawSoon = () => { if (!frame) frame = requestAnimationFrame(draw); };
    const append = (piece) => {
      if (typeof piece !== 'string' || piece === '') return;
      target[key] += piece;
      drawSoon();
    };

    const run = (async () => {
      let outcome = 'done';
      try {
        let res;
        try {
          res = await fetch(url, {
            method: 'POST',
            headers: Object.assign({ 'Content-Type': 'application/json', Accept: 'text/event-stream' }, authHeaders()),
            body: JSON.stringify(body),
            signal: controller.signal,
          });
        } catch (e) {
          if (controller.signal.aborted) throw e;
          throw new ApiError('Network error: could not reach the server (' + (e && e.message ? e.message : e) + ').');
        }
        if (!res.ok) throw await errorFromResponse(res);
        if (!res.body) throw new ApiError('The response has no body to stream.');
        const type = res.headers.get('Content-Type') || '';
        if (type.includes('application/json')) {
          // A server that ignored "stream": answer with the whole JSON at once.
          const j = await res.json();
          if (j.error) throw new ApiError('Server error: ' + (j.error.message || JSON.stringify(j.error)));
          const c = j.choices && j.choices[0];
          if (c) {
            append(c.message ? c.message.content : c.text);
            stats.finish = c.finish_reason || null;
          }
          stats.chunks = j.usage ? j.usage.completion_tokens : stats.chunks;
          if (j.usage) stats.usage = j.usage;
          if (j.timings) stats.timings = j.timings;
          sawDone = true;
        } else {
          for await (const data of sseData(res.body)) {
            if (data.trim() === '[DONE]') { sawDone = true; break; }
            let ev;
            try { ev = JSON.parse(data); } catch (_) {
              throw new ApiError('Malformed event from the server: ' + data.slice(0, 200));
            }
            if (ev.error) {
              const m = typeof ev.error === 'string' ? ev.error : (ev.error.message || JSON.stringify(ev.error));
              throw new ApiError('Server error during generation: ' + m);
            }
            if (Array.isArray(ev.choices)) {
              for (const choice of ev.choices) {
                if (choice.index !== undefined && choice.index !== 0) continue;
                const piece = pick(choice);
                if (typeof piece === 'string' && piece !== '') {
                  if (stats.tFirst === null) stats.tFirst = performance.now();
                  stats.chunks += 1;
                  append(piece);
                }
                if (choice.finish_reason) stats.finish = choice.finish_reason;
              }
            }
            if (ev.timings) stats.timings = ev.timings;
            if (ev.usage) stats.usage = ev.usage;
            drawSoon();
          }
          if (!sawDone && !stats.finish) {
            throw new ApiError('The connection closed before the response was complete.');
          }
        }
        stats.status = 'done';
      } catch (e) {
        if (controller.signal.aborted) {
          outcome = 'stopped';
          stats.status = 'stopped';
          setNote(target, 'Stopped.');
        } else {
          outcome = 'error';
          stats.status = 'error';
          const msg = e instanceof ApiError ? e.message : 'Error: ' + (e && e.message ? e.message : String(e));
          showError(msg);
          if (target[key]) setNote(target, 'Interrupted by an error.');
        }
      } finally {
        stats.tEnd = performance.now();
        cancelAnimationFrame(frame);
        draw();
        setStreamingClass(target, false);
        if (state.controller === controller) state.controller = null;
        onEnd(outcome);
      }
      return outcome;
    })();

    state.run = run;
    updateBusyUi();
    renderStats();
    clearInterval(state.tick);
    state.tick = setInterval(() => { if (state.mode === mode) renderStats(); }, 250);
    run.finally(() => {
      clearInterval(state.tick);
      state.tick = null;
      if (state.run === run) state.run = null;
      updateBusyUi();
      if (state.mode === mode) renderStats();
      if (document.activeElement === document.body || document.activeElement === els.stop) els.prompt.focus();
    });
  }

  function onStop() {
    if (state.controller) state.controller.abort();
  }

  async function onNew() {
    if (state.run) {
      onStop();
      try { await state.run; } catch (_) { /* ignore */ }
    }
    clearError();
    if (state.mode === 'chat') state.chat = [];
    else state.completion = null;
    state.stats[state.mode] = null;
    renderOutput();
    renderStats();
    els.prompt.focus();
  }

  // ---------------------------------------------------------------- settings

  function applyDefaults() {
    const d = state.defaults;
    els.maxTokens.value = d.max_tokens;
    els.temperature.value = d.temperature;
    els.topP.value = d.top_p;
    els.seed.value = d.seed;
    els.presence.value = d.presence_penalty;
    els.frequency.value = d.frequency_penalty;
    els.stopStrings.value = d.stop;
  }

  async function loadProps() {
    document.body.dataset.ready = '';
    try {
      const res = await fetch('/props', { headers: authHeaders() });
      if (!res.ok) throw await errorFromResponse(res);
      const props = await res.json();
      state.propsLoaded = true;
      state.model = typeof props.model === 'string' ? props.model : null;
      els.modelName.textContent = state.model || 'unknown';
      els.modelName.title = state.model || '';
      els.modelCtx.textContent = Number.isFinite(props.n_ctx) ? props.n_ctx.toLocaleString('en-US') + ' tokens' : '–';
      els.modelSlots.textContent = Number.isFinite(props.total_slots) ? String(props.total_slots) : '–';
      if (state.model) document.title = 'Loom · ' + state.model;

      const g = props.default_generation_settings || {};
      const d = state.defaults;
      if (Number.isInteger(g.max_tokens) && g.max_tokens > 0) d.max_tokens = g.max_tokens;
      if (Number.isFinite(g.temperature)) d.temperature = g.temperature;
      if (Number.isFinite(g.top_p)) d.top_p = g.top_p;
      if (Number.isFinite(g.presence_penalty)) d.presence_penalty = g.presence_penalty;
      if (Number.isFinite(g.frequency_penalty)) d.frequency_penalty = g.frequency_penalty;
      if (!state.touched) applyDefaults();

      state.hasChatTemplate = props.has_chat_template !== false;
      if (!state.hasChatTemplate) {
        els.tabChat.title = 'This model has no chat template; use the Completion view.';
        els.tabNote.textContent = 'Chat is unavailable: this model has no chat template.';
        els.tabNote.hidden = false;
        if (state.mode === 'chat') setMode('completion');
      } else {
        els.tabChat.title = '';
        els.tabNote.hidden = true;
      }
      updateBusyUi();
      document.body.dataset.ready = 'ok';
    } catch (e) {
      els.modelName.textContent = 'unavailable';
      const msg = e instanceof ApiError ? e.message : 'Network error: could not reach the server (' + (e && e.message ? e.message : e) + ').';
      const hint = e instanceof ApiError && e.status === 401 ? ' Enter the API key in the settings.' : '';
      showError('Could not load the model info from /props. ' + msg + hint);
      if (hint) { els.settings.open = true; els.apiKey.focus(); }
      document.body.dataset.ready = 'error';
    }
  }

  // ---------------------------------------------------------------- wiring

  function init() {
    els.apiKey.value = storageGet(API_KEY_STORAGE) || '';
    applyDefaults();
    if (window.matchMedia && window.matchMedia('(min-width: 861px)').matches) els.settings.open = true;

    els.settingsForm.addEventListener('submit', (e) => e.preventDefault());
    els.composer.addEventListener('submit', (e) => { e.preventDefault(); onSend(); });
    els.settingsForm.addEventListener('input', (e) => {
      if (e.target !== els.apiKey) state.touched = true;
    });
    els.apiKey.addEventListener('input', () => storageSet(API_KEY_STORAGE, els.apiKey.value.trim()));
    els.apiKey.addEventListener('change', () => { if (!state.propsLoaded) { clearError(); loadProps(); } });
    els.resetSettings.addEventListener('click', () => { state.touched = false; applyDefaults(); });

    els.send.addEventListener('click', onSend);
    els.stop.addEventListener('click', onStop);
    els.newChat.addEventListener('click', onNew);
    // Follow the stream unless the user scrolled up; stay at the bottom when the output box
    // shrinks (the stats line wraps, the error box appears).
    els.output.addEventListener('scroll', () => { state.stick = nearBottom(); }, { passive: true });
    if (window.ResizeObserver) new ResizeObserver(() => { if (state.stick) scrollToBottom(); }).observe(els.output);
    els.prompt.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.altKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        onSend();
      } else if (e.key === 'Escape' && state.run) {
        e.preventDefault();
        onStop();
      }
    });

    els.tabChat.addEventListener('click', () => { if (!state.run) setMode('chat'); });
    els.tabCompletion.addEventListener('click', () => { if (!state.run) setMode('completion'); });
    for (const tab of [els.tabChat, els.tabCompletion]) {
      tab.addEventListener('keydown', (e) => {
        if (e.key !== 'ArrowLeft' && e.key !== 'ArrowRight') return;
        const other = tab === els.tabChat ? els.tabCompletion : els.tabChat;
        if (other.disabled) return;
        e.preventDefault();
        other.focus();
        other.click();
      });
    }

    setMode('chat');
    updateBusyUi();
    loadProps();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
