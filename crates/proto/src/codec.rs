//! The gRPC codec of every Overlord service: prost encoding, with one change at the edge — a
//! message that is not valid protobuf is the peer's fault, so it is answered `InvalidArgument`
//! (tonic's `ProstCodec` says `Internal`, which reads as a coordinator bug). Oversized messages
//! are refused before decoding by tonic itself (`OutOfRange`, naming the limit); the coordinator
//! answers them `ResourceExhausted` (`overlord_coordinator::api::SizeLimited`, and `inbound_error`
//! on a minion session).

use prost::Message;
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

/// Prost codec whose decode errors are `InvalidArgument("malformed protobuf: …")`.
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        StrictCodec(PhantomData)
    }
}

impl<T, U> StrictCodec<T, U> {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Decoder half of [`StrictCodec`].
#[derive(Debug, Clone)]
pub struct StrictDecoder<U>(PhantomData<U>);

/// Prefix of the status message for undecodable messages (stable; tests and peers may show it).
pub const MALFORMED: &str = "malformed protobuf";

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            Status::invalid_argument(format!(
                "{MALFORMED} for {}: {e}",
                std::any::type_name::<U>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("message")
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(PhantomData)
    }
}
