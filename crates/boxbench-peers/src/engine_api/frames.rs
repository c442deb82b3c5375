//! The attach stream of a container without a TTY: stdout and stderr multiplexed on one connection
//! as frames of an 8-byte header (stream 0 stdin, 1 stdout, 2 stderr; three zero bytes; the payload's
//! length, big-endian u32) and the payload. [`Demux`] reads such a stream as the plain bytes of its
//! stdout and stderr interleaved in order, which is what a console is.

use std::io::{self, Read};

/// The frame header's length.
pub const HEADER_LEN: usize = 8;

/// Which stream a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// The container's stdin (echoed back only in odd set-ups).
    Stdin,
    /// Its stdout.
    Stdout,
    /// Its stderr.
    Stderr,
}

impl StreamKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(StreamKind::Stdin),
            1 => Some(StreamKind::Stdout),
            2 => Some(StreamKind::Stderr),
            _ => None,
        }
    }
}

/// Parses a frame header: the stream and the payload's length.
pub fn parse_header(header: [u8; HEADER_LEN]) -> io::Result<(StreamKind, usize)> {
    let kind = StreamKind::from_byte(header[0]).filter(|_| header[1..4] == [0, 0, 0]).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("attach stream: not a frame header: {header:02x?}"))
    })?;
    let length = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    Ok((kind, length))
}

/// Reads the payloads of a multiplexed stream as one byte stream; counts what each stream carried.
#[derive(Debug)]
pub struct Demux<R> {
    inner: R,
    /// Payload bytes of the current frame still to be read.
    remaining: usize,
    /// Bytes of stdout and stderr read so far.
    pub stdout_bytes: u64,
    /// Bytes of stderr read so far.
    pub stderr_bytes: u64,
    current: Option<StreamKind>,
}

impl<R: Read> Demux<R> {
    /// Demultiplexes `inner`, which is at a frame boundary.
    pub fn new(inner: R) -> Self {
        Self { inner, remaining: 0, stdout_bytes: 0, stderr_bytes: 0, current: None }
    }

    /// Reads the next frame header; `false` at a clean end of stream (between frames).
    fn next_header(&mut self) -> io::Result<bool> {
        let mut header = [0u8; HEADER_LEN];
        let mut filled = 0;
        while filled < HEADER_LEN {
            match self.inner.read(&mut header[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "attach stream: cut inside a frame header",
                    ));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let (kind, length) = parse_header(header)?;
        self.current = Some(kind);
        self.remaining = length;
        Ok(true)
    }
}

impl<R: Read> Read for Demux<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Empty frames are skipped.
        while self.remaining == 0 {
            if !self.next_header()? {
                return Ok(0);
            }
        }
        let want = buf.len().min(self.remaining);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "attach stream: cut inside a frame"));
        }
        self.remaining -= n;
        match self.current {
            Some(StreamKind::Stderr) => self.stderr_bytes += n as u64,
            _ => self.stdout_bytes += n as u64,
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![kind, 0, 0, 0];
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// A reader that hands out at most `step` bytes a call, so frames split anywhere.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn payloads_come_out_in_order_whatever_the_read_sizes() {
        let stream = [frame(1, b"hello\n"), frame(2, b""), frame(2, b"warn\n"), frame(1, b"BOXBENCH_READY\n")].concat();
        for step in [1, 3, 7, 8, 9, 64] {
            let mut demux = Demux::new(Trickle { bytes: &stream, step });
            let mut out = String::new();
            demux.read_to_string(&mut out).unwrap();
            assert_eq!(out, "hello\nwarn\nBOXBENCH_READY\n", "step {step}");
            assert_eq!((demux.stdout_bytes, demux.stderr_bytes), (21, 5), "step {step}");
        }
    }

    #[test]
    fn a_stream_cut_inside_a_frame_or_a_bad_header_is_an_error() {
        let mut cut = frame(1, b"abcdef");
        cut.truncate(10);
        let err = Demux::new(&cut[..]).read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "attach stream: cut inside a frame");
        let err = Demux::new(&[1u8, 0, 0][..]).read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "attach stream: cut inside a frame header");
        let err = Demux::new(&b"plain text, no tty"[..]).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().starts_with("attach stream: not a frame header"), "{err}");
        assert_eq!(Demux::new(&[][..]).read_to_end(&mut Vec::new()).unwrap(), 0);
    }
}
