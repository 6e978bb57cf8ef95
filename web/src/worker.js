// The module Web Worker that owns the engine: model bytes stream into wasm memory here and
// generation runs here, so the page never freezes. Messages: see index.js.
import init, { ModelBytes, WebEngine, methodsJson } from './tandem.js';
import { modelName, streamModel } from './models.js';

const ready = init();
let engine = null;

function post(msg) {
  self.postMessage(msg);
}

function errorMessage(id, e) {
  return { type: 'error', id, message: e?.message ?? String(e), kind: e?.kind ?? 'error', status: e?.status };
}

async function fetchInto(role, source, index, count) {
  const name = modelName(source);
  let bytes = null;
  const { fromCache, warning } = await streamModel(source, {
    begin: (total) => {
      bytes = new ModelBytes(total);
    },
    sink: (chunk) => bytes.push(chunk),
    onProgress: ({ loaded, total, fromCache }) => {
      post({
        type: 'progress',
        report: { phase: 'download', file: role, name, loaded, total, fromCache, index, count },
      });
    },
  });
  if (warning) post({ type: 'progress', report: { phase: 'warning', file: role, name, text: warning } });
  return { bytes, fromCache };
}

async function load({ target, draft, contextLength, maxDraft }) {
  await ready;
  const count = draft ? 2 : 1;
  const t = await fetchInto('target', target, 0, count);
  post({ type: 'progress', report: { phase: 'gpu', file: 'target', name: modelName(target), index: 0, count } });
  engine = await WebEngine.create(t.bytes, contextLength, maxDraft);
  let drafter = null;
  if (draft) {
    const d = await fetchInto('draft', draft, 1, count);
    post({ type: 'progress', report: { phase: 'gpu', file: 'draft', name: modelName(draft), index: 1, count } });
    engine.loadDrafter(d.bytes);
    drafter = modelName(draft);
  }
  return {
    adapter: JSON.parse(engine.adapterJson()),
    drafter,
    methods: JSON.parse(methodsJson()),
    chatTemplate: engine.hasChatTemplate(),
  };
}

function generate({ id, kind, request, model, defaultMethod }) {
  const onChunk = (chunk) => post({ type: 'chunk', id, chunk });
  return engine.createCompletion(kind, request, model, defaultMethod, onChunk);
}

self.onmessage = async (event) => {
  const msg = event.data;
  try {
    switch (msg.type) {
      case 'load':
        post({ type: 'result', id: msg.id, value: await load(msg) });
        break;
      case 'generate':
        if (!engine) throw new Error('no model is loaded');
        post({ type: 'result', id: msg.id, value: await generate(msg) });
        break;
      case 'interrupt':
        // Runs while a generation awaits the GPU between steps; it stops after that step.
        engine?.interrupt();
        break;
      case 'reset':
        engine?.reset();
        post({ type: 'result', id: msg.id, value: null });
        break;
      case 'unload':
        engine?.free();
        engine = null;
        post({ type: 'result', id: msg.id, value: null });
        break;
      default:
        throw new Error(`unknown message ${msg.type}`);
    }
  } catch (e) {
    post(errorMessage(msg.id, e));
  }
};
