// Types for tandem-webgpu: an OpenAI-style engine on WebGPU in a module Web Worker.

/** A model: a URL (downloaded with progress and kept in the Cache API) or a File/Blob. */
export type ModelSource = string | URL | Blob;

/** The methods of tandem's registry (`tandem methods`): plain decoding, prompt lookup, the
 * drafter model's greedy chain (sps) or dynamic tree, Token Recycling (recycle), SuffixDecoding
 * (suffix), and their hybrid (hybrid: the suffix draft on a long match, else a short match's
 * nodes and recycling;
 * `hybrid:model=on` falls back to the drafter model). */
export type MethodName = 'plain' | 'lookup' | 'sps' | 'tree' | 'recycle' | 'suffix' | 'hybrid';

/** A method with optional parameters, `name[:key=value,...]`, e.g. `"tree:nodes=16,width=4"`. */
export type Method = MethodName | `${MethodName}:${string}`;

/** One row of the method registry (`engine.methods`). */
export interface MethodInfo {
  name: MethodName;
  about: string;
  needs_drafter_model: boolean;
  params: { key: string; default: number; min: number; max: number; about: string }[];
}

export interface ProgressReport {
  /** 0…1 over all files of this engine. */
  progress: number;
  /** A line to show the user. */
  text: string;
  /** `download`: bytes arriving (from the network or the Cache API); `gpu`: uploading the
   * weights; `warning`: e.g. the file could not be stored in the Cache API. */
  phase: 'download' | 'gpu' | 'warning';
  file: 'target' | 'draft';
  /** The file name. */
  name: string;
  /** Bytes received of this file (phase `download`). */
  loaded?: number;
  /** The file's size in bytes (0 when the server does not say). */
  total?: number;
  /** Whether the bytes come from the Cache API rather than the network. */
  fromCache?: boolean;
}

export interface CreateEngineOptions {
  /** The model that writes the answer (GGUF). */
  target: ModelSource;
  /** A smaller model with the same tokenizer that drafts for the target, `"lookup"` to draft
   * by prompt lookup, or none (plain decoding; `method: "lookup"` still works per request). */
  draft?: ModelSource | 'lookup' | null;
  onProgress?: (report: ProgressReport) => void;
  /** WebLLM's name for `onProgress`. */
  initProgressCallback?: (report: ProgressReport) => void;
  /** KV cache size in tokens (prompt + answer). Default 2048. */
  contextLength?: number;
  /** Most draft tokens one step verifies. Default 6. */
  maxDraft?: number;
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string | Array<{ type: 'text'; text: string }>;
}

/** The fields of `tandem serve`'s `/v1/chat/completions` and `/v1/completions` (one Rust API
 * layer answers both faces; unknown fields are ignored, as OpenAI clients send many). */
interface RequestBase {
  /** Ignored (the engine serves one model). */
  model?: string;
  stream?: boolean;
  /** With `stream`: `include_usage` adds a last chunk with `usage` and no choices. */
  stream_options?: { include_usage?: boolean } | null;
  max_tokens?: number;
  max_completion_tokens?: number;
  /** llama-server's name for `max_tokens` (-1: until the context is full). Without any of
   * the three, a generation may fill the context. */
  n_predict?: number;
  stop?: string | string[] | null;
  /** Sampling temperature; 0 or absent decodes greedily. Speculative methods stay lossless
   * (the output is distributed as the target's). */
  temperature?: number | null;
  /** With temperature > 0: keep the K most likely tokens (0 = off). */
  top_k?: number | null;
  /** With temperature > 0: nucleus sampling mass (1 = off). */
  top_p?: number | null;
  /** With temperature > 0: random seed (the same seed repeats a run; absent: a random one). */
  seed?: number | null;
  n?: number | null;
  /** tandem: how to draft (default: the engine's — see `createEngine`'s `draft`). */
  method?: Method;
  /** tandem: most draft tokens per step (the method's `len` or `nodes`, capped at `maxDraft`;
   * an alias of `speculative.n_max`). */
  draft_len?: number;
  /** llama-server's draft bounds: `n_max` sets the draft size (0: plain decoding), `n_min`
   * > 0 turns the adaptive budget off. Echoed back in `tandem.speculative`. */
  speculative?: { n_max?: number; n_min?: number } | null;
  /** tandem: pick the draft size from measured acceptance and speed (default true). */
  adaptive?: boolean;
  /** Constrained decoding (OpenAI's shapes): any JSON object, or JSON valid under a schema.
   * The mask is applied before verification, so every method stays exact; the tokens the
   * schema forces (punctuation, keys) are drafted for free. JSON comes on one line. */
  response_format?: ResponseFormat | null;
  /** tandem: the output matches this Lark grammar (llguidance's dialect, `start: ...`). */
  grammar?: string | null;
  /** tandem: the output matches this regular expression. */
  regex?: string | null;
  /** tandem: with a constraint, draft the tokens the grammar forces (default true). */
  forced_drafts?: boolean;
  /** Keep generating past end-of-sequence tokens, up to `max_tokens` (llama-server's
   * `ignore_eos`; default false). */
  ignore_eos?: boolean;
  /** tandem: contrastive decoding with the drafter model as the amateur (needs `draft`): the
   * target's log-probabilities minus `beta` (default 0.5) times the drafter's, over the tokens
   * within `alpha` (default 0.1) of the target's top probability. Exact with every method. */
  contrastive?: { alpha?: number; beta?: number } | null;
}

export type ResponseFormat =
  | { type: 'text' }
  | { type: 'json_object'; schema?: Record<string, unknown> }
  | { type: 'json_schema'; json_schema: { name?: string; schema: Record<string, unknown> | boolean; strict?: boolean } };

export interface ChatCompletionRequest extends RequestBase {
  messages: ChatMessage[];
}

export interface CompletionRequest extends RequestBase {
  /** Raw text continued as is (no chat template). */
  prompt: string;
}

/** The engine's statistics of one generation. */
export interface Stats {
  /** The method that made the drafts: `plain`, `lookup`, `sps` (drafter chain), `tree`, `recycle`, `suffix` or `hybrid`. */
  method: string;
  prompt_tokens: number;
  /** Prompt tokens whose KV cache was reused from the previous request (multi-turn). */
  reused_prompt_tokens: number;
  generated_tokens: number;
  prefill_seconds: number;
  decode_seconds: number;
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
  /** Forward passes of the target while decoding. */
  target_passes: number;
  drafter_passes: number;
  /** Draft tokens proposed, and how many of them the target accepted. */
  drafted: number;
  accepted: number;
  /** τ: generated tokens per target pass. */
  mean_accepted_tokens: number;
  acceptance_rate: number;
  /** Seconds spent drafting over all steps (null where a step could not be timed). */
  drafter_seconds: number | null;
  /** With a constraint: draft tokens the grammar forced (part of `drafted`). */
  forced: number;
  /** With a constraint: host seconds computing the token masks. */
  mask_seconds: number;
}

/** tandem's extra field on each streamed chunk but the last. */
export interface StepExtras {
  /** The tokens of this chunk; the first `drafted` were drafted and accepted. */
  token_ids: number[];
  drafted: number;
  /** The part of this chunk's text that the drafted tokens made. */
  drafted_text: string;
  /** Draft tokens the target verified in this step. */
  proposed: number;
  /** Totals so far. */
  tokens: number;
  steps: number;
  drafted_accepted: number;
  acceptance: number | null;
  /** τ so far: tokens per target pass. */
  tau: number;
  /** Decode speed so far (null until the second step). */
  tokens_per_s: number | null;
  elapsed_s: number;
}

/** tandem's extra field on the last chunk and on non-streaming results. */
export interface FinalExtras {
  stats: Stats;
  stop_reason: 'eos' | 'stop' | 'length' | 'cancelled' | null;
  output_token_ids: number[];
  method: string;
  /** τ: generated tokens per target pass. */
  tau: number;
  acceptance_rate: number;
  target_passes: number;
  drafted: number;
  accepted: number;
  /** The draft bounds used (`speculative` of the request, capped). */
  speculative: { n_max: number | null; n_min: number | null };
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** llama-server's `timings` (on the last chunk and on non-streaming results). */
export interface Timings {
  /** Prompt tokens whose KV cache was reused. */
  cache_n: number;
  prompt_n: number;
  prompt_ms: number;
  prompt_per_second: number;
  predicted_n: number;
  predicted_ms: number;
  predicted_per_second: number;
  draft_n: number;
  draft_n_accepted: number;
}

/** `abort`: interrupted with `interruptGenerate()`. */
export type FinishReason = 'stop' | 'length' | 'abort';

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: Array<{
    index: 0;
    delta: { role?: 'assistant'; content?: string };
    logprobs: null;
    finish_reason: FinishReason | null;
  }>;
  /** Only on the usage chunk (`stream_options.include_usage`), whose `choices` is empty. */
  usage?: Usage;
  /** Only on the chunk with the finish reason. */
  timings?: Timings;
  /** Absent on the usage chunk. */
  tandem?: StepExtras | FinalExtras;
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: Array<{
    index: 0;
    message: { role: 'assistant'; content: string };
    logprobs: null;
    finish_reason: FinishReason;
  }>;
  usage: Usage;
  timings: Timings;
  tandem: FinalExtras;
}

export interface CompletionChunk {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  choices: Array<{ index: 0; text: string; logprobs: null; finish_reason: FinishReason | null }>;
  usage?: Usage;
  timings?: Timings;
  tandem?: StepExtras | FinalExtras;
}

export interface Completion {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  choices: Array<{ index: 0; text: string; logprobs: null; finish_reason: FinishReason }>;
  usage: Usage;
  timings: Timings;
  tandem: FinalExtras;
}

/** The WebGPU adapter the engine runs on. */
export interface AdapterSummary {
  name: string;
  backend: string;
  device_type: string;
  driver: string;
  driver_info: string;
  shader_f16: boolean;
  subgroups: boolean;
  timestamp_query: boolean;
  max_buffer_size: number;
  max_storage_buffer_binding_size: number;
  max_storage_buffers_per_shader_stage: number;
  max_compute_workgroup_storage_size: number;
  max_compute_invocations_per_workgroup: number;
}

export declare class TandemEngine {
  readonly chat: {
    completions: {
      create(request: ChatCompletionRequest & { stream: true }): Promise<AsyncIterable<ChatCompletionChunk>>;
      create(request: ChatCompletionRequest & { stream?: false | null }): Promise<ChatCompletion>;
      create(request: ChatCompletionRequest): Promise<AsyncIterable<ChatCompletionChunk> | ChatCompletion>;
    };
  };
  readonly completions: {
    create(request: CompletionRequest & { stream: true }): Promise<AsyncIterable<CompletionChunk>>;
    create(request: CompletionRequest & { stream?: false | null }): Promise<Completion>;
    create(request: CompletionRequest): Promise<AsyncIterable<CompletionChunk> | Completion>;
  };
  /** The target model's file name. */
  model: string;
  /** The drafter model's file name, when one is loaded. */
  drafter: string | null;
  /** Whether the target can format a chat: a template in its file or a ChatML vocabulary
   * (false for a base model such as Gemma 3 270M: `chat.completions` fails with kind
   * `no_chat_template`, `completions` continues raw text). */
  hasChatTemplate: boolean;
  /** The method used when a request names none. */
  defaultMethod: Method;
  /** The engine's method registry (what `method` may name). */
  methods: MethodInfo[];
  adapter: AdapterSummary | null;
  /** Statistics of the last finished generation. */
  lastStats: Stats | null;
  /** Stop the running generation after its current step; its stream ends with
   * finish_reason `"abort"`. */
  interruptGenerate(): void;
  /** Forget the conversation's KV cache. */
  resetChat(): Promise<void>;
  runtimeStatsText(): Promise<string>;
  /** Free the GPU memory and end the worker. */
  unload(): Promise<void>;
}

/** An error from tandem. `message` is tandem's own; `kind` says what went wrong. */
export declare class TandemError extends Error {
  name: 'TandemError';
  kind:
    | 'no-webgpu'
    | 'no-adapter'
    | 'io'
    | 'format'
    | 'unsupported'
    | 'gpu'
    | 'out_of_memory'
    | 'tokenizer'
    | 'no_chat_template'
    | 'context'
    | 'mismatch'
    | 'invalid'
    | 'worker'
    | 'unloaded'
    | 'network'
    | 'unauthorized'
    | 'busy'
    | 'error';
  /** A refused request: the HTTP status `tandem serve` answers it with (400, …). */
  status?: number;
}

/** Download (or read from the Cache API) and load the models in a new module Web Worker. */
export declare function createEngine(options: CreateEngineOptions): Promise<TandemEngine>;

export type WebGPUSupport =
  | {
      ok: true;
      adapter: {
        vendor: string;
        architecture: string;
        description: string;
        features: string[];
        maxBufferSize: number;
        maxStorageBufferBindingSize: number;
      };
    }
  | { ok: false; kind: 'no-webgpu' | 'no-adapter'; message: string };

/** Whether this browser can run tandem, with a message for the user when it cannot. */
export declare function checkWebGPU(): Promise<WebGPUSupport>;

/** An engine on a tandem server (`tandem serve`): the same chat/completions interface, run on
 * the server's GPU (nothing is downloaded into the browser). */
export declare class ServerEngine {
  readonly chat: TandemEngine['chat'];
  readonly completions: TandemEngine['completions'];
  /** The served model's id (`GET /v1/models`). */
  model: string;
  methods: MethodInfo[];
  /** The server's GPU adapter. */
  adapter: AdapterSummary | null;
  /** Whether the server has a drafter model (for the methods that need one). */
  hasDrafter: boolean;
  /** Whether the served model can format a chat (false: a base model, only completions). */
  hasChatTemplate: boolean;
  /** The server's context length in tokens. */
  contextLength: number;
  lastStats: Stats | null;
  /** Close the running stream; the server stops that generation after its current step. */
  interruptGenerate(): void;
  unload(): Promise<void>;
}

/** Connect to a tandem server, e.g. `connect('http://127.0.0.1:8080')` (`apiKey`: its
 * `--api-key`). The server must allow the page's origin (`--cors-origin`) unless it serves
 * the page itself. */
export declare function connect(url: string, options?: { apiKey?: string }): Promise<ServerEngine>;

/** The Cache API cache that holds model files. */
export declare const CACHE_NAME: string;
export declare function hasModelInCache(url: string | URL): Promise<boolean>;
export declare function deleteModelInCache(url: string | URL): Promise<boolean>;
