// The rmas web demo: loads a RecursiveMAS system into WebGPU and shows a run as it happens.
// `?test` runs the built-in demo once with the CLI's demo settings (date from `&date=YYYY-MM-DD`) and
// writes `{ok, token_ids, answer, …}` into #out, then sets the title to DONE (for web/drive.js).

import init, { adapterInfo, demoQuestion, WebSystem } from "./pkg/rmas_web.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let system = null;

function fail(message) {
  $("adapter").innerHTML = `<span class="error">${message}</span>`;
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
    `shader-f16 ${info.f16 ? "available" : "unavailable"} · the demo computes in f32`;
  $("question").value = demoQuestion();
  $("load").onclick = () => load().catch((e) => fail(`loading failed: ${e.message ?? e}`));
  $("run").onclick = () => run().catch((e) => fail(`run failed: ${e.message ?? e}`));
  if (params.has("test")) {
    await load();
    await run({ chatDate: params.get("date") ?? undefined });
  }
}

async function load() {
  $("load").disabled = true;
  $("load-status").textContent = "building the demo system…";
  const started = performance.now();
  system = await WebSystem.demo();
  $("load-status").textContent = `ready in ${((performance.now() - started) / 1000).toFixed(1)} s`;
  drawGraph(system.graph());
  $("run").disabled = false;
  $("load").disabled = false;
}

/// Runs the question; `overrides` replaces the form's settings (the test passes the CLI's).
async function run(overrides) {
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
  finishTest({ ok: true, token_ids: result.token_ids, answer: result.answer, stages: result.stages.length, adapter: $("adapter").textContent });
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
      drawMessage(e);
      highlight(e.from, e.key);
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

function highlight(role, key) {
  document.querySelectorAll("#graph .node").forEach((n) => n.classList.toggle("active", n.dataset.role === role));
  document.querySelectorAll("#graph .edge").forEach((p) => p.classList.toggle("active", p.dataset.key === key));
}

main().catch((e) => fail(`${e.message ?? e}`));
