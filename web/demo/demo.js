// The demo page: one engine at a time from the npm package (../dist/), a streaming chat whose
// drafted-and-accepted tokens are highlighted, live statistics and a stop button.
//
// The visitor's own model: pair "custom" takes a GGUF file (picker or drag-and-drop; two
// dropped files are the model and, the smaller, its drafter) or a URL, checked here before
// loading (GGUF magic, the browser's 4 GiB WebAssembly memory) and explained when the engine
// refuses it (not a model, unsupported family, drafter with another tokenizer, too large).
//
// Query parameters preset the controls (the browser tests use them): pair, method,
// max_tokens, chat=0|1, adaptive=0|1, json=0|1 (JSON answer: response_format json_object),
// contrastive=0|1 (contrastive decoding with the drafter as the amateur),
// prompt, ctx (KV cache tokens), models (base URL of the model files), model_url / draft_url
// (pair "custom").
//
// Server mode: served by `tandem serve` (its page carries <meta name="tandem-server">), or
// given `?server=URL` (and `&key=API_KEY`), the page talks to that server's OpenAI API
// (`connect`) instead of loading the wasm engine: the model is the server's, on its GPU.
import { checkWebGPU, connect, createEngine, deleteModelInCache } from '../dist/index.js';

const FILES = {
  smollm2: 'SmolLM2-135M-Instruct.Q4_1.gguf',
  'qwen-0.5b': 'qwen2.5-coder-0.5b-instruct-q4_k_m.gguf',
  'qwen-1.5b': 'qwen2.5-coder-1.5b-instruct-q4_k_m.gguf',
  'gemma-3-270m': 'gemma-3-270m-q4_k_m.gguf',
};
const PAIRS = {
  smollm2: { target: 'smollm2' },
  'qwen-0.5b': { target: 'qwen-0.5b' },
  'qwen-1.5b': { target: 'qwen-1.5b' },
  'qwen-1.5b+0.5b': { target: 'qwen-1.5b', draft: 'qwen-0.5b' },
  // A base model without a chat template: the prompt is continued as raw text.
  'gemma-3-270m': { target: 'gemma-3-270m', base: true },
  custom: { custom: true },
};
/** wasm32 addresses at most 4 GiB, and the whole model file lives in wasm memory. */
const MAX_MODEL_BYTES = 4 * 1024 ** 3;

const params = new URLSearchParams(location.search);
const SERVER = document.querySelector('meta[name="tandem-server"]')?.content ?? params.get('server');
const MODELS = new URL(params.get('models') ?? '../models/', location.href).href;
const CTX = Number(params.get('ctx')) || 2048;

const $ = (id) => document.getElementById(id);
const ui = {
  alert: $('alert'),
  pair: $('pair'),
  method: $('method'),
  maxTokens: $('max-tokens'),
  chatTemplate: $('chat-template'),
  adaptive: $('adaptive'),
  jsonMode: $('json-mode'),
  jsonExample: $('json-example'),
  contrastive: $('contrastive'),
  load: $('load'),
  progress: $('progress'),
  chat: $('chat'),
  composer: $('composer'),
  prompt: $('prompt'),
  send: $('send'),
  stop: $('stop'),
  clear: $('clear'),
  forget: $('forget'),
  serverModel: $('server-model'),
  tps: $('stat-tps'),
  tau: $('stat-tau'),
  acc: $('stat-acc'),
  speedup: $('stat-speedup'),
  adapter: $('stat-adapter'),
  custom: $('custom'),
  drop: $('drop'),
  modelFile: $('model-file'),
  modelUrl: $('model-url'),
  draftFile: $('draft-file'),
  draftUrl: $('draft-url'),
  chosen: $('custom-chosen'),
};

/** The visitor's own model and drafter: a File, a URL string, or null (latest choice wins). */
const custom = { target: null, draft: null };

let engine = null;
/** The adapter as the page sees it (the browser may hide its name from the worker's wgpu). */
let adapterName = 'WebGPU';
let engineKey = null;
let history = [];
/** Decode tokens/s of the last plain run, per model pair. */
const plainSpeed = new Map();

function setState(state) {
  document.body.dataset.state = state;
  const busy = state === 'loading' || state === 'generating';
  const off = state === 'unsupported';
  ui.load.disabled = busy || off;
  ui.send.disabled = busy || off;
  ui.pair.disabled = busy || off;
  for (const input of [ui.modelFile, ui.modelUrl, ui.draftFile, ui.draftUrl]) input.disabled = busy || off;
  ui.stop.disabled = state !== 'generating';
}

function showAlert(message, kind = 'error') {
  ui.alert.textContent = message;
  ui.alert.dataset.kind = kind;
  ui.alert.hidden = false;
}

function explain(e) {
  if (e?.kind === 'no-webgpu' || e?.kind === 'no-adapter' || e?.kind === 'page') return e.message;
  if (e?.kind === 'gpu') {
    return `This model does not fit this browser's GPU (or the GPU failed): ${e.message}. Try a smaller model.`;
  }
  if (e?.kind === 'format') {
    return `This file is not a model tandem can read (${e.message}). Choose a GGUF model file (.gguf).`;
  }
  if (e?.kind === 'unsupported') return `tandem cannot run this model here (${e.message}).`;
  if (e?.kind === 'mismatch') {
    return `The drafter does not go with this model: ${e.message}. A drafter must share the model's tokenizer.`;
  }
  return e?.message ?? String(e);
}

/** An error of the page's own checks, shown as it is. */
function pageError(message) {
  return Object.assign(new Error(message), { kind: 'page' });
}

function describe(source) {
  if (!source) return null;
  if (typeof source === 'string') return source;
  return `${source.name} (${(source.size / 1048576).toFixed(1)} MB, from this computer)`;
}

function showChosen() {
  const t = describe(custom.target);
  const d = describe(custom.draft);
  ui.chosen.textContent = t ? `Model: ${t}${d ? `; drafter: ${d}` : ''}.` : 'No model chosen yet.';
}

/** Check a chosen model before any byte goes to the worker: a URL, or a GGUF file that fits. */
async function checkSource(source, role) {
  const what = role === 'draft' ? 'drafter' : 'model';
  if (typeof source === 'string') {
    let url;
    try {
      url = new URL(source, location.href);
    } catch {
      throw pageError(`The ${what} URL "${source}" is not a URL.`);
    }
    if (!['http:', 'https:'].includes(url.protocol)) {
      throw pageError(`The ${what} URL must start with https:// or http:// (got "${source}").`);
    }
    return;
  }
  if (source.size > MAX_MODEL_BYTES) {
    throw pageError(
      `The ${what} file ${source.name} is ${(source.size / 1024 ** 3).toFixed(2)} GiB: too large for the ` +
        'browser, which holds a model in WebAssembly memory (at most 4 GiB, less in some browsers). ' +
        'Choose a smaller or more strongly quantized model.',
    );
  }
  const magic = new Uint8Array(await source.slice(0, 4).arrayBuffer());
  if (String.fromCharCode(...magic) !== 'GGUF') {
    throw pageError(
      `The ${what} file ${source.name} is not a GGUF model file (a GGUF file starts with the bytes "GGUF"). ` +
        'Choose a .gguf file, such as a llama.cpp quantized model.',
    );
  }
}

/** The engine's sources for the chosen pair: URLs of the server's files, or the visitor's. */
async function sources(key) {
  const pair = PAIRS[key];
  if (!pair.custom) {
    return { target: MODELS + FILES[pair.target], draft: pair.draft ? MODELS + FILES[pair.draft] : null };
  }
  if (!custom.target) throw pageError('Choose a GGUF model file, drop one on the page, or give its URL.');
  await checkSource(custom.target, 'target');
  if (custom.draft) await checkSource(custom.draft, 'draft');
  return { target: custom.target, draft: custom.draft };
}

/** Identifies the loaded model(s), so that a new choice loads anew. */
function sourceKey(key) {
  if (!PAIRS[key].custom) return key;
  const id = (s) => (s == null ? '' : typeof s === 'string' ? s : `${s.name}:${s.size}:${s.lastModified}`);
  return `custom|${id(custom.target)}|${id(custom.draft)}`;
}

// Once an engine is loaded the method list is its registry (`engine.methods`); before, the
// page's static options stand in for it.
function listMethods(methods) {
  const chosen = ui.method.value;
  ui.method.replaceChildren(...methods.map((m) => {
    const o = document.createElement('option');
    o.value = m.name;
    o.title = m.about;
    o.dataset.needsDrafter = m.needs_drafter_model ? '1' : '';
    o.textContent = m.about.split(':')[0].split('(')[0].trim();
    return o;
  }));
  ui.method.value = methods.some((m) => m.name === chosen) ? chosen : 'plain';
  updateMethods();
}

function updateMethods() {
  const pair = SERVER ? { server: true } : PAIRS[ui.pair.value];
  ui.custom.hidden = !pair.custom;
  const hasDraft = pair.server ? Boolean(engine?.hasDrafter) : pair.custom ? custom.draft != null : Boolean(pair.draft);
  for (const o of ui.method.options) {
    const needs = o.dataset.needsDrafter === '1' || o.value === 'sps';
    if (!needs) continue;
    o.disabled = !hasDraft;
    if (!o.dataset.label) o.dataset.label = o.textContent;
    const note = pair.server
      ? hasDraft
        ? 'the server\'s drafter'
        : 'the server has no drafter'
      : pair.custom
      ? hasDraft
        ? 'your drafter'
        : 'choose a drafter'
      : hasDraft
        ? '0.5B drafts for 1.5B'
        : 'needs a drafter pair';
    o.textContent = `${o.dataset.label} (${note})`;
  }
  if (ui.method.selectedOptions[0]?.disabled) ui.method.value = 'plain';
  const loaded = engine && (pair.server || engineKey === sourceKey(ui.pair.value));
  chatSupport(pair.base || (loaded && engine.hasChatTemplate === false) ? false : true);
  // Contrastive decoding needs the drafter as its amateur.
  ui.contrastive.disabled = !hasDraft;
  if (!hasDraft) ui.contrastive.checked = false;
}

/** A base model (no chat template in its file) continues raw text: the chat template
 * checkbox is off and disabled while it is chosen, and back on when a chat model is. */
function chatSupport(ok) {
  if (ok === !ui.chatTemplate.disabled) return;
  ui.chatTemplate.disabled = !ok;
  ui.chatTemplate.checked = ok;
  ui.chatTemplate.parentElement.title = ok ? '' : 'This model has no chat template (a base model): the prompt is continued as raw text';
}

function progressRow(file) {
  let row = ui.progress.querySelector(`[data-file="${file}"]`);
  if (!row) {
    row = document.createElement('div');
    row.className = 'file';
    row.dataset.file = file;
    row.innerHTML = '<span class="name"></span><progress max="1" value="0"></progress><span class="bytes"></span>';
    ui.progress.append(row);
  }
  return row;
}

function onProgress(r) {
  if (!r.file) return;
  const row = progressRow(r.file);
  const mb = (n) => (n / 1048576).toFixed(1);
  row.querySelector('.name').textContent = `${r.file === 'draft' ? 'drafter' : 'model'}: ${r.name}`;
  if (r.phase === 'download') {
    row.dataset.fromCache = String(r.fromCache);
    row.querySelector('progress').value = r.total ? r.loaded / r.total : 0;
    row.querySelector('.bytes').textContent =
      `${mb(r.loaded)}${r.total ? ` / ${mb(r.total)}` : ''} MB${r.fromCache ? ' (from cache)' : ''}`;
  } else if (r.phase === 'gpu') {
    row.querySelector('progress').value = 1;
    row.querySelector('.bytes').textContent += ' — on the GPU';
    row.dataset.done = 'true';
  } else if (r.phase === 'warning') {
    row.querySelector('.bytes').textContent += ` (${r.text})`;
  }
}

/** Server mode: the engine is the server's; connecting replaces loading. */
async function connectServer() {
  if (engine) return engine;
  setState('loading');
  try {
    engine = await connect(new URL(SERVER, location.href).href, { apiKey: params.get('key') ?? undefined });
  } catch (e) {
    setState('error');
    showAlert(`The tandem server does not answer: ${explain(e)}`);
    throw e;
  }
  engineKey = `server|${engine.model}`;
  listMethods(engine.methods);
  const a = engine.adapter ?? {};
  ui.adapter.textContent = `${a.name ?? 'server GPU'} (${a.backend ?? 'native'}, on the server)`;
  ui.serverModel.textContent = `Model: ${engine.model} on the tandem server${engine.hasDrafter ? ', with a drafter' : ''}`;
  setState('ready');
  return engine;
}

async function ensureEngine() {
  if (SERVER) return connectServer();
  const key = sourceKey(ui.pair.value);
  if (engine && engineKey === key) return engine;
  if (engine) {
    await engine.unload();
    engine = null;
    engineKey = null;
  }
  ui.progress.replaceChildren();
  ui.alert.hidden = true;
  setState('loading');
  try {
    const { target, draft } = await sources(ui.pair.value);
    engine = await createEngine({
      target,
      draft,
      onProgress,
      contextLength: CTX,
      maxDraft: 6,
    });
    listMethods(engine.methods);
  } catch (e) {
    setState('error');
    showAlert(explain(e));
    throw e;
  }
  engineKey = key;
  updateMethods();
  const a = engine.adapter;
  ui.adapter.textContent = `${a.name || adapterName} (${a.shader_f16 ? 'f16' : 'f32'} kernels${a.subgroups ? ', subgroups' : ''})`;
  setState('ready');
  return engine;
}

function message(role, text) {
  const div = document.createElement('div');
  div.className = `msg ${role}`;
  const body = document.createElement('div');
  body.className = 'text';
  body.textContent = text;
  div.append(body);
  ui.chat.append(div);
  div.scrollIntoView({ block: 'end' });
  return body;
}

function tokenSpan(parent, kind, text, ids) {
  const span = document.createElement('span');
  span.className = `tok ${kind}`;
  span.dataset.ids = ids.join(' ');
  span.textContent = text;
  parent.append(span);
}

function fmt(x, digits = 2) {
  return x == null || !Number.isFinite(x) ? '–' : x.toFixed(digits);
}

function showSpeedup(method, tps) {
  const base = plainSpeed.get(engineKey);
  if (method === 'plain') ui.speedup.textContent = 'this is the plain run';
  else if (!base) ui.speedup.textContent = 'run plain first';
  else ui.speedup.textContent = tps ? `${(tps / base).toFixed(2)}×` : '…';
}

/** Whether a JSON-mode answer parses (one cut at max tokens does not). */
function validJson(text) {
  try {
    JSON.parse(text);
    return 'valid JSON';
  } catch {
    return 'not complete JSON (cut at max tokens?)';
  }
}

async function send(text) {
  const eng = await ensureEngine();
  const method = ui.method.value;
  const chat = ui.chatTemplate.checked;
  const request = {
    stream: true,
    max_tokens: Number(ui.maxTokens.value) || 128,
    temperature: 0,
    method,
    adaptive: ui.adaptive.checked,
  };
  const json = ui.jsonMode.checked;
  // JSON mode: the output is one JSON object (constrained decoding, exact with every method).
  if (json) request.response_format = { type: 'json_object' };
  // Contrastive decoding with the drafter as the amateur (α 0.1, β 0.5).
  const contrastive = ui.contrastive.checked && !ui.contrastive.disabled;
  if (contrastive) request.contrastive = { alpha: 0.1, beta: 0.5 };
  message('user', text);
  const out = message('assistant', '');
  out.parentElement.dataset.method = method;
  setState('generating');
  ui.tps.textContent = ui.tau.textContent = ui.acc.textContent = '…';
  let proposed = 0;
  let accepted = 0;
  let answer = '';
  try {
    const stream = chat
      ? await eng.chat.completions.create({ ...request, messages: [...history, { role: 'user', content: text }] })
      : await eng.completions.create({ ...request, prompt: text });
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      const content = (chat ? choice.delta.content : choice.text) ?? '';
      answer += content;
      const t = chunk.tandem;
      if (!choice.finish_reason) {
        const drafted = t.drafted_text;
        if (t.drafted > 0) tokenSpan(out, 'drafted', drafted, t.token_ids.slice(0, t.drafted));
        tokenSpan(out, 'target', content.slice(drafted.length), t.token_ids.slice(t.drafted));
        proposed += t.proposed;
        accepted += t.drafted;
        // The first step carries the prefill: the rate needs a second step.
        ui.tps.textContent = t.tokens_per_s == null ? '…' : fmt(t.tokens_per_s);
        ui.tau.textContent = fmt(t.tau);
        ui.acc.textContent = proposed ? `${((100 * accepted) / proposed).toFixed(0)}%` : '–';
        showSpeedup(method, t.tokens_per_s);
      } else {
        if (content) tokenSpan(out, 'target', content, []);
        const s = t.stats;
        out.parentElement.dataset.done = choice.finish_reason;
        ui.tps.textContent = fmt(s.decode_tokens_per_s);
        ui.tau.textContent = fmt(s.mean_accepted_tokens);
        ui.acc.textContent = s.drafted ? `${(100 * s.acceptance_rate).toFixed(0)}%` : '–';
        if (method === 'plain' && choice.finish_reason !== 'abort') plainSpeed.set(engineKey, s.decode_tokens_per_s);
        showSpeedup(method, s.decode_tokens_per_s);
        const note = document.createElement('div');
        note.className = 'note';
        const prefilled = s.prompt_tokens - s.reused_prompt_tokens;
        note.textContent =
          `${method}: ${s.generated_tokens} tokens in ${s.target_passes} passes (τ ${fmt(s.mean_accepted_tokens)}), ` +
          `${fmt(s.decode_tokens_per_s)} tok/s; prompt ${s.prompt_tokens} tokens (${prefilled} prefilled in ` +
          `${fmt(s.prefill_seconds, 1)} s)${choice.finish_reason === 'abort' ? '; stopped' : ''}` +
          (json ? `; JSON mode: ${s.forced} tokens forced by the grammar, ${validJson(answer)}` : '') +
          (contrastive ? '; contrastive (α 0.1, β 0.5)' : '');
        out.parentElement.append(note);
      }
      out.parentElement.scrollIntoView({ block: 'end' });
    }
    if (chat) history.push({ role: 'user', content: text }, { role: 'assistant', content: answer });
    setState('ready');
  } catch (e) {
    setState('ready');
    showAlert(explain(e));
  }
}

ui.pair.addEventListener('change', updateMethods);
function choose(role, source) {
  custom[role] = source;
  showChosen();
  updateMethods();
}
ui.modelFile.addEventListener('change', () => choose('target', ui.modelFile.files[0] ?? null));
ui.draftFile.addEventListener('change', () => choose('draft', ui.draftFile.files[0] ?? null));
ui.modelUrl.addEventListener('change', () => choose('target', ui.modelUrl.value.trim() || null));
ui.draftUrl.addEventListener('change', () => choose('draft', ui.draftUrl.value.trim() || null));
// Drag-and-drop anywhere on the page: a dropped file must not replace the page.
document.addEventListener('dragover', (e) => {
  if (![...(e.dataTransfer?.types ?? [])].includes('Files')) return;
  e.preventDefault();
  document.body.classList.add('dragging');
});
document.addEventListener('dragleave', (e) => {
  if (e.relatedTarget == null) document.body.classList.remove('dragging');
});
document.addEventListener('drop', (e) => {
  const files = [...(e.dataTransfer?.files ?? [])];
  if (!files.length) return;
  e.preventDefault();
  document.body.classList.remove('dragging');
  if (['loading', 'generating'].includes(document.body.dataset.state)) return;
  files.sort((a, b) => b.size - a.size);
  ui.pair.value = 'custom';
  custom.target = files[0];
  if (files.length > 1) custom.draft = files[1];
  showChosen();
  updateMethods();
});
ui.load.addEventListener('click', () => ensureEngine().catch(() => null));
ui.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = ui.prompt.value.trim();
  if (text && document.body.dataset.state !== 'generating') send(text);
});
ui.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) {
    e.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.stop.addEventListener('click', () => engine?.interruptGenerate());
ui.clear.addEventListener('click', async () => {
  history = [];
  ui.chat.replaceChildren();
  if (engine && document.body.dataset.state !== 'generating') await engine.resetChat();
});
ui.forget.addEventListener('click', async () => {
  let n = 0;
  for (const file of Object.values(FILES)) if (await deleteModelInCache(MODELS + file)) n++;
  showAlert(`Deleted ${n} stored model file${n === 1 ? '' : 's'} from the Cache API.`, 'info');
});

// Presets from the query string.
if (params.has('pair') && PAIRS[params.get('pair')]) ui.pair.value = params.get('pair');
if (params.has('model_url')) ui.modelUrl.value = custom.target = params.get('model_url');
if (params.has('draft_url')) ui.draftUrl.value = custom.draft = params.get('draft_url');
showChosen();
updateMethods();
if (params.has('method')) ui.method.value = params.get('method');
if (params.has('max_tokens')) ui.maxTokens.value = params.get('max_tokens');
if (params.has('chat')) ui.chatTemplate.checked = params.get('chat') !== '0';
if (params.has('adaptive')) ui.adaptive.checked = params.get('adaptive') !== '0';
if (params.has('json')) ui.jsonMode.checked = params.get('json') !== '0';
if (params.has('contrastive')) ui.contrastive.checked = params.get('contrastive') !== '0';
if (params.has('prompt')) ui.prompt.value = params.get('prompt');
ui.jsonExample.addEventListener('click', () => {
  ui.jsonMode.checked = true;
  ui.chatTemplate.checked = !ui.chatTemplate.disabled;
  ui.prompt.value = 'Describe a fictional person as JSON with the keys "name", "age" and "city".';
  ui.prompt.focus();
});

// Which model files the server has (the demo server lists them; elsewhere this is skipped).
fetch(`${MODELS}index.json`)
  .then((r) => (r.ok ? r.json() : null))
  .then((list) => {
    if (!Array.isArray(list)) return;
    const have = new Set(list.map((m) => m.name));
    for (const opt of ui.pair.options) {
      const p = PAIRS[opt.value];
      if (p.custom) continue;
      const missing = [p.target, p.draft].filter((m) => m && !have.has(FILES[m]));
      if (missing.length) {
        opt.disabled = true;
        opt.textContent += ' — not on this server (tandem fetch)';
      }
    }
  })
  .catch(() => null);

if (SERVER) {
  // The server runs the model: no WebGPU needed here, no model to choose.
  ui.pair.parentElement.hidden = true;
  ui.forget.hidden = true;
  ui.serverModel.hidden = false;
  ui.load.textContent = 'Connect';
  connectServer().catch(() => null);
} else {
  const support = await checkWebGPU();
  if (!support.ok) {
    setState('unsupported');
    showAlert(support.message, support.kind);
  } else {
    setState('idle');
    const info = support.adapter;
    adapterName = info.description || [info.vendor, info.architecture].filter(Boolean).join(' ') || 'WebGPU';
    ui.adapter.textContent = adapterName;
  }
}
