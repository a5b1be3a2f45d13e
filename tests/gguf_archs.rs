//! GGUF files of the Llama (rotary-permuted q/k, Llama 3 `rope_freqs`), Qwen2 and Qwen3 architectures:
//! the golden tiny models converted by llama.cpp's own Python package (`tests/gguf_models.py`,
//! llama.cpp's tensor names, layouts and metadata keys) load to
//! the safetensors model's logits: exactly from F32 tensors; from Q8_0 tensors, exactly what
//! `--quantize int8` makes of the safetensors model (the same blocks, byte for byte), kept as blocks
//! or dequantized at load.

use burn::backend::NdArray;
use burn::tensor::{DType, Tensor};
use rmas_models::{BlockFormat, Blocks, Model, Precision};
use rmas_suite::{Golden, assert_close, golden};

type B = NdArray;

fn logits(model: &Model<B>, ids: &[u32]) -> Tensor<B, 2> {
    let mut cache = model.new_cache(ids.len(), 0).unwrap();
    model.logits(model.forward(model.embed(ids).unwrap(), &mut cache).unwrap())
}

fn gguf(name: &str, blocks: Blocks) -> Model<B> {
    let path = golden("../gguf").join(name);
    let precision = Precision { dtype: DType::F32, blocks };
    Model::load_gguf(&path, &Default::default(), precision).unwrap_or_else(|e| panic!("{name}: {e}")).0
}

#[test]
fn gguf_files_load_to_the_safetensors_logits() {
    for arch in ["llama", "qwen2", "qwen3"] {
        let ids = Golden::open(&format!("models/{arch}/golden.safetensors")).ids("input_ids");
        let dir = golden(&format!("models/{arch}/model"));
        let precision = |blocks| Precision { dtype: DType::F32, blocks };
        let safetensors = Model::<B>::load(&dir, &Default::default(), precision(Blocks::Dense)).unwrap();
        let from_f32 = gguf(&format!("{arch}-f32.gguf"), Blocks::Stored);
        assert_close(&format!("{arch} F32 GGUF"), logits(&from_f32, &ids), logits(&safetensors, &ids), 1e-5, 1e-5);

        let int8 = Model::<B>::load(&dir, &Default::default(), precision(Blocks::Quantize(BlockFormat::Q8_0))).unwrap();
        let want = logits(&int8, &ids);
        for blocks in [Blocks::Stored, Blocks::Dense] {
            let got = logits(&gguf(&format!("{arch}-q8_0.gguf"), blocks), &ids);
            assert_close(&format!("{arch} Q8_0 GGUF ({blocks:?})"), got, want.clone(), 1e-5, 1e-5);
        }
    }
}
