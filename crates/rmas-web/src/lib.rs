//! rmas in the browser: the RecursiveMAS engine on WebGPU (burn-wgpu), driven from JavaScript.
//!
//! ```js
//! import init, { adapterInfo, WebSystem } from "./pkg/rmas_web.js";
//! await init();
//! const system = await WebSystem.demo();
//! // or a released system, with the page's fetch (progress, caching) behind `fetchFile`:
//! // const system = await WebSystem.load("sequential-light", "math", "auto", "int4", (repo, file, wantBytes) => bytesOrNull);
//! const result = await system.run(question, { rounds: 2 }, (event) => console.log(event));
//! ```
//!
//! Every device read-back is asynchronous (WebGPU forbids blocking the main thread); events are
//! delivered while the run proceeds.

mod options;

use std::rc::Rc;

use burn::backend::Wgpu;
use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, WgpuSetup, graphics::AutoGraphicsApi, init_setup_async};
use burn::prelude::Backend;
use burn::tensor::{DType, Tensor};
use js_sys::{Function, JSON, Promise, Uint8Array};
use rmas::engine::{Event, LoadedSystem, Run};
use rmas::system::downloads::{Downloads, Fetched, Want};
use rmas_models::generate::read_back;
use rmas_models::weights::ByteSource;
use rmas_models::{BlockFormat, Blocks, Precision};
use rmas_text::{Style, Task};
use serde_json::{Value, json};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise, spawn_local};

/// The backend of the web build: burn's wgpu backend (WebGPU in the browser), f32 activations.
type B = Wgpu;

thread_local! {
    static SETUP: std::cell::RefCell<Option<(WgpuDevice, WgpuSetup)>> = const { std::cell::RefCell::new(None) };
}

/// Initialises WebGPU once per page and returns the device.
async fn device() -> WgpuDevice {
    if let Some(device) = SETUP.with_borrow(|s| s.as_ref().map(|(d, _)| d.clone())) {
        return device;
    }
    console_error_panic_hook::set_once();
    let device = WgpuDevice::default();
    let setup = init_setup_async::<AutoGraphicsApi>(&device, RuntimeOptions::default()).await;
    SETUP.with_borrow_mut(|s| *s = Some((device.clone(), setup)));
    device
}

/// The WebGPU adapter rmas runs on: `{name, backend, driver, f16, maxBufferBytes}` (initialises WebGPU).
#[wasm_bindgen(js_name = adapterInfo)]
pub async fn adapter_info() -> Result<JsValue, JsError> {
    let device = device().await;
    let info = SETUP.with_borrow(|s| s.as_ref().map(|(_, setup)| setup.adapter.get_info())).expect("set up above");
    to_js(&json!({
        "name": info.name,
        "backend": format!("{:?}", info.backend),
        "driver": info.driver,
        "f16": B::supports_dtype(&device, DType::F16),
        "maxBufferBytes": <B as rmas_models::RmasBackend>::max_buffer_bytes(&device),
    }))
}

/// The question `rmas run --demo` asks.
#[wasm_bindgen(js_name = demoQuestion)]
pub fn demo_question() -> String {
    rmas::demo::QUESTION.to_string()
}

/// A RecursiveMAS system resident on the page's WebGPU device.
#[wasm_bindgen]
pub struct WebSystem {
    system: Rc<LoadedSystem<B>>,
    graph: Value,
    /// The released style (`None` for the demo): its runs take the core run policy.
    style: Option<Style>,
}

#[wasm_bindgen]
impl WebSystem {
    /// The built-in demo: the tiny random-weight mixture system (`rmas run --demo`), no download.
    /// `weights` as in [`WebSystem::load`].
    pub async fn demo(weights: Option<String>) -> Result<WebSystem, JsError> {
        let device = device().await;
        let precision = precision(DType::F32, weights.as_deref())?;
        let system = rmas::demo::mixture::<B>(&device, rmas::demo::SEED, precision).map_err(js_error)?;
        let graph = graph_of(&system);
        Ok(WebSystem { system: Rc::new(system), graph, style: None })
    }

    /// Downloads and loads a released system. `style`: `sequential-light`, `sequential-scaled`,
    /// `mixture`, `distillation` or `deliberation`; `task`: `math` or `code`; `dtype`: `f32`, `f16` or
    /// `auto` (f16 when the adapter has `shader-f16`); `weights`: `stored` (the default), or `int8` /
    /// `int4` to quantize the agents' layer weights while loading (`rmas run --quantize`: Q8_0 / Q4_1
    /// blocks, the embedding and LM head Q8_0), which then live on the GPU only.
    /// `fetchFile(repo, file, wantBytes)` returns a
    /// Promise of the file's bytes (`Uint8Array`), or of `null` when the repo does not have it. Weight
    /// files are first asked for with `wantBytes = false` (download and cache them, any non-null
    /// answer) and again with `true` when their agent is built, one agent at a time.
    pub async fn load(
        style: String,
        task: String,
        dtype: String,
        weights: Option<String>,
        fetch_file: Function,
    ) -> Result<WebSystem, JsError> {
        let device = device().await;
        let style: Style = style.parse().map_err(|e: rmas_text::TextError| JsError::new(&e.to_string()))?;
        let task: Task = task.parse().map_err(|e: rmas_text::TextError| JsError::new(&e.to_string()))?;
        let dtype = match dtype.as_str() {
            "f32" => DType::F32,
            "f16" => DType::F16,
            "auto" if B::supports_dtype(&device, DType::F16) => DType::F16,
            "auto" => DType::F32,
            other => return Err(JsError::new(&format!("dtype `{other}`: expected f32, f16 or auto"))),
        };
        let precision = precision(dtype, weights.as_deref())?;
        let downloads = Downloads::new();
        let fetch = |repo, file, want| fetch(&fetch_file, repo, file, want);
        let spec = downloads.resolve(style, task, fetch).await.map_err(js_error)?;
        let system = downloads.load::<B, _, _>(&spec, &device, precision, fetch).await.map_err(js_error)?;
        let graph = graph_of(&system);
        Ok(WebSystem { system: Rc::new(system), graph, style: Some(style) })
    }

    /// The agents (`{role, model, layers, hidden, dtype, blocks, blockBytes}`: the block formats, as
    /// `["Q4_1", "Q8_0"]`, and bytes of the weights held as blocks) and outer links (`{key, from, to}`) for drawing.
    pub fn graph(&self) -> Result<JsValue, JsError> {
        to_js(&self.graph)
    }

    /// Runs `question`; resolves to `{answer, token_ids, stages}` like `rmas run --json`.
    ///
    /// `options` (all optional): `dataset` (the prompt set: `math500`, `gsm8k`, `gpqa`, `mbppplus`, …),
    /// `rounds`, `latentSteps`, `maxNewTokens`, `chatDate` ("YYYY-MM-DD"), `greedy`, `temperature`
    /// (0: greedy), `topK`, `topP`, `seed`, `answerRetry`, `fnName`. A released system starts from the
    /// recommended settings of its style and dataset, with the answer retry and the choice
    /// instruction, exactly as `rmas run`; the demo from the demo's settings.
    /// `onEvent` receives `{type: "stage" | "latentStep" | "message" | "token" | "stageEnd", …}`.
    pub fn run(&self, question: String, options: JsValue, on_event: Function) -> Promise {
        let system = self.system.clone();
        let style = self.style;
        future_to_promise(async move {
            let opts = options::run_options(style, &from_js(&options)?, chrono::Local::now().date_naive())
                .map_err(|e| JsError::new(&e))?;
            let question = rmas::options::dataset_question(opts.dataset, &question);
            let mut stream = TokenStream::default();
            let mut emit = |e: Event<'_, B>| emit(&on_event, &mut stream, e);
            let result = Run::new(&system, &opts, &question, None, &mut emit)
                .execute()
                .await
                .map_err(|e| JsValue::from(js_error(e)))?;
            Ok(to_js(&result.to_json())?)
        })
    }
}

/// `dtype` with the page's `weights` choice: `stored` (or absent), `int8` or `int4`.
fn precision(dtype: DType, weights: Option<&str>) -> Result<Precision, JsError> {
    let blocks = match weights.unwrap_or("stored") {
        "stored" => Blocks::Stored,
        "int8" => Blocks::Quantize(BlockFormat::Q8_0),
        "int4" => Blocks::Quantize(BlockFormat::Q4_1),
        other => return Err(JsError::new(&format!("weights `{other}`: expected stored, int8 or int4"))),
    };
    Ok(Precision::new(dtype, blocks))
}

/// The ids of the current generation and how much of their text was shown.
#[derive(Default)]
struct TokenStream {
    ids: Vec<u32>,
    shown: usize,
}

/// Forwards an engine event to JavaScript; messages are read back asynchronously and arrive later.
fn emit(on_event: &Function, stream: &mut TokenStream, e: Event<'_, B>) {
    let value = match e {
        Event::StageStart { round, role, text } => {
            *stream = TokenStream::default();
            json!({ "type": "stage", "round": round, "role": role.to_string(), "text": text })
        }
        Event::LatentStep { round, role, step } => {
            json!({ "type": "latentStep", "round": round, "role": role.to_string(), "step": step })
        }
        Event::Token { role, id, tokenizer } => {
            stream.ids.push(id);
            let (text, shown) = tokenizer.decode_new_text(&stream.ids, stream.shown);
            stream.shown = shown;
            json!({ "type": "token", "role": role.to_string(), "id": id, "text": text })
        }
        Event::StageEnd(record) => {
            let mut v = record.to_json();
            v["type"] = "stageEnd".into();
            v
        }
        Event::Message { round, from, key, message } => {
            let (on_event, key, message) = (on_event.clone(), key.to_string(), message.clone());
            spawn_local(async move {
                if let Some(v) = message_values(message).await {
                    call(
                        &on_event,
                        &json!({ "type": "message", "round": round, "from": from.to_string(), "key": key, "rows": v.0, "cols": v.1, "values": v.2 }),
                    );
                }
            });
            return;
        }
        Event::Rollout { .. } | Event::GenerateInput { .. } => return,
    };
    call(on_event, &value);
}

/// A message `[T, H]` on the host: rows, columns, row-major f32 values.
async fn message_values(message: Tensor<B, 2>) -> Option<(usize, usize, Vec<f32>)> {
    let [rows, cols] = message.dims();
    let data = read_back(message.cast(DType::F32)).await.ok()?;
    Some((rows, cols, data.to_vec::<f32>().ok()?))
}

fn call(on_event: &Function, value: &Value) {
    if let Ok(v) = to_js(value) {
        // A throwing handler must not abort the run.
        let _ = on_event.call1(&JsValue::NULL, &v);
    }
}

/// `{agents: [{role, model, layers, hidden, dtype, blocks, blockBytes}], links: [{key, from, to}], style}`.
fn graph_of(system: &LoadedSystem<B>) -> Value {
    let agents: Vec<Value> = system
        .agents()
        .map(|a| {
            let c = a.model.config();
            let mut formats: Vec<&str> = a.model.block_matrices().flat_map(|m| m.format_names()).collect();
            formats.sort();
            formats.dedup();
            let block_bytes: usize = a.model.block_matrices().map(|m| m.bytes()).sum();
            json!({ "role": a.role.to_string(), "model": format!("{:?}", c.family), "layers": c.num_layers(), "hidden": c.hidden_size,
                    "dtype": format!("{:?}", a.model.dtype()), "blocks": formats, "blockBytes": block_bytes })
        })
        .collect();
    let links: Vec<Value> = system
        .links()
        .map(|(key, from, to)| json!({ "key": key, "from": from.to_string(), "to": to.to_string() }))
        .collect();
    json!({ "style": system.style.to_string(), "agents": agents, "links": links })
}

/// Calls the page's `fetchFile(repo, file, wantBytes)`: the file (left on the JS heap), or `None`
/// when the repo lacks it; without `wantBytes` the page only makes sure the file is downloaded.
async fn fetch(fetch_file: &Function, repo: String, file: String, want: Want) -> rmas::Result<Option<Fetched>> {
    let failed = |e: JsValue| rmas::RmasError::HubRequest {
        repo: repo.clone(),
        file: file.clone(),
        msg: e
            .as_string()
            .or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
            .unwrap_or_else(|| format!("{e:?}")),
    };
    let want_bytes = JsValue::from_bool(want == Want::Bytes);
    let promise = fetch_file
        .call3(&JsValue::NULL, &JsValue::from_str(&repo), &JsValue::from_str(&file), &want_bytes)
        .map_err(&failed)?;
    let value = JsFuture::from(Promise::resolve(&promise)).await.map_err(&failed)?;
    if value.is_null() || value.is_undefined() {
        return Ok(None);
    }
    if want == Want::Presence {
        return Ok(Some(Box::new(Vec::new())));
    }
    Ok(Some(Box::new(JsBytes(Uint8Array::new(&value)))))
}

/// A downloaded file on the JS heap; loading copies one tensor at a time into wasm memory.
struct JsBytes(Uint8Array);

impl ByteSource for JsBytes {
    fn len(&self) -> usize {
        self.0.length() as usize
    }

    fn read(&self, range: std::ops::Range<usize>) -> Vec<u8> {
        self.0.subarray(range.start as u32, range.end as u32).to_vec()
    }
}

fn to_js(v: &Value) -> Result<JsValue, JsError> {
    JSON::parse(&v.to_string()).map_err(|_| JsError::new("internal: invalid JSON"))
}

fn from_js(v: &JsValue) -> Result<Value, JsError> {
    if v.is_undefined() || v.is_null() {
        return Ok(Value::Null);
    }
    let text = JSON::stringify(v).map_err(|_| JsError::new("options must be a plain object"))?;
    serde_json::from_str(&String::from(text)).map_err(|e| JsError::new(&format!("options: {e}")))
}

fn js_error(e: rmas::RmasError) -> JsError {
    JsError::new(&e.to_string())
}
