//! Kubernetes quantities (`ipa_core::quantity`): CPU and memory as they arrive in replies, snapshots, the seed's
//! text and the CRD. Whatever parses prints as a quantity that parses back to the same value.
#![no_main]

use ipa_core::{Bytes, CpuMillis};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cpu) = text.parse::<CpuMillis>() {
        let shown = cpu.to_string();
        assert_eq!(
            shown.parse::<CpuMillis>(),
            Ok(cpu),
            "{text:?} printed as {shown:?}"
        );
        let millis = format!("{}m", cpu.0);
        assert_eq!(
            millis.parse::<CpuMillis>(),
            Ok(cpu),
            "{text:?} as {millis:?}"
        );
    }
    if let Ok(memory) = text.parse::<Bytes>() {
        let shown = memory.to_string();
        assert_eq!(
            shown.parse::<Bytes>(),
            Ok(memory),
            "{text:?} printed as {shown:?}"
        );
    }
});
