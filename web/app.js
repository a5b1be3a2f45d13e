// The rmas web demo: loads a RecursiveMAS system into WebGPU and shows a run as it happens.
//
// Test mode (web/drive.js) writes `{ok, token_ids, answer, files, cached, …}` into #out and sets the
// title to DONE. `?test` runs the built-in demo with the CLI's demo settings; `&hub=URL&style=S&task=T`
// loads that released system from a Hub (or a mirror with its `<repo>/resolve/main/<file>` layout)
// instead; `&date=YYYY-MM-DD`, `&latentSteps=N`, `&rounds=N`, `&maxNewTokens=N`, `&temperature=T`,
// `&answerRetry=0|1`, `&dtype=f32|f16|auto`, `&weights=stored|int8|int4`, `&dataset=…` and `&question=…`
// set the run (a released system otherwise takes its recommended settings, as `rmas run`); `&loadOnly`
// stops after loading.

import init, { adapterInfo, demoQuestion, WebSystem } from "./pkg/rmas_web.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const CACHE = "rmas-hub-v1";
let system = null;

function fail(message) {
  $("adapter").innerHTML = `<span class="error"></span>`;
  $("adapter").firstChild.textContent = message;
  $("load").disabled = false;
  finishTest({ ok: false, error: message });
}

function finishTest(result) {
  if (!params.has("test")) return;
  $("out").textContent = JSON.stringify(result);
  document.title = "DONE";
}

async function main() {
  if (!("gpu" in navigator)) {
    return fail("This browser has no WebGPU (navigator.gpu is missing). Use a recent Chrome/Edge, or Firefox/Safari with WebGPU enabled, over https or localhost.");
  }
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) {
    return fail("WebGPU is present but no adapter is available (GPU blocklisted or disabled). Headless Chromium needs --enable-unsafe-webgpu.");
  }
  await init();
  const info = await adapterInfo();
  const gpu = adapter.info ?? {};
  const name = [gpu.vendor, gpu.architecture, gpu.description].filter(Boolean).join(" ") || info.name || "unnamed";
  $("adapter").textContent = `WebGPU adapter: ${name}${adapter.info?.isFallbackAdapter ? " (software fallback)" : ""} · ` +
    `shader-f16 ${info.f16 ? "available: released systems load in f16 (dtype auto)" : "unavailable: everything computes in f32"} · ` +
    `largest buffer ${mb(info.maxBufferBytes)} (bigger vocabulary matrices are split)`;
  $("question").value = params.get("question") ?? demoQuestion();
  for (const key of ["style", "task", "dtype", "weights", "hub"]) if (params.has(key)) $(key).value = params.get(key);
  for (const [key, id] of [["rounds", "rounds"], ["latentSteps", "latent-steps"], ["maxNewTokens", "max-new-tokens"]]) {
    if (params.has(key)) $(id).value = params.get(key);
  }
  if (params.has("hub")) document.querySelector('input[value="hub"]').checked = true;
  $("load").onclick = () => load().catch((e) => fail(`loading failed: ${e.message ?? e}`));
  $("run").onclick = () => run().catch((e) => fail(`run failed: ${e.message ?? e}`));
  $("clear-cache").onclick = async () => {
    await caches.delete(CACHE);
    $("load-status").textContent = "download cache cleared";
  };
  if (params.has("test")) {
    const loaded = await load();
    if (params.has("loadOnly")) return finishTest({ ok: true, ...loaded });
    const number = (key) => (params.has(key) ? +params.get(key) : undefined);
    const answerRetry = params.has("answerRetry") ? params.get("answerRetry") !== "0" : undefined;
    await run({ chatDate: params.get("date") ?? undefined, dataset: params.get("dataset") ?? undefined, latentSteps: number("latentSteps"), rounds: number("rounds"), maxNewTokens: number("maxNewTokens"), temperature: number("temperature"), answerRetry }, loaded);
  }
}

/// Loads the chosen system; resolves to `{files, cached, bytes}` of the download (zeros for the demo).
async function load() {
  $("load").disabled = true;
  $("run").disabled = true;
  const started = performance.now();
  const fromHub = document.querySelector('input[name="source"]:checked').value === "hub";
  const stats = { files: 0, cached: 0, bytes: 0 };
  if (fromHub) {
    const endpoint = $("hub").value.replace(/\/+$/, "");
    $("load-status").textContent = `resolving ${$("style").value} (${$("task").value})…`;
    const counted = new Set();
    const fetchOne = (repo, file, wantBytes) => fetchFile(endpoint, repo, file, wantBytes, stats, counted);
    system = await WebSystem.load($("style").value, $("task").value, $("dtype").value, $("weights").value, fetchOne);
  } else {
    $("load-status").textContent = "building the demo system…";
    system = await WebSystem.demo($("weights").value);
  }
  const graph = system.graph();
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const source = fromHub ? ` · ${stats.files} files, ${mb(stats.bytes)} (${stats.cached} from the browser cache)` : "";
  const blockBytes = graph.agents.reduce((sum, a) => sum + a.blockBytes, 0);
  const blocks = blockBytes > 0 ? ` · ${[...new Set(graph.agents.flatMap((a) => a.blocks))].sort().join("+")} blocks, ${mb(blockBytes)} on the GPU` : "";
  $("load-status").textContent = `ready in ${seconds} s${source} · ${graph.agents[0]?.dtype ?? ""}${blocks}`;
  $("load-progress").hidden = true;
  drawGraph(graph);
  $("run").disabled = false;
  $("load").disabled = false;
  return stats;
}

const mb = (bytes) => `${(bytes / 1e6).toFixed(bytes < 1e7 ? 2 : 0)} MB`;

/// Downloads the page keeps in memory because the Cache API is unavailable (e.g. a private window).
const held = new Map();

/// wasm32 addresses 4 GiB: a larger file (a big checkpoint shard) cannot be read by offset.
function readable(url, bytes) {
  if (bytes.length > 0xffffffff) throw new Error(`${url}: ${mb(bytes.length)} — files over 4 GiB cannot be read by the wasm32 build`);
  return bytes;
}

/// One file of a Hub repo: from the Cache API if it was downloaded before, else fetched with a
/// progress bar and cached. `null` when the repo does not have it (HTTP 404). Without `wantBytes`
/// (weights while resolving) it only makes sure the file is downloaded and answers `true`; rmas asks
/// again for the bytes when it builds that agent. `counted` keeps `stats` to one count per file.
async function fetchFile(endpoint, repo, file, wantBytes, stats, counted) {
  const url = `${endpoint}/${repo}/resolve/main/${file.split("/").map(encodeURIComponent).join("/")}`;
  if (held.has(url)) {
    const bytes = held.get(url);
    held.delete(url);
    return readable(url, bytes);
  }
  const cache = "caches" in self ? await caches.open(CACHE).catch(() => null) : null;
  const hit = cache ? await cache.match(url) : undefined;
  if (hit) {
    if (!counted.has(url)) {
      counted.add(url);
      const size = wantBytes ? 0 : (await hit.clone().blob()).size;
      const bytes = wantBytes ? readable(url, new Uint8Array(await hit.arrayBuffer())) : true;
      Object.assign(stats, { files: stats.files + 1, cached: stats.cached + 1, bytes: stats.bytes + (wantBytes ? bytes.length : size) });
      $("load-status").textContent = `${repo}/${file} · from the cache`;
      return bytes;
    }
    $("load-status").textContent = `loading ${repo}/${file}`;
    return readable(url, new Uint8Array(await hit.arrayBuffer()));
  }
  const response = await fetch(url);
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`);
  const total = +(response.headers.get("content-length") ?? 0);
  const bar = $("load-progress");
  bar.hidden = false;
  bar.max = total || 1;
  bar.value = 0;
  const chunks = [];
  let loaded = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    bar.value = total ? loaded : 0;
    $("load-status").textContent = `downloading ${repo}/${file} · ${mb(loaded)}${total ? ` of ${mb(total)}` : ""} · ${mb(stats.bytes + loaded)} in all`;
  }
  const bytes = new Uint8Array(loaded);
  chunks.reduce((at, c) => (bytes.set(c, at), at + c.length), 0);
  counted.add(url);
  Object.assign(stats, { files: stats.files + 1, bytes: stats.bytes + loaded });
  // A full quota (or a private window) only costs the next visit a download.
  const cached = cache ? await cache.put(url, new Response(bytes)).then(() => true, (e) => console.warn(`not cached: ${url}: ${e}`)) : false;
  if (wantBytes) return readable(url, bytes);
  if (!cached) held.set(url, bytes);
  return true;
}

/// Runs the question; `overrides` replaces the form's settings (the test passes the CLI's).
async function run(overrides, loaded) {
  $("run").disabled = true;
  $("stages").replaceChildren();
  $("messages").replaceChildren();
  $("answer").textContent = "";
  $("speed").textContent = "";
  const options = overrides ?? {
    rounds: +$("rounds").value,
    latentSteps: +$("latent-steps").value,
    maxNewTokens: +$("max-new-tokens").value,
    temperature: +$("temperature").value,
  };
  const stage = { li: null, tokens: 0, started: 0 };
  const started = performance.now();
  const result = await system.run($("question").value, options, (e) => onEvent(e, stage));
  const text = result.stages.filter((s) => s.kind === "text");
  const last = text[text.length - 1];
  if (last) $("speed").textContent = `· ${last.generated_ids.length} tokens at ${(last.generated_ids.length / (last.ms / 1000)).toFixed(1)} tokens/s · whole run ${((performance.now() - started) / 1000).toFixed(1)} s`;
  $("answer").textContent = result.answer;
  $("run").disabled = false;
  finishTest({ ok: true, token_ids: result.token_ids, answer: result.answer, stages: result.stages.length, adapter: $("adapter").textContent, ...loaded });
}

function onEvent(e, stage) {
  switch (e.type) {
    case "stage": {
      stage.li = document.createElement("li");
      stage.li.className = "running";
      stage.li.textContent = `round ${e.round} · ${e.role} · ${e.text ? "generating" : "latent rollout"}`;
      $("stages").append(stage.li);
      highlight(e.role);
      if (e.text) $("answer").textContent = "";
      break;
    }
    case "latentStep":
      stage.li.textContent = `round ${e.round} · ${e.role} · latent step ${e.step}`;
      break;
    case "token":
      $("answer").textContent += e.text;
      break;
    case "stageEnd": {
      const what = e.kind === "latent" ? `${e.latent_steps} latent steps` : `${(e.generated_ids ?? []).length} tokens`;
      stage.li.className = "";
      stage.li.textContent = `round ${e.round} · ${e.agent} · ${what} in ${e.ms.toFixed(0)} ms`;
      break;
    }
    case "message":
      // Read back asynchronously: it can arrive after the receiver's stage started, so it lights
      // its link only, never the active agent.
      drawMessage(e);
      highlightLink(e.key);
      break;
  }
}

/// A latent message as a heatmap: one row per latent step, hidden dims averaged into 64 columns.
function drawMessage(e) {
  const bins = Math.min(64, e.cols);
  const canvas = document.createElement("canvas");
  canvas.width = bins;
  canvas.height = Math.max(1, e.rows);
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(bins, canvas.height);
  const norms = [];
  let max = 1e-12;
  const cells = [];
  for (let r = 0; r < e.rows; r++) {
    let sq = 0;
    for (let c = 0; c < e.cols; c++) sq += e.values[r * e.cols + c] ** 2;
    norms.push(Math.sqrt(sq));
    for (let b = 0; b < bins; b++) {
      const lo = Math.floor((b * e.cols) / bins), hi = Math.floor(((b + 1) * e.cols) / bins);
      let s = 0;
      for (let c = lo; c < hi; c++) s += e.values[r * e.cols + c];
      const v = s / Math.max(1, hi - lo);
      cells.push(v);
      max = Math.max(max, Math.abs(v));
    }
  }
  cells.forEach((v, i) => {
    const t = v / max; // blue (negative) · white · red (positive)
    image.data.set([t > 0 ? 255 : 255 * (1 + t), 255 * (1 - Math.abs(t)), t < 0 ? 255 : 255 * (1 - t), 255], 4 * i);
  });
  ctx.putImageData(image, 0, 0);
  canvas.style.height = `${Math.max(12, 12 * e.rows)}px`;
  const fig = document.createElement("figure");
  const caption = document.createElement("figcaption");
  caption.textContent = `r${e.round} ${e.key} (${e.from}) · ‖m‖ ${norms.map((n) => n.toFixed(1)).join(" ")}`;
  fig.append(canvas, caption);
  $("messages").append(fig);
}

/// Agents on a circle, outer links as arrows.
function drawGraph(g) {
  const svg = $("graph");
  const ns = "http://www.w3.org/2000/svg";
  svg.innerHTML = `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#94a3b8"/></marker></defs>`;
  const pos = {};
  g.agents.forEach((a, i) => {
    const t = (2 * Math.PI * i) / g.agents.length - Math.PI / 2;
    pos[a.role] = [210 + 150 * Math.cos(t), 130 + 95 * Math.sin(t)];
  });
  for (const l of g.links) {
    const [x1, y1] = pos[l.from], [x2, y2] = pos[l.to];
    const d = Math.hypot(x2 - x1, y2 - y1), ux = (x2 - x1) / d, uy = (y2 - y1) / d;
    const bend = 12; // the two directions of a pair get opposite curves
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", `M${x1 + 30 * ux},${y1 + 30 * uy} Q${(x1 + x2) / 2 - bend * uy},${(y1 + y2) / 2 + bend * ux} ${x2 - 30 * ux},${y2 - 30 * uy}`);
    path.setAttribute("class", "edge");
    path.dataset.key = l.key;
    svg.append(path);
  }
  for (const a of g.agents) {
    const node = document.createElementNS(ns, "g");
    node.setAttribute("class", "node");
    node.dataset.role = a.role;
    node.innerHTML = `<circle cx="${pos[a.role][0]}" cy="${pos[a.role][1]}" r="28"/>` +
      `<text x="${pos[a.role][0]}" y="${pos[a.role][1] - 2}">${a.role}</text>` +
      `<text x="${pos[a.role][0]}" y="${pos[a.role][1] + 11}">${a.model} · ${a.layers}L · ${a.hidden}</text>`;
    svg.append(node);
  }
}

/// Marks the agent whose stage runs.
function highlight(role) {
  document.querySelectorAll("#graph .node").forEach((n) => n.classList.toggle("active", n.dataset.role === role));
}

/// Marks the outer link whose message arrived last.
function highlightLink(key) {
  document.querySelectorAll("#graph .edge").forEach((p) => p.classList.toggle("active", p.dataset.key === key));
}

main().catch((e) => fail(`${e.message ?? e}`));
