//! Sans-IO scan of a new connection's first bytes: tells when the first
//! request's headers (HTTP/1) or the client preface and its SETTINGS frame
//! (HTTP/2) have fully arrived, so the connection's header deadline can end.

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An HTTP/2 frame header: length (3), type, flags, stream id (4).
const FRAME_HEADER: usize = 9;

/// Progress through a connection's first request head.
#[derive(Debug, Clone)]
pub struct HeaderScan {
    /// Bytes seen, up to the end of the preface.
    seen: usize,
    /// Every byte so far matched the HTTP/2 preface.
    maybe_h2: bool,
    /// HTTP/1: nothing but `\r` since the last `\n`.
    line_empty: bool,
    /// HTTP/1: line ends seen.
    lines: u32,
    /// HTTP/1: a blank line ended the head.
    h1_done: bool,
    /// HTTP/2: the first frame's header bytes.
    frame: [u8; FRAME_HEADER],
    frame_have: usize,
    /// HTTP/2: payload bytes of the first frame still to come.
    payload_left: u32,
    complete: bool,
}

impl Default for HeaderScan {
    fn default() -> Self {
        Self {
            seen: 0,
            maybe_h2: true,
            line_empty: true,
            lines: 0,
            h1_done: false,
            frame: [0; FRAME_HEADER],
            frame_have: 0,
            payload_left: 0,
            complete: false,
        }
    }
}

impl HeaderScan {
    /// Whether the head has fully arrived.
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Takes the next bytes read; true once the head is complete.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        for &byte in bytes {
            if self.complete {
                break;
            }
            self.step(byte);
        }
        self.complete
    }

    fn step(&mut self, byte: u8) {
        if self.maybe_h2 && self.seen < PREFACE.len() && PREFACE[self.seen] != byte {
            self.maybe_h2 = false;
        }
        self.h1_step(byte);
        if self.seen < PREFACE.len() {
            self.seen += 1;
            if !self.maybe_h2 {
                self.complete = self.h1_done;
            }
            return;
        }
        if !self.maybe_h2 {
            self.complete = self.h1_done;
            return;
        }
        // After the preface: the client's first frame (SETTINGS).
        if self.frame_have < FRAME_HEADER {
            self.frame[self.frame_have] = byte;
            self.frame_have += 1;
            if self.frame_have == FRAME_HEADER {
                self.payload_left =
                    u32::from_be_bytes([0, self.frame[0], self.frame[1], self.frame[2]]);
                self.complete = self.payload_left == 0;
            }
        } else {
            self.payload_left = self.payload_left.saturating_sub(1);
            self.complete = self.payload_left == 0;
        }
    }

    fn h1_step(&mut self, byte: u8) {
        match byte {
            b'\n' => {
                if self.line_empty && self.lines > 0 {
                    self.h1_done = true;
                }
                self.lines = self.lines.saturating_add(1);
                self.line_empty = true;
            }
            b'\r' => {}
            _ => self.line_empty = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed_bytewise(bytes: &[u8]) -> (bool, usize) {
        let mut scan = HeaderScan::default();
        for (index, byte) in bytes.iter().enumerate() {
            if scan.feed(std::slice::from_ref(byte)) {
                return (true, index + 1);
            }
        }
        (false, bytes.len())
    }

    #[test]
    fn http1_head_ends_at_the_blank_line() {
        let request = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nbody";
        assert_eq!(fed_bytewise(request), (true, request.len() - 4));
        let mut scan = HeaderScan::default();
        assert!(scan.feed(request));
        assert!(!HeaderScan::default().feed(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        let bare_lf = b"GET / HTTP/1.1\nHost: a\n\n";
        assert_eq!(fed_bytewise(bare_lf), (true, bare_lf.len()));
    }

    #[test]
    fn http2_needs_the_preface_and_a_whole_settings_frame() {
        let mut bytes = PREFACE.to_vec();
        assert_eq!(
            fed_bytewise(&bytes),
            (false, 24),
            "the preface's blank line is not HTTP/1"
        );
        // SETTINGS with one 6-byte setting.
        bytes.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0]);
        assert!(!HeaderScan::default().feed(&bytes));
        bytes.extend_from_slice(&[0, 3, 0, 0, 0, 100]);
        assert_eq!(fed_bytewise(&bytes), (true, bytes.len()));
        let mut empty = PREFACE.to_vec();
        empty.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(fed_bytewise(&empty), (true, empty.len()));
    }

    #[test]
    fn half_a_preface_is_not_enough() {
        assert!(!HeaderScan::default().feed(&PREFACE[..20]));
        assert!(!HeaderScan::default().feed(b"GET / HTTP/1.1\r\nHost"));
        assert!(!HeaderScan::default().feed(b""));
    }
}
