#![no_main]
//! nmap-service-probes parser + rule matching + template expansion on arbitrary input.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    overlord_probes::service::fuzzing::probefile(data);
});
