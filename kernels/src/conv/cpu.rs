//! The Gated DeltaNet causal convolution (+ SiLU) on the CPU: one parallel pass.

use burn::backend::NdArray;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use crate::Act;
use crate::cpu_common::{from_vec, standard, values, wide};

/// [`crate::conv::causal_conv_silu`] in one parallel pass over the output rows.
pub fn causal_conv_silu(
    x: Tensor<NdArray, 2>,
    state: Tensor<NdArray, 2>,
    weight: Tensor<NdArray, 2>,
) -> (Tensor<NdArray, 2>, Tensor<NdArray, 2>) {
    if [&x, &state, &weight].iter().any(|t| t.dtype() != DType::F32) {
        return crate::conv::causal_conv_silu(x, state, weight);
    }
    let ([t, c], [lag, _]) = (x.dims(), state.dims());
    let [x, state, weight] = [x, state, weight].map(standard);
    let (x, state, weight) = (values(&x), values(&state), values(&weight));
    // Row r of the window [state ‖ x].
    let window = |r: usize| if r < lag { &state[r * c..(r + 1) * c] } else { &x[(r - lag) * c..(r - lag + 1) * c] };
    let mut out = vec![0f32; t * c];
    out.par_chunks_mut(c.max(1)).enumerate().for_each(|(i, row)| {
        wide(|| {
            for (j, w) in weight.chunks_exact(c).enumerate() {
                row.iter_mut().zip(window(i + j)).zip(w).for_each(|((o, x), w)| *o += x * w);
            }
            Act::Silu.apply(row, None);
        })
    });
    let new_state = (t..t + lag).flat_map(window).copied().collect();
    (from_vec(out, [t, c]), from_vec(new_state, [lag, c]))
}
