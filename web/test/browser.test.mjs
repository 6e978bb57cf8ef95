// The npm package and the demo page in headless Chromium (Debian's, WebGPU on SwiftShader).
//
//   npm test        (after `node scripts/build.mjs --dev`; scripts/test-web.sh does both)
//
// SwiftShader runs SmolLM2-135M at seconds per token, so the runs are a handful of tokens.
// Environment: TANDEM_MODELS (model directory), CHROMIUM (browser binary),
// TANDEM_NATIVE_JSON (a file with the output of the `tandem run --json` command below, to use
// instead of running it), TANDEM_TEST_TIMEOUT_MS (per wait; default 15 minutes).
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { defaultModelsDir, startServer } from '../demo/server.mjs';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const REPO = resolve(WEB, '..');
const MODEL = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const MODELS_DIR = defaultModelsDir();
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// A prompt whose continuation repeats it, so prompt lookup's drafts get accepted.
const PROMPT = 'red, green, blue, red, green, blue, red, green,';
const N_PLAIN = 6;
const N_LOOKUP = 8;
const LONG = Number(process.env.TANDEM_TEST_TIMEOUT_MS) || 15 * 60 * 1000;
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const missing = [];
if (!existsSync(join(MODELS_DIR, MODEL))) missing.push(`${MODEL} is not in ${MODELS_DIR} (scripts/fetch-models.sh smollm2)`);
if (!existsSync(CHROMIUM)) missing.push(`no Chromium at ${CHROMIUM} (apt-get install chromium)`);
if (!existsSync(join(WEB, 'dist', 'tandem_bg.wasm'))) missing.push('web/dist/ is not built (node scripts/build.mjs --dev)');
const skip = missing.length ? `SKIP: ${missing.join('; ')}` : false;
if (skip) console.log(skip);

const tmp = mkdtempSync(join(tmpdir(), 'tandem-web-test-'));
let server;
let context;
let demo; // the demo page shared by the first tests
let native; // native greedy token ids for PROMPT
let plainIds; // what the demo's plain run showed

function launch(args) {
  return chromium.launchPersistentContext(mkdtempSync(join(tmp, 'profile-')), {
    executablePath: CHROMIUM,
    headless: true,
    args,
    viewport: { width: 960, height: 860 },
  });
}

function log(msg) {
  console.log(`# ${msg}`);
}

/** Native greedy ids for `prompt` on `model`: `tandem run --json` on the portable f32
 * kernels (the path SwiftShader takes: it has no shader-f16). */
function nativeTokens(model = MODEL, prompt = PROMPT, n = N_LOOKUP) {
  let out;
  if (process.env.TANDEM_NATIVE_JSON && model === MODEL) {
    out = readFileSync(process.env.TANDEM_NATIVE_JSON, 'utf8');
  } else {
    const args = ['run', '--quiet', '--bin', 'tandem', '--', 'run', '-m', join(MODELS_DIR, model), '-p', prompt];
    args.push('-n', String(n), '--json', '--no-f16', '--no-subgroups');
    log(`native: cargo ${args.join(' ')}`);
    out = execFileSync('cargo', args, { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  }
  const last = out.trim().split('\n').pop();
  return JSON.parse(last).tokens;
}

/** Token ids shown in the demo's last answer, with the class of the span showing each. */
async function shownTokens(page) {
  return page.evaluate(() => {
    const spans = document.querySelectorAll('#chat .msg.assistant:last-child .tok');
    return [...spans].flatMap((s) =>
      s.dataset.ids ? s.dataset.ids.split(' ').map((id) => ({ id: Number(id), drafted: s.classList.contains('drafted') })) : [],
    );
  });
}

async function sendAndWait(page, { method, maxTokens, onFirstDrafted, prompt = PROMPT }) {
  await page.selectOption('#method', method);
  await page.fill('#max-tokens', String(maxTokens));
  await page.fill('#prompt', prompt);
  const before = await page.locator('#chat .msg.assistant').count();
  await page.click('#send');
  await page.waitForFunction((n) => document.querySelectorAll('#chat .msg.assistant').length > n, before);
  if (onFirstDrafted) {
    await page.waitForSelector('#chat .msg.assistant:last-child .tok.drafted', { timeout: LONG });
    await onFirstDrafted();
  }
  await page.waitForSelector('#chat .msg.assistant:last-child[data-done]', { timeout: LONG });
  const alert = await page.locator('#alert').isVisible();
  assert.ok(!alert, `the demo shows an error: ${await page.textContent('#alert')}`);
  return {
    tokens: await shownTokens(page),
    note: await page.textContent('#chat .msg.assistant:last-child .note'),
  };
}

function modelRequests() {
  return server.requests.filter((r) => r.path === `/models/${MODEL}` && r.method === 'GET').length;
}

before(async () => {
  if (skip) return;
  native = nativeTokens();
  log(`native greedy ids: ${JSON.stringify(native)}`);
  server = await startServer({ port: 0 });
  context = await launch([...FLAGS, '--enable-unsafe-webgpu']);
  context.setDefaultTimeout(LONG);
});

after(async () => {
  await context?.close();
  await server?.close();
  rmSync(tmp, { recursive: true, force: true });
});

test('demo: greedy tokens in Chromium equal the native greedy tokens', { skip }, async () => {
  demo = await context.newPage();
  demo.on('pageerror', (e) => log(`page error: ${e.message}`));
  await demo.goto(`${server.url}/demo/?pair=smollm2&chat=0&adaptive=0&ctx=256`);
  await demo.click('#load');
  await demo.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state), null, { timeout: LONG });
  assert.equal(await demo.evaluate(() => document.body.dataset.state), 'ready', await demo.textContent('#alert'));
  assert.equal(await demo.getAttribute('.file[data-file="target"]', 'data-from-cache'), 'false');
  assert.equal(modelRequests(), 1, 'the first load downloads the model once');

  const { tokens, note } = await sendAndWait(demo, { method: 'plain', maxTokens: N_PLAIN });
  log(`plain: ${note}`);
  assert.deepEqual(
    tokens.map((t) => t.id),
    native.slice(0, N_PLAIN),
  );
  assert.ok(tokens.every((t) => !t.drafted), 'plain decoding drafts nothing');
  plainIds = tokens.map((t) => t.id);
});

test('demo: prompt lookup gives the same tokens, drafted ones highlighted (screenshot)', { skip }, async () => {
  assert.ok(demo, 'the previous test loaded the demo');
  // Outside version control (web/screenshots/demo.png, in the README, is a copy of one).
  const shot = join(WEB, 'test-results', 'demo.png');
  mkdirSync(dirname(shot), { recursive: true });
  let midAnswer = false;
  const { tokens, note } = await sendAndWait(demo, {
    method: 'lookup',
    maxTokens: N_LOOKUP,
    onFirstDrafted: async () => {
      midAnswer = (await demo.locator('#chat .msg.assistant:last-child[data-done]').count()) === 0;
      await demo.screenshot({ path: shot });
    },
  });
  log(`lookup: ${note}; screenshot ${relative(REPO, shot)} taken ${midAnswer ? 'mid-answer' : 'after the answer'}`);
  assert.deepEqual(
    tokens.map((t) => t.id),
    native.slice(0, N_LOOKUP),
    'prompt lookup changed the greedy output',
  );
  assert.deepEqual(tokens.slice(0, N_PLAIN).map((t) => t.id), plainIds, 'lookup and plain differ on the page');
  const drafted = tokens.filter((t) => t.drafted).length;
  assert.ok(drafted > 0, 'no drafted token was accepted and highlighted');
  const style = await demo.evaluate(() => {
    const d = getComputedStyle(document.querySelector('#chat .tok.drafted')).backgroundColor;
    const t = getComputedStyle(document.querySelector('#chat .tok.target')).backgroundColor;
    return { d, t, legend: document.querySelector('.legend').textContent };
  });
  assert.notEqual(style.d, style.t, 'drafted and target tokens look the same');
  assert.match(style.legend, /drafted and accepted/);
  const tau = Number(await demo.textContent('#stat-tau'));
  assert.ok(tau > 1, `τ should exceed 1 with accepted drafts, got ${tau}`);
  assert.match(await demo.textContent('#stat-speedup'), /×$/);
});

/** A free loopback port. */
function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

const TANDEM_BIN = process.env.TANDEM_BIN || join(REPO, 'target', 'debug', 'tandem');

test('the chat page served by tandem serve streams from the server, drafted tokens highlighted', { skip: skip || (!existsSync(TANDEM_BIN) && `SKIP: no ${TANDEM_BIN} (cargo build)`) }, async () => {
  const port = await freePort();
  // The native server on the portable f32 kernels, as the native reference tokens were made.
  const args = ['serve', '-m', join(MODELS_DIR, MODEL), '--port', String(port), '--ctx', '256', '--no-f16', '--no-subgroups'];
  log(`native server: ${TANDEM_BIN} ${args.join(' ')}`);
  const proc = spawn(TANDEM_BIN, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  try {
    const url = `http://127.0.0.1:${port}`;
    for (let i = 0; ; i++) {
      const ok = await fetch(`${url}/health`).then((r) => r.ok, () => false);
      if (ok) break;
      assert.ok(i < 600 && proc.exitCode == null, 'tandem serve did not get ready');
      await new Promise((r) => setTimeout(r, 200));
    }
    const page = await context.newPage();
    page.on('pageerror', (e) => log(`served page error: ${e.message}`));
    await page.goto(`${url}/?chat=0&adaptive=0`);
    assert.match(page.url(), /\/demo\/\?chat=0/, 'the root redirects to the page');
    await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: LONG });
    assert.match(await page.textContent('#server-model'), /SmolLM2.*tandem server/);
    assert.ok(!(await page.locator('#pair').isVisible()), 'no model to choose: the server has one');
    const { tokens, note } = await sendAndWait(page, { method: 'lookup', maxTokens: N_LOOKUP });
    log(`served page, lookup: ${note}`);
    assert.deepEqual(tokens.map((t) => t.id), native.slice(0, N_LOOKUP), 'the server gave other tokens');
    assert.ok(tokens.some((t) => t.drafted), 'no drafted token was highlighted');
    assert.match(await page.textContent('#stat-adapter'), /on the server/);
    // The JSON example: JSON mode (response_format json_object) answers with one object.
    await page.click('#json-example');
    await page.fill('#max-tokens', '64');
    const before = await page.locator('#chat .msg.assistant').count();
    await page.click('#send');
    await page.waitForFunction((n) => document.querySelectorAll('#chat .msg.assistant').length > n, before);
    await page.waitForSelector('#chat .msg.assistant:last-child[data-done]', { timeout: LONG });
    const answer = await page.evaluate(() =>
      [...document.querySelectorAll('#chat .msg.assistant:last-child .tok')].map((s) => s.textContent).join(''),
    );
    const jsonNote = await page.textContent('#chat .msg.assistant:last-child .note');
    log(`served page, JSON example: ${answer} (${jsonNote})`);
    assert.match(jsonNote, /valid JSON/);
    assert.equal(typeof JSON.parse(answer), 'object');
    await page.close();
  } finally {
    proc.kill();
  }
});

test('demo: the stop button interrupts a generation', { skip }, async () => {
  assert.ok(demo, 'the first test loaded the demo');
  await demo.selectOption('#method', 'plain');
  await demo.fill('#max-tokens', '64');
  await demo.fill('#prompt', PROMPT);
  const before = await demo.locator('#chat .msg.assistant').count();
  await demo.click('#send');
  await demo.waitForFunction((n) => document.querySelectorAll('#chat .msg.assistant').length > n, before);
  await demo.waitForSelector('#chat .msg.assistant:last-child .tok', { timeout: LONG });
  await demo.click('#stop');
  await demo.waitForSelector('#chat .msg.assistant:last-child[data-done]', { timeout: LONG });
  assert.equal(await demo.getAttribute('#chat .msg.assistant:last-child', 'data-done'), 'abort');
  const ids = (await shownTokens(demo)).map((t) => t.id);
  assert.ok(ids.length >= 1 && ids.length < 64, `stopped after ${ids.length} tokens`);
  assert.deepEqual(ids.slice(0, N_LOOKUP), native.slice(0, Math.min(ids.length, N_LOOKUP)));
  assert.match(await demo.textContent('#chat .msg.assistant:last-child .note'), /stopped/);
  assert.equal(await demo.evaluate(() => document.body.dataset.state), 'ready');
});

test('a reload reads the model from the Cache API, not the network', { skip }, async () => {
  const page = await context.newPage();
  await page.goto(`${server.url}/demo/?pair=smollm2&chat=0&ctx=256`);
  await page.click('#load');
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state), null, { timeout: LONG });
  assert.equal(await page.evaluate(() => document.body.dataset.state), 'ready', await page.textContent('#alert'));
  assert.equal(await page.getAttribute('.file[data-file="target"]', 'data-from-cache'), 'true');
  assert.match(await page.textContent('.file[data-file="target"] .bytes'), /from cache/);
  assert.equal(modelRequests(), 1, 'the model was downloaded again');
  const cached = await page.evaluate(async (m) => {
    const pkg = await import('/dist/index.js');
    return pkg.hasModelInCache(`/models/${m}`);
  }, MODEL);
  assert.equal(cached, true);
  await page.close();
});

test('a page built from the npm pack tarball imports the package, streams tokens and runs a drafter pair', { skip }, async () => {
  const packDir = mkdtempSync(join(tmp, 'pack-'));
  const packed = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', packDir], { cwd: WEB, encoding: 'utf8' }));
  const files = packed[0].files.map((f) => f.path);
  for (const f of ['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts', 'dist/worker.js', 'dist/tandem_bg.wasm']) {
    assert.ok(files.includes(f), `the tarball lacks ${f}`);
  }
  const app = mkdtempSync(join(tmp, 'app-'));
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'tandem-consumer', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', join(packDir, packed[0].filename)], { cwd: app, stdio: 'ignore' });
  // Resolve the package the way bundlers and Node do (package.json "exports").
  writeFileSync(join(app, 'resolve.mjs'), "console.log(import.meta.resolve('tandem-webgpu'));");
  const entry = fileURLToPath(execFileSync('node', ['resolve.mjs'], { cwd: app, encoding: 'utf8' }).trim());
  const pkg = JSON.parse(readFileSync(join(app, 'node_modules', 'tandem-webgpu', 'package.json'), 'utf8'));
  assert.ok(existsSync(join(app, 'node_modules', 'tandem-webgpu', pkg.types)), 'the types file is missing');
  writeFileSync(
    join(app, 'index.html'),
    `<!doctype html><meta charset="utf-8"><title>consumer</title>
<script type="importmap">{"imports": {"tandem-webgpu": "/${relative(app, entry)}"}}</script>
<pre id="out"></pre>
<script type="module">
import { createEngine, hasModelInCache } from 'tandem-webgpu';
const url = '/models/${MODEL}';
window.result = (async () => {
  const progress = [];
  const engine = await createEngine({ target: url, draft: 'lookup', contextLength: 128, onProgress: (p) => progress.push(p) });
  const stream = await engine.chat.completions.create({
    messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }],
    stream: true, stream_options: { include_usage: true }, max_tokens: 2, temperature: 0, seed: 1,
  });
  const chunks = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    document.getElementById('out').textContent += chunk.choices[0]?.delta.content ?? '';
  }
  // A refused request: past the context (128 tokens), with the server's status.
  let overflow = null;
  try {
    await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 1000 });
  } catch (e) {
    overflow = { kind: e.kind, status: e.status, message: String(e.message) };
  }
  // Not streaming: an OpenAI ChatCompletion with usage (the prompt's KV cache is reused).
  const whole = await engine.chat.completions.create({
    messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }],
    max_tokens: 1,
  });
  // Sampling on the GPU: the same seed repeats a run.
  const sample = () => engine.chat.completions.create({
    messages: [{ role: 'user', content: 'Hi' }], temperature: 0.7, seed: 1, max_tokens: 2,
  });
  const s1 = await sample();
  const s2 = await sample();
  const sampling = { a: s1.tandem.output_token_ids, b: s2.tandem.output_token_ids };
  // Constrained decoding: a JSON schema (an enum: a few tokens on SwiftShader), and a bad one.
  const colour = await engine.chat.completions.create({
    messages: [{ role: 'user', content: 'Pick a colour.' }], max_tokens: 8,
    response_format: { type: 'json_schema', json_schema: { name: 'colour', schema: { enum: ['red', 'green'] } } },
  });
  let badSchema = null;
  try {
    await engine.chat.completions.create({
      messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2,
      response_format: { type: 'json_schema', json_schema: { schema: { type: 17 } } },
    });
  } catch (e) {
    badSchema = String(e?.message ?? e);
  }
  const constrained = { text: colour.choices[0].message.content, finish: colour.choices[0].finish_reason, badSchema };
  const cached = await hasModelInCache(url);
  await engine.unload();
  // A drafter-model pair, short (SwiftShader is slow): SmolLM2 drafts for itself, so every
  // draft is accepted and the tokens must still be plain greedy decoding's.
  const pairEngine = await createEngine({ target: url, draft: url, contextLength: 128, maxDraft: 3 });
  const pairRequest = { messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }], max_tokens: 4 };
  const chain = await pairEngine.chat.completions.create({ ...pairRequest, method: 'sps', draft_len: 3, adaptive: false });
  const plain = await pairEngine.chat.completions.create({ ...pairRequest, method: 'plain' });
  await pairEngine.unload();
  const pair = { chain: chain.tandem, plain: plain.tandem };
  return { chunks, whole, last: progress.at(-1), sampling, cached, pair, constrained, overflow };
})().catch((e) => ({ error: String(e?.message ?? e) }));
</script>`,
  );
  const appServer = await startServer({ port: 0, root: app });
  try {
    const page = await context.newPage();
    page.on('pageerror', (e) => log(`consumer page error: ${e.message}`));
    await page.goto(`${appServer.url}/index.html`);
    const r = await page.evaluate(() => window.result);
    assert.equal(r.error, undefined, r.error);
    // The chunks come from tandem's Rust API layer, as tandem serve's do: steps, the chunk
    // with the finish reason (timings, statistics), then the usage chunk (no choices).
    const usageChunk = r.chunks.at(-1);
    const last = r.chunks.at(-2);
    const steps = r.chunks.slice(0, -2);
    assert.ok(steps.length >= 1, 'no streamed chunk');
    for (const c of r.chunks) {
      assert.equal(c.object, 'chat.completion.chunk');
      assert.equal(c.id, r.chunks[0].id, 'one id across the chunks');
    }
    assert.match(r.chunks[0].id, /^chatcmpl-/);
    assert.equal(steps[0].choices[0].delta.role, 'assistant');
    assert.ok(steps.every((c) => typeof c.choices[0].delta.content === 'string' && c.tandem.token_ids.length > 0 && c.choices[0].finish_reason === null));
    assert.equal(last.choices[0].finish_reason, 'length');
    assert.deepEqual(usageChunk.choices, []);
    assert.equal(usageChunk.usage.completion_tokens, 2);
    assert.equal(last.timings.predicted_n, 2);
    assert.equal(last.tandem.output_token_ids.length, 2);
    assert.deepEqual(
      steps.flatMap((c) => c.tandem.token_ids),
      last.tandem.output_token_ids,
    );
    assert.equal(r.whole.object, 'chat.completion');
    assert.equal(r.whole.choices[0].message.role, 'assistant');
    assert.equal(r.whole.choices[0].finish_reason, 'length');
    assert.equal(r.whole.usage.completion_tokens, 1);
    assert.equal(r.whole.usage.total_tokens, r.whole.usage.prompt_tokens + 1);
    assert.deepEqual(r.whole.tandem.output_token_ids, last.tandem.output_token_ids.slice(0, 1), 'greedy is deterministic');
    assert.ok(r.whole.tandem.stats.reused_prompt_tokens > 0, 'the KV cache of the same prompt was not reused');
    assert.equal(r.whole.timings.cache_n, r.whole.tandem.stats.reused_prompt_tokens);
    assert.deepEqual(
      { kind: r.overflow?.kind, status: r.overflow?.status },
      { kind: 'context', status: 400 },
      `a request past the context: ${JSON.stringify(r.overflow)}`,
    );
    assert.equal(r.last.progress, 1);
    assert.equal(r.cached, true, 'the model was not stored in the Cache API');
    assert.equal(r.sampling.a.length, 2, 'sampling produced no tokens');
    assert.deepEqual(r.sampling.a, r.sampling.b, 'the same seed gave different samples');
    assert.ok(['red', 'green'].includes(JSON.parse(r.constrained.text)), `not the schema's JSON: ${r.constrained.text}`);
    assert.equal(r.constrained.finish, 'stop');
    assert.match(r.constrained.badSchema ?? '', /invalid json_schema/);
    assert.equal(r.pair.chain.output_token_ids.length, 4);
    assert.deepEqual(r.pair.chain.output_token_ids, r.pair.plain.output_token_ids, 'the drafter pair changed the greedy output');
    assert.deepEqual(r.pair.chain.output_token_ids.slice(0, 1), r.whole.tandem.output_token_ids, 'the pair engine differs from the first one');
    assert.ok(r.pair.chain.stats.drafter_passes > 0 && r.pair.chain.stats.accepted > 0, JSON.stringify(r.pair.chain.stats));
    assert.ok(r.pair.chain.stats.target_passes < 4, `a self-drafting pair needs fewer target passes than tokens: ${JSON.stringify(r.pair.chain.stats)}`);
    log(`consumer page streamed ${JSON.stringify(steps.map((c) => c.choices[0].delta.content).join(''))}; pair τ ${r.pair.chain.stats.mean_accepted_tokens}`);
    await page.close();
  } finally {
    await appServer.close();
  }
});

test('without WebGPU the demo says so clearly', { skip }, async () => {
  // Chromium without --enable-unsafe-webgpu: no WebGPU on Linux.
  const plain = await launch(FLAGS);
  try {
    const page = await plain.newPage();
    await page.goto(`${server.url}/demo/`);
    await page.waitForFunction(() => document.body.dataset.state !== 'idle' || !document.getElementById('alert').hidden);
    assert.equal(await page.evaluate(() => document.body.dataset.state), 'unsupported');
    assert.ok(await page.locator('#alert').isVisible());
    assert.match(await page.textContent('#alert'), /WebGPU/);
    assert.ok(await page.locator('#load').isDisabled());
    assert.ok(await page.locator('#send').isDisabled());
    const err = await page.evaluate(async () => {
      const pkg = await import('/dist/index.js');
      return pkg.createEngine({ target: '/models/x.gguf' }).then(
        () => null,
        (e) => ({ name: e.name, kind: e.kind, message: e.message }),
      );
    });
    assert.ok(err, 'createEngine succeeded without WebGPU');
    assert.ok(['no-webgpu', 'no-adapter'].includes(err.kind), err.kind);
    assert.match(err.message, /WebGPU/);
  } finally {
    await plain.close();
  }
});

test('a model too large for the browser gets a clear message, before the download', { skip }, async () => {
  // A server that announces a 6 GB model file: more than a wasm32 page can hold.
  const page = await context.newPage();
  let bodyServed = false;
  await page.route((url) => url.pathname.startsWith('/huge/'), (route) => {
    if (route.request().url().endsWith('.json')) return route.fulfill({ status: 404, body: '' });
    bodyServed = true;
    return route.fulfill({ status: 200, headers: { 'Content-Length': '6000000000' }, body: 'GGUF' });
  });
  await page.goto(`${server.url}/demo/?pair=smollm2&models=/huge/`);
  await page.click('#load');
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state), null, { timeout: LONG });
  assert.equal(await page.evaluate(() => document.body.dataset.state), 'error');
  assert.ok(bodyServed, 'the route was not used');
  const text = await page.textContent('#alert');
  log(`too large: ${text}`);
  assert.match(text, /5722 MB does not fit in WebAssembly memory/);
  assert.match(text, /smaller model/);
  await page.close();
});

test('a corrupted model file gets the GGUF parser\'s error on the page', { skip }, async () => {
  // The real file's first MB (magic, version, the start of its metadata) with a metadata
  // count no file can hold: the wasm build's parser must refuse it before allocating, and
  // the page must say what and where.
  const bad = Buffer.from(readFileSync(join(MODELS_DIR, MODEL)).subarray(0, 1 << 20));
  bad.writeBigUInt64LE(1n << 60n, 16);
  const page = await context.newPage();
  await page.route((url) => url.pathname.startsWith('/corrupt/'), (route) => {
    if (route.request().url().endsWith('.json')) return route.fulfill({ status: 404, body: '' });
    return route.fulfill({ status: 200, headers: { 'Content-Length': String(bad.length) }, body: bad });
  });
  await page.goto(`${server.url}/demo/?pair=smollm2&models=/corrupt/`);
  await page.click('#load');
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state), null, { timeout: LONG });
  assert.equal(await page.evaluate(() => document.body.dataset.state), 'error');
  const text = await page.textContent('#alert');
  log(`corrupted: ${text}`);
  assert.match(text, /format error at offset 16/);
  assert.match(text, /metadata count 1152921504606846976 cannot fit/);
  await page.close();
});

test('the demo loads the visitor\'s own model from disk (a wrong file gets a clear message)', { skip }, async () => {
  // SmolLM2 from the model cache as the visitor's file: its greedy tokens must equal the
  // native ones. Before it, a file that is not GGUF (refused by the page) and a GGUF model of
  // a kind tandem does not run (the tiny qwen3 fixture relabelled as architecture 'phi42',
  // refused by the engine), each with its message.
  const page = await context.newPage();
  page.on('pageerror', (e) => log(`page error: ${e.message}`));
  await page.goto(`${server.url}/demo/?pair=custom&chat=0&adaptive=0&ctx=256`);
  await page.waitForFunction(() => document.body.dataset.state === 'idle');
  assert.ok(await page.isVisible('#custom'), 'the own-model panel shows for pair=custom');
  const refused = async (file) => {
    await page.setInputFiles('#model-file', file);
    await page.click('#load');
    await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state), null, { timeout: LONG });
    assert.equal(await page.evaluate(() => document.body.dataset.state), 'error');
    const text = await page.textContent('#alert');
    log(`refused: ${text}`);
    return text;
  };
  assert.match(await refused(join(REPO, 'README.md')), /README\.md is not a GGUF model file/);
  // Every 'qwen3' in the file is metadata (the architecture and its key prefix): the same
  // length renamed, the file stays a valid GGUF of an unknown family.
  const bytes = readFileSync(join(REPO, 'tests', 'fixtures', 'tiny-qwen3.gguf'));
  for (let i = bytes.indexOf('qwen3'); i >= 0; i = bytes.indexOf('qwen3', i + 5)) {
    bytes.write('phi42', i, 'latin1');
  }
  const unknownDir = mkdtempSync(join(tmpdir(), 'tandem-unknown-arch-'));
  const unknown = join(unknownDir, 'tiny-phi42.gguf');
  writeFileSync(unknown, bytes);
  try {
    assert.match(
      await refused(unknown),
      /tandem cannot run this model here \(unsupported: architecture 'phi42'/,
    );
  } finally {
    rmSync(unknownDir, { recursive: true, force: true });
  }
  await page.setInputFiles('#model-file', join(MODELS_DIR, MODEL));
  assert.match(await page.textContent('#custom-chosen'), /SmolLM2-135M-Instruct\.Q4_1\.gguf .*from this computer/);
  await page.click('#load');
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state), null, { timeout: LONG });
  assert.equal(await page.evaluate(() => document.body.dataset.state), 'ready', await page.textContent('#alert'));
  assert.match(await page.textContent('.file[data-file="target"] .name'), /SmolLM2-135M-Instruct\.Q4_1\.gguf/);
  const { tokens, note } = await sendAndWait(page, { method: 'plain', maxTokens: 4 });
  log(`own model: ${note}`);
  assert.deepEqual(
    tokens.map((t) => t.id),
    native.slice(0, 4),
    'the page\'s greedy tokens for the chosen file differ from tandem run\'s',
  );
  await page.close();
});

const GEMMA = 'gemma-3-270m-q4_k_m.gguf';
const GEMMA_PROMPT = 'The capital of France is';
const gemmaSkip = skip || (existsSync(join(MODELS_DIR, GEMMA)) ? false : `SKIP: ${GEMMA} is not in ${MODELS_DIR} (scripts/fetch-models.sh gemma-3-270m)`);
if (gemmaSkip && !skip) console.log(gemmaSkip);

test('demo: Gemma 3 270M, a base model, continues raw text with the native greedy tokens', { skip: gemmaSkip }, async () => {
  // The 262,144-token vocabulary and the tied Q8_0 output head (178 MB, past WebGPU's
  // 128 MiB binding limit: split in two) in the browser; no chat template in the file, so
  // the page turns the chat template off for this model.
  const n = 3;
  const want = nativeTokens(GEMMA, GEMMA_PROMPT, n);
  log(`native Gemma greedy ids: ${JSON.stringify(want)}`);
  const page = await context.newPage();
  page.on('pageerror', (e) => log(`page error: ${e.message}`));
  await page.goto(`${server.url}/demo/?pair=gemma-3-270m&adaptive=0&ctx=128`);
  await page.waitForFunction(() => document.body.dataset.state === 'idle');
  assert.ok(await page.isDisabled('#chat-template'), 'the chat template checkbox stays enabled for a base model');
  assert.ok(!(await page.isChecked('#chat-template')));
  await page.click('#load');
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state), null, { timeout: LONG });
  assert.equal(await page.evaluate(() => document.body.dataset.state), 'ready', await page.textContent('#alert'));
  const { tokens, note } = await sendAndWait(page, { method: 'plain', maxTokens: n, prompt: GEMMA_PROMPT });
  log(`Gemma 3: ${note}`);
  assert.deepEqual(tokens.map((t) => t.id), want, 'the page\'s Gemma tokens differ from tandem run\'s');
  await page.close();
});

test('the demo fits a phone screen', { skip }, async () => {
  const page = await context.newPage();
  await page.setViewportSize({ width: 360, height: 740 });
  await page.goto(`${server.url}/demo/`);
  const widths = await page.evaluate(() => ({
    page: document.documentElement.scrollWidth,
    send: document.getElementById('send').getBoundingClientRect().right,
    stats: document.getElementById('stats').getBoundingClientRect().right,
  }));
  assert.ok(widths.page <= 360, `the page is ${widths.page}px wide on a 360px screen`);
  assert.ok(widths.send <= 360 && widths.stats <= 360, JSON.stringify(widths));
  await page.close();
});
