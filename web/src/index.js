// tandem in the browser: an OpenAI-shaped engine (in the spirit of WebLLM) whose work runs in a
// module Web Worker on WebGPU. Types: index.d.ts.
import { CACHE_NAME, absoluteUrl, deleteModelInCache, hasModelInCache, modelName } from './models.js';

export { CACHE_NAME, deleteModelInCache, hasModelInCache };
/** An engine on a tandem server (`tandem serve`) with this engine's interface: server.js. */
export { connect } from './server.js';

/** An error from tandem: `message` is tandem's own, `kind` names what went wrong. */
export class TandemError extends Error {
  constructor(message, kind = 'error', status = undefined) {
    super(message);
    this.name = 'TandemError';
    this.kind = kind;
    // A refused request: the HTTP status tandem serve answers it with.
    if (status !== undefined) this.status = status;
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
    } else if (msg.type === 'chunk') {
      this.#streams.get(msg.id)?.push(msg.chunk);
    } else if (msg.type === 'result' || msg.type === 'error') {
      const p = this.#pending.get(msg.id);
      if (!p) return;
      this.#pending.delete(msg.id);
      if (msg.type === 'result') p.resolve(msg.value);
      else p.reject(new TandemError(msg.message, msg.kind, msg.status));
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

  // The request goes to the worker as it is: tandem's Rust API layer (the one `tandem serve`
  // answers with) parses it, applies the chat template, and builds the chunks and responses.
  async #create(kind, request = {}) {
    if (this.#busy) {
      throw new TandemError('a generation is already running (interruptGenerate() stops it)', 'invalid');
    }
    let json;
    try {
      json = JSON.stringify(request);
    } catch (e) {
      throw new TandemError(`the request is not JSON: ${e?.message ?? e}`, 'invalid');
    }
    this.#busy = true;
    const channel = new Channel();
    const call = this.#call({ type: 'generate', kind, request: json, model: this.model, defaultMethod: this.defaultMethod });
    this.#streams.set(call.id, channel);
    const finished = call.done.finally(() => {
      this.#busy = false;
      this.#streams.delete(call.id);
    });
    finished.then(
      () => channel.end(),
      (e) => channel.end(e),
    );
    if (request.stream) return this.#stream(channel, finished);
    const response = await finished;
    this.lastStats = response.tandem.stats;
    return response;
  }

  async *#stream(channel, finished) {
    let ended = false;
    try {
      for await (const chunk of channel.drain()) {
        if (chunk.tandem?.stats) this.lastStats = chunk.tandem.stats;
        yield chunk;
      }
      await finished;
      ended = true;
    } finally {
      // The consumer left the loop early: stop the generation.
      if (!ended) {
        this.interruptGenerate();
        await finished.catch(() => null);
      }
    }
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
