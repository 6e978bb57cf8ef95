// Model files: streaming downloads with progress, kept in the Cache API so a reload does not
// download again. Used by the worker (downloads) and the page (cache helpers).

/** Name of the Cache API cache that holds downloaded model files. */
export const CACHE_NAME = 'tandem-models-v1';

function cacheStorage() {
  // The Cache API exists only in secure contexts (https, localhost).
  return typeof caches === 'undefined' ? null : caches;
}

/** An absolute URL for `url` (relative URLs are resolved against the page). */
export function absoluteUrl(url) {
  return new URL(String(url), globalThis.location?.href).href;
}

/** Whether the model at `url` is stored in the Cache API. */
export async function hasModelInCache(url) {
  const store = cacheStorage();
  if (!store) return false;
  const cache = await store.open(CACHE_NAME);
  return (await cache.match(absoluteUrl(url))) !== undefined;
}

/** Remove the model at `url` from the Cache API; resolves to whether it was there. */
export async function deleteModelInCache(url) {
  const store = cacheStorage();
  if (!store) return false;
  const cache = await store.open(CACHE_NAME);
  return cache.delete(absoluteUrl(url));
}

/** The file name a model source is shown as. */
export function modelName(source) {
  if (typeof source === 'string') {
    const path = new URL(source, globalThis.location?.href).pathname;
    return decodeURIComponent(path.slice(path.lastIndexOf('/') + 1)) || source;
  }
  return source?.name ?? 'model';
}

/**
 * Stream a model (URL string or File/Blob) chunk by chunk into `sink(chunk)`. `onProgress`
 * gets `{ loaded, total, fromCache }` as bytes arrive (total is 0 when unknown). A URL is
 * read from the Cache API when stored there, otherwise downloaded and stored.
 * Resolves to `{ bytes, fromCache }`.
 */
export async function streamModel(source, { begin, sink, onProgress }) {
  let body;
  let total = 0;
  let fromCache = false;
  let storing = null;
  if (typeof source === 'string') {
    const url = absoluteUrl(source);
    const store = cacheStorage();
    const cache = store ? await store.open(CACHE_NAME) : null;
    let response = cache ? await cache.match(url) : undefined;
    if (response) {
      fromCache = true;
    } else {
      try {
        response = await fetch(url);
      } catch (e) {
        throw new Error(`downloading ${url}: ${e.message}`);
      }
      if (!response.ok) {
        throw new Error(`downloading ${url}: HTTP ${response.status} ${response.statusText}`);
      }
    }
    total = Number(response.headers.get('content-length')) || 0;
    body = response.body;
    if (!fromCache && cache) {
      // One branch fills the cache while the other feeds the engine; a full quota only
      // costs the next visit a download.
      const [forCache, forEngine] = body.tee();
      body = forEngine;
      const headers = new Headers(response.headers);
      storing = cache.put(url, new Response(forCache, { headers })).then(
        () => null,
        (e) => `not stored in the Cache API: ${e.message}`,
      );
    }
  } else if (source && typeof source.stream === 'function') {
    total = source.size;
    body = source.stream();
  } else {
    throw new Error('a model must be a URL string or a File/Blob');
  }
  begin(total);
  const reader = body.getReader();
  let loaded = 0;
  let lastReport = 0;
  onProgress({ loaded, total, fromCache });
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    sink(value);
    loaded += value.byteLength;
    const now = Date.now();
    if (now - lastReport > 100) {
      lastReport = now;
      onProgress({ loaded, total, fromCache });
    }
  }
  if (total && loaded !== total) {
    throw new Error(`model ${modelName(source)}: got ${loaded} of ${total} bytes`);
  }
  onProgress({ loaded, total: total || loaded, fromCache });
  const warning = storing ? await storing : null;
  return { bytes: loaded, fromCache, warning };
}
