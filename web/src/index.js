// tandem in the browser: an OpenAI-shaped engine (in the spirit of WebLLM) whose work runs in a
// module Web Worker on WebGPU. Types: index.d.ts.
import { CACHE_NAME, absoluteUrl, deleteModelInCache, hasModelInCache, modelName } from './models.js';

export { CACHE_NAME, deleteModelInCache, hasModelInCache };
/** An engine on a tandem server (`tandem serve`) with this engine's interface: server.js. */
export { connect } from './server.js';

/** An error from tandem: `message` is tandem's own, `kind` names what went wrong. */
export class TandemError extends Error {
  constructor(message, kind = 'error') {
    super(message);
    this.name = 'TandemError';
    this.kind = kind;
  }
}

const NO_WEBGPU =
  'This browser has no WebGPU (navigator.gpu is missing). tandem needs it: use a recent ' +
  'Chrome or Edge (113+), Safari 26+, or Firefox 141+ on Windows. Chrome on Linux needs ' +
  'chrome://flags/#enable-unsafe-webgpu (or --enable-unsafe-webgpu).';
const NO_ADAPTER =
  'WebGPU is present but offers no GPU adapter: the GPU or driver may be blocklisted, or ' +
  'hardware acceleration is off in the browser settings.';

/**
 * Whether this browser can run tandem: `{ ok: true, adapter }` with the adapter's limits, or
 * `{ ok: false, kind, message }` with a message to show the user.
 */
export async function checkWebGPU() {
  const gpu = globalThis.navigator?.gpu;
  if (!gpu) return { ok: false, kind: 'no-webgpu', message: NO_WEBGPU };
  let adapter = null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch {
    adapter = null;
  }
  if (!adapter) return { ok: false, kind: 'no-adapter', message: NO_ADAPTER };
  const info = adapter.info ?? {};
  return {
    ok: true,
    adapter: {
      vendor: info.vendor ?? '',
      architecture: info.architecture ?? '',
      description: info.description ?? '',
      features: [...adapter.features],
      maxBufferSize: adapter.limits.maxBufferSize,
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    },
  };
}

const FINISH = { eos: 'stop', stop: 'stop', length: 'length', cancelled: 'abort' };

function requestId(prefix) {
  const rand = globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random()}`;
  return `${prefix}-${rand}`;
}

/** A push-driven async iterable. */
class Channel {
  #items = [];
  #wake = null;
  #done = false;
  #error = null;
  push(item) {
    this.#items.push(item);
    this.#notify();
  }
  end(error = null) {
    this.#done = true;
    this.#error = error;
    this.#notify();
  }
  #notify() {
    this.#wake?.();
    this.#wake = null;
  }
  async *drain() {
    for (;;) {
      if (this.#items.length) {
        yield this.#items.shift();
      } else if (this.#done) {
        if (this.#error) throw this.#error;
        return;
      } else {
        await new Promise((resolve) => (this.#wake = resolve));
      }
    }
  }
}

/** Live figures of a streaming generation, from the steps seen so far. */
class LiveStats {
  tokens = 0;
  steps = 0;
  draftedAccepted = 0;
  proposed = 0;
  #firstTokens = 0;
  #firstElapsed = 0;
  add(step) {
    this.tokens += step.ids.length;
    this.steps += 1;
    this.draftedAccepted += step.drafted;
    this.proposed += step.proposed;
    if (this.steps === 1) {
      this.#firstTokens = this.tokens;
      this.#firstElapsed = step.elapsed;
    }
    const decodeSeconds = step.elapsed - this.#firstElapsed;
    return {
      token_ids: Array.from(step.ids),
      drafted: step.drafted,
      drafted_text: step.draftedText,
      proposed: step.proposed,
      tokens: this.tokens,
      steps: this.steps,
      drafted_accepted: this.draftedAccepted,
      acceptance: this.proposed ? this.draftedAccepted / this.proposed : null,
      tau: this.tokens / this.steps,
      // The first step carries the prefill; the rate counts the steps after it.
      tokens_per_s: decodeSeconds > 0 ? (this.tokens - this.#firstTokens) / decodeSeconds : null,
      elapsed_s: step.elapsed,
    };
  }
}

function usageOf(output) {
  const s = output.stats;
  return {
    prompt_tokens: s.prompt_tokens,
    completion_tokens: s.generated_tokens,
    total_tokens: s.prompt_tokens + s.generated_tokens,
    extra: s,
  };
}

/** The engine living in a Web Worker. Create with {@link createEngine}. */
export class TandemEngine {
  #worker;
  #pending = new Map();
  #streams = new Map();
  #nextId = 1;
  #onProgress;
  #busy = false;
  /** OpenAI-style chat completions. */
  chat = { completions: { create: (request) => this.#create('chat', request) } };
  /** OpenAI-style (legacy) text completions: `prompt` continues as raw text. */
  completions = { create: (request) => this.#create('completion', request) };
  /** The target model's file name. */
  model = '';
  /** The drafter model's file name, when one is loaded. */
  drafter = null;
  /** Whether the target can format a chat: a template in its file or a ChatML vocabulary
   * (false for a base model such as Gemma 3 270M: `chat.completions` fails with kind
   * `no_chat_template`, `completions` continues raw text). */
  hasChatTemplate = true;
  /** The method used when a request names none: 'plain', 'lookup' or 'sps'. */
  defaultMethod = 'plain';
  /** The engine's method registry: `[{ name, about, needs_drafter_model, params }]`. */
  methods = [];
  /** The WebGPU adapter tandem runs on (name, features, limits). */
  adapter = null;
  /** Statistics of the last finished generation. */
  lastStats = null;

  constructor(worker, onProgress) {
    this.#worker = worker;
    this.#onProgress = onProgress;
    worker.onmessage = (e) => this.#onMessage(e.data);
    worker.onerror = (e) => {
      // An ErrorEvent carries the script error; a plain Event means the module worker never
      // started (worker.js or tandem.js failed to load or link).
      const where = e.filename ? ` (${e.filename}:${e.lineno}:${e.colno})` : '';
      const text = e.message
        ? `the engine worker failed: ${e.message}${where}`
        : 'the engine worker could not start: its script (worker.js, tandem.js) failed to load or link; the browser console has the details';
      this.#fail(new TandemError(text, 'worker'));
    };
  }

  #fail(error) {
    for (const { reject } of this.#pending.values()) reject(error);
    this.#pending.clear();
    for (const channel of this.#streams.values()) channel.end(error);
    this.#streams.clear();
  }

  #onMessage(msg) {
    if (msg.type === 'progress') {
      this.#onProgress?.(progressReport(msg.report));
    } else if (msg.type === 'step') {
      this.#streams.get(msg.id)?.push(msg);
    } else if (msg.type === 'result' || msg.type === 'error') {
      const p = this.#pending.get(msg.id);
      if (!p) return;
      this.#pending.delete(msg.id);
      if (msg.type === 'result') p.resolve(msg.value);
      else p.reject(new TandemError(msg.message, msg.kind));
    }
  }

  #call(msg) {
    const id = this.#nextId++;
    return {
      id,
      done: new Promise((resolve, reject) => {
        this.#pending.set(id, { resolve, reject });
        this.#worker.postMessage({ ...msg, id });
      }),
    };
  }

  /** @internal */
  async load({ target, draft, contextLength, maxDraft }) {
    const { adapter, drafter, methods, chatTemplate } = await this.#call({ type: 'load', target, draft, contextLength, maxDraft }).done;
    this.methods = methods;
    this.hasChatTemplate = chatTemplate;
    this.adapter = adapter;
    this.drafter = drafter;
    this.model = modelName(target);
  }

  #options(request) {
    const opts = {
      max_tokens: request.max_tokens ?? request.max_completion_tokens ?? undefined,
      stop: request.stop == null ? [] : [].concat(request.stop),
      method: request.method ?? this.defaultMethod,
      draft_len: request.draft_len ?? undefined,
      adaptive: request.adaptive ?? undefined,
      // temperature > 0 samples (lossless speculative sampling); 0 or absent is greedy.
      temperature: request.temperature ?? undefined,
      top_k: request.top_k ?? undefined,
      top_p: request.top_p ?? undefined,
      seed: request.seed ?? undefined,
      // Constrained decoding: the output matches a JSON schema, a Lark grammar or a regex.
      response_format: request.response_format ?? undefined,
      grammar: request.grammar ?? undefined,
      regex: request.regex ?? undefined,
      forced_drafts: request.forced_drafts ?? undefined,
      ignore_eos: request.ignore_eos ?? undefined,
      // Contrastive decoding with the drafter model as the amateur: { alpha, beta }.
      contrastive: request.contrastive ?? undefined,
    };
    if (request.n != null && request.n !== 1) throw new TandemError('n > 1 is not supported', 'unsupported');
    return opts;
  }

  async #create(kind, request = {}) {
    if (this.#busy) {
      throw new TandemError('a generation is already running (interruptGenerate() stops it)', 'invalid');
    }
    const input = kind === 'chat' ? request.messages : request.prompt;
    if (kind === 'chat' && !Array.isArray(input)) throw new TandemError('messages must be an array', 'invalid');
    if (kind === 'completion' && typeof input !== 'string') throw new TandemError('prompt must be a string', 'invalid');
    const messages =
      kind === 'chat' ? input.map((m) => ({ role: m.role, content: contentText(m.content) })) : undefined;
    const options = this.#options(request);
    this.#busy = true;
    const channel = new Channel();
    const call = this.#call({ type: 'generate', kind, input: messages ?? input, options });
    this.#streams.set(call.id, channel);
    const finished = call.done.finally(() => {
      this.#busy = false;
      this.#streams.delete(call.id);
    });
    finished.then(
      () => channel.end(),
      (e) => channel.end(e),
    );
    const meta = { id: requestId(kind === 'chat' ? 'chatcmpl' : 'cmpl'), created: Math.floor(Date.now() / 1000), model: this.model };
    if (request.stream) return this.#stream(kind, meta, channel, finished);
    // Not streaming: the steps still arrive and are dropped.
    for await (const _ of channel.drain());
    const { output } = await finished;
    return this.#completion(kind, meta, output);
  }

  async *#stream(kind, meta, channel, finished) {
    const live = new LiveStats();
    let text = '';
    let ended = false;
    try {
      for await (const step of channel.drain()) {
        const tandem = live.add(step);
        text += step.text;
        yield this.#chunk(kind, meta, step.text, null, { tandem, first: live.steps === 1 });
      }
      const { output } = await finished;
      ended = true;
      this.lastStats = output.stats;
      // Text the detokenizer held back until the end (an incomplete character).
      const rest = output.text.startsWith(text) ? output.text.slice(text.length) : '';
      yield this.#chunk(kind, meta, rest, FINISH[output.stop_reason] ?? 'stop', {
        usage: usageOf(output),
        tandem: { stats: output.stats, stop_reason: output.stop_reason, output_token_ids: output.tokens },
      });
    } finally {
      // The consumer left the loop early: stop the generation.
      if (!ended) {
        this.interruptGenerate();
        await finished.catch(() => null);
      }
    }
  }

  #chunk(kind, meta, text, finish, { tandem, usage, first }) {
    const choice =
      kind === 'chat'
        ? { index: 0, delta: first ? { role: 'assistant', content: text } : { content: text }, logprobs: null, finish_reason: finish }
        : { index: 0, text, logprobs: null, finish_reason: finish };
    const chunk = {
      id: meta.id,
      object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion',
      created: meta.created,
      model: meta.model,
      choices: [choice],
      tandem,
    };
    if (usage) chunk.usage = usage;
    return chunk;
  }

  #completion(kind, meta, output) {
    this.lastStats = output.stats;
    const finish = FINISH[output.stop_reason] ?? 'stop';
    const choice =
      kind === 'chat'
        ? { index: 0, message: { role: 'assistant', content: output.text }, logprobs: null, finish_reason: finish }
        : { index: 0, text: output.text, logprobs: null, finish_reason: finish };
    return {
      id: meta.id,
      object: kind === 'chat' ? 'chat.completion' : 'text_completion',
      created: meta.created,
      model: meta.model,
      choices: [choice],
      usage: usageOf(output),
      tandem: { stats: output.stats, stop_reason: output.stop_reason, output_token_ids: output.tokens },
    };
  }

  /** Stop the running generation after its current step (its stream ends with finish_reason 'abort'). */
  interruptGenerate() {
    this.#worker.postMessage({ type: 'interrupt' });
  }

  /** Forget the conversation's KV cache (the next request prefills its whole prompt). */
  async resetChat() {
    await this.#call({ type: 'reset' }).done;
  }

  /** The last generation's statistics as one line of text. */
  async runtimeStatsText() {
    const s = this.lastStats;
    if (!s) return 'no generation yet';
    return (
      `prefill: ${s.prefill_tokens_per_s.toFixed(1)} tok/s, decode: ${s.decode_tokens_per_s.toFixed(2)} tok/s, ` +
      `τ: ${s.mean_accepted_tokens.toFixed(2)}, acceptance: ${(100 * s.acceptance_rate).toFixed(0)}%`
    );
  }

  /** Free the GPU memory and end the worker. */
  async unload() {
    try {
      await this.#call({ type: 'unload' }).done;
    } finally {
      this.#worker.terminate();
      this.#fail(new TandemError('the engine was unloaded', 'unloaded'));
    }
  }
}

function contentText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((part) => {
        if (part.type === 'text') return part.text;
        throw new TandemError(`message content of type '${part.type}' is not supported (text only)`, 'unsupported');
      })
      .join('');
  }
  return String(content ?? '');
}

function progressReport(r) {
  const files = r.count ?? 1;
  const fraction = r.phase === 'download' && r.total ? r.loaded / r.total : r.phase === 'gpu' ? 1 : 0;
  const progress = Math.min(1, ((r.index ?? 0) + fraction) / files);
  const mb = (n) => (n / 1048576).toFixed(1);
  let text;
  if (r.phase === 'download') {
    const how = r.fromCache ? 'reading from cache' : 'downloading';
    text = `${how} ${r.name}: ${mb(r.loaded)}${r.total ? ` / ${mb(r.total)}` : ''} MB`;
  } else if (r.phase === 'gpu') {
    text = `loading ${r.name} onto the GPU`;
  } else {
    text = r.text ?? '';
  }
  return { ...r, progress, text };
}

/**
 * Load a model (and optionally a drafter) in a new module Web Worker.
 * `target`/`draft` are URLs (downloaded with progress, kept in the Cache API) or Files;
 * `draft: "lookup"` drafts by prompt lookup instead of a model.
 */
export async function createEngine({
  target,
  draft = null,
  onProgress,
  initProgressCallback,
  contextLength = 2048,
  maxDraft = 6,
} = {}) {
  if (!target) throw new TandemError('createEngine needs a target model (URL or File)', 'invalid');
  const gpu = await checkWebGPU();
  if (!gpu.ok) throw new TandemError(gpu.message, gpu.kind);
  const resolve = (m) => (typeof m === 'string' || m instanceof URL ? absoluteUrl(m) : m);
  const draftModel = draft && draft !== 'lookup' ? resolve(draft) : null;
  const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  const engine = new TandemEngine(worker, onProgress ?? initProgressCallback);
  try {
    await engine.load({ target: resolve(target), draft: draftModel, contextLength, maxDraft });
  } catch (e) {
    worker.terminate();
    throw e;
  }
  engine.defaultMethod = draftModel ? 'sps' : draft === 'lookup' ? 'lookup' : 'plain';
  return engine;
}
