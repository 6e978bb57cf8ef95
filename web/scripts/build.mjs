#!/usr/bin/env node
// Builds the npm package into web/dist/: the engine for wasm32 (cargo), its JS bindings
// (wasm-bindgen --target web) and the package sources (web/src/).
//
//   node scripts/build.mjs                # release build of the wasm
//   node scripts/build.mjs --dev          # dev profile (faster to build; what the tests use)
//   node scripts/build.mjs --if-missing   # only when dist/ has no wasm yet (npm run demo)
//   node scripts/build.mjs --opt          # also run wasm-opt (npm binaryen) when installed
//
// The bindings are the workspace's `tandem-web` crate (crates/web). Needs the
// wasm32-unknown-unknown target and wasm-bindgen-cli of the same version as the wasm-bindgen
// crate (crates/web/Cargo.toml). CARGO_TARGET_DIR is honoured.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const web = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repo = resolve(web, '..');
const args = new Set(process.argv.slice(2));
const profile = args.has('--dev') || process.env.TANDEM_WASM_PROFILE === 'dev' ? 'dev' : 'release';
const dist = join(web, 'dist');
const pkg = join(web, 'pkg');

if (args.has('--if-missing') && existsSync(join(dist, 'tandem_bg.wasm'))) {
  console.log('build: dist/ is already built (delete it or run `npm run build` to rebuild)');
  process.exit(0);
}

function run(cmd, argv, opts = {}) {
  console.log(`build: ${cmd} ${argv.join(' ')}`);
  execFileSync(cmd, argv, { stdio: 'inherit', ...opts });
}

const cargoArgs = ['build', '-p', 'tandem-web', '--lib', '--target', 'wasm32-unknown-unknown'];
if (profile === 'release') cargoArgs.push('--release');
run('cargo', cargoArgs, { cwd: repo });

const targetDir = process.env.CARGO_TARGET_DIR ? resolve(repo, process.env.CARGO_TARGET_DIR) : join(repo, 'target');
const wasm = join(targetDir, 'wasm32-unknown-unknown', profile === 'release' ? 'release' : 'debug', 'tandem_web.wasm');
rmSync(pkg, { recursive: true, force: true });
run('wasm-bindgen', ['--target', 'web', '--out-dir', pkg, '--out-name', 'tandem', wasm]);

const wasmOpt = join(web, 'node_modules', '.bin', 'wasm-opt');
if (args.has('--opt')) {
  if (existsSync(wasmOpt)) {
    const file = join(pkg, 'tandem_bg.wasm');
    // The features rustc's wasm32 target emits (Rust 1.87+).
    const features = ['bulk-memory', 'nontrapping-float-to-int', 'sign-ext', 'mutable-globals', 'multivalue', 'reference-types'];
    run(wasmOpt, ['-O2', ...features.map((f) => `--enable-${f}`), file, '-o', file]);
  } else {
    console.log('build: --opt asked for but node_modules/.bin/wasm-opt is missing (npm install --no-save binaryen); skipped');
  }
}

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
for (const f of readdirSync(join(web, 'src'))) copyFileSync(join(web, 'src', f), join(dist, f));
for (const f of ['tandem.js', 'tandem_bg.wasm']) copyFileSync(join(pkg, f), join(dist, f));
console.log(`build: ${dist} ready (${profile} wasm)`);
