//! A `.pt` RecursiveLink checkpoint (torch zip + pickle) from untrusted bytes: errors, never a
//! panic, an abort or unbounded memory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rmas::pt::read_state_dict(data);
});
