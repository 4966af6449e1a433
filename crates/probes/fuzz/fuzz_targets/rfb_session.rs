//! Fuzzes the whole RFB client state machine: the input is everything a server sends.
//! The first byte picks options (native pixel format or RGB888, frames, settle).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use overlord_probes::screen::rfb::vnc_session;
use overlord_probes::screen::{Encoding, PixelFormat, ScreenOptions};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, server)) = data.split_first() else { return };
    let opts = ScreenOptions {
        max_pixels: 1 << 16,
        max_bytes: 1 << 20,
        max_decompressed_bytes: 4 << 20,
        pixel_format: if knobs & 1 == 0 { Some(PixelFormat::RGB888) } else { None },
        max_frames: 1 + u32::from(knobs >> 1 & 1),
        settle: if knobs & 4 != 0 { Duration::from_millis(1) } else { Duration::ZERO },
        io_timeout: Duration::from_millis(50),
        total_timeout: Duration::from_millis(200),
        encodings: vec![
            Encoding::Zrle,
            Encoding::Tight,
            Encoding::Hextile,
            Encoding::Rre,
            Encoding::CopyRect,
            Encoding::Raw,
        ],
        ..Default::default()
    };
    let stream = tokio::io::join(server, tokio::io::sink());
    let _ = runtime().block_on(vnc_session(stream, &opts));
});
