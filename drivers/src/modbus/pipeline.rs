//! Modbus TCP: one request in flight on a connection by default, or several.
//!
//! The MBAP header of Modbus TCP carries a transaction id so that a client may send a request
//! before the previous one is answered, and match the answers by id (Modbus Messaging on
//! TCP/IP Implementation Guide, 4.2 and 4.4.1). Many small devices serve one request at a time
//! and some drop the connection when a second one arrives, so this is opt-in per device
//! (`max_in_flight`); by default one request is in flight at a time.
//!
//! Where it is allowed, it turns a unit's turn of N small reads into one `write` of up to
//! `window` frames and a few `read`s of the answers, instead of N round trips each with two
//! system calls and a wake-up: what a device that answers one register per request costs.
//!
//! Only reads (function codes 1 to 4) are ever sent.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_modbus::ExceptionCode;

use super::Table;
use super::plan::ReadRequest;
use super::poller::{Answer, Failure};

/// MBAP header (7 bytes) plus the largest PDU (253 bytes).
const MAX_FRAME: usize = 260;

/// A Modbus TCP connection that pipelines reads.
pub(super) struct Pipeline {
    stream: TcpStream,
    /// Transaction id of the next request; answers with ids not awaited are dropped.
    next_tid: u16,
    inbox: Vec<u8>,
    filled: usize,
    outbox: Vec<u8>,
}

/// An answer frame cut from the stream.
#[derive(Debug, PartialEq)]
struct Frame<'a> {
    tid: u16,
    unit: u8,
    function: u8,
    body: &'a [u8],
}

impl Pipeline {
    /// `window`: the most requests the connection will have in flight. The inbox holds that
    /// many of the largest answers (up to 64), so one `read` can take them all; a smaller one
    /// would still work, a frame at a time.
    pub(super) fn new(stream: TcpStream, window: usize) -> Self {
        let frames = window.clamp(1, 64);
        Self {
            stream,
            next_tid: 1,
            inbox: vec![0; frames * MAX_FRAME],
            filled: 0,
            outbox: Vec::with_capacity(frames * 12),
        }
    }

    /// Reads `requests` from `unit`, at most `window` unanswered at any time, each given
    /// `timeout` from when it was sent. Answers come back in the order of `requests`;
    /// `answered` is told each request's latency. A timeout or a garbled stream fails the
    /// whole turn, as one failed request does on a connection without pipelining; a timeout
    /// after some answers, with more than one request waiting, is [`Failure::Stalled`]: the
    /// mark of a device that takes one request at a time and drops or parks the others.
    pub(super) async fn read_all(
        &mut self,
        unit: u8,
        requests: &[&ReadRequest],
        window: usize,
        timeout: Duration,
        mut answered: impl FnMut(Duration),
    ) -> Result<Vec<Answer>, Failure> {
        let window = window.max(1);
        let base = self.next_tid;
        self.next_tid = self
            .next_tid
            .wrapping_add(u16::try_from(requests.len()).unwrap_or(u16::MAX));
        let mut answers: Vec<Option<Answer>> = Vec::new();
        answers.resize_with(requests.len(), || None);
        // When each sent request went out; in request order, so never decreasing.
        let mut sent_at: Vec<Instant> = Vec::with_capacity(requests.len());
        let (mut sent, mut done) = (0usize, 0usize);
        while done < requests.len() {
            // Top up the window with one write.
            self.outbox.clear();
            while sent < requests.len() && sent - done < window {
                let tid = base.wrapping_add(sent as u16);
                encode_read(&mut self.outbox, tid, unit, requests[sent]);
                sent += 1;
            }
            if !self.outbox.is_empty() {
                sent_at.resize(sent, Instant::now());
                self.stream
                    .write_all(&self.outbox)
                    .await
                    .map_err(Failure::Io)?;
            }
            // The oldest unanswered request sets the deadline.
            let oldest = answers[..sent]
                .iter()
                .position(Option::is_none)
                .map_or_else(Instant::now, |i| sent_at[i]);
            if self.filled == self.inbox.len() {
                return Err(Failure::Protocol("answer larger than any Modbus frame"));
            }
            let read = tokio::time::timeout_at(
                oldest + timeout,
                self.stream.read(&mut self.inbox[self.filled..]),
            );
            let n = match read.await {
                Ok(Ok(0)) => {
                    return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(Failure::Io(e)),
                Err(_elapsed) => {
                    let waiting = sent - done;
                    return Err(if done > 0 && waiting > 1 {
                        Failure::Stalled {
                            answered: done,
                            waiting,
                        }
                    } else {
                        Failure::Timeout(timeout)
                    });
                }
            };
            self.filled += n;
            let now = Instant::now();
            let mut used = 0;
            while let Some((frame, len)) = cut_frame(&self.inbox[used..self.filled])? {
                used += len;
                let index = usize::from(frame.tid.wrapping_sub(base));
                // Not awaited: a late answer to a turn that already timed out.
                if index >= sent || answers[index].is_some() {
                    continue;
                }
                if frame.unit != unit {
                    return Err(Failure::OtherUnit);
                }
                answers[index] = Some(to_answer(requests[index], &frame)?);
                answered(now.duration_since(sent_at[index]));
                done += 1;
            }
            self.inbox.copy_within(used..self.filled, 0);
            self.filled -= used;
        }
        Ok(answers.into_iter().flatten().collect())
    }
}

/// Appends the MBAP frame of a read request.
fn encode_read(out: &mut Vec<u8>, tid: u16, unit: u8, request: &ReadRequest) {
    out.extend_from_slice(&tid.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // protocol id: Modbus
    out.extend_from_slice(&6u16.to_be_bytes()); // unit id + PDU of 5 bytes
    out.push(unit);
    out.push(request.function_code());
    out.extend_from_slice(&request.start.to_be_bytes());
    out.extend_from_slice(&request.count.to_be_bytes());
}

/// The first whole frame in `buf` and its length, `None` if more bytes are needed.
fn cut_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, Failure> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let tid = u16::from_be_bytes([buf[0], buf[1]]);
    let protocol = u16::from_be_bytes([buf[2], buf[3]]);
    let length = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    if protocol != 0 {
        return Err(Failure::Protocol("not a Modbus TCP frame (protocol id)"));
    }
    // The length counts the unit id and the PDU, which has at least a function code.
    if !(2..=MAX_FRAME - 6).contains(&length) {
        return Err(Failure::Protocol("frame length out of range"));
    }
    let total = 6 + length;
    if buf.len() < total {
        return Ok(None);
    }
    let frame = Frame {
        tid,
        unit: buf[6],
        function: buf[7],
        body: &buf[8..total],
    };
    Ok(Some((frame, total)))
}

/// Classifies an answer to `request`. Bit answers are padded to whole bytes on the wire; the
/// padding is cut off here. Fewer values than asked are passed on (the caller marks the
/// missing points); a byte count that disagrees with the frame is a garbled stream.
fn to_answer(request: &ReadRequest, frame: &Frame<'_>) -> Result<Answer, Failure> {
    let function = request.function_code();
    if frame.function == function | 0x80 {
        let code = *frame
            .body
            .first()
            .ok_or(Failure::Protocol("exception without a code"))?;
        return Ok(Answer::Exception(ExceptionCode::new(code)));
    }
    if frame.function != function {
        return Err(Failure::UnexpectedResponse);
    }
    let (&count, data) = frame
        .body
        .split_first()
        .ok_or(Failure::Protocol("answer without a byte count"))?;
    if usize::from(count) != data.len() {
        return Err(Failure::Protocol("byte count disagrees with the frame"));
    }
    match request.table {
        Table::Holding | Table::Input => {
            if data.len() % 2 != 0 {
                return Err(Failure::Protocol("odd byte count in a register answer"));
            }
            let words = data
                .chunks_exact(2)
                .map(|w| u16::from_be_bytes([w[0], w[1]]))
                .collect();
            Ok(Answer::Words(words))
        }
        Table::Coil | Table::DiscreteInput => {
            let bits = data
                .iter()
                .flat_map(|byte| (0..8).map(move |i| byte & (1 << i) != 0))
                .take(usize::from(request.count))
                .collect();
            Ok(Answer::Bits(bits))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback listener for a scripted device.
    async fn device_listener() -> (tokio::net::TcpListener, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    /// Reads of one holding register each, at addresses 0..n.
    fn one_register_reads(n: u16) -> Vec<ReadRequest> {
        (0..n).map(|i| request(Table::Holding, i, 1)).collect()
    }

    fn request(table: Table, start: u16, count: u16) -> ReadRequest {
        ReadRequest {
            table,
            start,
            count,
            points: Vec::new(),
            every: 1,
        }
    }

    #[test]
    fn read_request_frame_is_mbap_then_pdu() {
        let mut out = Vec::new();
        encode_read(&mut out, 0x0102, 7, &request(Table::Input, 0x0010, 3));
        assert_eq!(out, [0x01, 0x02, 0, 0, 0, 6, 7, 4, 0x00, 0x10, 0, 3]);
    }

    #[test]
    fn frames_are_cut_whole_and_waited_for_when_partial() {
        let two = [
            0, 9, 0, 0, 0, 5, 1, 3, 2, 0x12, 0x34, // tid 9: one register
            0, 10, 0, 0, 0, 3, 1, 0x83, 2, // tid 10: exception 2
        ];
        let (first, len) = cut_frame(&two).unwrap().unwrap();
        assert_eq!((first.tid, first.unit, first.function), (9, 1, 3));
        assert_eq!(first.body, [2, 0x12, 0x34]);
        let (second, len2) = cut_frame(&two[len..]).unwrap().unwrap();
        assert_eq!(
            (second.tid, second.function, second.body),
            (10, 0x83, &[2][..])
        );
        assert_eq!(len + len2, two.len());
        for cut in 0..len {
            assert!(cut_frame(&two[..cut]).unwrap().is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn garbled_headers_are_errors() {
        assert!(matches!(
            cut_frame(&[0, 1, 0, 7, 0, 3, 1, 3, 0]),
            Err(Failure::Protocol(_))
        ));
        assert!(matches!(
            cut_frame(&[0, 1, 0, 0, 0xFF, 0xFF, 1, 3, 0]),
            Err(Failure::Protocol(_))
        ));
        assert!(matches!(
            cut_frame(&[0, 1, 0, 0, 0, 1, 1]),
            Err(Failure::Protocol(_))
        ));
    }

    #[test]
    fn answers_are_classified() {
        let words = request(Table::Holding, 0, 2);
        let frame = |function, body| Frame {
            tid: 1,
            unit: 1,
            function,
            body,
        };
        assert!(matches!(
            to_answer(&words, &frame(3, &[4, 0, 1, 0xFF, 0xFE])),
            Ok(Answer::Words(w)) if w == [1, 0xFFFE]
        ));
        assert!(matches!(
            to_answer(&words, &frame(0x83, &[2])),
            Ok(Answer::Exception(c)) if c == ExceptionCode::IllegalDataAddress
        ));
        assert!(matches!(
            to_answer(&words, &frame(4, &[4, 0, 1, 0, 2])),
            Err(Failure::UnexpectedResponse)
        ));
        assert!(matches!(
            to_answer(&words, &frame(3, &[4, 0, 1])),
            Err(Failure::Protocol(_))
        ));
        // A short answer is passed on for the caller to mark the missing points.
        assert!(matches!(
            to_answer(&words, &frame(3, &[2, 0, 1])),
            Ok(Answer::Words(w)) if w == [1]
        ));
        let bits = request(Table::Coil, 0, 10);
        assert!(matches!(
            to_answer(&bits, &frame(1, &[2, 0b1000_0101, 0b10])),
            Ok(Answer::Bits(b)) if b == [true, false, true, false, false, false, false, true, false, true]
        ));
    }

    /// A device that answers a turn's requests in reverse order, after an answer to a
    /// transaction nobody awaits: answers are matched by id, the stray one dropped.
    #[tokio::test]
    async fn answers_are_matched_by_transaction_id() {
        let (listener, addr) = device_listener().await;
        let device = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut got = vec![0u8; 36];
            stream.read_exact(&mut got).await.unwrap();
            let mut out = vec![0x7F, 0x7F, 0, 0, 0, 5, 1, 3, 2, 0xDE, 0xAD];
            for frame in got.chunks(12).rev() {
                let start = frame[9];
                out.extend_from_slice(&[frame[0], frame[1], 0, 0, 0, 5, 1, 3, 2, 0, start]);
            }
            stream.write_all(&out).await.unwrap();
            stream
        });
        let mut pipeline = Pipeline::new(TcpStream::connect(addr).await.unwrap(), 8);
        let requests = one_register_reads(3);
        let requests: Vec<&ReadRequest> = requests.iter().collect();
        let mut latencies = 0;
        let answers = pipeline
            .read_all(1, &requests, 8, Duration::from_secs(2), |_| latencies += 1)
            .await
            .unwrap();
        let words: Vec<_> = answers
            .iter()
            .map(|a| match a {
                Answer::Words(w) => w.clone(),
                _ => panic!("words expected"),
            })
            .collect();
        assert_eq!(words, [[0], [1], [2]]);
        assert_eq!(latencies, 3);
        drop(device.await.unwrap());
    }

    /// A window of two: the third request goes out only when one of the first two is answered.
    #[tokio::test]
    async fn no_more_than_the_window_is_in_flight() {
        let (listener, addr) = device_listener().await;
        let device = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut frame = [0u8; 12];
            let mut most = 0;
            for _ in 0..4 {
                // Wait until the client has had every chance to send more than allowed.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut waiting = [0u8; 64];
                let n = stream.peek(&mut waiting).await.unwrap();
                most = most.max(n / 12);
                stream.read_exact(&mut frame).await.unwrap();
                let answer = [frame[0], frame[1], 0, 0, 0, 5, 1, 3, 2, 0, 9];
                stream.write_all(&answer).await.unwrap();
            }
            most
        });
        let mut pipeline = Pipeline::new(TcpStream::connect(addr).await.unwrap(), 2);
        let requests = one_register_reads(4);
        let requests: Vec<&ReadRequest> = requests.iter().collect();
        let answers = pipeline
            .read_all(1, &requests, 2, Duration::from_secs(2), |_| {})
            .await
            .unwrap();
        assert_eq!(answers.len(), 4);
        assert_eq!(device.await.unwrap(), 2);
    }

    /// One in flight (the default), so room for one largest answer: a late answer to an
    /// earlier turn arriving with the awaited one, both as large as frames get, is dropped and
    /// the awaited one read whole, a frame at a time.
    #[tokio::test]
    async fn one_in_flight_reads_largest_answers_behind_a_stray_one() {
        let (listener, addr) = device_listener().await;
        let answer = |tid: [u8; 2], fill: u8| {
            let mut frame = vec![tid[0], tid[1], 0, 0, 0, 253, 1, 3, 250];
            frame.extend(std::iter::repeat_n(fill, 250));
            frame
        };
        let device = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 12];
            for turn in 0..2u8 {
                stream.read_exact(&mut request).await.unwrap();
                let mut out = Vec::new();
                if turn == 0 {
                    out.extend(answer([0x7F, 0x7F], 0xEE));
                }
                out.extend(answer([request[0], request[1]], turn));
                stream.write_all(&out).await.unwrap();
            }
            stream
        });
        let mut pipeline = Pipeline::new(TcpStream::connect(addr).await.unwrap(), 1);
        assert_eq!(pipeline.inbox.len(), MAX_FRAME);
        let large = request(Table::Holding, 0, 125);
        let answers = pipeline
            .read_all(1, &[&large, &large], 1, Duration::from_secs(2), |_| {})
            .await
            .unwrap();
        for (turn, a) in answers.iter().enumerate() {
            let fill = u16::from_be_bytes([turn as u8, turn as u8]);
            assert!(
                matches!(a, Answer::Words(w) if w.len() == 125 && w.iter().all(|&v| v == fill))
            );
        }
        assert_eq!(answers.len(), 2);
        drop(device.await.unwrap());
    }

    #[tokio::test]
    async fn silence_is_a_timeout() {
        let (listener, addr) = device_listener().await;
        let device = tokio::spawn(async move { listener.accept().await.unwrap() });
        let mut pipeline = Pipeline::new(TcpStream::connect(addr).await.unwrap(), 4);
        let one = request(Table::Input, 0, 1);
        let outcome = pipeline
            .read_all(1, &[&one, &one], 4, Duration::from_millis(100), |_| {})
            .await;
        assert!(matches!(outcome, Err(Failure::Timeout(_))));
        drop(device.await.unwrap());
    }

    proptest::proptest! {
        /// Whatever a device sends, cutting and classifying it returns, never panics.
        #[test]
        fn any_bytes_are_cut_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600), bits in proptest::bool::ANY, count in 1u16..2000) {
            let table = if bits { Table::Coil } else { Table::Holding };
            let request = request(table, 0, count);
            let mut rest = &bytes[..];
            while let Ok(Some((frame, len))) = cut_frame(rest) {
                let _ = to_answer(&request, &frame);
                rest = &rest[len..];
            }
        }
    }
}
