//! One task per link: a TCP connection or a serial bus, owned by the task, serving the poll
//! schedules of every unit (device) behind it. Devices that name the same endpoint (host and
//! port, or serial port) share one link, so a gateway or a bus sees exactly one request in
//! flight, and an RTU line gets its silent gap before every frame.
//!
//! Outcomes of a request, and what follows:
//!
//! | outcome                     | points affected  | quality           | connection                  |
//! |-----------------------------|------------------|-------------------|-----------------------------|
//! | data                        | the request's    | `Good`/`BadValue` | kept                        |
//! | Modbus exception            | the request's    | `DeviceException` | kept                        |
//! | gateway 0x0A/0x0B on all    | all the unit's   | `CommLost`        | kept, unit backs off        |
//! | timeout, misaddressed answer| all the unit's   | `CommLost`        | see below                   |
//! | transport error, garbled    | all the unit's   | `CommLost`        | dropped, backoff, new       |
//! | pipelined turn stalls       | all the unit's   | `CommLost`        | dropped, backoff, new       |
//!
//! Modbus TCP is framed by `pipeline`, RTU (on a serial line or through a serial server) by
//! tokio-modbus. A Modbus TCP unit with `max_in_flight` above 1 has its turn's requests
//! pipelined; by default one is in flight at a time. If a pipelined unit answers some and then
//! stalls with several waiting, it is a device that serves one request at a time: it is logged
//! at ERROR and read one at a time from then on.
//!
//! A timeout drops the connection when the unit is alone on its link, or when no unit has
//! answered since the link's previous timeout (two timeouts in a row: the gateway itself is
//! gone; a fresh connection counts as an answer). Otherwise the
//! link is evidently working and only that unit is silent (a detector off the bus behind a
//! serial device server): the connection is kept, and the silent unit is retried on a backoff
//! of its own so that its timeouts don't eat the bus time of the units that answer.
//!
//! Good (and uncertain) values are sent every cycle; a bad quality only when a point enters it
//! (so a dead device costs one reading per point, not one per point per cycle). Bad readings
//! carry NaN and the time the failure was observed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alert_rules::{DeviceId, Millis, PointId, Quality, QualityClass, Reading};
use tokio::net::TcpStream;
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::{ExceptionCode, Request, Response, Slave};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::backoff::Backoff;
use super::decode::{DecodeError, decode_bit, decode_registers, from_milliamps};
use super::metrics::DeviceMetrics;
use super::pipeline::Pipeline;
use super::plan::{Part, ReadPlan, ReadRequest};
use super::streak::{Report, Streak};
use super::{DeviceSettings, Endpoint, Parity, RegisterSpec, SerialLine, Signal, Table};
use crate::{FieldEvent, now_millis};

/// First reconnect delay; doubles per failure up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest wait between two connection attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Longest wait before a silent unit on a working shared link is asked again. Short, because
/// its recovery is only noticed when it is asked.
pub const SILENT_UNIT_CAP: Duration = Duration::from_secs(10);
/// Pause before a panicked poll task is started again.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);
/// Shortest poll interval honoured (a zero interval would spin).
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// A connection or bus and the units polled over it.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub endpoint: Endpoint,
    pub units: Vec<DeviceSettings>,
}

impl Link {
    /// A link serving one device.
    pub fn single(settings: DeviceSettings) -> Self {
        Self {
            endpoint: settings.endpoint.clone(),
            units: vec![settings],
        }
    }

    /// Connecting (or opening the port) is given the longest of the units' timeouts.
    fn connect_timeout(&self) -> Duration {
        self.units
            .iter()
            .map(|u| u.timeout)
            .max()
            .unwrap_or(Duration::from_secs(1))
    }

    /// Requests a unit may have in flight: the largest any unit of a Modbus TCP link allows
    /// (each unit keeps to its own), always one on RTU.
    fn in_flight(&self) -> u16 {
        match self.endpoint {
            Endpoint::Tcp { .. } => self
                .units
                .iter()
                .map(|u| u.max_in_flight)
                .max()
                .unwrap_or(1),
            Endpoint::RtuOverTcp { .. } | Endpoint::Serial(_) => 1,
        }
    }

    fn frame_gap(&self) -> Duration {
        self.units
            .iter()
            .map(|u| u.frame_gap)
            .max()
            .unwrap_or_default()
    }
}

/// Groups devices by endpoint, in the order they come: one link per TCP endpoint or serial port.
pub fn group_links(devices: Vec<DeviceSettings>) -> Vec<Link> {
    let mut links: Vec<Link> = Vec::new();
    for device in devices {
        match links
            .iter_mut()
            .find(|l| l.endpoint.same_link(&device.endpoint))
        {
            Some(link) => link.units.push(device),
            None => links.push(Link::single(device)),
        }
    }
    links
}

/// Polls one device over a connection of its own; see [`run_link`].
pub async fn run_device(
    settings: DeviceSettings,
    out: Sender<FieldEvent>,
    metrics: Arc<DeviceMetrics>,
    shutdown: CancellationToken,
) {
    run_link(
        Arc::new(Link::single(settings)),
        out,
        vec![metrics],
        shutdown,
    )
    .await;
}

/// Polls every unit of `link` until `shutdown` is cancelled or the receiver of `out` is
/// dropped. `metrics[i]` belongs to `link.units[i]`; connection counters are added to all.
///
/// Never returns an error: every failure of the devices or the network becomes a reading
/// quality, a [`FieldEvent::DeviceStatus`], a counter and a (rate-limited) log line.
/// The link is shared, not copied, with the supervisor that restarts it: a device's point list
/// is kilobytes, and a large plant has hundreds of links.
pub async fn run_link(
    link: Arc<Link>,
    out: Sender<FieldEvent>,
    metrics: Vec<Arc<DeviceMetrics>>,
    shutdown: CancellationToken,
) {
    let span = link_span(&link);
    async move {
        let io = Io {
            out: &out,
            shutdown: &shutdown,
        };
        let mut units: Vec<Unit> = link
            .units
            .iter()
            .zip(
                metrics
                    .into_iter()
                    .chain(std::iter::repeat_with(Default::default)),
            )
            .map(|(settings, metrics)| Unit::new(settings, metrics))
            .collect();
        // A link of one unit already runs in that unit's span (see `link_span`): a second,
        // identical span would only print the device twice and cost an enter per poll.
        if let [unit] = units.as_mut_slice() {
            unit.span = tracing::Span::none();
        }
        match poll_link(&link, &mut units, &io).await {
            Ok(never) => match never {},
            Err(Stop::Shutdown) => debug!("Poll task stopped by shutdown."),
            Err(Stop::ChannelClosed) => debug!("Poll task stopped: the event channel is closed."),
        }
    }
    .instrument(span)
    .await;
}

/// Runs [`run_device`] in a child task, restarted when it panics; see [`spawn_link_supervised`].
pub fn spawn_supervised(
    settings: DeviceSettings,
    out: Sender<FieldEvent>,
    metrics: Arc<DeviceMetrics>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    spawn_link_supervised(Link::single(settings), out, vec![metrics], shutdown)
}

/// Runs [`run_link`] in a child task and starts it again (after [`RESTART_DELAY`]) if it
/// panics, counting that in every unit's `restarts`. Ends when the child ends normally
/// (shutdown or closed channel), or at shutdown. Aborting the returned handle aborts the child.
pub fn spawn_link_supervised(
    link: Link,
    out: Sender<FieldEvent>,
    metrics: Vec<Arc<DeviceMetrics>>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let span = link_span(&link);
    let probe = out.clone();
    let (m, s) = (metrics.clone(), shutdown.clone());
    let link = Arc::new(link);
    let start = move || run_link(Arc::clone(&link), out.clone(), m.clone(), s.clone());
    tokio::spawn(supervise(start, move || probe.is_closed(), metrics, shutdown).instrument(span))
}

/// Schedules start on a grid shared by every link, so that devices whose turns fall within one
/// grid step are polled in one wake-up of the runtime rather than one each: at 300 devices
/// polled every second this cut the daemon's CPU by about an eighth (docs/benchmarks.md). The
/// step is short against any poll interval (10 ms at least), and a turn moves by less than it.
const GRID: Duration = Duration::from_millis(5);

fn on_grid(t: tokio::time::Instant) -> tokio::time::Instant {
    static ORIGIN: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(|| t);
    let since = t.saturating_duration_since(origin).as_nanos();
    let step = GRID.as_nanos();
    let ahead = (step - since % step) % step;
    t + Duration::from_nanos(ahead as u64)
}

fn link_span(link: &Link) -> tracing::Span {
    match link.units.as_slice() {
        [one] => device_span(one),
        _ => info_span!("link", endpoint = %link.endpoint, units = link.units.len()),
    }
}

fn device_span(settings: &DeviceSettings) -> tracing::Span {
    info_span!("device", device = %settings.name, device_id = settings.id.0, slave = settings.unit_id)
}

async fn supervise<F, Fut>(
    mut start: F,
    closed: impl Fn() -> bool,
    metrics: Vec<Arc<DeviceMetrics>>,
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
                for m in &metrics {
                    DeviceMetrics::inc(&m.restarts);
                }
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

/// Why a device is considered unreachable.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("cannot open the serial port: {0}")]
    Open(#[source] tokio_serial::Error),
    #[error(transparent)]
    Transport(#[from] tokio_modbus::Error),
    #[error("connection: {0}")]
    Io(#[source] std::io::Error),
    #[error(
        "answered {answered} pipelined requests, then none of the {waiting} still in flight; \
         the device seems to serve one request at a time"
    )]
    Stalled { answered: usize, waiting: usize },
    #[error("garbled answer: {0}")]
    Protocol(&'static str),
    #[error("the device answered with a response of the wrong kind")]
    UnexpectedResponse,
    #[error("the gateway cannot reach the unit (exception {0})")]
    GatewayTarget(ExceptionCode),
    #[error("answer from another unit id")]
    OtherUnit,
}

impl Failure {
    /// A misaddressed or mismatched answer for this unit, on a link that still frames answers:
    /// another unit's reply on a shared RS-485 bus, a gateway answering under another unit id.
    /// It is this unit's fault, as if it were silent, not the link's: on a link where other
    /// units answer, dropping the connection would starve them all.
    fn is_unit_fault(&self) -> bool {
        matches!(
            self,
            Failure::Transport(tokio_modbus::Error::Protocol(_)) | Failure::OtherUnit
        )
    }
}

/// What a device answered.
pub(super) enum Answer {
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

/// How one unit's turn on the link ended.
enum Polled {
    Answered,
    Timeout(Failure),
    Failed(Failure),
    /// A Modbus gateway answered every read with "path unavailable" or "target failed to
    /// respond": the link works, the unit behind it does not.
    Unreachable(Failure),
}

/// The way out of a poll task: the event channel and the shutdown token.
struct Io<'a> {
    out: &'a Sender<FieldEvent>,
    shutdown: &'a CancellationToken,
}

impl Io<'_> {
    /// Blocks while the channel is full (back-pressure); never drops.
    async fn send(&self, event: FieldEvent) -> Result<(), Stop> {
        // The common case, a channel with room, skips registering with the shutdown token
        // (a lock shared by every poll task).
        let event = match self.out.try_send(event) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(_)) => return Err(Stop::ChannelClosed),
            Err(TrySendError::Full(event)) => event,
        };
        match self.until_shutdown(self.out.send(event)).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(Stop::ChannelClosed),
        }
    }

    async fn sleep(&self, delay: Duration) -> Result<(), Stop> {
        self.until_shutdown(tokio::time::sleep(delay)).await
    }

    async fn sleep_until(&self, at: tokio::time::Instant) -> Result<(), Stop> {
        self.until_shutdown(tokio::time::sleep_until(at)).await
    }

    async fn until_shutdown<T>(&self, fut: impl Future<Output = T>) -> Result<T, Stop> {
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => Err(Stop::Shutdown),
            value = fut => Ok(value),
        }
    }
}

/// The link's loop: connect, give each unit its turn when it is due, reconnect on failure.
async fn poll_link(
    link: &Link,
    units: &mut [Unit],
    io: &Io<'_>,
) -> Result<std::convert::Infallible, Stop> {
    for unit in units.iter_mut() {
        let span = unit.span.clone();
        unit.report_rejected(io).instrument(span).await?;
    }
    if units.iter().all(|u| u.plan.requests.is_empty()) {
        warn!("No readable points on this link; nothing to poll.");
        io.shutdown.cancelled().await;
        return Err(Stop::Shutdown);
    }

    let gap = if link.endpoint.is_rtu() {
        link.frame_gap()
    } else {
        Duration::ZERO
    };
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
    let in_flight = link.in_flight();
    let mut connection: Option<Connection> = None;
    let mut ever_connected = false;
    // Whether any unit answered since the link's last timeout (see the module doc).
    let mut answered_since_timeout = false;
    let mut last_frame: Option<tokio::time::Instant> = None;
    // A random phase spreads the requests of many devices configured alike.
    let start = tokio::time::Instant::now();
    for unit in units.iter_mut() {
        unit.next_due = start
            + unit
                .period
                .mul_f64(0.1 * fastrand::f64())
                .min(Duration::from_secs(1));
    }
    let first_due = units.iter().map(|u| u.next_due).min().unwrap_or(start);
    io.sleep_until(first_due).await?;

    loop {
        if connection.is_none() {
            let timeout = link.connect_timeout();
            let attempt = tokio::time::timeout(timeout, connect(&link.endpoint, in_flight));
            match io.until_shutdown(attempt).await? {
                Ok(Ok(ctx)) => {
                    for unit in units.iter() {
                        DeviceMetrics::inc(&unit.metrics.connects);
                    }
                    if ever_connected {
                        debug!(endpoint = %link.endpoint, "Connected.");
                    } else {
                        info!(endpoint = %link.endpoint, "Connected.");
                        ever_connected = true;
                    }
                    // Poll at once on a fresh connection (at the next tick of the shared
                    // grid); the schedules restart from here.
                    let now = on_grid(tokio::time::Instant::now());
                    for unit in units.iter_mut() {
                        unit.next_due = now;
                    }
                    // A fresh connection counts as working until two units in a row time
                    // out, so a silent unit polled first can't keep the link reconnecting.
                    answered_since_timeout = true;
                    last_frame = None;
                    connection = Some(ctx);
                }
                outcome => {
                    let failure = match outcome {
                        Ok(Err(failure)) => failure,
                        _ => Failure::Timeout(timeout),
                    };
                    for unit in units.iter_mut() {
                        DeviceMetrics::inc(&unit.metrics.connect_failures);
                        let span = unit.span.clone();
                        unit.comm_lost(&failure, io).instrument(span).await?;
                    }
                    io.sleep(backoff.next_delay()).await?;
                    continue;
                }
            }
        }
        let Some(conn) = connection.as_mut() else {
            continue;
        };
        let polled_units = units.iter().filter(|u| !u.plan.requests.is_empty()).count();
        let Some(index) = (0..units.len())
            .filter(|&i| !units[i].plan.requests.is_empty())
            .min_by_key(|&i| units[i].next_due)
        else {
            continue;
        };
        let unit = &mut units[index];
        io.sleep_until(unit.next_due).await?;
        let span = unit.span.clone();
        // Shutdown is watched once per turn, not per request: the token's waiter list is a
        // lock shared by every poll task.
        let turn = unit.poll(conn, io, gap, &mut last_frame);
        let polled = io.until_shutdown(turn.instrument(span.clone())).await??;
        match polled {
            Polled::Answered => {
                backoff.reset();
                answered_since_timeout = true;
                unit.silence.reset();
                unit.schedule_next();
            }
            Polled::Timeout(failure) => {
                unit.comm_lost(&failure, io).instrument(span).await?;
                if polled_units > 1 && answered_since_timeout {
                    answered_since_timeout = false;
                    let delay = unit.silence.next_delay().max(unit.period);
                    unit.next_due = tokio::time::Instant::now() + delay;
                } else {
                    connection = None;
                    io.sleep(backoff.next_delay()).await?;
                }
            }
            Polled::Failed(failure) => {
                unit.comm_lost(&failure, io).instrument(span).await?;
                connection = None;
                io.sleep(backoff.next_delay()).await?;
            }
            Polled::Unreachable(failure) => {
                // As a silent unit on a working link: its points are lost, the connection
                // stays, and it is retried on a backoff of its own.
                unit.comm_lost(&failure, io).instrument(span).await?;
                let delay = unit.silence.next_delay().max(unit.period);
                unit.next_due = tokio::time::Instant::now() + delay;
            }
        }
    }
}

/// A link's open connection or port.
enum Connection {
    /// RTU, on a serial line or through a serial server: tokio-modbus.
    Framed(Context),
    /// Modbus TCP, one or more requests in flight (see [`super::pipeline`]).
    Pipelined(Pipeline),
}

/// Opens the connection or the serial port. The unit id is set per request.
async fn connect(endpoint: &Endpoint, in_flight: u16) -> Result<Connection, Failure> {
    let slave = Slave(1);
    let framed = match endpoint {
        // Our own framing, with or without pipelining: its buffers are sized to the answers
        // that may be waiting (0.3 KB with one in flight), where tokio-modbus's framing keeps
        // 16 KB per connection: 4.7 MB on a 300-device plant.
        Endpoint::Tcp { host, port } => {
            let stream = tcp_stream(host, *port).await.map_err(Failure::Connect)?;
            return Ok(Connection::Pipelined(Pipeline::new(
                stream,
                usize::from(in_flight),
            )));
        }
        Endpoint::RtuOverTcp { host, port } => {
            let stream = tcp_stream(host, *port).await.map_err(Failure::Connect)?;
            tokio_modbus::client::rtu::attach_slave(stream, slave)
        }
        Endpoint::Serial(line) => {
            let port = open_serial(line).map_err(Failure::Open)?;
            tokio_modbus::client::rtu::attach_slave(port, slave)
        }
    };
    Ok(Connection::Framed(framed))
}

async fn tcp_stream(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn open_serial(line: &SerialLine) -> Result<tokio_serial::SerialStream, tokio_serial::Error> {
    let builder = tokio_serial::new(&line.path, line.baud_rate)
        .parity(match line.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .data_bits(match line.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        })
        .stop_bits(if line.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        })
        .flow_control(tokio_serial::FlowControl::None);
    tokio_serial::SerialStream::open(&builder)
}

/// One unit on a link: its plan, schedule and what it remembers between cycles.
struct Unit {
    /// What the unit needs of its settings once its plan is built.
    id: DeviceId,
    unit_id: u8,
    timeout: Duration,
    plan: ReadPlan,
    metrics: Arc<DeviceMetrics>,
    span: tracing::Span,
    spans: HashMap<PointId, [f64; 2]>,
    period: Duration,
    /// When the unit's next turn is due, and how many turns it has had (for slower requests).
    next_due: tokio::time::Instant,
    cycle: u64,
    /// Last quality sent per point, to send bad qualities only on a transition.
    last: HashMap<PointId, Quality>,
    /// Failures to reach the unit (connect, timeout, transport).
    comm: Streak,
    /// Per request: exceptions, and short answers.
    exceptions: Vec<Streak>,
    short: Vec<Streak>,
    /// Retry delay of a unit that is silent on a link others still use.
    silence: Backoff,
    /// Requests in flight on a pipelined link: `max_in_flight`, or 1 once the device stalled.
    in_flight: u16,
}

impl Unit {
    fn new(settings: &DeviceSettings, metrics: Arc<DeviceMetrics>) -> Self {
        let plan = ReadPlan::for_device(settings);
        let period = settings.poll_interval.max(MIN_POLL_INTERVAL);
        let spans = settings
            .points
            .iter()
            .filter_map(|p| p.span.map(|s| (p.id, s)))
            .collect();
        Self {
            span: device_span(settings),
            exceptions: vec![Streak::default(); plan.requests.len()],
            short: vec![Streak::default(); plan.requests.len()],
            silence: Backoff::new(period, SILENT_UNIT_CAP.max(period)),
            in_flight: settings.max_in_flight.max(1),
            next_due: tokio::time::Instant::now(),
            cycle: 0,
            last: HashMap::new(),
            comm: Streak::default(),
            spans,
            period,
            plan,
            metrics,
            id: settings.id,
            unit_id: settings.unit_id,
            timeout: settings.timeout,
        }
    }

    async fn report_rejected(&mut self, io: &Io<'_>) -> Result<(), Stop> {
        let time = now_millis();
        let rejected: Vec<_> = self.plan.rejected.clone();
        for r in rejected {
            error!(point = r.id.0, error = %r.error, "Point cannot be read; it is reported as a bad value.");
            self.emit(io, r.id, f64::NAN, Quality::BadValue, time)
                .await?;
        }
        if self.plan.requests.is_empty() {
            warn!("Device has no readable points; nothing to poll.");
        }
        Ok(())
    }

    /// Next turn one period after this one; turns missed while busy are skipped, not run late.
    fn schedule_next(&mut self) {
        self.cycle = self.cycle.wrapping_add(1);
        self.next_due += self.period;
        let now = tokio::time::Instant::now();
        if self.next_due <= now {
            let behind = now.duration_since(self.next_due).as_nanos();
            let periods = behind / self.period.as_nanos().max(1) + 1;
            let skip = u32::try_from(periods).unwrap_or(u32::MAX);
            self.next_due += self.period.saturating_mul(skip);
        }
    }

    /// Reads the requests due this turn, then sends the unit's readings. The caller stops it
    /// at shutdown.
    async fn poll(
        &mut self,
        conn: &mut Connection,
        io: &Io<'_>,
        gap: Duration,
        last_frame: &mut Option<tokio::time::Instant>,
    ) -> Result<Polled, Stop> {
        let answers = match conn {
            Connection::Framed(ctx) => self.read_one_by_one(ctx, gap, last_frame).await,
            Connection::Pipelined(pipeline) => self.read_pipelined(pipeline).await,
        };
        let answers = match answers {
            Ok(answers) => answers,
            Err(failure @ Failure::Timeout(_)) => {
                DeviceMetrics::inc(&self.metrics.requests_timeout);
                return Ok(Polled::Timeout(failure));
            }
            // Requests the device parked may still be answered later, out of turn: start
            // again on a fresh connection.
            Err(failure @ Failure::Stalled { .. }) => {
                DeviceMetrics::inc(&self.metrics.requests_timeout);
                return Ok(Polled::Failed(failure));
            }
            Err(failure) if failure.is_unit_fault() => {
                DeviceMetrics::inc(&self.metrics.requests_transport_error);
                return Ok(Polled::Timeout(failure));
            }
            Err(failure) => {
                DeviceMetrics::inc(&self.metrics.requests_transport_error);
                return Ok(Polled::Failed(failure));
            }
        };
        if let Some(code) = gateway_cannot_reach(&answers) {
            DeviceMetrics::inc(&self.metrics.requests_exception);
            return Ok(Polled::Unreachable(Failure::GatewayTarget(code)));
        }
        let time = now_millis();
        let now = Instant::now();
        if let Some(down_for) = self.comm.recover(now) {
            info!(down_for = ?down_for, "Device answers again.");
        }
        io.send(FieldEvent::DeviceStatus {
            device: self.id,
            ok: true,
            at: time,
        })
        .await?;
        self.answered(io, &answers, time, now).await?;
        Ok(Polled::Answered)
    }

    /// Whether `request` is due this turn (slower requests skip cycles).
    fn due(&self, request: &ReadRequest) -> bool {
        self.cycle % u64::from(request.every.max(1)) == 0
    }

    /// The turn's reads with several in flight; answers paired with their request's index.
    /// A device that stalls with several in flight is read one at a time from then on (until
    /// a restart or reload), and told so in the log: it has not the pipelining it was
    /// configured with.
    async fn read_pipelined(
        &mut self,
        pipeline: &mut Pipeline,
    ) -> Result<Vec<(usize, Answer)>, Failure> {
        let (indices, requests): (Vec<usize>, Vec<&ReadRequest>) = self
            .plan
            .requests
            .iter()
            .enumerate()
            .filter(|(_, r)| self.due(r))
            .unzip();
        let metrics = &self.metrics;
        let answers = pipeline
            .read_all(
                self.unit_id,
                &requests,
                usize::from(self.in_flight),
                self.timeout,
                |latency| metrics.observe_latency(latency),
            )
            .await;
        match answers {
            Ok(answers) => Ok(indices.into_iter().zip(answers).collect()),
            Err(failure @ Failure::Stalled { .. }) => {
                error!(
                    error = %failure, max_in_flight = self.in_flight,
                    "Device does not serve several requests at once; reading it one request at a time from now on. Set max_in_flight = 1 for it."
                );
                self.in_flight = 1;
                Err(failure)
            }
            Err(failure) => Err(failure),
        }
    }

    /// The turn's reads, one request at a time, with the line's silent gap before each.
    async fn read_one_by_one(
        &self,
        ctx: &mut Context,
        gap: Duration,
        last_frame: &mut Option<tokio::time::Instant>,
    ) -> Result<Vec<(usize, Answer)>, Failure> {
        ctx.set_slave(Slave(self.unit_id));
        let mut answers: Vec<(usize, Answer)> = Vec::new();
        for (index, request) in self.plan.requests.iter().enumerate() {
            if !self.due(request) {
                continue;
            }
            if let Some(at) = *last_frame
                && !gap.is_zero()
            {
                tokio::time::sleep_until(at + gap).await;
            }
            let started = Instant::now();
            let outcome = tokio::time::timeout(self.timeout, read(ctx, request)).await;
            *last_frame = Some(tokio::time::Instant::now());
            match outcome {
                Ok(Ok(answer)) => {
                    self.metrics.observe_latency(started.elapsed());
                    answers.push((index, answer));
                }
                Ok(Err(failure)) => return Err(failure),
                Err(_elapsed) => return Err(Failure::Timeout(self.timeout)),
            }
        }
        Ok(answers)
    }

    /// Turns a turn's answers into readings: values first, judged with their status words.
    async fn answered(
        &mut self,
        io: &Io<'_>,
        answers: &[(usize, Answer)],
        time: Millis,
        now: Instant,
    ) -> Result<(), Stop> {
        let mut statuses: HashMap<PointId, Result<u16, Quality>> = HashMap::new();
        let mut values: Vec<(PointId, &RegisterSpec, Result<f64, Quality>)> = Vec::new();
        for (index, answer) in answers {
            self.log_answer(*index, answer, now);
        }
        for (index, answer) in answers {
            let request = &self.plan.requests[*index];
            for p in &request.points {
                let got: Result<f64, Quality> = match answer {
                    Answer::Exception(_) => Err(Quality::DeviceException),
                    Answer::Words(words) => {
                        let register = match p.part {
                            Part::Value => p.register.clone(),
                            // The status word is taken raw: no scaling applies to its bits.
                            Part::Status => RegisterSpec::new(
                                p.register.table,
                                p.register.address,
                                super::DataType::U16,
                            ),
                        };
                        let decoded = match words.get(usize::from(p.offset)..) {
                            Some(words) => decode_registers(&register, words),
                            None => Err(DecodeError::MissingData {
                                needed: register.width(),
                                got: 0,
                            }),
                        };
                        self.decoded(p.id, decoded)
                    }
                    Answer::Bits(bits) => {
                        let decoded = match bits.get(usize::from(p.offset)) {
                            Some(&bit) => decode_bit(&p.register, bit),
                            None => Err(DecodeError::MissingData { needed: 1, got: 0 }),
                        };
                        self.decoded(p.id, decoded)
                    }
                };
                match p.part {
                    Part::Value => values.push((p.id, &p.register, got)),
                    Part::Status => {
                        statuses.insert(p.id, got.map(|v| v as u16));
                    }
                }
            }
        }
        let judged: Vec<(PointId, f64, Quality)> = values
            .into_iter()
            .map(|(id, register, got)| {
                let (value, quality) = judge(
                    register,
                    self.spans.get(&id).copied(),
                    got,
                    statuses.get(&id).copied(),
                );
                (id, value, quality)
            })
            .collect();
        for (id, value, quality) in judged {
            self.emit(io, id, value, quality, time).await?;
        }
        Ok(())
    }

    fn decoded(&self, id: PointId, decoded: Result<f64, DecodeError>) -> Result<f64, Quality> {
        decoded.map_err(|e| {
            if self.last.get(&id) != Some(&Quality::BadValue) {
                warn!(point = id.0, error = %e, "Value cannot be decoded; it is reported as a bad value.");
            }
            Quality::BadValue
        })
    }

    /// Counts and logs (rate-limited) exceptions and short answers.
    fn log_answer(&mut self, index: usize, answer: &Answer, now: Instant) {
        let request = &self.plan.requests[index];
        if let Answer::Exception(code) = answer {
            DeviceMetrics::inc(&self.metrics.requests_exception);
            match self.exceptions[index].fail(now) {
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
            return;
        }
        DeviceMetrics::inc(&self.metrics.requests_ok);
        if let Some(lasted) = self.exceptions[index].recover(now) {
            info!(table = %request.table, start = request.start, lasted = ?lasted, "Device answers the read with data again.");
        }
        let got = answer.len();
        if got < usize::from(request.count) {
            DeviceMetrics::inc(&self.metrics.short_responses);
            match self.short[index].fail(now) {
                Report::First | Report::Repeat { .. } => warn!(
                    table = %request.table, start = request.start, expected = request.count, got,
                    "Device answered with fewer values than asked; the missing points are bad values."
                ),
                Report::Quiet => {}
            }
        } else {
            self.short[index].recover(now);
        }
    }

    /// The unit can't be reached: log (rate-limited), mark every point, report the status.
    async fn comm_lost(&mut self, failure: &Failure, io: &Io<'_>) -> Result<(), Stop> {
        match self.comm.fail(Instant::now()) {
            Report::First => {
                warn!(error = %failure, "Device is unreachable; retrying with backoff.")
            }
            Report::Repeat { failures, since } => {
                warn!(error = %failure, failures, down_for = ?since, "Device is still unreachable.");
            }
            Report::Quiet => debug!(error = %failure, "Device is still unreachable."),
        }
        let time = now_millis();
        let ids: Vec<PointId> = self
            .plan
            .requests
            .iter()
            .flat_map(|r| &r.points)
            .filter(|p| p.part == Part::Value)
            .map(|p| p.id)
            .collect();
        for id in ids {
            self.emit(io, id, f64::NAN, Quality::CommLost, time).await?;
        }
        io.send(FieldEvent::DeviceStatus {
            device: self.id,
            ok: false,
            at: time,
        })
        .await
    }

    /// Sends a reading if it is usable (good or uncertain), or if its bad quality is new for
    /// the point.
    async fn emit(
        &mut self,
        io: &Io<'_>,
        point: PointId,
        value: f64,
        quality: Quality,
        time: Millis,
    ) -> Result<(), Stop> {
        let previous = self.last.insert(point, quality);
        if quality.is_usable() || previous != Some(quality) {
            let value = if quality.is_usable() { value } else { f64::NAN };
            io.send(FieldEvent::Reading(Reading {
                point,
                time,
                value,
                quality,
            }))
            .await?;
        }
        Ok(())
    }
}

/// A point's value and quality from what was read: the value's own outcome, the 4–20 mA
/// bands, and the status word, the worst of them winning.
fn judge(
    register: &RegisterSpec,
    span: Option<[f64; 2]>,
    value: Result<f64, Quality>,
    status: Option<Result<u16, Quality>>,
) -> (f64, Quality) {
    let (mut value, mut quality) = match value {
        Ok(v) => (v, Quality::Good),
        Err(q) => return (f64::NAN, q),
    };
    if register.signal == Signal::Ma4To20 {
        let Some(span) = span else {
            return (f64::NAN, Quality::BadValue);
        };
        (value, quality) = from_milliamps(value, span);
    }
    if let Some(spec) = &register.status {
        match status {
            Some(Ok(word)) => quality = worse(quality, spec.quality(word)),
            Some(Err(q)) => quality = worse(quality, q),
            None => quality = worse(quality, Quality::BadValue),
        }
    }
    if !quality.is_usable() {
        value = f64::NAN;
    }
    (value, quality)
}

fn worse(a: Quality, b: Quality) -> Quality {
    let rank = |q: Quality| match q.class() {
        QualityClass::Good => 0,
        QualityClass::Uncertain if q == Quality::NotMeasuring => 2,
        QualityClass::Uncertain => 1,
        QualityClass::Bad => 3,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// The exception when a Modbus gateway answered every read of a turn with 0x0A (no path to the
/// unit) or 0x0B (the unit did not respond). That is the gateway speaking for a unit that is
/// gone: communication loss, not a device's refusal of a read.
fn gateway_cannot_reach(answers: &[(usize, Answer)]) -> Option<ExceptionCode> {
    let mut code = None;
    for (_, answer) in answers {
        match answer {
            Answer::Exception(
                c @ (ExceptionCode::GatewayPathUnavailable | ExceptionCode::GatewayTargetDevice),
            ) => code = Some(*c),
            _ => return None,
        }
    }
    code
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
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use alert_rules::DeviceId;
    use tokio::net::{TcpListener, TcpSocket};
    use tokio::sync::mpsc::{self, Receiver};
    use tokio_modbus::server::tcp::{Server, accept_tcp_connection};

    use super::*;
    use crate::modbus::decode::encode;
    use crate::modbus::{DataType, PolledPoint, RegisterSpec, WordOrder};

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn turns_start_on_the_shared_grid() {
        let t = tokio::time::Instant::now();
        let a = on_grid(t);
        assert!(a >= t && a < t + GRID, "within one step ahead");
        assert_eq!(on_grid(a), a, "a time on the grid stays");
        let ms = Duration::from_millis(1);
        assert_eq!(
            on_grid(a + ms),
            a + GRID,
            "times within one step share a turn"
        );
        assert_eq!(on_grid(a + GRID - ms), a + GRID);
    }

    /// A simulated PLC: holding registers and coils; reads outside them are refused with
    /// `IllegalDataAddress`. With `short`, register reads return one register too few.
    #[derive(Clone, Default)]
    struct Plc {
        holding: Arc<Mutex<Vec<u16>>>,
        coils: Vec<bool>,
        short: bool,
        /// Answer every read as a Modbus gateway whose unit is gone (exception 0x0B).
        unit_gone: Arc<AtomicBool>,
    }

    impl tokio_modbus::server::Service for Plc {
        type Request = Request<'static>;
        type Response = Response;
        type Exception = ExceptionCode;
        type Future = std::future::Ready<Result<Response, ExceptionCode>>;

        fn call(&self, req: Self::Request) -> Self::Future {
            let range = |a: u16, n: u16| usize::from(a)..usize::from(a) + usize::from(n);
            if self.unit_gone.load(Ordering::Relaxed) {
                return std::future::ready(Err(ExceptionCode::GatewayTargetDevice));
            }
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
        PolledPoint::new(PointId(id), RegisterSpec::new(table, address, data_type))
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
            frame_gap: Duration::ZERO,
            max_in_flight: 1,
        }
    }

    /// With more than one in flight the points are also read one register per request, so a
    /// turn has several requests to pipeline.
    fn in_flight_of(mut settings: DeviceSettings, in_flight: u16) -> DeviceSettings {
        settings.max_in_flight = in_flight;
        if in_flight > 1 {
            settings.max_registers_per_request = 1;
        }
        settings
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

    #[tokio::test]
    async fn good_values_arrive_decoded_every_cycle() {
        good_values_arrive_decoded_every_cycle_with(1).await;
    }

    #[tokio::test]
    async fn good_values_arrive_decoded_every_cycle_pipelined() {
        good_values_arrive_decoded_every_cycle_with(4).await;
    }

    #[tokio::test]
    async fn exception_marks_only_its_request_and_is_sent_once() {
        exception_marks_only_its_request_and_is_sent_once_with(1).await;
    }

    #[tokio::test]
    async fn exception_marks_only_its_request_and_is_sent_once_pipelined() {
        exception_marks_only_its_request_and_is_sent_once_with(4).await;
    }

    #[tokio::test]
    async fn lost_server_gives_comm_lost_once_and_recovers_by_itself() {
        lost_server_gives_comm_lost_once_and_recovers_by_itself_with(1).await;
    }

    #[tokio::test]
    async fn lost_server_gives_comm_lost_once_and_recovers_by_itself_pipelined() {
        lost_server_gives_comm_lost_once_and_recovers_by_itself_with(4).await;
    }

    #[tokio::test]
    async fn silent_device_times_out_instead_of_hanging() {
        silent_device_times_out_instead_of_hanging_with(1).await;
    }

    #[tokio::test]
    async fn silent_device_times_out_instead_of_hanging_pipelined() {
        silent_device_times_out_instead_of_hanging_with(4).await;
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

    async fn good_values_arrive_decoded_every_cycle_with(in_flight: u16) {
        let mut regs = vec![650];
        regs.extend(encode(&123.5f32.to_be_bytes(), WordOrder::CDAB));
        regs.extend(encode(&(-5i32).to_be_bytes(), WordOrder::ABCD));
        let plc = Plc {
            holding: Arc::new(Mutex::new(regs)),
            coils: vec![false, false, true],
            short: false,
            unit_gone: Arc::default(),
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
        let mut dev = start(in_flight_of(settings(port, points, 10), in_flight));

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
    async fn a_gateway_that_cannot_reach_its_unit_is_comm_loss_on_a_kept_connection() {
        let plc = Plc {
            holding: Arc::new(Mutex::new(vec![5, 6])),
            unit_gone: Arc::new(AtomicBool::new(true)),
            ..Plc::default()
        };
        let gone = plc.unit_gone.clone();
        let listener = listen(0);
        let port = listener.local_addr().unwrap().port();
        let server = serve(listener, plc);
        let points = vec![
            point(0, Table::Holding, 0, DataType::U16),
            point(1, Table::Holding, 1, DataType::U16),
        ];
        let mut dev = start(settings(port, points, 0));

        let events = dev.during(Duration::from_millis(700)).await;
        // The unit is unreachable, not refusing a read: comm loss on every point, once, and
        // the device reported down, never up.
        assert_eq!(count(&events, 0, Quality::CommLost), 1, "{events:#?}");
        assert_eq!(count(&events, 1, Quality::CommLost), 1, "{events:#?}");
        assert_eq!(count(&events, 0, Quality::DeviceException), 0);
        assert!(statuses(&events, false) >= 1);
        assert_eq!(statuses(&events, true), 0);
        // The gateway itself answers: its connection is kept.
        assert_eq!(dev.metrics.connects.load(Ordering::Relaxed), 1);

        gone.store(false, Ordering::Relaxed);
        let events = dev.until(|seen| count(seen, 0, Quality::Good) >= 1).await;
        assert!(statuses(&events, true) >= 1);
        assert_eq!(readings(&events, 0).last().unwrap().value, 5.0);
        assert_eq!(dev.metrics.connects.load(Ordering::Relaxed), 1);
        dev.stop().await;
        server.abort();
    }

    /// A Modbus TCP gateway that answers unit 2 under unit id 9 (as a confused serial server
    /// or a misaddressed RS-485 device does), and units 1 and 3 properly.
    fn serve_misaddressing(listener: TcpListener) -> JoinHandle<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut req = [0u8; 12];
                    while stream.read_exact(&mut req).await.is_ok() {
                        let unit = req[6];
                        let count = u16::from_be_bytes([req[10], req[11]]);
                        let mut answer = vec![req[0], req[1], 0, 0];
                        answer.extend_from_slice(&(3 + 2 * count).to_be_bytes());
                        answer.extend([if unit == 2 { 9 } else { unit }, 3, (2 * count) as u8]);
                        for _ in 0..count {
                            answer.extend_from_slice(&u16::from(unit * 10).to_be_bytes());
                        }
                        if stream.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        })
    }

    #[tokio::test]
    async fn a_misaddressed_unit_on_a_shared_link_does_not_starve_the_others() {
        let listener = listen(0);
        let port = listener.local_addr().unwrap().port();
        let server = serve_misaddressing(listener);
        let units: Vec<DeviceSettings> = (1..=3u8)
            .map(|unit| DeviceSettings {
                id: DeviceId(u32::from(unit)),
                unit_id: unit,
                ..settings(
                    port,
                    vec![point(u32::from(unit), Table::Holding, 0, DataType::U16)],
                    0,
                )
            })
            .collect();
        let (tx, mut rx) = mpsc::channel(64);
        let metrics: Vec<Arc<DeviceMetrics>> = (0..3).map(|_| Arc::default()).collect();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_link(
            Arc::new(Link {
                endpoint: units[0].endpoint.clone(),
                units,
            }),
            tx,
            metrics.clone(),
            shutdown.clone(),
        ));
        let mut seen = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(1_500), async {
            while let Some(e) = rx.recv().await {
                seen.push(e);
            }
        })
        .await;
        // Units 1 and 3 are read every cycle (100 ms); unit 2 is comm-lost, once.
        assert!(count(&seen, 1, Quality::Good) >= 8, "{seen:#?}");
        assert!(count(&seen, 3, Quality::Good) >= 8, "{seen:#?}");
        assert!(
            readings(&seen, 3)
                .iter()
                .all(|r| r.value == 30.0 || r.value.is_nan())
        );
        assert_eq!(count(&seen, 2, Quality::CommLost), 1, "{seen:#?}");
        assert_eq!(count(&seen, 2, Quality::Good), 0);
        // The gateway is working: one connection throughout.
        assert_eq!(metrics[0].connects.load(Ordering::Relaxed), 1);
        shutdown.cancel();
        let _ = task.await;
        server.abort();
    }

    async fn exception_marks_only_its_request_and_is_sent_once_with(in_flight: u16) {
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
        let mut dev = start(in_flight_of(settings(port, points, 0), in_flight));

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

    async fn lost_server_gives_comm_lost_once_and_recovers_by_itself_with(in_flight: u16) {
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
        let mut dev = start(in_flight_of(settings(port, points, 10), in_flight));
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

    async fn silent_device_times_out_instead_of_hanging_with(in_flight: u16) {
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
        let mut dev = start(in_flight_of(settings, in_flight));
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

    #[test]
    fn devices_naming_one_endpoint_share_a_link() {
        let mut a = settings(502, vec![], 10);
        a.unit_id = 1;
        let mut b = a.clone();
        b.unit_id = 2;
        let other = settings(503, vec![], 10);
        let serial = |path: &str, baud_rate| {
            Endpoint::Serial(crate::modbus::SerialLine {
                path: path.to_owned(),
                baud_rate,
                parity: crate::modbus::Parity::None,
                data_bits: 8,
                stop_bits: 1,
            })
        };
        let mut s1 = a.clone();
        s1.endpoint = serial("/dev/ttyUSB0", 9600);
        let mut s2 = a.clone();
        s2.endpoint = serial("/dev/ttyUSB0", 19200);
        let links = group_links(vec![a, other, b, s1, s2]);
        let shape: Vec<Vec<u8>> = links
            .iter()
            .map(|l| l.units.iter().map(|u| u.unit_id).collect())
            .collect();
        assert_eq!(shape, [vec![1, 2], vec![1], vec![1, 1]]);
        assert!(links[2].endpoint.is_rtu());
    }

    #[test]
    fn judging_combines_loop_current_and_status() {
        use crate::modbus::{Signal, StatusSpec};
        let mut reg = RegisterSpec::new(Table::Holding, 0, DataType::U16);
        reg.signal = Signal::Ma4To20;
        let span = Some([0.0, 100.0]);
        assert_eq!(judge(&reg, span, Ok(12.0), None), (50.0, Quality::Good));
        assert_eq!(judge(&reg, span, Ok(20.7), None).1, Quality::Saturated);
        assert!(
            judge(&reg, None, Ok(12.0), None).0.is_nan(),
            "no span, no value"
        );
        reg.status = Some(StatusSpec {
            table: Table::Holding,
            address: 1,
            fault_bit: Some(0),
            warmup_bit: Some(1),
            calibration_bit: None,
        });
        assert_eq!(
            judge(&reg, span, Ok(20.7), Some(Ok(0b10))),
            (104.375, Quality::NotMeasuring)
        );
        let (v, q) = judge(&reg, span, Ok(12.0), Some(Ok(0b11)));
        assert!(v.is_nan());
        assert_eq!(q, Quality::SensorFault);
        assert_eq!(
            judge(&reg, span, Ok(12.0), Some(Err(Quality::DeviceException))).1,
            Quality::DeviceException
        );
        assert_eq!(
            judge(&reg, span, Err(Quality::CommLost), Some(Ok(0))).1,
            Quality::CommLost
        );
    }

    #[tokio::test]
    async fn slower_points_are_read_every_nth_cycle() {
        let plc = Plc {
            holding: Arc::new(Mutex::new(vec![1, 2])),
            ..Plc::default()
        };
        let listener = listen(0);
        let port = listener.local_addr().unwrap().port();
        let server = serve(listener, plc);
        let mut slow = point(1, Table::Holding, 1, DataType::U16);
        slow.register.interval_ms = Some(400);
        let mut dev = start(settings(
            port,
            vec![point(0, Table::Holding, 0, DataType::U16), slow],
            10,
        ));
        let events = dev.until(|ev| count(ev, 0, Quality::Good) >= 9).await;
        let (fast, slow) = (
            count(&events, 0, Quality::Good),
            count(&events, 1, Quality::Good),
        );
        assert!((2..=3).contains(&slow), "fast {fast}, slow {slow}");
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
        let supervised = supervise(
            start,
            || false,
            vec![metrics.clone()],
            CancellationToken::new(),
        );
        tokio::time::timeout(Duration::from_secs(10), supervised)
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
