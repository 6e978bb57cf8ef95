// A tandem server (`tandem serve`) behind the same interface as the in-browser engine: the
// OpenAI-shaped `chat.completions.create` / `completions.create` (streamed chunks carry the
// same `tandem` fields: token ids, drafted text, τ, tokens/s, and the stats at the end),
// `methods`, `adapter`, `interruptGenerate()`. The model runs natively on the server's GPU;
// nothing is downloaded into the browser. Types: index.d.ts (`connect`).

class ServerError extends Error {
  constructor(message, kind = 'error', status = 0) {
    super(message);
    this.name = 'TandemError';
    this.kind = kind;
    this.status = status;
  }
}

const KIND = { 400: 'invalid', 401: 'unauthorized', 404: 'invalid', 503: 'busy' };

/** Split an SSE body into its `data:` payloads. */
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = event
        .split('\n')
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).trimStart())
        .join('\n');
      if (data) yield data;
    }
  }
}

/** The last chunk of an interrupted stream, from the running figures of the one before. */
function abortChunk(prev) {
  const t = prev.tandem ?? {};
  const choice = prev.choices?.[0]?.delta
    ? { index: 0, delta: {}, finish_reason: 'abort' }
    : { index: 0, text: '', finish_reason: 'abort' };
  const stats = {
    prompt_tokens: 0,
    reused_prompt_tokens: 0,
    prefill_seconds: 0,
    generated_tokens: t.tokens ?? 0,
    target_passes: t.steps ?? 0,
    mean_accepted_tokens: t.tau ?? null,
    decode_tokens_per_s: t.tokens_per_s ?? null,
    drafted: t.drafted_accepted ?? 0,
    accepted: t.drafted_accepted ?? 0,
    acceptance_rate: t.acceptance ?? 0,
  };
  return { ...prev, choices: [choice], tandem: { stats, stop_reason: 'cancelled' } };
}

class ServerEngine {
  /** The served model's id. */
  model = '';
  methods = [];
  adapter = null;
  /** Whether the server has a drafter model (for the methods that need one). */
  hasDrafter = false;
  /** Whether the served model can format a chat (false: a base model, only completions). */
  hasChatTemplate = true;
  contextLength = 0;
  lastStats = null;
  #base;
  #headers;
  #abort = null;

  constructor(base, apiKey) {
    this.#base = base.replace(/\/+$/, '');
    this.#headers = { 'Content-Type': 'application/json' };
    if (apiKey) this.#headers.Authorization = `Bearer ${apiKey}`;
    this.chat = { completions: { create: (req) => this.#create('chat', req) } };
    this.completions = { create: (req) => this.#create('completion', req) };
  }

  async #fetch(path, init = {}) {
    let r;
    try {
      r = await fetch(this.#base + path, { ...init, headers: this.#headers });
    } catch (e) {
      if (e?.name === 'AbortError') throw e;
      throw new ServerError(`the tandem server at ${this.#base} does not answer (${e?.message ?? e})`, 'network');
    }
    if (!r.ok) {
      let message = `${r.status} ${r.statusText}`;
      try {
        message = (await r.json()).error?.message ?? message;
      } catch {
        // not JSON: keep the status line
      }
      throw new ServerError(message, KIND[r.status] ?? 'error', r.status);
    }
    return r;
  }

  async load() {
    const { data } = await (await this.#fetch('/v1/models')).json();
    const m = data?.[0] ?? {};
    this.model = m.id ?? '';
    this.methods = m.meta?.methods ?? [];
    this.adapter = m.meta?.adapter ?? null;
    this.hasDrafter = Boolean(m.meta?.drafter);
    this.hasChatTemplate = m.meta?.chat_template ?? true;
    this.contextLength = m.meta?.n_ctx ?? 0;
    return this;
  }

  async #create(kind, request = {}) {
    this.#abort = new AbortController();
    const path = kind === 'chat' ? '/v1/chat/completions' : '/v1/completions';
    const r = await this.#fetch(path, {
      method: 'POST',
      body: JSON.stringify({ ...request, model: this.model }),
      signal: this.#abort.signal,
    });
    if (!request.stream) {
      const out = await r.json();
      this.lastStats = out.tandem?.stats ?? null;
      return out;
    }
    return this.#stream(r.body);
  }

  async *#stream(body) {
    let last = null;
    try {
      for await (const data of sseData(body)) {
        if (data === '[DONE]') return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ServerError(chunk.error.message, 'error', chunk.error.code);
        if (chunk.tandem?.stats) this.lastStats = chunk.tandem.stats;
        last = chunk;
        yield chunk;
      }
    } catch (e) {
      // interruptGenerate(): the server stops the generation when the connection closes.
      // The stream ends as the in-browser engine's does: finish_reason "abort", with the
      // figures the chunks so far carried.
      if (e?.name !== 'AbortError') throw e;
      if (last) yield abortChunk(last);
    } finally {
      this.#abort = null;
    }
  }

  /** Stop the running generation (the server notices the closed connection after a step). */
  interruptGenerate() {
    this.#abort?.abort();
  }

  /** The server keeps conversations by their tokens: a new history starts a new one. */
  async resetChat() {}

  async runtimeStatsText() {
    const s = this.lastStats;
    return s ? `decode ${s.decode_tokens_per_s.toFixed(2)} tok/s, τ ${s.mean_accepted_tokens.toFixed(2)} (${s.method}, on the server)` : '';
  }

  /** Nothing to free in the browser: the model lives on the server. */
  async unload() {
    this.interruptGenerate();
  }
}

/**
 * Connect to a tandem server (`tandem serve`, e.g. `connect('http://127.0.0.1:8080')`) and
 * get an engine with the in-browser engine's interface, running on the server's GPU.
 */
export async function connect(url, { apiKey } = {}) {
  return new ServerEngine(url, apiKey).load();
}
