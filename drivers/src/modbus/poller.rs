//! One task per device: connect, read the plan every `poll_interval`, turn answers into
//! readings, and survive whatever the device or the network does.
//!
//! Outcomes of a request, and what follows:
//!
//! | outcome                     | points affected  | quality           | connection            |
//! |-----------------------------|------------------|-------------------|-----------------------|
//! | data                        | the request's    | `Good`/`BadValue` | kept                  |
//! | Modbus exception            | the request's    | `DeviceException` | kept                  |
//! | timeout, transport, garbled | all the device's | `CommLost`        | dropped, backoff, new |
//!
//! Good values are sent every cycle; a bad quality only when a point enters it (so a dead
//! device costs one reading per point, not one per point per cycle). Bad readings carry NaN
//! and the time the failure was observed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alert_rules::{PointId, Quality, Reading};
use tokio::net::TcpStream;
use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::{ExceptionCode, Request, Response, Slave};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::backoff::Backoff;
use super::decode::{DecodeError, decode_bit, decode_registers};
use super::metrics::DeviceMetrics;
use super::plan::{ReadPlan, ReadRequest};
use super::streak::{Report, Streak};
use super::{DeviceSettings, Endpoint, Table};
use crate::{FieldEvent, now_millis};

/// First reconnect delay; doubles per failure up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest wait between two connection attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Pause before a panicked poll task is started again.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);
/// Shortest poll interval honoured (a zero interval would spin).
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Polls one device until `shutdown` is cancelled or the receiver of `out` is dropped.
///
/// Never returns an error: every failure of the device or the network becomes a reading
/// quality, a [`FieldEvent::DeviceStatus`], a counter and a (rate-limited) log line.
pub async fn run_device(
    settings: DeviceSettings,
    out: Sender<FieldEvent>,
    metrics: Arc<DeviceMetrics>,
    shutdown: CancellationToken,
) {
    let span = device_span(&settings);
    async move {
        let plan = ReadPlan::for_device(&settings);
        let device = Device {
            settings: &settings,
            plan: &plan,
            out: &out,
            metrics: &metrics,
            shutdown: &shutdown,
        };
        let mut state = State::new(plan.requests.len());
        match device.run(&mut state).await {
            Stop::Shutdown => debug!("Poll task stopped by shutdown."),
            Stop::ChannelClosed => debug!("Poll task stopped: the event channel is closed."),
        }
    }
    .instrument(span)
    .await;
}

/// Runs [`run_device`] in a child task and starts it again (after [`RESTART_DELAY`]) if it
/// panics, counting that in `metrics.restarts`. Ends when the child ends normally (shutdown or
/// closed channel), or at shutdown. Aborting the returned handle aborts the child too.
pub fn spawn_supervised(
    settings: DeviceSettings,
    out: Sender<FieldEvent>,
    metrics: Arc<DeviceMetrics>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let span = device_span(&settings);
    let probe = out.clone();
    let (m, s) = (metrics.clone(), shutdown.clone());
    let start = move || run_device(settings.clone(), out.clone(), m.clone(), s.clone());
    tokio::spawn(supervise(start, move || probe.is_closed(), metrics, shutdown).instrument(span))
}

fn device_span(settings: &DeviceSettings) -> tracing::Span {
    info_span!("device", device = %settings.name, device_id = settings.id.0, slave = settings.unit_id)
}

async fn supervise<F, Fut>(
    mut start: F,
    closed: impl Fn() -> bool,
    metrics: Arc<DeviceMetrics>,
    shutdown: CancellationToken,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let mut child = AbortOnDrop(tokio::spawn(start()));
        match (&mut child.0).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                DeviceMetrics::inc(&metrics.restarts);
                let message = panic_message(e.into_panic());
                error!(error = %message, "Poll task panicked; restarting it.");
            }
            Err(_) => return, // Aborted from outside.
        }
        if closed() {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RESTART_DELAY) => {}
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "unknown panic payload".to_owned(),
        },
    }
}

/// Why the poll loop ends.
enum Stop {
    Shutdown,
    ChannelClosed,
}

/// Why the device is considered unreachable.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error(transparent)]
    Transport(#[from] tokio_modbus::Error),
    #[error("the device answered with a response of the wrong kind")]
    UnexpectedResponse,
}

/// What a device answered.
enum Answer {
    Words(Vec<u16>),
    Bits(Vec<bool>),
    Exception(ExceptionCode),
}

impl Answer {
    fn len(&self) -> usize {
        match self {
            Answer::Words(w) => w.len(),
            Answer::Bits(b) => b.len(),
            Answer::Exception(_) => 0,
        }
    }
}

/// The fixed parts of a poll task.
struct Device<'a> {
    settings: &'a DeviceSettings,
    plan: &'a ReadPlan,
    out: &'a Sender<FieldEvent>,
    metrics: &'a DeviceMetrics,
    shutdown: &'a CancellationToken,
}

/// What a poll task remembers between cycles.
struct State {
    /// Last quality sent per point, to send bad qualities only on a transition.
    last: HashMap<PointId, Quality>,
    /// Failures to reach the device (connect, timeout, transport).
    comm: Streak,
    /// Per request: exceptions, and short answers.
    exceptions: Vec<Streak>,
    short: Vec<Streak>,
    backoff: Backoff,
    ever_connected: bool,
}

impl State {
    fn new(requests: usize) -> Self {
        Self {
            last: HashMap::new(),
            comm: Streak::default(),
            exceptions: vec![Streak::default(); requests],
            short: vec![Streak::default(); requests],
            backoff: Backoff::new(BACKOFF_BASE, BACKOFF_CAP),
            ever_connected: false,
        }
    }
}

impl Device<'_> {
    async fn run(&self, state: &mut State) -> Stop {
        match self.poll_forever(state).await {
            Ok(never) => match never {},
            Err(stop) => stop,
        }
    }

    async fn poll_forever(&self, state: &mut State) -> Result<std::convert::Infallible, Stop> {
        let time = now_millis();
        for rejected in &self.plan.rejected {
            error!(point = rejected.id.0, error = %rejected.error, "Point cannot be read; it is reported as a bad value.");
            self.emit(state, rejected.id, f64::NAN, Quality::BadValue, time)
                .await?;
        }
        if self.plan.requests.is_empty() {
            warn!("Device has no readable points; nothing to poll.");
            self.shutdown.cancelled().await;
            return Err(Stop::Shutdown);
        }

        let period = self.settings.poll_interval.max(MIN_POLL_INTERVAL);
        // A random phase spreads the requests of many devices configured alike.
        let phase = period
            .mul_f64(0.1 * fastrand::f64())
            .min(Duration::from_secs(1));
        self.sleep(phase).await?;
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Skip);

        let mut connection: Option<Context> = None;
        loop {
            if connection.is_none() {
                match self.connect(state).await? {
                    Ok(ctx) => {
                        // Poll at once on a fresh connection; the schedule restarts from here.
                        interval.reset_immediately();
                        connection = Some(ctx);
                    }
                    Err(failure) => {
                        DeviceMetrics::inc(&self.metrics.connect_failures);
                        self.comm_lost(state, &failure).await?;
                        self.sleep(state.backoff.next_delay()).await?;
                        continue;
                    }
                }
            }
            let Some(ctx) = connection.as_mut() else {
                continue;
            };
            self.until_shutdown(interval.tick()).await?;
            if let Some(failure) = self.cycle(state, ctx).await? {
                connection = None;
                self.comm_lost(state, &failure).await?;
                self.sleep(state.backoff.next_delay()).await?;
            } else {
                state.backoff.reset();
            }
        }
    }

    async fn connect(&self, state: &mut State) -> Result<Result<Context, Failure>, Stop> {
        let Endpoint::Tcp { host, port } = &self.settings.endpoint;
        let slave = Slave(self.settings.unit_id);
        let attempt = async {
            let stream = TcpStream::connect((host.as_str(), *port)).await?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(tokio_modbus::client::tcp::attach_slave(stream, slave))
        };
        let result = match self
            .until_shutdown(tokio::time::timeout(self.settings.timeout, attempt))
            .await?
        {
            Ok(Ok(ctx)) => Ok(ctx),
            Ok(Err(e)) => Err(Failure::Connect(e)),
            Err(_elapsed) => Err(Failure::Timeout(self.settings.timeout)),
        };
        if result.is_ok() {
            DeviceMetrics::inc(&self.metrics.connects);
            if state.ever_connected {
                debug!(host = %host, port, "Connected.");
            } else {
                info!(host = %host, port, "Connected.");
                state.ever_connected = true;
            }
        }
        Ok(result)
    }

    /// Reads every request of the plan once. Returns the failure that ended the cycle early,
    /// if any; the connection must then be dropped.
    async fn cycle(&self, state: &mut State, ctx: &mut Context) -> Result<Option<Failure>, Stop> {
        let mut status_sent = false;
        for (index, request) in self.plan.requests.iter().enumerate() {
            let started = Instant::now();
            let outcome = self
                .until_shutdown(tokio::time::timeout(
                    self.settings.timeout,
                    read(ctx, request),
                ))
                .await?;
            let answer = match outcome {
                Ok(Ok(answer)) => answer,
                Ok(Err(failure)) => {
                    DeviceMetrics::inc(&self.metrics.requests_transport_error);
                    return Ok(Some(failure));
                }
                Err(_elapsed) => {
                    DeviceMetrics::inc(&self.metrics.requests_timeout);
                    return Ok(Some(Failure::Timeout(self.settings.timeout)));
                }
            };
            let time = now_millis();
            let now = Instant::now();
            self.metrics.observe_latency(now.duration_since(started));
            if let Some(down_for) = state.comm.recover(now) {
                info!(down_for = ?down_for, "Device answers again.");
            }
            if !status_sent {
                status_sent = true;
                self.send(FieldEvent::DeviceStatus {
                    device: self.settings.id,
                    ok: true,
                    at: time,
                })
                .await?;
            }
            self.answered(state, index, request, answer, time, now)
                .await?;
        }
        Ok(None)
    }

    async fn answered(
        &self,
        state: &mut State,
        index: usize,
        request: &ReadRequest,
        answer: Answer,
        time: alert_rules::Millis,
        now: Instant,
    ) -> Result<(), Stop> {
        if let Answer::Exception(code) = answer {
            DeviceMetrics::inc(&self.metrics.requests_exception);
            match state.exceptions[index].fail(now) {
                Report::First => warn!(
                    exception = %code, table = %request.table, start = request.start, count = request.count,
                    "Device answered a read with an exception."
                ),
                Report::Repeat { failures, since } => warn!(
                    exception = %code, table = %request.table, start = request.start, count = request.count,
                    failures, since = ?since, "Device still answers a read with an exception."
                ),
                Report::Quiet => {}
            }
            for p in &request.points {
                self.emit(state, p.id, f64::NAN, Quality::DeviceException, time)
                    .await?;
            }
            return Ok(());
        }

        DeviceMetrics::inc(&self.metrics.requests_ok);
        if let Some(lasted) = state.exceptions[index].recover(now) {
            info!(table = %request.table, start = request.start, lasted = ?lasted, "Device answers the read with data again.");
        }
        let got = answer.len();
        if got < usize::from(request.count) {
            DeviceMetrics::inc(&self.metrics.short_responses);
            match state.short[index].fail(now) {
                Report::First | Report::Repeat { .. } => warn!(
                    table = %request.table, start = request.start, expected = request.count, got,
                    "Device answered with fewer values than asked; the missing points are bad values."
                ),
                Report::Quiet => {}
            }
        } else {
            state.short[index].recover(now);
        }

        for p in &request.points {
            let offset = usize::from(p.offset);
            let decoded = match &answer {
                Answer::Words(words) => match words.get(offset..) {
                    Some(words) => decode_registers(&p.register, words),
                    None => Err(DecodeError::MissingData {
                        needed: p.register.width(),
                        got: 0,
                    }),
                },
                Answer::Bits(bits) => match bits.get(offset) {
                    Some(&bit) => decode_bit(&p.register, bit),
                    None => Err(DecodeError::MissingData { needed: 1, got: 0 }),
                },
                Answer::Exception(_) => continue,
            };
            match decoded {
                Ok(value) => self.emit(state, p.id, value, Quality::Good, time).await?,
                Err(e) => {
                    if state.last.get(&p.id) != Some(&Quality::BadValue) {
                        warn!(point = p.id.0, error = %e, "Value cannot be decoded; it is reported as a bad value.");
                    }
                    self.emit(state, p.id, f64::NAN, Quality::BadValue, time)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// The device can't be reached: log (rate-limited), mark every point, report the status.
    async fn comm_lost(&self, state: &mut State, failure: &Failure) -> Result<(), Stop> {
        match state.comm.fail(Instant::now()) {
            Report::First => {
                warn!(error = %failure, "Device is unreachable; reconnecting with backoff.")
            }
            Report::Repeat { failures, since } => {
                warn!(error = %failure, failures, down_for = ?since, "Device is still unreachable.");
            }
            Report::Quiet => debug!(error = %failure, "Device is still unreachable."),
        }
        let time = now_millis();
        for request in &self.plan.requests {
            for p in &request.points {
                self.emit(state, p.id, f64::NAN, Quality::CommLost, time)
                    .await?;
            }
        }
        self.send(FieldEvent::DeviceStatus {
            device: self.settings.id,
            ok: false,
            at: time,
        })
        .await
    }

    /// Sends a reading if it is good, or if its bad quality is new for the point.
    async fn emit(
        &self,
        state: &mut State,
        point: PointId,
        value: f64,
        quality: Quality,
        time: alert_rules::Millis,
    ) -> Result<(), Stop> {
        let previous = state.last.insert(point, quality);
        if quality.is_good() || previous != Some(quality) {
            let value = if quality.is_good() { value } else { f64::NAN };
            self.send(FieldEvent::Reading(Reading {
                point,
                time,
                value,
                quality,
            }))
            .await?;
        }
        Ok(())
    }

    /// Blocks while the channel is full (back-pressure); never drops.
    async fn send(&self, event: FieldEvent) -> Result<(), Stop> {
        match self.until_shutdown(self.out.send(event)).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(Stop::ChannelClosed),
        }
    }

    async fn sleep(&self, delay: Duration) -> Result<(), Stop> {
        self.until_shutdown(tokio::time::sleep(delay)).await
    }

    async fn until_shutdown<T>(&self, fut: impl Future<Output = T>) -> Result<T, Stop> {
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => Err(Stop::Shutdown),
            value = fut => Ok(value),
        }
    }
}

/// One read request, answers classified. Bit responses are padded to whole bytes on the
/// wire; the padding is cut off here.
async fn read(ctx: &mut Context, request: &ReadRequest) -> Result<Answer, Failure> {
    let (start, count) = (request.start, request.count);
    let call = match request.table {
        Table::Coil => Request::ReadCoils(start, count),
        Table::DiscreteInput => Request::ReadDiscreteInputs(start, count),
        Table::Holding => Request::ReadHoldingRegisters(start, count),
        Table::Input => Request::ReadInputRegisters(start, count),
    };
    // `Client::call` rather than the `Reader` methods, which assert on the answer's length.
    match ctx.call(call).await? {
        Err(code) => Ok(Answer::Exception(code)),
        Ok(Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words))
            if !request.table.is_bits() =>
        {
            Ok(Answer::Words(words))
        }
        Ok(Response::ReadCoils(mut bits) | Response::ReadDiscreteInputs(mut bits))
            if request.table.is_bits() =>
        {
            bits.truncate(usize::from(count));
            Ok(Answer::Bits(bits))
        }
        Ok(_) => Err(Failure::UnexpectedResponse),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use alert_rules::DeviceId;
    use tokio::net::{TcpListener, TcpSocket};
    use tokio::sync::mpsc::{self, Receiver};
    use tokio_modbus::server::tcp::{Server, accept_tcp_connection};

    use super::*;
    use crate::modbus::decode::encode;
    use crate::modbus::{DataType, PolledPoint, RegisterSpec, WordOrder};

    const WAIT: Duration = Duration::from_secs(5);

    /// A simulated PLC: holding registers and coils; reads outside them are refused with
    /// `IllegalDataAddress`. With `short`, register reads return one register too few.
    #[derive(Clone, Default)]
    struct Plc {
        holding: Arc<Mutex<Vec<u16>>>,
        coils: Vec<bool>,
        short: bool,
    }

    impl tokio_modbus::server::Service for Plc {
        type Request = Request<'static>;
        type Response = Response;
        type Exception = ExceptionCode;
        type Future = std::future::Ready<Result<Response, ExceptionCode>>;

        fn call(&self, req: Self::Request) -> Self::Future {
            let range = |a: u16, n: u16| usize::from(a)..usize::from(a) + usize::from(n);
            std::future::ready(match req {
                Request::ReadHoldingRegisters(a, n) => {
                    let regs = self.holding.lock().unwrap();
                    match regs.get(range(a, n)) {
                        Some(words) => {
                            let keep = if self.short {
                                words.len() - 1
                            } else {
                                words.len()
                            };
                            Ok(Response::ReadHoldingRegisters(words[..keep].to_vec()))
                        }
                        None => Err(ExceptionCode::IllegalDataAddress),
                    }
                }
                Request::ReadCoils(a, n) => match self.coils.get(range(a, n)) {
                    Some(bits) => Ok(Response::ReadCoils(bits.to_vec())),
                    None => Err(ExceptionCode::IllegalDataAddress),
                },
                _ => Err(ExceptionCode::IllegalFunction),
            })
        }
    }

    fn listen(port: u16) -> TcpListener {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .unwrap();
        socket.listen(16).unwrap()
    }

    /// Serves `plc` until the returned task is aborted, which also closes its connections.
    fn serve(listener: TcpListener, plc: Plc) -> JoinHandle<()> {
        tokio::spawn(async move {
            let server = Server::new(listener);
            let on_connected = move |stream, addr| {
                let plc = plc.clone();
                async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(plc.clone()))) }
            };
            let _ = server.serve(&on_connected, |_| {}).await;
        })
    }

    fn point(id: u32, table: Table, address: u16, data_type: DataType) -> PolledPoint {
        PolledPoint {
            id: PointId(id),
            register: RegisterSpec {
                table,
                address,
                data_type,
                word_order: WordOrder::ABCD,
                bit: None,
                scale: 1.0,
                offset: 0.0,
            },
        }
    }

    fn settings(port: u16, points: Vec<PolledPoint>, max_gap: u16) -> DeviceSettings {
        DeviceSettings {
            id: DeviceId(7),
            name: "test-plc".to_owned(),
            endpoint: Endpoint::Tcp {
                host: "127.0.0.1".to_owned(),
                port,
            },
            unit_id: 1,
            poll_interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
            points,
            max_registers_per_request: 125,
            max_gap,
        }
    }

    struct Running {
        rx: Receiver<FieldEvent>,
        metrics: Arc<DeviceMetrics>,
        shutdown: CancellationToken,
        task: JoinHandle<()>,
    }

    fn start(settings: DeviceSettings) -> Running {
        let (tx, rx) = mpsc::channel(16);
        let metrics = Arc::new(DeviceMetrics::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_device(settings, tx, metrics.clone(), shutdown.clone()));
        Running {
            rx,
            metrics,
            shutdown,
            task,
        }
    }

    impl Running {
        /// Collects events until `done` holds for what has been collected.
        async fn until(&mut self, done: impl Fn(&[FieldEvent]) -> bool) -> Vec<FieldEvent> {
            let mut seen = Vec::new();
            tokio::time::timeout(WAIT, async {
                while !done(&seen) {
                    seen.push(self.rx.recv().await.expect("channel open"));
                }
            })
            .await
            .unwrap_or_else(|_| panic!("condition not met in {WAIT:?}; events: {seen:#?}"));
            seen
        }

        /// Collects every event for `span`.
        async fn during(&mut self, span: Duration) -> Vec<FieldEvent> {
            let mut seen = Vec::new();
            let _ = tokio::time::timeout(span, async {
                while let Some(e) = self.rx.recv().await {
                    seen.push(e);
                }
            })
            .await;
            seen
        }

        async fn stop(self) {
            self.shutdown.cancel();
            tokio::time::timeout(Duration::from_secs(1), self.task)
                .await
                .expect("run_device returns promptly at shutdown")
                .unwrap();
        }
    }

    fn readings(events: &[FieldEvent], id: u32) -> Vec<Reading> {
        events
            .iter()
            .filter_map(|e| match e {
                FieldEvent::Reading(r) if r.point == PointId(id) => Some(*r),
                _ => None,
            })
            .collect()
    }

    fn count(events: &[FieldEvent], id: u32, quality: Quality) -> usize {
        readings(events, id)
            .iter()
            .filter(|r| r.quality == quality)
            .count()
    }

    fn statuses(events: &[FieldEvent], ok: bool) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, FieldEvent::DeviceStatus { ok: o, .. } if *o == ok))
            .count()
    }

    #[tokio::test]
    async fn good_values_arrive_decoded_every_cycle() {
        let mut regs = vec![650];
        regs.extend(encode(&123.5f32.to_be_bytes(), WordOrder::CDAB));
        regs.extend(encode(&(-5i32).to_be_bytes(), WordOrder::ABCD));
        let plc = Plc {
            holding: Arc::new(Mutex::new(regs)),
            coils: vec![false, false, true],
            short: false,
        };
        let listener = listen(0);
        let port = listener.local_addr().unwrap().port();
        let server = serve(listener, plc);

        let mut scaled = point(0, Table::Holding, 0, DataType::U16);
        scaled.register.scale = 0.1;
        scaled.register.offset = -40.0;
        let mut float = point(1, Table::Holding, 1, DataType::F32);
        float.register.word_order = WordOrder::CDAB;
        let points = vec![
            scaled,
            float,
            point(2, Table::Holding, 3, DataType::I32),
            point(3, Table::Coil, 2, DataType::Bool),
        ];
        let before = now_millis();
        let mut dev = start(settings(port, points, 10));

        let events = dev
            .until(|ev| (0..4).all(|id| count(ev, id, Quality::Good) >= 2))
            .await;
        let last = |id| *readings(&events, id).last().unwrap();
        assert!((last(0).value - 25.0).abs() < 1e-9);
        assert_eq!(last(1).value, 123.5);
        assert_eq!(last(2).value, -5.0);
        assert_eq!(last(3).value, 1.0);
        assert!(last(0).time >= before);
        assert!(statuses(&events, true) >= 1);
        assert_eq!(statuses(&events, false), 0);
        assert_eq!(dev.metrics.connects.load(Ordering::Relaxed), 1);
        assert!(dev.metrics.requests_ok.load(Ordering::Relaxed) >= 4);
        assert!(dev.metrics.latency_count.load(Ordering::Relaxed) >= 4);
        dev.stop().await;
        server.abort();
    }

    #[tokio::test]
    async fn exception_marks_only_its_request_and_is_sent_once() {
        let plc = Plc {
            holding: Arc::new(Mutex::new((0..100).collect())),
            ..Plc::default()
        };
        let listener = listen(0);
        let port = listener.local_addr().unwrap().port();
        let server = serve(listener, plc);
        let points = vec![
            point(0, Table::Holding, 42, DataType::U16),
            point(1, Table::Holding, 200, DataType::U16),
        ];
        let mut dev = start(settings(port, points, 0));

        let events = dev.during(Duration::from_millis(700)).await;
        assert!(count(&events, 0, Quality::Good) >= 4, "{events:#?}");
        assert!(readings(&events, 0).iter().all(|r| r.value == 42.0));
        assert_eq!(
            count(&events, 1, Quality::DeviceException),
            1,
            "{events:#?}"
        );
        assert!(
            readings(&events, 1)
                .iter()
                .all(|r| r.quality == Quality::DeviceException && r.value.is_nan())
        );
        // An exception is an answer: the device is up, and says so once per cycle.
        assert_eq!(statuses(&events, false), 0);
        assert_eq!(statuses(&events, true), count(&events, 0, Quality::Good));
        assert!(dev.metrics.requests_exception.load(Ordering::Relaxed) >= 4);
        assert_eq!(
            dev.metrics.connects.load(Ordering::Relaxed),
            1,
            "an exception must not reconnect"
        );
        dev.stop().await;
        server.abort();
    }

    #[tokio::test]
    async fn lost_server_gives_comm_lost_once_and_recovers_by_itself() {
        let holding = Arc::new(Mutex::new(vec![11, 22]));
        let listener = listen(0);
        let port = listener.local_addr().unwrap().port();
        let server = serve(
            listener,
            Plc {
                holding: holding.clone(),
                ..Plc::default()
            },
        );
        let points = vec![
            point(0, Table::Holding, 0, DataType::U16),
            point(1, Table::Holding, 1, DataType::U16),
        ];
        let mut dev = start(settings(port, points, 10));
        dev.until(|ev| count(ev, 1, Quality::Good) >= 1).await;

        server.abort();
        let lost_at = now_millis();
        let events = dev
            .until(|ev| statuses(ev, false) >= 1 && count(ev, 1, Quality::CommLost) >= 1)
            .await;
        let lost = readings(&events, 0)
            .into_iter()
            .find(|r| r.quality == Quality::CommLost)
            .unwrap();
        assert!(lost.value.is_nan());
        assert!(lost.time >= lost_at);
        // Stay down across several reconnect attempts: no repeated CommLost readings.
        let outage = dev.during(Duration::from_millis(1200)).await;
        assert_eq!(
            count(&outage, 0, Quality::CommLost) + count(&outage, 1, Quality::CommLost),
            0,
            "{outage:#?}"
        );
        assert!(
            statuses(&outage, false) >= 1,
            "each failed attempt reports the device down"
        );
        assert!(dev.metrics.connect_failures.load(Ordering::Relaxed) >= 1);

        *holding.lock().unwrap() = vec![33, 44];
        let server = serve(
            listen(port),
            Plc {
                holding,
                ..Plc::default()
            },
        );
        let events = dev
            .until(|ev| {
                readings(ev, 1)
                    .iter()
                    .any(|r| r.quality == Quality::Good && r.value == 44.0)
            })
            .await;
        assert!(statuses(&events, true) >= 1);
        assert_eq!(dev.metrics.connects.load(Ordering::Relaxed), 2);
        dev.stop().await;
        server.abort();
    }

    #[tokio::test]
    async fn silent_device_times_out_instead_of_hanging() {
        let listener = listen(0);
        let port = listener.local_addr().unwrap().port();
        // Accepts connections and never answers.
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let mut settings = settings(port, vec![point(0, Table::Holding, 0, DataType::U16)], 10);
        settings.timeout = Duration::from_millis(200);
        let mut dev = start(settings);
        let events = dev
            .until(|ev| statuses(ev, false) >= 1 && count(ev, 0, Quality::CommLost) >= 1)
            .await;
        assert_eq!(count(&events, 0, Quality::Good), 0);
        assert!(dev.metrics.requests_timeout.load(Ordering::Relaxed) >= 1);
        assert_eq!(dev.metrics.connects.load(Ordering::Relaxed), 1);
        dev.stop().await;
        silent.abort();
    }

    #[tokio::test]
    async fn short_answer_makes_missing_points_bad_values() {
        let plc = Plc {
            holding: Arc::new(Mutex::new(vec![5, 6, 7])),
            short: true,
            ..Plc::default()
        };
        let listener = listen(0);
        let port = listener.local_addr().unwrap().port();
        let server = serve(listener, plc);
        let points = vec![
            point(0, Table::Holding, 0, DataType::U16),
            point(1, Table::Holding, 1, DataType::U16),
        ];
        let mut dev = start(settings(port, points, 10));
        let events = dev.during(Duration::from_millis(500)).await;
        assert!(count(&events, 0, Quality::Good) >= 3, "{events:#?}");
        assert_eq!(count(&events, 1, Quality::BadValue), 1, "{events:#?}");
        assert!(dev.metrics.short_responses.load(Ordering::Relaxed) >= 3);
        dev.stop().await;
        server.abort();
    }

    #[tokio::test]
    async fn returns_when_the_receiver_is_gone() {
        let listener = listen(0);
        let port = listener.local_addr().unwrap().port();
        drop(listener); // Connections are refused: the task has failures to report.
        let Running { rx, task, .. } = start(settings(
            port,
            vec![point(0, Table::Holding, 0, DataType::U16)],
            10,
        ));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("run_device returns")
            .unwrap();
    }

    #[tokio::test]
    async fn invalid_points_are_reported_once_and_the_rest_polled() {
        let listener = listen(0);
        let port = listener.local_addr().unwrap().port();
        let server = serve(
            listener,
            Plc {
                holding: Arc::new(Mutex::new(vec![1])),
                ..Plc::default()
            },
        );
        let points = vec![
            point(0, Table::Holding, 0, DataType::U16),
            point(1, Table::Coil, 0, DataType::F32),
        ];
        let mut dev = start(settings(port, points, 10));
        let events = dev.during(Duration::from_millis(400)).await;
        assert_eq!(count(&events, 1, Quality::BadValue), 1);
        assert!(count(&events, 0, Quality::Good) >= 2);
        dev.stop().await;
        server.abort();
    }

    #[tokio::test]
    async fn supervisor_restarts_a_panicked_task() {
        let runs = Arc::new(AtomicU32::new(0));
        let metrics = Arc::new(DeviceMetrics::default());
        let r = runs.clone();
        let start = move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            async move { assert!(n > 0, "first run fails") }
        };
        let supervised = supervise(start, || false, metrics.clone(), CancellationToken::new());
        tokio::time::timeout(Duration::from_secs(3), supervised)
            .await
            .expect("supervisor ends");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(metrics.restarts.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn supervised_task_stops_at_shutdown() {
        let listener = listen(0);
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let (tx, mut rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(DeviceMetrics::default());
        let handle = spawn_supervised(
            settings(port, vec![point(0, Table::Holding, 0, DataType::U16)], 10),
            tx,
            metrics,
            shutdown.clone(),
        );
        let first = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(
            first,
            FieldEvent::Reading(Reading {
                quality: Quality::CommLost,
                ..
            })
        ));
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), handle)
            .await
            .expect("stops promptly")
            .unwrap();
    }
}
