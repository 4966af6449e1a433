#![no_main]
//! Grabber protocol parsers (SSH, HTTP, Redis, MQTT, RFB, X11, FTP/SMTP replies, X.509).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    overlord_probes::service::fuzzing::protocols(data);
});
