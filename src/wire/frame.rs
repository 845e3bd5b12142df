//! RFC 6455 frame headers: parsing what the peer sends, writing what we send, and masking.
//!
//! Only the header is ever held in memory here (at most [`MAX_HEADER`] bytes); payloads are
//! streamed by [`super::stream::WsStream`] straight between the socket and the caller's buffers.

/// The longest frame header: 2 bytes, an 8-byte extended length, a 4-byte mask key.
pub const MAX_HEADER: usize = 14;

/// Largest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame's opcode (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// 0x0: the next fragment of the message in progress.
    Continuation,
    /// 0x1: a UTF-8 text message (refused on a tunnel stream).
    Text,
    /// 0x2: a binary message: tunnel bytes.
    Binary,
    /// 0x8: the closing handshake.
    Close,
    /// 0x9: a ping, to be answered by a pong with the same payload.
    Ping,
    /// 0xA: a pong: the peer is alive.
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong: at most 125 bytes, never fragmented, allowed between fragments.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// Which end of the connection we are: a client masks what it sends and expects unmasked
/// frames; a server the reverse (RFC 6455 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The side that sent the upgrade request (the tunnel's carrier).
    Client,
    /// The side that answered it (the gateway).
    Server,
}

/// A frame the peer sent that breaks RFC 6455 or this protocol. Each one ends the stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A reserved bit is set, though no extension was negotiated.
    #[error("frame with reserved bits set (no extension was negotiated)")]
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    #[error("frame with the reserved opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A control frame longer than 125 bytes.
    #[error("control frame of {0} bytes (at most 125 allowed)")]
    ControlTooLong(u64),
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A client frame without a mask (read by a server).
    #[error("unmasked frame from a client")]
    UnmaskedFromClient,
    /// A server frame with a mask (read by a client).
    #[error("masked frame from a server")]
    MaskedFromServer,
    /// An extended length with its top bit set.
    #[error("frame length out of range")]
    Length,
    /// A continuation frame with no message to continue.
    #[error("continuation frame outside a message")]
    StrayContinuation,
    /// A new message began before the previous one finished.
    #[error("new message inside a fragmented message")]
    Interleaved,
    /// A text message: the edge carries tunnel bytes as binary frames only.
    #[error("text frame on a binary tunnel stream")]
    Text,
    /// A close frame with a one-byte payload (a status code is two).
    #[error("close frame with a one-byte payload")]
    CloseLength,
    /// The stream ended inside a frame.
    #[error("the peer closed the connection inside a frame")]
    Truncated,
}

impl From<FrameError> for std::io::Error {
    fn from(err: FrameError) -> Self {
        let kind = match err {
            FrameError::Truncated => std::io::ErrorKind::UnexpectedEof,
            _ => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, err)
    }
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The final fragment of its message.
    pub fin: bool,
    /// What the frame is.
    pub opcode: Opcode,
    /// The mask key, for frames from a client.
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
}

impl Header {
    /// Parses the header at the start of `bytes`, checking what can be checked from the header
    /// alone for a frame arriving at `role`. `Ok(None)`: more bytes are needed. `Ok(Some((h,
    /// n)))`: the header is the first `n` bytes.
    pub fn parse(bytes: &[u8], role: Role) -> Result<Option<(Header, usize)>, FrameError> {
        let [b0, b1, ..] = *bytes else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        let fin = b0 & 0x80 != 0;
        let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(FrameError::UnknownOpcode(b0 & 0x0F))?;
        let masked = b1 & 0x80 != 0;
        // A server reads client frames, which must be masked; a client reads server frames,
        // which must not be.
        match (role, masked) {
            (Role::Server, false) => return Err(FrameError::UnmaskedFromClient),
            (Role::Client, true) => return Err(FrameError::MaskedFromServer),
            _ => {}
        }
        let (len, mut at) = match b1 & 0x7F {
            126 => match bytes.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match bytes.get(2..10) {
                Some(b) => {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(b);
                    let len = u64::from_be_bytes(word);
                    if len >> 63 != 0 {
                        return Err(FrameError::Length);
                    }
                    (len, 10)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        if opcode.is_control() {
            if !fin {
                return Err(FrameError::FragmentedControl);
            }
            if len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(FrameError::ControlTooLong(len));
            }
        }
        let mask = if masked {
            let Some(b) = bytes.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            Some([b[0], b[1], b[2], b[3]])
        } else {
            None
        };
        Ok(Some((
            Header {
                fin,
                opcode,
                mask,
                len,
            },
            at,
        )))
    }

    /// Writes the header into `out` (at least [`MAX_HEADER`] bytes) and returns its length.
    pub fn encode(&self, out: &mut [u8; MAX_HEADER]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | self.opcode.bits();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut at = if self.len < 126 {
            out[1] = mask_bit | self.len as u8;
            2
        } else if let Ok(len) = u16::try_from(self.len) {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&len.to_be_bytes());
            4
        } else {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&self.len.to_be_bytes());
            10
        };
        if let Some(key) = self.mask {
            out[at..at + 4].copy_from_slice(&key);
            at += 4;
        }
        at
    }
}

/// XORs `data` with `key`, `data` starting at byte `offset` of the payload. Masking and
/// unmasking are the same operation. Eight bytes at a time: a bulk upload masks every byte.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: u64) {
    let mut key = key;
    key.rotate_left((offset % 4) as usize);
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    // The tail starts at a multiple of 8 from `offset`, so the key's phase is unchanged.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive_mask(data: &mut [u8], key: [u8; 4], offset: u64) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= key[((offset + i as u64) % 4) as usize];
        }
    }

    #[test]
    fn headers_round_trip_at_every_length_class() {
        for len in [0u64, 1, 125, 126, 127, 65_535, 65_536, 1 << 40] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let header = Header {
                    fin: len % 2 == 0,
                    opcode: Opcode::Binary,
                    mask,
                    len,
                };
                let mut buf = [0u8; MAX_HEADER];
                let n = header.encode(&mut buf);
                let role = if mask.is_some() {
                    Role::Server
                } else {
                    Role::Client
                };
                assert_eq!(Header::parse(&buf[..n], role), Ok(Some((header, n))));
                // Any shorter prefix asks for more.
                for short in 0..n {
                    assert_eq!(
                        Header::parse(&buf[..short], role),
                        Ok(None),
                        "{len} {short}"
                    );
                }
            }
        }
    }

    #[test]
    fn protocol_violations_are_refused() {
        let server = Role::Server;
        let client = Role::Client;
        assert_eq!(
            Header::parse(&[0xC2, 0x00], client),
            Err(FrameError::ReservedBits)
        );
        assert_eq!(
            Header::parse(&[0x83, 0x00], client),
            Err(FrameError::UnknownOpcode(3))
        );
        assert_eq!(
            Header::parse(&[0x09, 0x00], client),
            Err(FrameError::FragmentedControl)
        );
        assert_eq!(
            Header::parse(&[0x89, 126, 0, 126], client),
            Err(FrameError::ControlTooLong(126))
        );
        assert_eq!(
            Header::parse(&[0x82, 0x01], server),
            Err(FrameError::UnmaskedFromClient)
        );
        assert_eq!(
            Header::parse(&[0x82, 0x81, 0, 0, 0, 0], client),
            Err(FrameError::MaskedFromServer)
        );
        assert_eq!(
            Header::parse(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0], client),
            Err(FrameError::Length)
        );
    }

    #[test]
    fn the_example_of_rfc_6455_unmasks() {
        // §5.7: a masked "Hello" from a client.
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (header, n) = Header::parse(&frame, Role::Server).unwrap().unwrap();
        assert_eq!((header.opcode, header.len, n), (Opcode::Text, 5, 6));
        let mut payload = frame[n..].to_vec();
        apply_mask(&mut payload, header.mask.unwrap(), 0);
        assert_eq!(payload, b"Hello");
    }

    proptest! {
        #[test]
        fn word_masking_equals_bytewise_masking_at_any_offset(
            data in proptest::collection::vec(any::<u8>(), 0..100),
            key in any::<[u8; 4]>(),
            offset in 0u64..16,
        ) {
            let mut fast = data.clone();
            let mut slow = data;
            apply_mask(&mut fast, key, offset);
            naive_mask(&mut slow, key, offset);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_header_parser(
            bytes in proptest::collection::vec(any::<u8>(), 0..20),
            server in any::<bool>(),
        ) {
            let role = if server { Role::Server } else { Role::Client };
            if let Ok(Some((header, n))) = Header::parse(&bytes, role) {
                prop_assert!(n <= bytes.len() && n <= MAX_HEADER);
                let mut again = [0u8; MAX_HEADER];
                // What parsed encodes back to a header that parses the same (the length may
                // be re-encoded shorter: minimal encoding is not required of the peer).
                let m = header.encode(&mut again);
                prop_assert_eq!(Header::parse(&again[..m], role), Ok(Some((header, m))));
            }
        }
    }
}
